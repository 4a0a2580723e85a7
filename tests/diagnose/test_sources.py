"""diagnose's sources on one recorded history: a real Prometheus serving it (backfilled with promtool), the
console's ScrapeSource fed its scrapes, and two of its snapshots. Each must find the injected cause, and the scrape
source and the snapshots must agree exactly."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiwatch.console.scrape import ScrapeSource, instance_names
from aiwatch.diagnose import (
    READS,
    Contributor,
    DiagnoseError,
    Diagnosis,
    PrometheusWindows,
    diagnose,
    diagnose_windows,
    totals_from_snapshots,
)
from aiwatch.diagnose.sources import prometheus_totals, read_promql, scrape_totals
from aiwatch.metrics import exposed_sample_names
from aiwatch.promapi import PrometheusAPI
from aiwatch.promql import LABEL_NAME
from aiwatch.scrape import parse_metrics
from tests.diagnose.backfill import backfilled_prometheus
from tests.diagnose.traffic import (
    BASELINE,
    INCIDENT,
    INTERVAL,
    LOOP_SAMPLES,
    PER_SCRAPE,
    History,
    Means,
    from_snapshots,
    history,
    restarted_history,
    slower,
)
from tests.servers import require_binary

URL = "http://traffic.test/metrics"


def scrape_source(h: History) -> ScrapeSource:
    src = ScrapeSource([URL], interval=INTERVAL, history=4000, start=False)
    for t, text in h.traffic.scrapes:
        src.record(URL, text, ts=t)
    return src


INJECTIONS = [
    (slower(network=0.2), "network:gateway->inference", 0.2),
    (slower(model=0.1), "model:inference/inference", 0.1),
    (slower(features=0.05), "phase:gateway/features", 0.05),
    (slower(queue=0.08), "queue:inference", 0.08),
]


def deltas(contributors: list[Contributor]) -> dict[str, float]:
    return {f"{c.part}": c.delta_seconds for c in contributors}


# --- snapshots and the embedded scrape source ---------------------------------------------------------------------


@pytest.mark.parametrize(("injected", "cause", "added"), INJECTIONS)
def test_snapshots_find_the_injected_part(injected: Means, cause: str, added: float) -> None:
    d = from_snapshots(history(injected))
    assert d.cause == cause
    # each draw is uniform in [0.5, 1.5] x mean: 600 requests per window keep the sample means within a few percent
    assert d.moved[0].delta_seconds == pytest.approx(added, rel=0.1)
    assert d.incident.mean_seconds is not None and d.baseline.mean_seconds is not None
    assert sum(c.delta_seconds for c in d.contributors) == pytest.approx(
        d.incident.mean_seconds - d.baseline.mean_seconds, rel=1e-9)


@pytest.mark.parametrize(("injected", "cause", "added"), INJECTIONS)
def test_the_scrape_source_gives_the_snapshots_answer(injected: Means, cause: str, added: float) -> None:
    h = history(injected)
    src = scrape_source(h)
    d = diagnose(src, "gateway", incident=INCIDENT, baseline=BASELINE, at=h.incident_end)
    expected = from_snapshots(h)
    assert d.cause == cause == expected.cause
    assert deltas(d.contributors) == pytest.approx(deltas(expected.contributors), abs=1e-12)
    assert d.tail is not None and expected.tail is not None
    assert deltas(d.tail.contributors) == pytest.approx(deltas(expected.tail.contributors), abs=1e-12)
    assert d.incident.requests == expected.incident.requests == 600


def test_the_scrape_source_handles_resets_and_series_born_in_the_window() -> None:
    src = ScrapeSource([URL], interval=1, history=100, start=False)
    # an aiwatch_ name: the scrape source keeps only aiwatch's series
    texts = ["", 'aiwatch_x_total{a="1"} 5\n', 'aiwatch_x_total{a="1"} 10\naiwatch_x_total{a="2"} 3\n',
             'aiwatch_x_total{a="1"} 2\naiwatch_x_total{a="2"} 4\n',
             'aiwatch_x_total{a="1"} 4\naiwatch_x_total{a="2"} 6\n']
    for t, body in enumerate(texts):
        src.record(URL, "# TYPE aiwatch_x_total counter\n" + body, ts=float(t))
    grown = {s[0]["a"]: s[1] for s in src.increase("aiwatch_x_total", 0.0, 4.0)}
    # a=1: 0 -> 5 (born after the scrape at the window's start) -> 10 -> 2 (reset: +2) -> 4; a=2: 0 -> 3 -> 4 -> 6
    assert grown == {"1": 5 + 5 + 2 + 2, "2": 6}
    # a window starting before the history starts at its first scrape (t=0): a series it lacked was created since and
    # counts from 0, as in an anchored window (it used to count from its first value: a=1 5, a=2 0)
    assert src.covered_from(-10.0, 2.0) == 0.0
    assert {s[0]["a"]: s[1] for s in src.increase("aiwatch_x_total", -10.0, 2.0)} == {"1": 10, "2": 3}
    # a series present in the window's first scrape has that value as its base
    assert {s[0]["a"]: s[1] for s in src.increase("aiwatch_x_total", 1.0, 2.0)} == {"1": 5, "2": 3}
    assert {s[0]["a"]: s[1] for s in src.increase("aiwatch_x_total", 2.0, 3.0)} == {"1": 2, "2": 1}


def test_the_scrape_source_resets_a_histograms_sum_with_its_count() -> None:
    # a restart between the scrapes at 1 and 2: the histogram's _count falls (100 -> 5), its _sum does not (10 s ->
    # 12 s: 5 slow requests since the restart). The three series of one histogram child restart together
    src = ScrapeSource([URL], interval=1, history=100, start=False)
    for t, (count, total, fast) in enumerate([(90, 9.0, 90), (100, 10.0, 100), (5, 12.0, 0), (6, 14.0, 0)]):
        src.record(URL, "# TYPE aiwatch_h histogram\n"
                        f'aiwatch_h_bucket{{s="a",le="0.5"}} {fast}\naiwatch_h_bucket{{s="a",le="+Inf"}} {count}\n'
                        f'aiwatch_h_sum{{s="a"}} {total}\naiwatch_h_count{{s="a"}} {count}\n', ts=float(t))
    assert src.increase("aiwatch_h_count", 1.0, 3.0)[0][1] == 6
    assert src.increase("aiwatch_h_sum", 1.0, 3.0)[0][1] == 14.0
    assert src.increase("aiwatch_h_sum", 0.0, 1.0)[0][1] == 1.0
    assert {s[0]["le"]: s[1] for s in src.increase("aiwatch_h_bucket", 1.0, 3.0)} == {"0.5": 0.0, "+Inf": 6.0}


def test_the_scrape_source_averages_and_maxes_gauges_over_the_window() -> None:
    src = ScrapeSource([URL], interval=1, history=100, start=False)
    for t, value in enumerate([1.0, 3.0, 8.0, 2.0]):
        src.record(URL, f'# TYPE aiwatch_g gauge\naiwatch_g{{q="a"}} {value}\n', ts=float(t))
    assert src.over_time("aiwatch_g", 1.0, 3.0, "avg")[0][1] == pytest.approx((3 + 8 + 2) / 3)
    assert src.over_time("aiwatch_g", 0.0, 1.0, "max")[0][1] == 3.0
    with pytest.raises(ValueError, match="'avg', 'max', 'last' or 'gone'"):
        src.over_time("aiwatch_g", 0.0, 1.0, "min")


def test_the_scrape_source_reads_a_gauges_latest_value_in_the_window() -> None:
    """``last`` (the worst worker's 5-minute share at the window's end): the value of the window's latest good
    scrape, not its largest."""
    src = ScrapeSource([URL], interval=1, history=100, start=False)
    for t, value in enumerate([1.0, 8.0, 3.0, 2.0]):
        src.record(URL, f'# TYPE aiwatch_g gauge\naiwatch_g{{q="a"}} {value}\n', ts=float(t))
    src.record(URL, None, ts=4.0, error="connection refused")
    assert src.over_time("aiwatch_g", 0.0, 2.0, "last")[0][1] == 3.0
    assert src.over_time("aiwatch_g", 0.0, 4.0, "last")[0][1] == 2.0  # the failed scrape at 4 holds no value


def test_the_worst_workers_share_is_read_at_the_windows_end_by_every_source(tmp_path: Path) -> None:
    """``aiwatch_event_loop_stalled_ratio`` per service and replica, its value at the window's end: from two
    snapshots (the one at the end), from the scrape source's history (the latest good scrape) and from Prometheus
    (``last_over_time``, checked on promtool), the largest of a replica's series; the window's peak (0.9) is not
    it."""
    read = next(r for r in READS if r.key == "loop_worst_share")
    assert read.metric == "aiwatch_event_loop_stalled_ratio" and read.kind == "last"
    before = parse_metrics('aiwatch_event_loop_stalled_ratio{service="inference"} 0.7\n')
    after = parse_metrics('aiwatch_event_loop_stalled_ratio{service="inference"} 0.6\n')
    w = totals_from_snapshots(before, after, 0.0, 60.0)
    assert w.of("loop_worst_share") == {("inference", "", ""): 0.6}
    # two workers' series of one replica, a scrape a minute: worker 1 peaks at 0.9, ends at 0.6
    src = ScrapeSource([URL], interval=60, history=1000, start=False)
    for i, (one, two) in enumerate([(0.1, 0.2), (0.9, 0.2), (0.6, 0.2), (0.6, 0.2), (0.6, 0.2)]):
        src.record(URL, "# TYPE aiwatch_event_loop_stalled_ratio gauge\n"
                        f'aiwatch_event_loop_stalled_ratio{{service="inference", worker="1"}} {one}\n'
                        f'aiwatch_event_loop_stalled_ratio{{service="inference", worker="2"}} {two}\n', ts=60.0 * i)
    src.record(URL, None, ts=270.0, error="connection refused")  # a failed scrape holds no value
    assert scrape_totals(src, 0.0, 280.0).of("loop_worst_share") == {("inference", "", "traffic.test"): 0.6}
    promtool = require_binary("promtool")
    where = 'job="j", instance="i", service="inference"'
    test = {"evaluation_interval": "1m", "tests": [{"interval": "1m", "input_series": [
        {"series": f'aiwatch_event_loop_stalled_ratio{{{where}, worker="1"}}', "values": "0.1 0.9 0.6 0.6 0.6"},
        {"series": f'aiwatch_event_loop_stalled_ratio{{{where}, worker="2"}}', "values": "0.2 0.2 0.2 0.2 0.2"}],
        "promql_expr_test": [{"eval_time": "4m", "expr": read_promql(read, 300),
                              "exp_samples": [{"labels": '{service="inference", job="j", instance="i"}',
                                               "value": 0.6}]}]}]}
    path = tmp_path / "worst_test.yml"
    path.write_text(yaml.safe_dump(test))
    proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_window_starting_before_the_scrape_history_starts_at_its_first_scrape() -> None:
    src = ScrapeSource([URL], interval=10, history=1000, start=False)
    for i in range(7):  # scrapes at 100, 110, ... 160 s: 10 more requests each
        src.record(URL, f'aiwatch_request_duration_seconds_count{{service="a"}} {10.0 * i}\n', ts=100.0 + 10 * i)
    w = scrape_totals(src, 0.0, 160.0)
    assert (w.start, w.end) == (100.0, 160.0)
    assert w.total("requests", "a") == 60.0 and w.rate("requests", "a") == 1.0
    assert scrape_totals(src, 120.0, 160.0).rate("requests", "a") == 1.0


def test_the_scrape_source_counts_rates_over_the_scrapes_it_counts_between() -> None:
    # scrapes every 5 s of a service serving 2 requests a second: a window [192, 193] counts the 10 requests
    # between the scrapes at 190 and 195 (at or before each edge), so its rate is per second of those 5 s, not of
    # the 3 s asked (3.3/s: 'x1.7 load' at an unchanged load)
    src = ScrapeSource([URL], interval=5, history=1000, start=False)
    for i in range(20):  # scrapes at 100, 105, ... 195 s
        src.record(URL, f'aiwatch_request_duration_seconds_count{{service="a"}} {10.0 * i}\n', ts=100.0 + 5 * i)
    for start, end in ((192.0, 195.0), (152.0, 193.0), (150.0, 195.0), (0.0, 195.0)):
        w = scrape_totals(src, start, end)
        assert w.rate("requests", "a") == pytest.approx(2.0), (start, end)
        assert w.total("requests", "a") == 2.0 * w.seconds
    # a window between two scrapes holds no increase: said so, not taken for a window without requests
    with pytest.raises(DiagnoseError, match=r"fewer than two good scrapes .*every 5 s.*longer than the scrape"):
        scrape_totals(src, 191.0, 194.0)


def test_a_window_outside_the_scrape_history_is_a_clear_error() -> None:
    h = history(Means())
    with pytest.raises(DiagnoseError, match="the embedded scraper has no good scrape between"):
        diagnose(scrape_source(h), "gateway", incident=60, baseline=60, at=h.start - 3600)


def test_snapshots_count_resets_and_new_series_from_zero_and_keep_error_statuses() -> None:
    name = "aiwatch_request_duration_seconds_count"
    before = {name: {(("service", "a"), ("status", "200")): 100.0, (("service", "a"), ("status", "500")): 9.0},
              "aiwatch_queue_depth": {(("queue", "q"),): 4.0}}
    after = {name: {(("service", "a"), ("status", "200")): 30.0, (("service", "a"), ("status", "500")): 10.0,
                    (("service", "a"), ("status", "UNAVAILABLE")): 2.0},
             "aiwatch_queue_depth": {(("queue", "q"),): 8.0}}
    w = totals_from_snapshots(before, after, 0.0, 60.0)
    assert w.of("requests") == {("a",): 30.0 + 1.0 + 2.0}  # 100 -> 30 is a restart: 30 new requests
    assert w.of("errors") == {("a",): 1.0 + 2.0}
    assert w.of("queue_depth") == {("q",): 6.0}
    with pytest.raises(ValueError, match="must end after it starts"):
        totals_from_snapshots(before, after, 60.0, 60.0)


def test_snapshots_read_a_state_gauge_at_the_window_end_not_what_the_window_before_left() -> None:
    name = "aiwatch_drift_detected"
    basket, age = (("feature", "basket_value"), ("model", "m")), (("feature", "age"), ("model", "m"))
    gone = (("feature", "gone"), ("model", "m"))
    before = {name: {basket: 1.0, age: 0.0, gone: 1.0}}  # the sale left basket_value drifted
    after = {name: {basket: 0.0, age: 1.0}}  # by the recovery's end it is back; age drifted meanwhile
    w = totals_from_snapshots(before, after, 60.0, 120.0)
    assert w.of("drift_detected") == {("m", "basket_value"): 0.0, ("m", "age"): 1.0, ("m", "gone"): 1.0}


def test_a_replica_gone_in_the_window_has_its_last_worst_share_and_how_long_before_the_end_by_every_source(
        tmp_path: Path) -> None:
    """Replica a exports aiwatch_event_loop_stalled_ratio 0.1 a minute to the window's end (10 minutes); b, 0.8,
    until 4 minutes in, then its scrapes fail (it vanished). Every source reads b's share as its last value (0.8)
    and how long before the end it was (the ``gone`` read, 0 for a replica present at the end): Prometheus
    (``last_over_time`` and the ``gone`` query, on promtool, b marked stale at its failed scrape) 360 s, the scrape
    source's history 360 s, and two snapshots, where b is only in the one at the start, 600 s. Diagnose reads the
    worst worker's share 0.8 with that age (:func:`worst_worker_share`)."""
    from aiwatch.diagnose.loops import worst_worker_share

    last = next(r for r in READS if r.key == "loop_worst_share")
    gone = next(r for r in READS if r.key == "loop_worst_share_gone")
    assert gone.metric == last.metric and gone.by == last.by and gone.kind == "gone"
    text = '# TYPE aiwatch_event_loop_stalled_ratio gauge\naiwatch_event_loop_stalled_ratio{{service="inference"}} {}\n'
    other = "http://other.test/metrics"
    src = ScrapeSource([URL, other], interval=60, history=1000, start=False)
    for i in range(11):
        src.record(URL, text.format(0.1), ts=60.0 * i)
        src.record(other, text.format(0.8) if i <= 4 else None, ts=60.0 * i, error="connection refused")
    names = instance_names([URL, other])
    a, b = ("inference", "", names[URL]), ("inference", "", names[other])
    w = scrape_totals(src, 0.0, 600.0)
    assert w.of("loop_worst_share") == {a: 0.1, b: 0.8}
    assert w.of("loop_worst_share_gone") == {a: 0.0, b: 360.0}
    assert worst_worker_share(w, "inference") == (0.8, 360.0)
    a_text = 'aiwatch_event_loop_stalled_ratio{service="inference", instance="a"} 0.1\n'
    before = parse_metrics(a_text + 'aiwatch_event_loop_stalled_ratio{service="inference", instance="b"} 0.8\n')
    after = parse_metrics(a_text)
    w = totals_from_snapshots(before, after, 0.0, 600.0)
    assert w.of("loop_worst_share") == {("inference", "", "a"): 0.1, ("inference", "", "b"): 0.8}
    assert w.of("loop_worst_share_gone") == {("inference", "", "a"): 0.0, ("inference", "", "b"): 600.0}
    assert worst_worker_share(w, "inference") == (0.8, 600.0)
    # a present replica with the same share is the one read: no age
    assert worst_worker_share(totals_from_snapshots(before, before, 0.0, 600.0), "inference") == (0.8, None)
    promtool = require_binary("promtool")
    where = 'job="j", service="inference"'
    test = {"evaluation_interval": "1m", "tests": [{"interval": "1m", "input_series": [
        {"series": f'aiwatch_event_loop_stalled_ratio{{{where}, instance="a"}}', "values": "0.1x10"},
        {"series": f'aiwatch_event_loop_stalled_ratio{{{where}, instance="b"}}', "values": "0.8x4 stale"}],
        "promql_expr_test": [
            {"eval_time": "10m", "expr": read_promql(last, 600),
             "exp_samples": [{"labels": f'{{{where}, instance="a"}}', "value": 0.1},
                             {"labels": f'{{{where}, instance="b"}}', "value": 0.8}]},
            {"eval_time": "10m", "expr": read_promql(gone, 600),
             "exp_samples": [{"labels": f'{{{where}, instance="a"}}', "value": 0},
                             {"labels": f'{{{where}, instance="b"}}', "value": 360}]}]}]}
    path = tmp_path / "gone_test.yml"
    path.write_text(yaml.safe_dump(test))
    proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_prometheus_gone_read_leaves_out_a_replica_last_seen_before_a_short_window(tmp_path: Path) -> None:
    """The ``gone`` query's subquery steps each look back Prometheus' 5 minutes, past the start of a shorter window:
    a replica last seen before the window (c, 405 s before its end) must be left out, as ``last_over_time`` leaves
    its share out, not read as gone 405 s before the end of a 2-minute window. In a 10-minute window it is read.
    On promtool, 15 s scrapes to 1 h: a present, b gone 60 s before the end (marked stale), c 405 s before it with
    no stale marker (Prometheus was down when it went): a step's lookback finds only such a sample."""
    last = next(r for r in READS if r.key == "loop_worst_share")
    gone = next(r for r in READS if r.key == "loop_worst_share_gone")
    promtool = require_binary("promtool")
    where = 'job="j", service="inference"'

    def labels(instance: str) -> str:
        return f'{{{where}, instance="{instance}"}}'

    series = [{"series": f"aiwatch_event_loop_stalled_ratio{labels(name)}", "values": values}
              for name, values in (("a", "0.1x240"), ("b", "0.8x236 stale"), ("c", "0.7x213"))]
    tests = [
        {"eval_time": "60m", "expr": read_promql(last, 120),
         "exp_samples": [{"labels": labels("a"), "value": 0.1}, {"labels": labels("b"), "value": 0.8}]},
        {"eval_time": "60m", "expr": read_promql(gone, 120),
         "exp_samples": [{"labels": labels("a"), "value": 0}, {"labels": labels("b"), "value": 60}]},
        {"eval_time": "60m", "expr": read_promql(gone, 600),
         "exp_samples": [{"labels": labels("a"), "value": 0}, {"labels": labels("b"), "value": 60},
                         {"labels": labels("c"), "value": 405}]}]
    test = {"evaluation_interval": "15s",
            "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": tests}]}
    # a replica last seen early in a long window, no subquery step between its last sample and its stale marker:
    # 3 h of 15 s scrapes, a window of 7180 s from 3620 s (step 29 s), b's last sample at 3630 s and the step at
    # 3625 s finding 3615 s's, before the window: b was left out (read as present) where `last` reads its share
    tests_long = [{"eval_time": "3h", "expr": read_promql(gone, 7180),
                   "exp_samples": [{"labels": labels("a"), "value": 0}, {"labels": labels("b"), "value": 7180}]}]
    series_long = [{"series": f"aiwatch_event_loop_stalled_ratio{labels(name)}", "values": values}
                   for name, values in (("a", "0.1x720"), ("b", "0.9x242 stale"))]
    test["tests"].append({"interval": "15s", "input_series": series_long, "promql_expr_test": tests_long})
    path = tmp_path / "gone_short_test.yml"
    path.write_text(yaml.safe_dump(test))
    proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_snapshots_and_the_scrape_source_read_the_loops_delay_and_the_network_calls() -> None:
    h = history(slower(inference_loop=0.1))
    s = h.traffic.samples
    expected = totals_from_snapshots(s(h.incident_start), s(h.incident_end), h.incident_start, h.incident_end)
    got = scrape_source(h).window_totals(h.incident_start, h.incident_end)
    scrapes = round(INCIDENT / INTERVAL)
    for w in (expected, got):
        samples = {key[0]: n for key, n in w.of("loop_delay_buckets").items() if key[-1] == "+Inf"}
        assert samples == {"gateway": scrapes * LOOP_SAMPLES, "inference": scrapes * LOOP_SAMPLES}
        mean = w.total("loop_delay_seconds", "inference") / samples["inference"]
        assert mean == pytest.approx(0.1005, rel=0.1)  # each sample uniform in [0.5, 1.5] x the mean
        assert w.of("network_calls") == {("gateway", "inference", "inference_call"): scrapes * PER_SCRAPE}
    # per replica: the scrape source names its endpoint's instance, these snapshots have none
    instance = instance_names([URL])[URL]
    for key in ("loop_delay_seconds", "loop_delay_buckets"):
        assert got.of(key) == pytest.approx({(k[0], "", instance, *k[3:]): v for k, v in expected.of(key).items()},
                                            rel=1e-12)


