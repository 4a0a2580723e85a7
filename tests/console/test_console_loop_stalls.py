"""The share of the time each replica's event loop stood still (what AiwatchEventLoopDelayHigh fires on), from the
scrape source's recorded scrapes and from the Prometheus source's PromQL (on promtool), and the Latency view's table
of it: worst first, a replica whose sampler took no sample all window shown as stuck rather than hidden. No servers:
each scrape is recorded by hand."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiwatch.console import ScrapeSource
from aiwatch.console.queries import PanelQueries
from aiwatch.console.source import LoopStall
from tests.console.conftest import plain, run_view, texts
from tests.servers import require_binary

URL, OTHER = "http://127.0.0.1:9/metrics", "http://127.0.0.2:9/metrics"


def loop(**services: tuple[float, float]) -> str:
    """One scrape of the event loop samplers: per service, (seconds late so far, seconds watched so far)."""
    lines = ["# TYPE aiwatch_event_loop_delay_seconds histogram",
             "# TYPE aiwatch_event_loop_sampled_seconds counter"]
    for service, (late, watched) in services.items():
        samples = round(watched * 10) if math.isfinite(watched) else 0  # one sample per 0.1 s watched
        lines += [f'aiwatch_event_loop_delay_seconds_bucket{{service="{service}",le="+Inf"}} {samples}',
                  f'aiwatch_event_loop_delay_seconds_sum{{service="{service}"}} {late}',
                  f'aiwatch_event_loop_delay_seconds_count{{service="{service}"}} {samples}',
                  f'aiwatch_event_loop_sampled_seconds_total{{service="{service}"}} {watched}']
    return "\n".join(lines) + "\n"


def passes_promtool(promtool: str, path: Path, test: dict[str, Any]) -> None:
    """``promtool test rules`` of the unit test ``test``, written to ``path``, passes."""
    path.write_text(yaml.safe_dump(test))
    proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def fed(*scrapes: tuple[str, str | None], interval: float = 1.0) -> ScrapeSource:
    """A scrape source given ``(url, text or None for a failed scrape)`` one second apart, the last one second ago."""
    src = ScrapeSource([URL, OTHER], interval=interval, history=60, start=False)
    t0 = time.time() - len(scrapes) - 1
    for i, (url, text) in enumerate(scrapes):
        src.record(url, text, ts=t0 + i, error="" if text is not None else "connection refused")
    return src


def test_the_share_is_the_delays_growth_over_the_time_watched_per_endpoint_and_service() -> None:
    src = fed((URL, loop(api=(1.0, 10.0), web=(0.0, 10.0))), (OTHER, loop(api=(0.0, 5.0))),
              (URL, loop(api=(1.5, 12.0), web=(0.01, 12.0))), (OTHER, loop(api=(0.01, 6.0))),
              (URL, loop(api=(2.0, 14.0), web=(0.02, 14.0))), (OTHER, loop(api=(0.02, 7.0))))
    rows = src.loop_stalls(30.0)
    # api on the first endpoint: 1.0 s late over 4.0 s watched; the other endpoint's api and web stay apart
    assert rows == [LoopStall("api", "127.0.0.1:9", pytest.approx(0.25)),
                    LoopStall("api", "127.0.0.2:9", pytest.approx(0.01)),
                    LoopStall("web", "127.0.0.1:9", pytest.approx(0.005))]


def test_a_restarted_sampler_counts_from_zero() -> None:
    # watched 10 -> 12 -> 1 (the process restarted) -> 3: 2 + 1 + 2 = 5 s; late 0 -> 0.5 -> 0.5 -> 1.0: 0.5+0.5+0.5
    src = fed((URL, loop(api=(0.0, 10.0))), (URL, loop(api=(0.5, 12.0))), (URL, loop(api=(0.5, 1.0))),
              (URL, loop(api=(1.0, 3.0))))
    assert src.loop_stalls(30.0) == [LoopStall("api", "127.0.0.1:9", pytest.approx(1.5 / 5))]


def test_a_sampler_that_took_no_sample_while_scraped_is_stuck_not_hidden() -> None:
    """The time watched did not grow over the window, the scrapes succeeded: the loop took no sample all window
    (blocked, its /metrics served off the loop). Shown first, as 100%, marked stuck."""
    src = fed((URL, loop(hung=(1.0, 10.0), api=(0.0, 10.0))), (URL, loop(hung=(1.0, 10.0), api=(0.01, 11.0))),
              (URL, loop(hung=(1.0, 10.0), api=(0.02, 12.0))))
    assert src.loop_stalls(30.0) == [LoopStall("hung", "127.0.0.1:9", 1.0, stuck=True),
                                     LoopStall("api", "127.0.0.1:9", pytest.approx(0.01))]


def test_no_share_without_two_good_scrapes_a_failed_last_scrape_or_the_counter() -> None:
    # the latest scrape failed: the endpoint is down (its own panel says so), not a stuck loop
    down = fed((URL, loop(api=(1.0, 10.0))), (URL, loop(api=(1.0, 10.0))), (URL, None))
    assert down.loop_stalls(30.0) == []
    # one good scrape: no growth to read
    assert fed((URL, loop(api=(1.0, 10.0))), (URL, None)).loop_stalls(30.0) == []
    # no sampler (WSGI, or AIWATCH_EVENT_LOOP_INTERVAL=off): nothing, not stuck
    assert fed((URL, "other_metric 1\n"), (URL, "other_metric 2\n")).loop_stalls(30.0) == []
    # the time watched without the delays' histogram: no share (PromQL's division has no sample either)
    watched_only = 'aiwatch_event_loop_sampled_seconds_total{{service="api"}} {}\n'
    assert fed((URL, watched_only.format(1.0)), (URL, watched_only.format(2.0))).loop_stalls(30.0) == []
    # the counter gone from the latest scrape (a restart without the sampler): not stuck
    gone = fed((URL, loop(api=(1.0, 10.0))), (URL, loop(api=(1.0, 10.0))), (URL, "other_metric 1\n"))
    assert gone.loop_stalls(30.0) == []


def test_a_series_new_in_the_window_counts_from_its_first_value_as_promql_does() -> None:
    """PromQL's rule (what the alert reads): a series absent from the window's first good scrape is not charged its
    first value, and one seen in a single scrape has no growth yet."""
    # a replica's sampler appears in the second scrape with a startup stall (5 s late over its first 10 s), then is
    # prompt: 0.1 s late over 10 s watched since, 1% (counted from 0 it read (5.1) / 20 = 25.5%)
    late_start = fed((URL, "other_metric 1\n"), (URL, loop(api=(5.0, 10.0))), (URL, loop(api=(5.05, 15.0))),
                     (URL, loop(api=(5.1, 20.0))))
    assert late_start.loop_stalls(30.0) == [LoopStall("api", "127.0.0.1:9", pytest.approx(0.01))]
    # it watched 1 s, then hung: its time watched stays flat over three scrapes: stuck (it read 1%)
    hung = fed((URL, "other_metric 1\n"), (URL, loop(api=(0.01, 1.0))), (URL, loop(api=(0.01, 1.0))),
               (URL, loop(api=(0.01, 1.0))))
    assert hung.loop_stalls(30.0) == [LoopStall("api", "127.0.0.1:9", 1.0, stuck=True)]
    # a service seen in the last scrape only, nothing watched yet: no growth, neither a share nor stuck (it was
    # listed as hung at 100%)
    new = fed((URL, loop(api=(0.1, 50.0))), (URL, loop(api=(0.2, 55.0))), (URL, loop(api=(0.3, 60.0), new=(0.0, 0.0))))
    assert new.loop_stalls(30.0) == [LoopStall("api", "127.0.0.1:9", pytest.approx(0.02))]


@pytest.mark.parametrize("samples", [
    [None, (5.0, 10.0), (5.05, 15.0), (5.1, 20.0)],  # a replica new in the window, with a startup stall
    [None, (0.01, 1.0), (0.01, 1.0), (0.01, 1.0)],  # one new in the window that hung after 1 s watched
    [(10.0, 100.0), (10.1, 105.0), (10.2, 110.0)],  # a prompt one, there all along
], ids=["startup-stall", "hung-after-start", "steady"])
def test_the_scrape_source_reads_what_promql_reads_on_the_same_samples(
        tmp_path: Path, samples: list[tuple[float, float] | None]) -> None:
    """The same samples, 5 s apart, through promtool (the Prometheus source's two queries) and the scrape source:
    the same replica has the same share or is stuck in both. (Counters far from 0: PromQL's extrapolation stops a
    counter's at 0, which can scale the delays' growth and the time watched apart.)"""
    promtool = require_binary("promtool")
    q = PanelQueries(scope=())
    where = 'job="j", instance="i", service="api"'

    def values(i: int) -> str:
        return " ".join("_" if s is None else repr(s[i]) for s in samples)

    series = [{"series": f"aiwatch_event_loop_delay_seconds_sum{{{where}}}", "values": values(0)},
              {"series": f"aiwatch_event_loop_sampled_seconds_total{{{where}}}", "values": values(1)},
              {"series": 'up{job="j", instance="i"}', "values": " ".join(["1"] * len(samples))}]
    src = ScrapeSource([URL], interval=5.0, history=600, start=False)
    t0 = time.time() - 5 * len(samples)
    for i, s in enumerate(samples):
        src.record(URL, "other_metric 1\n" if s is None else loop(api=s), ts=t0 + 5 * i)
    rows = src.loop_stalls(30.0)
    assert len(rows) == 1
    # to a thousandth, as PromQL's round() does it: the last digits of the two divisions differ
    share = [] if rows[0].stuck else [{"labels": f"{{{where}}}",
                                       "value": math.floor(rows[0].stalled * 1000 + 0.5) / 1000}]
    stuck = [{"labels": f"{{{where}}}", "value": 0}] if rows[0].stuck else []
    at = f"{5 * (len(samples) - 1)}s"
    test = {"evaluation_interval": "5s", "tests": [{"interval": "5s", "input_series": series, "promql_expr_test": [
        {"eval_time": at, "expr": f"round({q.loop_stalled_ratio('30s')}, 0.001)", "exp_samples": share},
        {"eval_time": at, "expr": q.loop_unwatched("30s"), "exp_samples": stuck}]}]}
    passes_promtool(promtool, tmp_path / "loop_test.yml", test)


def test_a_share_that_is_not_a_finite_number_is_unknown_and_last() -> None:
    # an infinite delays' _sum: its growth is NaN; it was sorted first (NaN compares false) as "nan%"
    inf_late = fed((URL, loop(api=(math.inf, 10.0), b=(0.5, 10.0), c=(0.1, 10.0))),
                   (URL, loop(api=(math.inf, 15.0), b=(1.5, 15.0), c=(0.2, 15.0))))
    rows = inf_late.loop_stalls(30.0)
    assert [(r.service, r.stuck) for r in rows] == [("b", False), ("c", False), ("api", False)]
    assert rows[:2] == [LoopStall("b", "127.0.0.1:9", pytest.approx(0.2)),
                        LoopStall("c", "127.0.0.1:9", pytest.approx(0.02))]
    assert math.isnan(rows[2].stalled)
    # an infinite time watched: unknown too, not a loop that took no sample (hung?)
    inf_watched = fed((URL, loop(api=(1.0, math.inf))), (URL, loop(api=(2.0, math.inf))))
    [row] = inf_watched.loop_stalls(30.0)
    assert not row.stuck and math.isnan(row.stalled)


def test_latency_view_shows_an_unknown_share_as_unknown(console_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", "30")
    src = fed((URL, loop(api=(math.inf, 10.0), b=(0.5, 10.0))), (URL, loop(api=(math.inf, 15.0), b=(2.0, 15.0))))
    at = run_view(src, "Latency")
    table = next(d.value for d in at.dataframe if "stood still %" in d.value.columns)
    assert list(table["service"]) == ["b", "api"]
    assert table["stood still %"].iloc[0] == pytest.approx(30.0) and math.isnan(table["stood still %"].iloc[1])
    assert list(table["note"]) == ["", "unknown: a counter is not a finite number"]
    warning = next(t for t in texts(at.warning) if t.startswith("Event loops standing still"))
    assert "nan" not in warning and "of api" not in warning and "of b: 30.0%" in warning


def test_latency_view_lists_each_replica_worst_first_with_the_stuck_one_named(
        console_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", "30")
    src = fed((URL, loop(api=(1.0, 10.0), hung=(2.0, 10.0))), (OTHER, loop(api=(0.0, 10.0))),
              (URL, loop(api=(1.5, 12.0), hung=(2.0, 10.0))), (OTHER, loop(api=(0.01, 11.0))),
              (URL, loop(api=(2.0, 14.0), hung=(2.0, 10.0))), (OTHER, loop(api=(0.02, 12.0))))
    at = run_view(src, "Latency")
    assert any(t.startswith("**Time each replica's event loop stood still") for t in texts(at.markdown))
    table = next(d.value for d in at.dataframe if "stood still %" in d.value.columns)
    assert list(table.columns) == ["service", "instance", "stood still %", "note"]  # one job: none shown
    assert [tuple(r) for r in table[["service", "instance"]].itertuples(index=False)] == \
        [("hung", "127.0.0.1:9"), ("api", "127.0.0.1:9"), ("api", "127.0.0.2:9")]
    assert list(table["stood still %"]) == [100.0, pytest.approx(25.0), pytest.approx(1.0)]
    assert list(table["note"]) == ["no sample in the last 30s: hung?", "", ""]
    # the warning names the replicas above the alert's default 20%, the stuck one first; not the prompt one
    warning = next(t for t in texts(at.warning) if t.startswith("Event loops standing still"))
    assert warning == ("Event loops standing still more than 20% of the last 30s: 127.0.0.1:9 of hung: no sample "
                       "in the last 30s: hung?; 127.0.0.1:9 of api: 25.0%. Runbook AiwatchEventLoopDelayHigh.")
    assert any("fires above 20%" in plain(str(c.value)) for c in at.caption)


def test_latency_view_says_why_there_is_no_share(console_env: None) -> None:
    src = fed((URL, "other_metric 1\n"), (URL, "other_metric 2\n"))
    at = run_view(src, "Latency")
    assert any(t.startswith("No time stood still per replica: it needs aiwatch_event_loop_sampled_seconds_total")
               for t in texts(at.info))
    assert not [t for t in texts(at.warning) if t.startswith("Event loops standing still")]


def test_prometheus_queries_give_the_share_and_the_stuck_replicas_that_are_up(tmp_path: Path) -> None:
    """The Prometheus source's two queries, on promtool: replica a watched 60 s a minute and was late 6 s (10%);
    b's time watched stayed flat while its target is up (stuck: listed, value 0); c's stayed flat too but its
    target is down (AiwatchTargetDown's business, not a stuck loop); neither b nor c has a share."""
    promtool = require_binary("promtool")
    series = []
    for instance, watched, late, up in (("a:1", "0+60x20", "0+6x20", "1x20"), ("b:1", "100x20", "5x20", "1x20"),
                                        ("c:1", "100x20", "5x20", "0x20")):
        where = f'job="api", instance="{instance}"'
        series += [{"series": f'aiwatch_event_loop_sampled_seconds_total{{{where}, service="s"}}', "values": watched},
                   {"series": f'aiwatch_event_loop_delay_seconds_sum{{{where}, service="s"}}', "values": late},
                   {"series": f"up{{{where}}}", "values": up}]
    q = PanelQueries()  # scope cluster, namespace: absent here, so matched as empty on both sides
    test = {"evaluation_interval": "1m", "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": [
        {"eval_time": "10m", "expr": q.loop_stalled_ratio("5m"),
         "exp_samples": [{"labels": '{job="api", instance="a:1", service="s"}', "value": 0.1}]},
        {"eval_time": "10m", "expr": q.loop_unwatched("5m"),
         "exp_samples": [{"labels": '{job="api", instance="b:1", service="s"}', "value": 0}]},
    ]}]}
    passes_promtool(promtool, tmp_path / "loop_test.yml", test)


