"""The Drift view's prediction-log panel: both sources read the console workload's real PredictionLog counters (its
sink fails every third batch, tests/console/workload.py), the share of records not stored is the one
AiwatchPredictionLogLosingRecords computes, and the view draws the log with its losses marked. Below it, the journals
its ParquetSinks recovered, torn, set aside or failed on (AiwatchPredictionLogRecoveryIncomplete's counts)."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aiwatch.console import PrometheusSource, ScrapeSource, Series
from aiwatch.console.queries import SAMPLED_OUT
from aiwatch.console.source import RECOVERY_RESULTS, DataSource, RecoveryRow, unstored_share
from aiwatch.metrics import Metrics
from aiwatch.rules.render import HANDLED_RESULTS, LOST_RESULTS, UNSTORED_RESULTS
from tests.console.conftest import WINDOW, Stack, log_counts, log_growth, run_view, settled_log_growth, texts
from tests.console.workload import LOG_NAME, RECOVERED_RECORDS, RECOVERY_AT_START, SERVICE
from tests.servers import wait_until

pytestmark = pytest.mark.usefixtures("console_env")

URL = "http://127.0.0.1:9/metrics"
BANNER = "Prediction log losing records: "
RECOVERY_BANNER = "Prediction log journals not recovered: "


@pytest.fixture(params=["prometheus", "scrape"])
def source(request: pytest.FixtureRequest, prom_source: PrometheusSource, scrape_source: ScrapeSource) -> DataSource:
    return prom_source if request.param == "prometheus" else scrape_source


def answer(source: DataSource) -> list[Series]:
    wait_until(lambda: bool(source.prediction_log(WINDOW)), 20, what="prediction-log rates")
    return source.prediction_log(WINDOW)


def queued_and_served(source: DataSource) -> tuple[float, float]:
    """The log's queued rate and the recommender's served one, from two answers whose latest points are of one
    instant (asked again until they are). Asked one after the other, the scrape source's scrape (every 0.25 s)
    landing in between moved the second's window; the workload serves nothing while it is descheduled, so two
    windows of a loaded machine differ by as much (56 queued for 91 served/s, 94 for 62)."""
    found: list[float] = []

    def same_instant() -> bool:
        (queued,) = [s for s in source.prediction_log(WINDOW) if s.labels["result"] == "queued"]
        (served,) = [s for s in source.throughput(WINDOW) if s.labels["service"] == SERVICE]
        found[:] = [queued.points[-1][1], served.points[-1][1]]
        return queued.points[-1][0] == served.points[-1][0]
    wait_until(same_instant, 30, 0.05, what="the queued and served rates at one instant")
    return found[0], found[1]


# --- the workload's real log, through a real Prometheus and through the scrape source ------------------------------
@pytest.mark.slow
def test_both_sources_read_the_logs_records(stack: Stack, source: DataSource) -> None:
    # the sink fails every third batch: the window's share of records not stored is the log's own over that window,
    # read first; Prometheus is asked at that window's end (settled_log_growth) for every number here, so that its
    # rates are of the same samples, none missing (asked at now, a scrape failed on a loaded machine read the
    # queued rate from other samples than the served one: 95 for 65 requests/s)
    if isinstance(source, PrometheusSource):
        grown, source = settled_log_growth(stack, WINDOW)
    else:
        grown = log_growth(stack, WINDOW)
    series = answer(source)
    counts, log = log_counts(stack), LOG_NAME
    # one series per result the log counts, the requests it did not sample left out
    assert sorted((s.labels["log"], s.labels["result"]) for s in series) == \
        sorted((log, result) for result in counts if result != SAMPLED_OUT)
    rates = {s.labels["result"]: s.last or 0.0 for s in series}
    assert rates["written"] > 0 and rates["failed"] > 0
    assert rates["dropped"] == rates["lost"] == counts["dropped"] == counts["lost"] == 0
    # every recommender request logs one record, and the log samples them all: it queues as many as it serves
    queued, served = queued_and_served(source)
    assert queued == pytest.approx(served, rel=0.2)
    share = unstored_share(source.prediction_log(WINDOW))
    own = sum(grown[r] for r in UNSTORED_RESULTS) / sum(grown[r] for r in HANDLED_RESULTS)
    assert 0 < own < 1 and share == {log: pytest.approx(own, abs=0.05)}


@pytest.mark.slow
def test_the_sources_agree(stack: Stack, prom_source: PrometheusSource, scrape_source: ScrapeSource) -> None:
    # Prometheus extrapolates a rate to the window's edges only as far as its samples reach: until it holds a whole
    # window of them (the session's first seconds), its rates read low; the scrape source's do not
    stack.prom.wait_for(f'count_over_time(aiwatch_prediction_log_records_total{{result="queued"}}[{WINDOW:g}s]) >= 5')
    prom, scrape = answer(prom_source), answer(scrape_source)
    assert sorted(tuple(sorted(s.labels.items())) for s in prom) == \
        sorted(tuple(sorted(s.labels.items())) for s in scrape)
    prom_rates = {s.labels["result"]: s.last or 0.0 for s in prom}
    scrape_rates = {s.labels["result"]: s.last or 0.0 for s in scrape}
    assert prom_rates == pytest.approx(scrape_rates, rel=0.2)
    # Prometheus extrapolates each rate to the window's edges, the scrape source does not; their ratio is the same
    (prom_share,), (scrape_share,) = unstored_share(prom).values(), unstored_share(scrape).values()
    assert prom_share == pytest.approx(scrape_share, abs=0.05)


def losses_shown(at: Any) -> list[str]:
    return [t for t in texts(at.error) if t.startswith(BANNER)]


def records_chart(at: Any) -> dict[str, Any]:
    (spec,) = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart") if "records/s" in c.proto.spec]
    found: dict[str, Any] = spec
    return found


@pytest.mark.slow
def test_the_drift_view_shows_the_log_and_marks_its_losses(stack: Stack, source: DataSource) -> None:
    answer(source)
    log = LOG_NAME
    at = run_view(source, "Drift")
    (banner,) = losses_shown(at)
    found = re.fullmatch(re.escape(f"{BANNER}{log} ") + r"([0-9.]+)% not stored", banner)
    assert found, banner
    assert all("reached storage" not in t for t in texts(at.success))
    (table,) = [df.value for df in at.dataframe if "not stored %" in df.value.columns]
    assert list(table["log"]) == [log]
    # the sink fails every third batch: a share well inside (0, 100) %, the same in the banner and the table
    assert 5 < table["not stored %"].iloc[0] < 60
    assert float(found.group(1)) == round(table["not stored %"].iloc[0], 1)
    assert table["written/s"].iloc[0] > 0 and table["failed/s"].iloc[0] > 0
    assert f"{SAMPLED_OUT}/s" not in table.columns
    # the chart: one line per result, the losses labelled and drawn in the loss colours
    scale = records_chart(at)["encoding"]["color"]["scale"]
    colors = dict(zip(scale["domain"], scale["range"], strict=True))
    assert set(colors) == {f"{log} queued", f"{log} written", f"{log} recoverable (in a journal)",
                           *(f"{log} {r} (not stored)" for r in LOST_RESULTS)}
    lost = {c for name, c in colors.items() if name.endswith("(not stored)")}
    assert len(lost) == len(LOST_RESULTS) and not lost & {c for c in colors.values() if c not in lost}


def recovery_table(at: Any) -> Any:
    (table,) = [df.value for df in at.dataframe if "rows recovered" in df.value.columns]
    return table


@pytest.mark.slow
def test_both_sources_read_the_journals_recovered_at_start_and_the_view_names_the_unrecovered(
        stack: Stack, source: DataSource) -> None:
    # the workload's sink reports its start's recovery once, before the first scrape: the counters' values, which a
    # rate would read as 0
    wait_until(lambda: bool(source.prediction_log_recovery()), 20, what="journal recovery counts")
    (row,) = source.prediction_log_recovery()
    assert replace(row, last={}) == RecoveryRow(LOG_NAME, {r: float(n) for r, n in RECOVERY_AT_START.items()},
                                                RECOVERED_RECORDS)
    assert row.unfinished == {"torn": 1.0, "set_aside": 1.0} and set(row.last) == {"torn", "set_aside"}
    at = run_view(source, "Drift")
    (banner,) = [t for t in texts(at.error) if t.startswith(RECOVERY_BANNER)]
    assert re.match(rf"{RECOVERY_BANNER}{LOG_NAME} 1 torn \(last [^)]+\), {LOG_NAME} 1 set_aside \(last [^)]+\)\. "
                    "Their rows are in no finished file", banner), banner
    assert "runbook" in banner
    table = recovery_table(at)
    assert list(table.columns) == ["log", *RECOVERY_RESULTS, "rows recovered"]
    assert table.iloc[0].to_dict() == {"log": LOG_NAME, **RECOVERY_AT_START, "rows recovered": RECOVERED_RECORDS}


# --- journals a real ParquetSink recovered, through a real log's counters and the scrape source --------------------
def sink_started_on_journals(tmp_path: Path, *, torn: bool, set_aside: bool) -> ScrapeSource:
    """A ScrapeSource fed the exposition of a PredictionLog ``orders`` whose ParquetSink started on a directory
    where writers that died (killed, tests/feedback) left a journal of 8 rows, and, if asked, one whose second batch
    was torn and one that cannot become a Parquet file."""
    pa = pytest.importorskip("pyarrow")
    from aiwatch.feedback import ParquetSink, PredictionLog
    from tests.feedback.test_parquet_sink_journal import journals, killed_writer_with_journal_sizes
    from tests.feedback.test_parquet_sink_recovery import gather

    root, left = tmp_path / "log", []
    for name, wanted in (("whole", True), ("torn", torn), ("aside", set_aside)):
        if not wanted:
            continue
        folder = tmp_path / name
        sizes = killed_writer_with_journal_sizes(folder, 2)
        [journal] = journals(folder)
        if name == "torn":
            os.truncate(journal, sizes[1] - 1)  # died inside its second batch: 4 rows recovered
        elif name == "aside":  # a union column: Parquet cannot store it
            union = pa.UnionArray.from_dense(pa.array([0, 1], type=pa.int8()), pa.array([0, 0], type=pa.int32()),
                                             [pa.array([1.0]), pa.array(["a"])])
            batch = pa.RecordBatch.from_arrays([union], names=["x"])
            journal.write_bytes(batch.schema.serialize().to_pybytes() + batch.serialize().to_pybytes())
        left.append(folder)
    gather(left, root)
    src = ScrapeSource([URL], interval=1.0, history=60, start=False)
    registry = CollectorRegistry()
    with PredictionLog(ParquetSink(root), registry=registry, name="orders"):
        src.record(URL, generate_latest(registry).decode(), ts=time.time() - 1)
    return src


def test_journals_torn_or_set_aside_at_a_sinks_start_are_shown_by_the_scrape_source(tmp_path: Path) -> None:
    src = sink_started_on_journals(tmp_path, torn=True, set_aside=True)
    files = {"recovered": 1.0, "torn": 1.0, "set_aside": 1.0, "orphan_removed": 0.0, "failed": 0.0}
    (row,) = src.prediction_log_recovery()
    assert replace(row, last={}) == RecoveryRow("orders", files, 8 + 4) and set(row.last) == {"torn", "set_aside"}
    at = run_view(src, "Drift")
    (banner,) = [t for t in texts(at.error) if t.startswith(RECOVERY_BANNER)]
    banner = re.sub(r" \(last [^)]+\)", "", banner)  # how long ago: the test below
    assert banner.startswith(f"{RECOVERY_BANNER}orders 1 torn, orders 1 set_aside. Their rows are in no finished "
                             "file: torn (dropped, with every byte after them), set_aside (kept as "
                             ".journal.unrecoverable for a person) or failed (left for the next start)")
    assert not [t for t in texts(at.success) if t.startswith("No journal torn")]
    assert recovery_table(at).iloc[0].to_dict() == {"log": "orders", **files, "rows recovered": 12}
    # the banner links the alert's runbook page in the console
    (shown,) = [str(e.value) for e in at.error if str(e.value).startswith(RECOVERY_BANNER)]
    assert "(?runbook=AiwatchPredictionLogRecoveryIncomplete)" in shown


def test_journals_counted_longer_ago_than_the_alerts_window_are_a_warning_that_says_when(tmp_path: Path) -> None:
    """The red banner stayed for the life of the process, long after AiwatchPredictionLogRecoveryIncomplete (which
    reads when the log last counted them) had cleared; a count within the window stays red."""
    src = ScrapeSource([URL], interval=1.0, history=60, start=False)
    registry = CollectorRegistry()
    metrics, now = Metrics(registry), time.time()
    for result, n, ago in (("torn", 1, 3 * 3600 + 600), ("set_aside", 2, 1200)):
        metrics.prediction_log_recovery_files.labels("orders", result).inc(n)
        metrics.prediction_log_recovery_last_timestamp.labels("orders", result).set(now - ago)
    src.record(URL, generate_latest(registry).decode(), ts=now - 1)
    (row,) = src.prediction_log_recovery()
    assert row.last == {"torn": now - 3 * 3600 - 600, "set_aside": now - 1200}
    at = run_view(src, "Drift")
    (banner,) = [t for t in texts(at.error) if t.startswith(RECOVERY_BANNER)]
    assert re.match(rf"{RECOVERY_BANNER}orders 2 set_aside \(last 2\d min ago\)\. Their rows", banner), banner
    (warning,) = [t for t in texts(at.warning) if t.startswith("Prediction log journals not recovered, last counted")]
    assert "orders 1 torn (last 3 h ago)" in warning and "runbook" in warning and "set_aside" not in warning


def test_journals_all_recovered_at_a_sinks_start_are_an_all_clear(tmp_path: Path) -> None:
    src = sink_started_on_journals(tmp_path, torn=False, set_aside=False)
    (row,) = src.prediction_log_recovery()
    assert row.files["recovered"] == 1 and row.unfinished == {} and row.records == 8
    at = run_view(src, "Drift")
    assert not [t for t in texts(at.error) if t.startswith(RECOVERY_BANNER)]
    assert "No journal torn, set aside or left unrecovered since the logs' processes started." in texts(at.success)


def test_a_log_without_a_parquet_sink_has_no_recovery_counts() -> None:
    src = fed({"p": dict.fromkeys(("queued", "written"), 0.0)}, {"p": {"queued": 4, "written": 4}})
    assert src.prediction_log_recovery() == []
    at = run_view(src, "Drift")
    assert any(t.startswith("No journal recovery counts") for t in texts(at.info))


# --- the share and the scrape source's rates, on counters written by hand ------------------------------------------
def test_the_share_is_the_alerts() -> None:
    def series(log: str, **rates: float) -> list[Series]:
        return [Series({"log": log, "result": r}, [(1.0, 0.0), (2.0, v)]) for r, v in rates.items()]

    assert unstored_share([
        *series("busy", queued=100, written=90, dropped=5, failed=4, lost=1),
        *series("fine", queued=10, written=10, dropped=0, failed=0, lost=0),
        # idle, then a Parquet file of rows written before the window is lost: all it dealt with
        *series("idle", queued=0, written=0, dropped=0, failed=0, lost=3),
        *series("quiet", queued=0, written=0, dropped=0, failed=0, lost=0),
    ]) == {"busy": pytest.approx(10 / 106), "fine": 0.0, "idle": 1.0, "quiet": None}
    # the rates at the latest time the log's series have: an earlier point of another series does not count
    late = [Series({"log": "p", "result": "queued"}, [(1.0, 10.0), (2.0, 10.0)]),
            Series({"log": "p", "result": "failed"}, [(1.0, 5.0)])]
    assert unstored_share(late) == {"p": 0.0}


def fed(*steps: dict[str, dict[str, float]]) -> ScrapeSource:
    """A ScrapeSource fed one real exposition per step (1 s apart) of prediction-log counters grown by
    ``{log: {result: increase}}``."""
    src = ScrapeSource([URL], interval=1.0, history=60, start=False)
    registry = CollectorRegistry()
    counter = Metrics(registry).prediction_log_records
    start = time.time() - len(steps)
    for i, step in enumerate(steps):
        for log, grown in step.items():
            for result, value in grown.items():
                counter.labels(log, result).inc(value)
        src.record(URL, generate_latest(registry).decode(), ts=start + i)
    return src


def test_the_scrape_source_leaves_out_the_requests_not_sampled() -> None:
    first = {"p": dict.fromkeys(("sampled_out", "queued", "written", "dropped", "failed", "lost"), 0.0)}
    src = fed(first, {"p": {"sampled_out": 900, "queued": 95, "written": 90, "dropped": 5, "failed": 5}})
    series = src.prediction_log(10.0)
    assert {s.labels["result"]: s.last for s in series} == {
        "queued": 95, "written": 90, "dropped": 5, "failed": 5, "lost": 0}
    assert {s.labels["log"] for s in series} == {"p"}
    assert unstored_share(series) == {"p": pytest.approx(10 / 100)}
    assert unstored_share(series, LOST_RESULTS) == {"p": pytest.approx(10 / 100)}


def test_a_log_that_stores_everything_is_an_all_clear() -> None:
    first = {"p": dict.fromkeys(("queued", "written", "dropped", "failed", "lost"), 0.0)}
    src = fed(first, {"p": {"queued": 40, "written": 40}}, {"p": {"queued": 40, "written": 40}})
    at = run_view(src, "Drift")
    assert texts(at.success) == ["Every record the prediction log kept in the last 5s reached a finished file."]
    assert not at.error
    (table,) = [df.value for df in at.dataframe if "not stored %" in df.value.columns]
    assert list(table["log"]) == ["p"] and table["not stored %"].iloc[0] == 0
    assert table["queued/s"].iloc[0] == pytest.approx(40)


def test_rows_waiting_in_journals_are_not_read_as_stored() -> None:
    # every file failed at its footer or sync while its journal took each batch: written, then recoverable
    first = {"p": dict.fromkeys(("queued", "written", "dropped", "failed", "lost", "recoverable"), 0.0)}
    grown = {"p": {"queued": 40, "written": 40, "recoverable": 40}}
    src = fed(first, grown, grown)
    assert unstored_share(src.prediction_log(5.0)) == {"p": pytest.approx(0.5)}
    at = run_view(src, "Drift")
    assert not at.success and not at.error
    (warning,) = texts(at.warning)
    assert warning.startswith("Prediction log records waiting in journals: p 50.0% not in a finished file")
    assert "until the sink makes them into a file" in warning
    (table,) = [df.value for df in at.dataframe if "not stored %" in df.value.columns]
    assert table["not stored %"].iloc[0] == pytest.approx(50)
    colors = dict(zip(*(records_chart(at)["encoding"]["color"]["scale"][k] for k in ("domain", "range")),
                      strict=True))
    assert colors["p recoverable (in a journal)"] == "#ff7f0e"


def test_no_prediction_log_says_what_to_do() -> None:
    src = fed({}, {})
    at = run_view(src, "Drift")
    (message,) = [t for t in texts(at.info) if t.startswith("No prediction log")]
    assert "aiwatch.PredictionLog" in message and "docs/prediction-log.md" in message
    assert not at.error and not at.success


def test_a_log_of_the_same_name_in_two_clusters_is_two_logs() -> None:
    from aiwatch.console.source import tell_scopes_apart

    found = [{"cluster": c, "log": "predictions", "result": r} for c in ("eu", "us") for r in ("queued", "failed")]
    named = tell_scopes_apart(found, ("cluster", "namespace"))
    values = {("eu", "queued"): 10.0, ("eu", "failed"): 1.0, ("us", "queued"): 10.0, ("us", "failed"): 0.0}
    series = [Series(labels, [(1.0, values[(raw["cluster"], raw["result"])])])
              for raw, labels in zip(found, named, strict=True)]
    assert unstored_share(series) == {"predictions (eu)": 0.1, "predictions (us)": 0.0}