def test_every_read_names_a_sample_of_the_contract_and_a_valid_query() -> None:
    samples = exposed_sample_names()
    for read in READS:
        assert read.metric in samples, read
        assert all(LABEL_NAME.fullmatch(label) for label in read.by)
        query = read_promql(read, 300)
        if read.kind == "gone":  # a subquery of the latest samples' times over the window
            assert f"timestamp({read.metric})[300s:" in query and query.startswith("(min by")
            continue
        assert f"{read.metric}" in query and "[300s]" in query
        assert query.startswith({"max": "max by", "last": "max by", "mean": "avg by"}.get(read.kind, "sum by"))


# --- a real Prometheus --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_prometheus_finds_the_injected_network_like_the_snapshots(network_history: History,
                                                                  prometheus_url: str) -> None:
    h = network_history
    d = diagnose(PrometheusWindows(prometheus_url), "gateway", incident=INCIDENT, baseline=BASELINE,
                 at=h.incident_end)
    expected = from_snapshots(h)
    assert d.cause == expected.cause == "network:gateway->inference"
    assert "the model's own time is flat" in d.verdict
    assert d.notes == []  # no restart in either window
    # Prometheus' increase() drops the value a series is born with and extrapolates over the baseline's first scrape
    # interval (the series are born after the first scrape): the per-request parts stay within half a millisecond
    got, want = deltas(d.contributors), deltas(expected.contributors)
    assert set(got) == set(want)
    for part, value in want.items():
        assert got[part] == pytest.approx(value, abs=5e-4), part
    assert d.incident.requests == pytest.approx(600, rel=0.01)
    assert d.tail is not None and d.tail.contributors[0].part.component == "network"
    signals = {(s.name, tuple(s.labels.values())): s for s in d.signals}
    assert signals[("request rate", ("gateway",))].incident == pytest.approx(PER_SCRAPE / INTERVAL, rel=0.01)
    assert signals[("queue depth", ("predict",))].baseline == pytest.approx(3.0, rel=0.1)