# --- the worst worker of a multiprocess target: aiwatch_event_loop_stalled_ratio (livemax) and the last-sample
# timestamp (livemin), beside the merged mean the delays' histogram gives -----------------------------------------


def workers(**services: tuple[float | None, float | None]) -> str:
    """The two per-process gauges of one scrape, as a merged multiprocess target serves them: per service, (the
    worst live worker's share of the last 5 minutes, the stalest live worker's last-sample time); None leaves one
    out."""
    lines = ["# TYPE aiwatch_event_loop_stalled_ratio gauge",
             "# TYPE aiwatch_event_loop_last_sample_timestamp_seconds gauge"]
    for service, (share, stamp) in services.items():
        if share is not None:
            lines.append(f'aiwatch_event_loop_stalled_ratio{{service="{service}"}} {share!r}')
        if stamp is not None:
            lines.append(f'aiwatch_event_loop_last_sample_timestamp_seconds{{service="{service}"}} {stamp!r}')
    return "\n".join(lines) + "\n"


def test_the_worst_workers_share_stands_beside_the_mean_and_sorts_by_the_worse() -> None:
    """Four workers merged, one stalled 60% of the time: the mean over them reads 15%, under a replica whose one
    loop stood still 20%; by the worst worker's share, the first replica is the worse. A replica without the gauge
    (an older aiwatch) has no worst share, not 0."""
    src = fed((URL, loop(api=(0.0, 40.0)) + workers(api=(0.6, 100.0))), (OTHER, loop(api=(0.0, 10.0))),
              (URL, loop(api=(1.5, 50.0)) + workers(api=(0.6, 101.0))), (OTHER, loop(api=(0.2, 11.0))),
              (URL, loop(api=(3.0, 60.0)) + workers(api=(0.6, 102.0))), (OTHER, loop(api=(0.4, 12.0))))
    rows = src.loop_stalls(30.0)
    assert rows == [LoopStall("api", "127.0.0.1:9", pytest.approx(0.15), worst=0.6),
                    LoopStall("api", "127.0.0.2:9", pytest.approx(0.2))]
    assert rows[1].worst is None and rows[0].worse == 0.6 and rows[1].worse == pytest.approx(0.2)


def test_a_worker_whose_last_sample_time_stood_still_makes_its_replica_stuck() -> None:
    """The merged timestamp (the stalest live worker's) did not change over three good scrapes while the others'
    time watched grew: one worker's loop took no sample, the alert's clock-free stuck branch. Listed first."""
    src = fed((URL, loop(api=(0.0, 30.0), web=(0.0, 30.0)) + workers(api=(0.05, 100.0), web=(0.01, 100.0))),
              (URL, loop(api=(0.3, 33.0), web=(0.03, 33.0)) + workers(api=(0.05, 100.0), web=(0.01, 101.0))),
              (URL, loop(api=(0.6, 36.0), web=(0.06, 36.0)) + workers(api=(0.05, 100.0), web=(0.01, 102.0))))
    rows = src.loop_stalls(30.0)
    assert [(r.service, r.stuck, r.worker_stuck) for r in rows] == [("api", False, True), ("web", False, False)]
    assert rows[0].stalled == pytest.approx(0.1)


@pytest.mark.parametrize("stamps", [
    (0.0, 0.0, 0.0),  # made, not yet set
    (math.inf, math.inf, math.inf),  # every process's sampler stopped
    (None, None, 100.0),  # seen once in the window: no change to show
], ids=["zero", "inf", "once"])
def test_a_last_sample_time_that_is_no_loop_or_seen_once_is_not_stuck(stamps: tuple[float | None, ...]) -> None:
    src = fed(*((URL, loop(api=(0.1 * i, 10.0 + i)) + workers(api=(0.01, stamp))) for i, stamp in enumerate(stamps)))
    [row] = src.loop_stalls(30.0)
    assert not row.worker_stuck and row.worst == 0.01