@pytest.mark.slow
def test_prometheus_window_without_traffic_and_unknown_service(network_history: History,
                                                               prometheus_url: str) -> None:
    h, src = network_history, PrometheusWindows(prometheus_url)
    with pytest.raises(DiagnoseError, match="served no requests in the incident window") as info:
        diagnose(src, "gateway", incident=300, baseline=1800, at=h.idle_end)
    assert info.value.exit_code == 4
    with pytest.raises(DiagnoseError, match=r"no requests recorded for service 'nope'.*gateway, inference"):
        diagnose(src, "nope", incident=INCIDENT, baseline=BASELINE, at=h.incident_end)
    with pytest.raises(DiagnoseError, match=r"holds no aiwatch request metrics .* is it instrumented with aiwatch"):
        diagnose(src, None, incident=300, baseline=300, at=h.start - 3600)


@pytest.mark.slow
def test_prometheus_window_shorter_than_two_scrapes_is_named_so(network_history: History,
                                                                prometheus_url: str) -> None:
    # the history is scraped every 30 s: a 20 s window holds one sample of each series, and increase() needs two.
    # The service served 2 requests a second then: "no requests" or "is the target instrumented?" would send the
    # on-call person the wrong way
    h, src = network_history, PrometheusWindows(prometheus_url)
    for baseline in (600, 20):
        with pytest.raises(DiagnoseError, match=r"\(20 s long\) holds at most one sample of each series .* "
                                                r"longer than two scrape intervals") as info:
            diagnose(src, "gateway", incident=20, baseline=baseline, at=h.incident_end)
        assert info.value.exit_code == 4