def test_an_unchanged_last_sample_time_is_not_stuck_when_the_latest_scrape_failed() -> None:
    src = fed((URL, loop(api=(0.0, 10.0)) + workers(api=(0.01, 100.0))),
              (URL, loop(api=(0.1, 11.0)) + workers(api=(0.01, 100.0))), (URL, None))
    [row] = src.loop_stalls(30.0)
    assert not row.worker_stuck


def test_prometheus_queries_give_the_worst_worker_and_the_replicas_with_a_stuck_worker(tmp_path: Path) -> None:
    """The Prometheus source's two worst-worker queries, on promtool, with the merged samples of multiprocess
    targets written directly: a's worst worker stood still 60% (its mean, of four, 15%); b's last-sample time
    stayed put over the window while its target is up (one worker stuck: listed, a count of 1); c's stayed put
    but its target is down; d's is +Inf (every sampler stopped) and e's 0 (not yet set): no loop."""
    promtool = require_binary("promtool")
    series = []
    for instance, stamp, share, up in (("a:1", "0+60x20", "0.6x20", "1x20"), ("b:1", "100x20", "0.05x20", "1x20"),
                                       ("c:1", "100x20", "0.05x20", "0x20"), ("d:1", "Inf+0x20", "0x20", "1x20"),
                                       ("e:1", "0x20", "0x20", "1x20")):
        where = f'job="api", instance="{instance}"'
        series += [{"series": f'aiwatch_event_loop_last_sample_timestamp_seconds{{{where}, service="s"}}',
                    "values": stamp},
                   {"series": f'aiwatch_event_loop_stalled_ratio{{{where}, service="s"}}', "values": share},
                   {"series": f"up{{{where}}}", "values": up}]
    q = PanelQueries()
    worst = [{"labels": f'{{job="api", instance="{i}", service="s"}}', "value": v}
             for i, v in (("a:1", 0.6), ("b:1", 0.05), ("c:1", 0.05), ("d:1", 0), ("e:1", 0))]
    test = {"evaluation_interval": "1m", "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": [
        {"eval_time": "10m", "expr": q.loop_worst_stalled(), "exp_samples": worst},
        {"eval_time": "10m", "expr": q.loop_sample_unchanged("5m"),
         "exp_samples": [{"labels": '{job="api", instance="b:1", service="s"}', "value": 1}]},
    ]}]}
    passes_promtool(promtool, tmp_path / "loop_test.yml", test)


def test_latency_view_shows_the_worst_worker_beside_the_mean_and_warns_on_it(
        console_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker of four stalled 60%: the mean, 15%, is under the alert's 20%, the worst worker's share over it;
    the table shows both, sorts the replica first, and the warning names it as the alert would. A replica without
    the gauge shows no worst share (not 0)."""
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", "30")
    src = fed((URL, loop(api=(0.0, 40.0)) + workers(api=(0.6, 100.0))), (OTHER, loop(api=(0.0, 10.0))),
              (URL, loop(api=(1.5, 50.0)) + workers(api=(0.6, 101.0))), (OTHER, loop(api=(0.1, 11.0))),
              (URL, loop(api=(3.0, 60.0)) + workers(api=(0.6, 102.0))), (OTHER, loop(api=(0.2, 12.0))))
    at = run_view(src, "Latency")
    table = next(d.value for d in at.dataframe if "stood still %" in d.value.columns)
    assert list(table.columns) == ["service", "instance", "stood still %", "worst worker % (5m)"]
    assert list(table["instance"]) == ["127.0.0.1:9", "127.0.0.2:9"]
    assert list(table["stood still %"]) == [pytest.approx(15.0), pytest.approx(10.0)]
    assert table["worst worker % (5m)"].iloc[0] == pytest.approx(60.0)
    assert math.isnan(table["worst worker % (5m)"].iloc[1])
    warning = next(t for t in texts(at.warning) if t.startswith("Event loops standing still"))
    assert warning == ("Event loops standing still more than 20% of the last 30s: 127.0.0.1:9 of api: worst worker "
                       "60.0% of the last 5m (mean 15.0%). Runbook AiwatchEventLoopDelayHigh.")
    caption = next(plain(str(c.value)) for c in at.caption if "stood still %" in plain(str(c.value)))
    assert "the mean over the workers" in caption and "worst worker alone" in caption
    assert "over the last 5 minutes whatever the window" in caption and "sorted by the larger of the two" in caption


def test_latency_view_names_a_replica_with_a_stuck_worker(console_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", "30")
    src = fed((URL, loop(api=(0.0, 30.0), web=(0.0, 30.0)) + workers(api=(0.05, 100.0), web=(0.3, 100.0))),
              (URL, loop(api=(0.3, 33.0), web=(0.03, 33.0)) + workers(api=(0.05, 100.0), web=(0.3, 101.0))),
              (URL, loop(api=(0.6, 36.0), web=(0.06, 36.0)) + workers(api=(0.05, 100.0), web=(0.3, 102.0))))
    at = run_view(src, "Latency")
    table = next(d.value for d in at.dataframe if "stood still %" in d.value.columns)
    assert list(table["service"]) == ["api", "web"]  # stuck first, though web's worst worker is worse
    # the note names the alert's stuck window (latency.loop_stuck_window's default), not the view's
    assert list(table["note"]) == ["one worker's loop took no sample in the last 2m: hung?", ""]
    warning = next(t for t in texts(at.warning) if t.startswith("Event loops standing still"))
    assert warning == ("Event loops standing still more than 20% of the last 30s: 127.0.0.1:9 of api: one worker's "
                       "loop took no sample in the last 2m: hung?; 127.0.0.1:9 of web: worst worker 30.0% of the "
                       "last 5m (mean 1.0%). Runbook AiwatchEventLoopDelayHigh.")
    caption = next(plain(str(c.value)) for c in at.caption if "stood still %" in plain(str(c.value)))
    assert "one of its workers takes none over the last 2m whatever the window" in caption


def test_the_prometheus_source_joins_the_worst_worker_to_each_replicas_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """The four answers joined on the replica's labels (scope, job, instance, service): a's worst worker (60%)
    beside its mean (15%), sorted above b (20%, no gauge: an older aiwatch, unknown rather than 0); c's worker
    stuck, listed first; d's gauge alone (no share, not stuck) makes no row."""
    from aiwatch.console import PrometheusSource

    src = PrometheusSource("http://127.0.0.1:9")
    q = src.q

    def replica(instance: str) -> dict[str, str]:
        return {"cluster": "eu", "job": "api", "instance": instance, "service": "s"}

    answers = {q.loop_stalled_ratio("30s"): [(replica("a:1"), 0.15), (replica("b:1"), 0.2), (replica("c:1"), 0.01)],
               q.loop_unwatched("30s"): [],
               q.loop_worst_stalled(): [(replica("a:1"), 0.6), (replica("c:1"), 0.02), (replica("d:1"), 0.9)],
               q.loop_sample_unchanged("2m"): [(replica("c:1"), 1.0)]}
    monkeypatch.setattr(src.api, "query", lambda promql, at=None: answers[promql])
    rows = src.loop_stalls(30.0)
    assert rows == [LoopStall("s", "c:1", 0.01, job="api", worst=0.02, worker_stuck=True),
                    LoopStall("s", "a:1", 0.15, job="api", worst=0.6),
                    LoopStall("s", "b:1", 0.2, job="api")]


# --- a worker stuck over the alert's stuck window (latency.loop_stuck_window, 2m), whatever the console's window ---


def fed_every(scrapes: int, text: Callable[[int], str], step: float = 15.0) -> ScrapeSource:
    """A scrape source given ``scrapes`` good scrapes ``step`` seconds apart, the last one ``step`` seconds ago: the
    ``i``-th scrape's text is ``text(i)``."""
    src = ScrapeSource([URL], interval=step, history=scrapes * step + 600, start=False)
    t0 = time.time() - scrapes * step
    for i in range(scrapes):
        src.record(URL, text(i), ts=t0 + i * step)
    return src


def frozen_stamp(scrapes: int, frozen: int) -> Callable[[int], str]:
    """One replica of two workers, 15 s scrapes: the stalest worker's last-sample time (livemin) moves with each
    scrape until the last ``frozen`` scrapes, where it stands still (that worker's loop blocked for good); the
    other worker samples on (the time watched and the delays grow), the worst worker's share 1%."""
    return lambda i: (loop(api=(0.075 * i, 15.0 * i))
                      + workers(api=(0.01, 1e9 + 15.0 * min(i, scrapes - 1 - frozen))))


@pytest.mark.parametrize("window", [900.0, 3600.0])
def test_the_scrape_source_flags_a_worker_stuck_over_the_alerts_range_whatever_the_window(window: float) -> None:
    """70 minutes of 15 s scrapes; the stamp the same in the last 10 minutes' scrapes (41): the alert's stuck
    branch (over latency.loop_stuck_window, 2m) fires. A 15-minute or an hour's window holds earlier samples where the
    stamp moved: read over the window it was not flagged."""
    src = fed_every(280, frozen_stamp(280, 40))
    [row] = src.loop_stalls(window)
    assert row.worker_stuck and not row.stuck and row.worst == 0.01


def test_the_scrape_source_does_not_flag_a_worker_stuck_shorter_than_the_alerts_range_in_a_shorter_window() -> None:
    """A 1-minute window, the stamp the same in the last 6 scrapes (75 s; the 3 in the window among them): the
    alert's 2m range still holds a change, so it does not count the worker (yet), and neither does the console: a
    window shorter than the stuck window does not make the check quicker than the alert. The same in the last 10
    (135 s): flagged, though the rest of the range is outside the window."""
    src = fed_every(40, frozen_stamp(40, 5))
    [row] = src.loop_stalls(60.0)
    assert not row.worker_stuck
    assert fed_every(40, frozen_stamp(40, 9)).loop_stalls(60.0)[0].worker_stuck


@pytest.mark.parametrize("frozen, stuck", [(13, False), (18, False), (25, True)])
def test_a_history_shorter_than_the_alerts_range_still_reads_the_whole_range(frozen: int, stuck: bool) -> None:
    """AIWATCH_CONSOLE_HISTORY=60 with 5 s scrapes, ten minutes in, the stamp the same in the last ``frozen``
    scrapes: kept for 60 s only, any freeze longer than that read as one over the whole 2m, where the alert's range
    still holds a change (65 s and 90 s); 125 s is stuck for both."""
    step, scrapes = 5.0, 120
    src = ScrapeSource([URL], interval=step, history=60, start=False)
    t0 = time.time() - scrapes * step
    for i in range(scrapes):
        stamp = 1e9 + step * min(i, scrapes - 1 - frozen)
        src.record(URL, loop(api=(0.025 * i, step * i)) + workers(api=(0.01, stamp)), ts=t0 + i * step)
    [row] = src.loop_stalls(30.0)
    assert row.worker_stuck is stuck


def test_a_last_sample_time_gone_from_the_latest_scrape_is_not_stuck() -> None:
    """The stamp stood still over four scrapes, then left the scrape (a replica rolled back to an aiwatch without the
    gauge) while the time watched grows: PromQL's instant selector has no sample of it (Prometheus marks it stale),
    so the alert does not count it; neither does the console."""
    src = fed_every(8, lambda i: loop(api=(0.01 * i, 15.0 * i)) + (workers(api=(0.01, 5e8)) if i < 4 else ""))
    [row] = src.loop_stalls(300.0)
    assert not row.worker_stuck and not row.stuck


NAN = math.nan


@pytest.mark.parametrize("nans, stuck", [
    ((), True),  # the stamp stood still: the control
    ((16,), False),  # 5, NaN, 5: changed twice
    ((15, 16), False),  # 5, NaN, NaN, 5: changed twice (NaN to NaN is no change)
    ((19,), False),  # NaN now: not > 0
], ids=["still", "one-nan-between", "two-nans-between", "nan-now"])
def test_an_exported_nan_stamp_is_a_change_to_both_sources_as_promqls_changes_counts_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nans: tuple[int, ...], stuck: bool) -> None:
    """20 scrapes 15 s apart of a stamp that stood still but for the NaN the endpoint exported at scrapes ``nans``
    (a gauge may hold NaN): Prometheus' ``changes()`` counts a change to and from NaN (two NaN in a row are none),
    so a NaN between equal stamps is no stuck worker. The query the Prometheus source sends, on promtool, and the
    scrape source on the same samples agree."""
    from aiwatch.console import PrometheusSource

    promtool = require_binary("promtool")
    stamps = [NAN if i in nans else 1e9 for i in range(20)]

    def scrape(i: int) -> str:
        shown = "NaN" if math.isnan(stamps[i]) else repr(stamps[i])
        return (loop(api=(0.075 * i, 15.0 * i)) + workers(api=(0.01, None))
                + f'aiwatch_event_loop_last_sample_timestamp_seconds{{service="api"}} {shown}\n')

    [row] = fed_every(20, scrape).loop_stalls(300.0)
    assert row.worker_stuck is stuck and not row.stuck
    src = PrometheusSource("http://127.0.0.1:9")
    sent = _sent_queries(src, monkeypatch)
    src.loop_stalls(300.0)
    [unchanged] = [promql for promql in sent if "changes(" in promql]
    where = 'job="api", instance="10.0.0.1:8000", service="api"'
    series = [{"series": f"aiwatch_event_loop_last_sample_timestamp_seconds{{{where}}}",
               "values": " ".join("NaN" if math.isnan(v) else repr(v) for v in stamps)},
              {"series": 'up{job="api", instance="10.0.0.1:8000"}', "values": "1x19"}]
    expected = [{"labels": f"{{{where}}}", "value": 1}] if stuck else []
    # promtool reads the samples up to the last evaluation at or before eval_time: 15 s, to see the latest
    test = {"evaluation_interval": "15s", "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": [
        {"eval_time": "285s", "expr": unchanged, "exp_samples": expected}]}]}
    passes_promtool(promtool, tmp_path / "nan_test.yml", test)