@pytest.mark.slow
def test_prometheus_baseline_starting_before_the_data_is_the_part_the_data_covers(network_history: History,
                                                                                  prometheus_url: str) -> None:
    # the history holds 1200 s of baseline traffic at 2 requests a second; a 2 h baseline starts 6000 s before the
    # first sample. Its rate is per second of the part with data, as the scrape source's, so the load is unchanged
    h = network_history
    d = diagnose(PrometheusWindows(prometheus_url), "gateway", incident=INCIDENT, baseline=7200, at=h.incident_end)
    assert h.start <= d.baseline.start <= h.start + 2 * INTERVAL
    assert d.baseline.end == d.incident.start == h.incident_start
    assert d.baseline.rate == pytest.approx(PER_SCRAPE / INTERVAL, rel=0.05)
    assert " at x1.0 load" in d.verdict
    # a baseline inside the data is the window asked for
    d = diagnose(PrometheusWindows(prometheus_url), "gateway", incident=INCIDENT, baseline=600, at=h.incident_end)
    assert d.baseline.start == h.incident_start - 600


def test_prometheus_windows_of_no_length_are_refused() -> None:
    src = PrometheusWindows("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="windows must be positive"):
        diagnose(src, incident=0)


def test_snapshots_reset_a_histograms_sum_with_its_count() -> None:
    # the service restarted between the snapshots and served 600 requests of 100 ms since: its _count went down
    # (1000 -> 600), its _sum did not (50 s -> 60 s). The three series of one histogram child are reset together,
    # so the window holds 600 requests and 60 s, not 600 requests and 10 s (a mean of 17 ms)
    gw, phase = (("service", "gw"),), (("phase", "inference"), ("service", "gw"))

    def snapshot(requests: float, seconds: float, fast: float) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        return {"aiwatch_request_duration_seconds_count": {gw: requests},
                "aiwatch_request_duration_seconds_sum": {gw: seconds},
                "aiwatch_request_duration_seconds_bucket": {(("le", "0.05"), *gw): fast,
                                                            (("le", "+Inf"), *gw): requests},
                "aiwatch_phase_duration_seconds_count": {phase: requests},
                "aiwatch_phase_duration_seconds_sum": {phase: seconds}}

    w = totals_from_snapshots(snapshot(1000, 50.0, 990), snapshot(600, 60.0, 0), 0.0, 60.0)
    assert w.total("requests", "gw") == 600
    assert w.total("request_seconds", "gw") == 60.0
    assert w.of("phase_seconds") == {("gw", "inference"): 60.0}
    assert w.of("request_buckets") == {("gw", "0.05"): 0.0, ("gw", "+Inf"): 600.0}


def test_snapshots_leave_out_a_series_whose_increase_is_not_finite_as_prometheus_answers_do() -> None:
    # two replicas of gw; in the incident window one exports a _sum that became +Inf (an exporter that is not
    # aiwatch's): before, the window's request time was infinite, every mean NaN, and `--json` printed NaN, which is
    # no JSON
    def snapshot(requests: float, seconds_a: float, seconds_b: float) -> dict[str, dict[Any, float]]:
        a, b = (("instance", "a"), ("service", "gw")), (("instance", "b"), ("service", "gw"))
        return {"aiwatch_request_duration_seconds_count": {a: requests, b: requests},
                "aiwatch_request_duration_seconds_sum": {a: seconds_a, b: seconds_b}}

    baseline = totals_from_snapshots(snapshot(0, 0.0, 0.0), snapshot(100, 5.0, 5.0), 0.0, 60.0)
    incident = totals_from_snapshots(snapshot(100, 5.0, 5.0), snapshot(200, 15.0, float("inf")), 60.0, 120.0)
    assert incident.total("request_seconds", "gw") == 10.0  # replica a's increase only
    report = diagnose_windows(baseline, incident, "gw")
    json.dumps(report.to_dict(), allow_nan=False)  # raises on NaN or infinity


def loop_scrape(samples: float, late: float, watched: float) -> str:
    """One /metrics answer of a loop sampler: ``samples`` prompt samples (under 1 ms) adding up to ``late`` seconds
    and ``watched`` seconds."""
    return ("# TYPE aiwatch_event_loop_delay_seconds histogram\n"
            f'aiwatch_event_loop_delay_seconds_bucket{{service="a",le="0.001"}} {samples}\n'
            f'aiwatch_event_loop_delay_seconds_bucket{{service="a",le="+Inf"}} {samples}\n'
            f'aiwatch_event_loop_delay_seconds_sum{{service="a"}} {late}\n'
            f'aiwatch_event_loop_delay_seconds_count{{service="a"}} {samples}\n'
            "# TYPE aiwatch_event_loop_sampled_seconds_total counter\n"
            f'aiwatch_event_loop_sampled_seconds_total{{service="a"}} {watched}\n')


def test_snapshots_reset_the_loops_watched_time_with_its_delay_histogram() -> None:
    # the old process had sampled 5000 times in 500 s; the restarted one 1000 times in 600 s by the second snapshot
    # (its samples' _count went down, its watched time did not): the window holds 1000 samples and 600 s, not 1000
    # samples and 100 s (an estimate 6x too high)
    a = (("service", "a"),)

    def snapshot(samples: float, watched: float) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        return {"aiwatch_event_loop_delay_seconds_bucket": {(("le", "0.001"), *a): samples,
                                                            (("le", "+Inf"), *a): samples},
                "aiwatch_event_loop_delay_seconds_sum": {a: samples * 0.0005},
                "aiwatch_event_loop_delay_seconds_count": {a: samples},
                "aiwatch_event_loop_sampled_seconds_total": {a: watched}}

    w = totals_from_snapshots(snapshot(5000, 500.0), snapshot(1000, 600.0), 0.0, 600.0)
    assert w.of("loop_delay_buckets") == {("a", "", "", "0.001"): 1000.0, ("a", "", "", "+Inf"): 1000.0}
    assert w.total("loop_sampled_seconds", "a") == 600.0
    # and the other way: the watched time went down (a process restarted on a slower sampler), the histogram did not
    w = totals_from_snapshots(snapshot(1000, 600.0), snapshot(1200, 120.0), 0.0, 600.0)
    assert w.total("loop_delay_seconds", "a") == pytest.approx(1200 * 0.0005)
    assert w.of("loop_delay_buckets") == {("a", "", "", "0.001"): 1200.0, ("a", "", "", "+Inf"): 1200.0}
    assert w.total("loop_sampled_seconds", "a") == 120.0


def test_the_scrape_source_resets_the_loops_watched_time_with_its_delay_histogram() -> None:
    # a restart between the scrapes at 1 and 2: the samples' count falls (5000 -> 1000), the watched time does not
    # (500 s -> 600 s); and between 2 and 3 the watched time falls (600 s -> 60 s), the count does not (1000 -> 1100)
    src = ScrapeSource([URL], interval=1, history=100, start=False)
    for t, (samples, watched) in enumerate([(4000, 400.0), (5000, 500.0), (1000, 600.0), (1100, 60.0)]):
        src.record(URL, loop_scrape(samples, samples * 0.0005, watched), ts=float(t))
    assert src.increase("aiwatch_event_loop_sampled_seconds_total", 1.0, 2.0)[0][1] == 600.0
    assert src.increase("aiwatch_event_loop_delay_seconds_count", 1.0, 2.0)[0][1] == 1000.0
    assert src.increase("aiwatch_event_loop_sampled_seconds_total", 2.0, 3.0)[0][1] == 60.0
    assert src.increase("aiwatch_event_loop_delay_seconds_count", 2.0, 3.0)[0][1] == 1100.0
    assert src.increase("aiwatch_event_loop_sampled_seconds_total", 0.0, 1.0)[0][1] == 100.0


def test_a_restart_between_the_windows_is_seen_by_the_snapshots_and_the_scrape_source() -> None:
    # the services restart as the incident starts: their counters fall from the baseline's totals to 0, then count
    # the incident's 600 requests of ~245 ms. The request histogram's _sum ends above where the baseline left it
    # (147 s > 108 s) and the network's _sum is above it after the first scrape (12.3 s > 12 s) while their _count
    # fell (600 < 2400, 60 < 2400): both sources must still count the incident whole. (Prometheus' increase() sees
    # each series alone and cannot: docs/diagnose.md.)
    h = restarted_history(slower(network=0.2))
    snapshots = from_snapshots(h)
    scraped = diagnose(scrape_source(h), "gateway", incident=INCIDENT, baseline=BASELINE, at=h.incident_end)
    for d in (snapshots, scraped):
        assert d.incident.requests == 600
        assert d.incident.mean_seconds == pytest.approx(0.245, rel=0.05)
        assert d.cause == "network:gateway->inference"
        assert d.moved[0].delta_seconds == pytest.approx(0.2, rel=0.1)
        assert [c.part for c in d.moved] == [d.moved[0].part]  # the model did not move
    assert deltas(scraped.contributors) == pytest.approx(deltas(snapshots.contributors), abs=1e-12)


@pytest.mark.slow
def test_prometheus_notes_a_restart_in_the_window_that_holds_it() -> None:
    # Prometheus' increase() resets each series alone: the restart as the incident starts undercounts the network's
    # _sum (docs/diagnose.md). The source counts the resets of the request counts in each window, one query more, and
    # the diagnosis says so for the incident window only: the baseline ends at the last scrape before the restart
    h = restarted_history(slower(network=0.2))
    with backfilled_prometheus(h.traffic.openmetrics()) as prom:
        src = PrometheusWindows(prom.url)
        baseline = src.window_totals(h.start, h.incident_start)
        incident = src.window_totals(h.incident_start, h.incident_end)
        d = diagnose(src, "gateway", incident=INCIDENT, baseline=BASELINE, at=h.incident_end)
    assert baseline.resets == {"gateway": 0, "inference": 0}
    assert incident.resets == {"gateway": 1, "inference": 1}  # the request count series of each, one each
    assert d.notes == ["the incident window holds a restart (2 counter resets): parts may be undercounted; compare "
                       "windows without a restart"]
    assert "restart" not in d.verdict


@pytest.mark.slow
def test_prometheus_notes_no_restart_of_a_service_outside_the_diagnosed_graph() -> None:
    # gateway -> inference run through the incident without a restart while two other services the selector also
    # holds (shop -> search) restart as it starts: their resets undercount nothing gateway's diagnosis reads, and
    # the note is left out; the diagnosis of shop still says its window holds a restart
    h = history(slower(network=0.2))
    other = restarted_history(Means(), start=h.start, gateway="shop", inference="search")
    assert other.incident_start == h.incident_start
    with backfilled_prometheus([h.traffic.openmetrics(), other.traffic.openmetrics()]) as prom:
        src = PrometheusWindows(prom.url)
        incident = src.window_totals(h.incident_start, h.incident_end)
        d = diagnose(src, "gateway", incident=INCIDENT, baseline=BASELINE, at=h.incident_end)
        shop = diagnose(src, "shop", incident=INCIDENT, baseline=BASELINE, at=h.incident_end)
    assert incident.resets == {"gateway": 0, "inference": 0, "shop": 1, "search": 1}
    assert d.cause == "network:gateway->inference"
    assert d.notes == []
    assert shop.notes == ["the incident window holds a restart (2 counter resets): parts may be undercounted; "
                          "compare windows without a restart"]


# --- a peer that reports more time than its callers see -----------------------------------------------------------


def _clamped_history() -> History:
    """inference's Server-Timing total 20 ms longer than its own time in the incident window (more than any call's
    network time): every call of the incident has its network time clamped to 0, none of the baseline."""
    return history(replace(Means(), reported_extra=0.02))


CLAMPED_NOTE = ("network gateway -> inference is a lower bound: inference reported more time than gateway saw the "
                "call take in 100% of the calls in the incident window (0% in the baseline; "
                "aiwatch_network_clamped_total)")


def _says_the_network_is_a_lower_bound(d: Diagnosis) -> None:
    (note,) = d.notes
    assert note.startswith(CLAMPED_NOTE)
    # the verdict blames inference's model for the time moved out of the network: it says not to trust that
    assert "of the added time is the model's own time in inference" in d.verdict
    assert d.verdict.endswith("; caution: network gateway -> inference is a lower bound (see the note)")
    # what it warns of: the network part fell to nothing, its time counted as inference's
    network = next(c for c in d.contributors if c.part.component == "network")
    assert network.incident_seconds == 0.0 and network.baseline_seconds == pytest.approx(0.005, rel=0.1)


def _overlap_history() -> History:
    """The gateway's features lookup 24 ms on average in the incident window, all of it beside its call to inference
    (40 ms): the lookup's phase grew, the requests did not, and every request's phases add up to more than it."""
    return history(replace(Means(), features=0.024, overlap=1.0))


def _says_the_phases_overlap(d: Diagnosis) -> None:
    (note,) = d.notes
    assert note.startswith("gateway's phases overlap: in the incident window they add up to ")
    assert "ms more than its mean request (0.0 ms in the baseline), from 100% of its requests (0% in the baseline; " \
        "aiwatch_overhead_clamped_total)" in note
    # what it warns of: the phase that grew is blamed, though the requests got no slower
    assert d.cause == "phase:gateway/features"
    assert d.incident.mean_seconds is not None and d.baseline.mean_seconds is not None
    assert d.incident.mean_seconds < d.baseline.mean_seconds
    assert d.verdict.endswith("; caution: gateway's phases overlap (see the note)")
    # the lookup (12-36 ms) less the gateway's own overhead (0.5-1.5 ms)
    unaccounted = next(c for c in d.contributors if c.part.component == "unaccounted" and c.part.service == "gateway")
    assert unaccounted.incident_seconds == pytest.approx(-0.023, rel=0.1)


def _unanswered_history() -> History:
    """A fifth of gateway's calls to inference time out after 200 ms in the incident window without reaching it:
    no report comes back, so they have no network time."""
    return history(replace(Means(), unanswered=0.2))


def _says_unanswered_calls_make_the_network_a_lower_bound(d: Diagnosis) -> None:
    (note,) = d.notes
    found = re.match(r"network gateway -> inference is a lower bound: (\d+)% of gateway's calls to inference in the "
                     r"incident window \(0% in the baseline\) have no network time", note)
    assert found and 15 <= int(found[1]) <= 25, note
    # what it warns of: the timeouts' time counted as inference's, split into its parts, though inference's own
    # requests did not change
    assert d.cause == "model:inference/inference"
    assert d.verdict.endswith("; caution: network gateway -> inference is a lower bound (see the note)")


def _background_history() -> History:
    """In the incident window, a background job in the gateway's process records a 500 ms phase per gateway
    request, outside any request: the requests do not change."""
    return history(replace(Means(), background=0.5))


def _says_background_phases_are_not_request_time(d: Diagnosis) -> None:
    # before they had their own histogram: "100% of the added time is reindex in gateway (+500 ms); offset by time
    # outside gateway's phases (-500 ms) ...; caution: gateway's phases overlap (see the note)"
    assert d.cause == "none", d.verdict
    assert "reindex" not in d.verdict
    assert not [c for c in d.contributors if c.part.phase == "reindex"]
    assert d.notes == []


#: a history and what its diagnosis must say, for each measure the split cannot take as it is
CAVEATS: list[Any] = [pytest.param(_clamped_history, _says_the_network_is_a_lower_bound, id="network-lower-bound"),
                      pytest.param(_unanswered_history, _says_unanswered_calls_make_the_network_a_lower_bound,
                                   id="unanswered-calls"),
                      pytest.param(_overlap_history, _says_the_phases_overlap, id="phases-overlap"),
                      pytest.param(_background_history, _says_background_phases_are_not_request_time,
                                   id="background-phases")]


@pytest.mark.parametrize(("make", "says"), CAVEATS)
def test_snapshots_and_the_scrape_source_note_what_the_split_cannot_take_as_it_is(
        make: Callable[[], History], says: Callable[[Diagnosis], None]) -> None:
    h = make()
    expected = from_snapshots(h)
    got = diagnose(scrape_source(h), "gateway", incident=INCIDENT, baseline=BASELINE, at=h.incident_end)
    for d in (expected, got):
        says(d)


@pytest.mark.slow
@pytest.mark.parametrize(("make", "says"), CAVEATS)
def test_prometheus_notes_what_the_split_cannot_take_as_it_is(make: Callable[[], History],
                                                              says: Callable[[Diagnosis], None],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    h = make()
    asked: list[str] = []
    query = PrometheusAPI.query

    def counted(self: PrometheusAPI, promql: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(promql)
        return query(self, promql, *args, **kwargs)

    monkeypatch.setattr(PrometheusAPI, "query", counted)
    with backfilled_prometheus(h.traffic.openmetrics()) as prom:
        d = diagnose(PrometheusWindows(prom.url), "gateway", incident=INCIDENT, baseline=BASELINE,
                     at=h.incident_end)
    says(d)
    # Prometheus' now (time(), which --at must not be after), then per window: one query per read, one for where
    # the data begins, one for the resets (docs/diagnose.md)
    assert asked[0] == "time()"
    assert len(asked) == 1 + 2 * (len(READS) + 2) == 65


def test_gpu_utilization_is_the_mean_over_the_hosts_gpus_of_one_index_by_every_source() -> None:
    # GPU 0 of each of four hosts, each 50% busy: the fleet's GPU 0 is 50% busy, not 200% (their shares summed)
    end = int(time.time()) - 60
    stamps = range(end - 600, end + 1, 15)
    lines = ["# TYPE aiwatch_gpu_utilization_ratio gauge"]
    lines += [f'aiwatch_gpu_utilization_ratio{{job="a",instance="r{r}",gpu="0",uuid="GPU-{r}"}} {0.2 + 0.2 * r} {t}'
              for r in range(4) for t in stamps]
    with backfilled_prometheus("\n".join(lines) + "\n# EOF\n") as prom:
        assert prometheus_totals(PrometheusAPI(prom.url), end - 300, end).of("gpu_utilization") == {
            ("0",): pytest.approx(0.5)}
    name = "aiwatch_gpu_utilization_ratio"
    snapshot = {name: {(("gpu", "0"), ("instance", f"r{r}")): 0.2 + 0.2 * r for r in range(4)}}
    assert totals_from_snapshots(snapshot, snapshot, 0.0, 60.0).of("gpu_utilization") == {("0",): pytest.approx(0.5)}