def test_the_snapshots_share_one_set_of_nan_slots_while_it_stays_the_same() -> None:
    """The slots exported as NaN are kept per snapshot for :func:`_changes`; a new set a scrape would double the
    history of an endpoint with many NaN gauges (300 of 1000: 17 KiB a snapshot instead of 8.7). Scrapes with the
    same NaN series share the previous set object; a scrape with others gets its own, and the reads see it."""
    src = ScrapeSource([URL], interval=15, history=3600, start=False)

    def text(nan: range) -> str:
        return "# TYPE aiwatch_queue_depth gauge\n" + "".join(
            f'aiwatch_queue_depth{{queue="{k}"}} {"NaN" if k in nan else k}\n' for k in range(10))

    for i, nan in enumerate([range(3)] * 4 + [range(4)] * 3 + [range(0)] * 2):
        src.record(URL, text(nan), ts=15.0 * i)
    [(_, snaps)] = src._copy()
    sets = [snap.nans for snap in snaps]
    assert len({id(nans) for nans in sets}) == 3
    assert sets[:4] == [frozenset(range(3))] * 4 and sets[4:7] == [frozenset(range(4))] * 3
    assert sets[7:] == [frozenset()] * 2
    shown = [len(list(snap.series("aiwatch_queue_depth", nan=True))) - len(list(snap.series("aiwatch_queue_depth")))
             for snap in snaps]
    assert shown == [3] * 4 + [4] * 3 + [0] * 2


def test_the_prometheus_source_reads_a_stuck_worker_over_the_alerts_range_whatever_the_window(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The query the Prometheus source sends for an hour's window, on promtool, against 70 minutes of a replica whose
    stalest worker's stamp stood still over the last 10 minutes (what fires AiwatchEventLoopDelayHigh): the replica
    is listed. Read over the hour (``[1h]``), the stamp changed in it and it was not."""
    from aiwatch.console import PrometheusSource

    promtool = require_binary("promtool")
    src = PrometheusSource("http://127.0.0.1:9")
    sent = _sent_queries(src, monkeypatch)
    assert src.loop_stalls(3600.0) == []
    [unchanged] = [promql for promql in sent if "changes(" in promql]
    assert unchanged == src.q.loop_sample_unchanged("2m")
    where = 'job="api", instance="10.0.0.1:8000", service="rec"'
    series = [{"series": f"aiwatch_event_loop_last_sample_timestamp_seconds{{{where}}}",
               "values": "1000000000+15x200 1000003000x80"},
              {"series": 'up{job="api", instance="10.0.0.1:8000"}', "values": "1x280"}]
    test = {"evaluation_interval": "1m", "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": [
        {"eval_time": "70m", "expr": unchanged, "exp_samples": [{"labels": f"{{{where}}}", "value": 1}]}]}]}
    passes_promtool(promtool, tmp_path / "stuck_test.yml", test)


def test_latency_view_says_nothing_of_the_worst_worker_where_no_replica_has_the_gauges(
        console_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """An aiwatch older than the gauges: the caption is the mean share's alone, with no word of a worst worker's
    column or of one stuck worker the table cannot show."""
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", "30")
    src = fed((URL, loop(api=(1.0, 10.0))), (URL, loop(api=(1.5, 12.0))), (URL, loop(api=(2.0, 14.0))))
    at = run_view(src, "Latency")
    caption = next(plain(str(c.value)) for c in at.caption if "timers ran late" in plain(str(c.value)))
    assert caption.startswith("The seconds each replica's timers ran late per second its sampler watched the loop")
    assert "worker" not in caption.replace("the mean over the workers", "")


def _sent_queries(src: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The PromQL ``src`` (a PrometheusSource) sends from now on, each answered with no series."""
    sent: list[str] = []

    def query(promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        sent.append(promql)
        return []

    monkeypatch.setattr(src.api, "query", query)
    return sent
