"""The event loops' share of a network part's rise: windows built by hand, then two real uvicorn services."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, cast

import pytest

from aiwatch.console.scrape import ScrapeSource
from aiwatch.diagnose import PrometheusWindows, diagnose, diagnose_windows, format_diagnosis, totals_from_snapshots
from aiwatch.diagnose.loops import (
    EXPLAINS_SHARE,
    WORST_GONE_FIELD,
    WORST_SHARE_FIELD,
    expected_wait,
    mean_delay,
    stalled_share,
    unwatched_notes,
    wait_estimate,
)
from aiwatch.diagnose.report import Diagnosis
from aiwatch.diagnose.sources import scrape_totals
from aiwatch.diagnose.window import READS, WindowTotals
from aiwatch.metrics import EVENT_LOOP_DELAY_BUCKETS
from aiwatch.promapi import PrometheusAPI
from aiwatch.scrape import Samples, parse_metrics
from tests.diagnose.backfill import backfilled_prometheus
from tests.diagnose.loop_stalls import sampled_patterns
from tests.diagnose.test_sources import scrape_source
from tests.diagnose.traffic import (
    BASELINE,
    INCIDENT,
    History,
    from_snapshots,
    history,
    openmetrics,
    slower,
    stall_wait,
)

MODEL = 0.03
REQUESTS = 100.0
SAMPLES = 100.0  # a minute of the loop sampler at LOOP_INTERVAL
#: the sampler's interval in these windows (AIWATCH_EVENT_LOOP_INTERVAL=0.5): every delay below is shorter, so the
#: estimated wait is the mean delay per sample
LOOP_INTERVAL = 0.5
INF = float("inf")


def loop_reads(delays: Sequence[float] | Mapping[float, float], watched: float | None) -> dict[str, Any]:
    """One loop's answers to the loop reads: the histogram of ``delays`` (each sample's, or ``{delay: samples}``),
    and ``watched`` seconds (``None``: an aiwatch before the watched-time counter)."""
    counts = dict(delays) if isinstance(delays, Mapping) else {d: float(n) for d, n in Counter(delays).items()}
    bounds = (*EVENT_LOOP_DELAY_BUCKETS, INF)
    per_bucket = Counter({le: 0.0 for le in bounds})
    for d, n in counts.items():
        per_bucket[bounds[bisect.bisect_left(bounds, d)]] += n
    buckets = dict(zip((f"{le:g}" if le != INF else "+Inf" for le in bounds),
                       itertools.accumulate(per_bucket[le] for le in bounds), strict=True))
    out: dict[str, Any] = {"sum": sum(d * n for d, n in counts.items()), "buckets": buckets,
                                               "count": buckets["+Inf"]}
    if watched is not None:
        out["watched"] = watched
    return out


def window(start: float, network: float, gateway_delay: float | None = None, inference_delay: float | None = None,
           calls: int = 1, watched: bool = True, loops: Mapping[str, Mapping[str, Any]] | None = None,
           worst: Mapping[tuple[str, ...], float] | None = None,
           gone: Mapping[tuple[str, ...], float] | None = None) -> WindowTotals:
    """A minute of gateway calling inference ``calls`` times per request; ``network`` seconds per call; each loop's
    mean sampled delay (every sample the same, shorter than the interval), or ``None`` for a service without the
    signal; ``watched``: the windows have the watched time (else: an older aiwatch). ``loops``: each service's
    :func:`loop_reads`, instead. ``worst``: ``aiwatch_event_loop_stalled_ratio`` at the window's end per (service,
    job, instance), where the replicas export it; ``gone``: for those gone before the window's end, how many seconds
    before it that value was."""
    n, c = REQUESTS, REQUESTS * calls
    values: dict[str, dict[tuple[str, ...], float]] = {
        "requests": {("gateway",): n, ("inference",): c},
        "request_seconds": {("gateway",): c * (MODEL + network) + n * 0.001, ("inference",): c * MODEL},
        "phase_seconds": {("gateway", "inference_call"): c * (MODEL + network), ("gateway", "overhead"): n * 0.001,
                          ("inference", "inference"): c * MODEL},
        "call_seconds": {("gateway", "inference", "inference_call"): c * (MODEL + network)},
        "network_seconds": {("gateway", "inference", "inference_call"): c * network},
        "network_calls": {("gateway", "inference", "inference_call"): c},
        "loop_delay_seconds": {}, "loop_delay_buckets": {}, "loop_sampled_seconds": {},
        # the samples' count as diagnose read it before the buckets: the same windows diagnosed by the old code
        "loop_delay_samples": {},
    }
    if worst is not None:
        values["loop_worst_share"] = dict(worst)
    if gone is not None:
        values["loop_worst_share_gone"] = dict(gone)
    found = dict(loops or {})
    for service, delay in (("gateway", gateway_delay), ("inference", inference_delay)):
        if delay is not None:
            found[service] = loop_reads({delay: SAMPLES}, SAMPLES * (LOOP_INTERVAL + delay) if watched else None)
    for service, reads in found.items():
        values["loop_delay_seconds"][(service,)] = reads["sum"]
        values["loop_delay_samples"][(service,)] = reads["count"]
        for le, count in reads["buckets"].items():
            values["loop_delay_buckets"][(service, le)] = count
        if "watched" in reads:
            values["loop_sampled_seconds"][(service,)] = reads["watched"]
    return WindowTotals(start, start + 60, values, gone_step=0.0)  # as two snapshots: each sample's own time


def network_row(d: Diagnosis) -> dict[str, object]:
    out = json.loads(json.dumps(d.to_dict()))
    return next(c for c in out["contributors"] if c["component"] == "network")


def test_a_loop_rise_that_explains_the_network_rise_is_said_in_the_verdict_report_and_json() -> None:
    d = diagnose_windows(window(0, 0.002, 0.0005, 0.0005), window(60, 0.182, 0.0005, 0.1705), "gateway")
    assert d.cause == "network:gateway->inference"  # the time stays in the network part
    assert ("network gateway -> inference (+180 ms), of which the event loop delay of inference rose +170 ms "
            "(an estimate): its loop is starved (CPU-bound work on the loop or CPU saturation), not the wire"
            ) in d.verdict
    assert "of which the event loop delay of inference rose +170 ms" in format_diagnosis(d)
    loop = network_row(d)["event_loop"]
    assert loop == {"caller_seconds": pytest.approx(0.0), "peer_seconds": pytest.approx(0.170),
                    "seconds": pytest.approx(0.170), "calls_per_request": pytest.approx(1.0), "explains": True,
                    "mean_delay_only": []}


def test_the_worst_workers_share_at_the_incident_end_is_reported_beside_the_loops_estimate() -> None:
    """Where the replicas export aiwatch_event_loop_stalled_ratio, each side's worst worker's share of the 5 minutes
    to the incident window's end (the incident's, not the baseline's; the largest over a service's replicas) is in
    the JSON under a field that says so, and in the report's event loop line; the estimate is unchanged."""
    baseline = window(0, 0.002, 0.0005, 0.0005, worst={("inference", "j", "a"): 0.9})
    incident = window(60, 0.182, 0.0005, 0.1705, worst={("gateway", "j", "g"): 0.005, ("inference", "j", "a"): 0.1,
                                                        ("inference", "j", "b"): 0.6})
    d = diagnose_windows(baseline, incident, "gateway")
    loop = network_row(d)["event_loop"]
    assert isinstance(loop, dict)
    assert loop[WORST_SHARE_FIELD] == {"gateway": pytest.approx(0.005), "inference": pytest.approx(0.6)}
    assert WORST_SHARE_FIELD == "worst_worker_stalled_share_5m_to_incident_end"
    assert loop["peer_seconds"] == pytest.approx(0.170) and loop["explains"] is True
    assert ("    worst worker's share of the time stood still in the 5 minutes to the incident window's end "
            "(aiwatch_event_loop_stalled_ratio, not the window's share; the figures above are the mean over a "
            "multiprocess target's workers): gateway 0.5%, inference 60.0%") in format_diagnosis(d).splitlines()


def test_a_worst_share_of_a_replica_gone_before_the_incident_end_says_so_and_how_long_before() -> None:
    """inference's replica b vanished 360 s before the incident window's end, its last share 0.6; replica a, present
    at the end, 0.1. The share reported is b's last value, and the report and the JSON say it is the last one seen
    and how long before the end; the gateway's share, of a present replica, is as before. A gone replica whose share
    is not the largest changes nothing."""
    incident = window(60, 0.182, 0.0005, 0.1705, worst={("gateway", "j", "g"): 0.005, ("inference", "j", "a"): 0.1,
                                                        ("inference", "j", "b"): 0.6},
                      gone={("gateway", "j", "g"): 0.0, ("inference", "j", "a"): 0.0, ("inference", "j", "b"): 360.0})
    d = diagnose_windows(window(0, 0.002, 0.0005, 0.0005), incident, "gateway")
    loop = network_row(d)["event_loop"]
    assert isinstance(loop, dict)
    assert loop[WORST_SHARE_FIELD] == {"gateway": pytest.approx(0.005), "inference": pytest.approx(0.6)}
    assert loop[WORST_GONE_FIELD] == {"inference": 360.0}
    assert WORST_GONE_FIELD == "worst_worker_stalled_share_last_seen_seconds_before_incident_end"
    assert ("multiprocess target's workers): gateway 0.5%, inference 60.0% (the last value seen, 360 s before the "
            "incident window's end: its replica was gone by then, and it is of the 5 minutes before that)"
            ) in format_diagnosis(d)
    incident = window(60, 0.182, 0.0005, 0.1705, worst={("inference", "j", "a"): 0.6, ("inference", "j", "b"): 0.1},
                      gone={("inference", "j", "a"): 0.0, ("inference", "j", "b"): 360.0})
    d = diagnose_windows(window(0, 0.002, 0.0005, 0.0005), incident, "gateway")
    loop = network_row(d)["event_loop"]
    assert isinstance(loop, dict) and loop[WORST_SHARE_FIELD] == {"inference": pytest.approx(0.6)}
    assert WORST_GONE_FIELD not in loop and "the last value seen" not in format_diagnosis(d)


class AnsweringPrometheus:
    """Stands for :class:`~aiwatch.promapi.PrometheusAPI`: answers each query that holds one of ``answers``' texts
    with its samples (none otherwise)."""

    def __init__(self, answers: Mapping[str, list[tuple[dict[str, str], float]]]) -> None:
        self.answers = answers

    def query(self, promql: str, time: float | None = None) -> list[tuple[dict[str, str], float]]:
        return next((found for text, found in self.answers.items() if text in promql), [])


def prometheus_incident(seconds: float, *, data_for: float | None = None) -> WindowTotals:
    """The incident window read by :func:`~aiwatch.diagnose.sources.prometheus_totals` over the ``seconds`` to
    1e6 s, from a Prometheus whose request data covers the last ``data_for`` seconds (``None``: the whole
    window), where inference's replica b, last seen 150 s before the end, read 0.6; the rest as :func:`window`'s."""
    from aiwatch.diagnose.sources import prometheus_totals, read_promql
    from aiwatch.promql import DEFAULT_AGGREGATION_LABELS

    end = 1e6
    b = {"service": "inference", "job": "j", "instance": "b"}
    last, gone = (next(r for r in READS if r.key == key) for key in ("loop_worst_share", "loop_worst_share_gone"))
    api = AnsweringPrometheus({
        read_promql(last, seconds, "", DEFAULT_AGGREGATION_LABELS): [(b, 0.6)],
        read_promql(gone, seconds, "", DEFAULT_AGGREGATION_LABELS): [(b, 150.0)],
        "min(min_over_time(timestamp(": [] if data_for is None else [({}, end - data_for)]})
    read = prometheus_totals(cast(PrometheusAPI, api), end - seconds, end)
    built = window(end - seconds, 0.182, 0.0005, 0.1705)
    return dataclasses.replace(read, values={**built.values, **{k: read.of(k) for k in (last.key, gone.key)}})


def gone_line(incident: WindowTotals) -> str:
    """The worst worker's share in the report of ``incident`` (against :func:`window`'s baseline)."""
    d = diagnose_windows(window(0.0, 0.002, 0.0005, 0.0005), incident, "gateway")
    return next(line for line in format_diagnosis(d).splitlines() if "worst worker" in line).split(": ", 1)[1]


def said(when: str) -> str:
    return (f"inference 60.0% (the last value seen, {when} before the incident window's end: its replica was gone by "
            "then, and it is of the 5 minutes before that)")


def test_a_gone_replicas_time_read_from_prometheus_is_about_to_within_its_querys_step() -> None:
    """Prometheus reads when a gone replica was last seen with a subquery step (the window over 250): a step finds
    the last sample before it, up to a step earlier than the replica went (5 s scrapes: a 14 s step can fall two
    scrapes after its last sample). Whatever the scrape interval (diagnose does not ask it), the report says about,
    and the step: a day's window 346 s, an hour's 14 s (before: exact over an hour, assuming 15 s scrapes). The
    JSON has the figure alone."""
    for seconds, step in ((3600.0, 14), (86400.0, 346)):
        incident = prometheus_incident(seconds)
        assert gone_line(incident) == said(f"about 150 s (to within {step} s)")
        assert incident.gone_step == step
        loop = network_row(diagnose_windows(window(0.0, 0.002, 0.0005, 0.0005), incident, "gateway"))["event_loop"]
        assert isinstance(loop, dict) and loop[WORST_GONE_FIELD] == {"inference": 150.0}


def test_a_gone_replicas_time_is_to_within_the_step_prometheus_used_not_the_step_of_the_window_its_data_covers(
        ) -> None:
    """A day's incident window whose request data begins an hour before its end (the service was first scraped
    then): the report's window is that hour (its rates are per second of it), but the ``gone`` query's subquery
    step was the day's, 346 s, not the hour's 14 s: the time is about, to within 346 s (before: said exact, from
    the hour's step)."""
    incident = prometheus_incident(86400.0, data_for=3600.0)
    assert gone_line(incident) == said("about 150 s (to within 346 s)")
    assert incident.seconds == 3600.0 and incident.gone_step == 346.0


def test_a_window_built_without_the_gone_reads_step_says_about_to_within_the_windows_step() -> None:
    """A caller building :class:`WindowTotals` itself, positionally as before ``gone_step`` was a field (its
    ``gone`` times read from Prometheus, say): the step is unknown, so the line says about, to within the window's
    step (an hour's: 14 s, before: exact; a day's: 346 s)."""
    for seconds, step in ((3600.0, 14), (86400.0, 346)):
        short = window(seconds, 0.182, 0.0005, 0.1705, worst={("inference", "j", "b"): 0.6},
                       gone={("inference", "j", "b"): 150.0})
        assert gone_line(WindowTotals(0.0, seconds, short.values)) == said(f"about 150 s (to within {step} s)")


def test_the_scrape_source_and_two_snapshots_say_a_gone_replicas_time_exactly_over_a_long_window() -> None:
    """The console's scrape source and two snapshots have each sample's own time: a gone replica's time is exact
    over any window (before: about, to within the window over 250, over two hours' scrape history and a day
    between snapshots)."""
    text = '# TYPE aiwatch_event_loop_stalled_ratio gauge\naiwatch_event_loop_stalled_ratio{{service="inference"}} {}\n'
    urls = ["http://a.test/metrics", "http://b.test/metrics"]
    src = ScrapeSource(urls, interval=60, history=8000, start=False)
    for i in range(121):  # two hours; b's scrapes fail from 6 minutes before the end on
        src.record(urls[0], text.format(0.1), ts=60.0 * i)
        src.record(urls[1], text.format(0.6) if i <= 114 else None, ts=60.0 * i, error="connection refused")
    snapshot = 'aiwatch_event_loop_stalled_ratio{{service="inference", instance="{}"}} {}\n'
    before = parse_metrics(snapshot.format("a", 0.1) + snapshot.format("b", 0.6))
    for read, seconds in ((scrape_totals(src, 0.0, 7200.0), 360),
                          (totals_from_snapshots(before, parse_metrics(snapshot.format("a", 0.1)), 0.0, 86400.0),
                           86400)):
        built = window(read.start, 0.182, 0.0005, 0.1705)
        keys = ("loop_worst_share", "loop_worst_share_gone")
        incident = dataclasses.replace(read, values={**built.values, **{k: read.of(k) for k in keys}})
        assert gone_line(incident) == said(f"{seconds} s")
        assert read.gone_step == 0.0


def test_a_side_without_the_worst_workers_gauge_is_left_out_and_none_leaves_the_output_as_it_was() -> None:
    # the gateway's replicas export the gauge, the inference's (an older aiwatch) do not; a share that is not a
    # number is none
    d = diagnose_windows(window(0, 0.002, 0.0005, 0.0005),
                         window(60, 0.182, 0.0005, 0.1705, worst={("gateway", "j", "g"): 0.3,
                                                                  ("inference", "j", "a"): float("nan")}), "gateway")
    loop = network_row(d)["event_loop"]
    assert isinstance(loop, dict) and loop[WORST_SHARE_FIELD] == {"gateway": pytest.approx(0.3)}
    assert "gateway 30.0%" in format_diagnosis(d) and "inference 0" not in format_diagnosis(d)
    d = diagnose_windows(window(0, 0.002, 0.0005, 0.0005), window(60, 0.182, 0.0005, 0.1705, worst={}), "gateway")
    loop = network_row(d)["event_loop"]
    assert isinstance(loop, dict) and WORST_SHARE_FIELD not in loop
    assert "worst worker" not in format_diagnosis(d)


def test_a_network_rise_with_flat_loops_gets_no_clause() -> None:
    d = diagnose_windows(window(0, 0.002, 0.0005, 0.0005), window(60, 0.182, 0.0006, 0.0005), "gateway")
    assert d.cause == "network:gateway->inference"
    assert "event loop" not in d.verdict
    assert "starved" not in format_diagnosis(d)
    loop = network_row(d)["event_loop"]
    assert isinstance(loop, dict) and loop["explains"] is False
    assert loop["seconds"] == pytest.approx(0.0001)


def test_only_the_callers_loop_rose_and_the_peer_has_no_signal() -> None:
    d = diagnose_windows(window(0, 0.002, 0.0005), window(60, 0.182, 0.1705), "gateway")
    assert ("of which the event loop delay of gateway rose +170 ms (an estimate): its loop is starved" in d.verdict)
    loop = network_row(d)["event_loop"]
    assert isinstance(loop, dict) and loop["peer_seconds"] is None and loop["explains"] is True


def test_both_loops_rising_are_named_together() -> None:
    d = diagnose_windows(window(0, 0.002, 0.0005, 0.0005), window(60, 0.182, 0.0805, 0.0905), "gateway")
    assert "of which the event loop delays of gateway and inference rose +170 ms (an estimate): their loops are " \
           "starved" in d.verdict


@pytest.mark.parametrize("incident_delays", [(None, None), (0.1705, None), (None, 0.1705)])
def test_services_without_the_signal_give_no_clause_and_no_error(
        incident_delays: tuple[float | None, float | None]) -> None:
    # WSGI, grpcio's thread-pool server, an older aiwatch: no delay series in the baseline (or in either window)
    d = diagnose_windows(window(0, 0.002), window(60, 0.182, *incident_delays), "gateway")
    assert d.cause == "network:gateway->inference"
    assert "event loop" not in d.verdict
    assert network_row(d)["event_loop"] is None
    assert "starved" not in format_diagnosis(d)


def test_the_loop_wait_counts_once_per_call() -> None:
    # two calls per request: the network part rises by 2 x 170 ms per request, and so does each call's loop wait
    d = diagnose_windows(window(0, 0.002, 0.0005, 0.0005, calls=2), window(60, 0.172, 0.0005, 0.1705, calls=2),
                         "gateway")
    assert "network gateway -> inference (+340 ms), of which the event loop delay of inference rose +340 ms" \
           in d.verdict
    loop = network_row(d)["event_loop"]
    assert isinstance(loop, dict) and loop["calls_per_request"] == pytest.approx(2.0)


def test_the_report_lists_the_loops_estimate_of_each_network_part_that_rose() -> None:
    d = diagnose_windows(window(0, 0.002, 0.0005, 0.0005), window(60, 0.182, 0.0006, 0.1705), "gateway")
    text = format_diagnosis(d)
    assert ("  network gateway -> inference +180 ms: loops +170 ms (gateway +0.1 ms, inference +170 ms; 1 call(s) "
            "per request): mostly the loops, not the wire") in text
    flat = format_diagnosis(diagnose_windows(window(0, 0.002, 0.0005), window(60, 0.182, 0.0006), "gateway"))
    assert ("  network gateway -> inference +180 ms: loops +0.1 ms (gateway +0.1 ms, inference no delay series; "
            "1 call(s) per request): mostly not the loops") in flat


def test_each_loops_estimated_wait_and_stalled_share_are_signals() -> None:
    d = diagnose_windows(window(0, 0.002, 0.0005, 0.0005), window(60, 0.182, 0.0006, 0.1705), "gateway")
    loops = {s.labels["service"]: (s.baseline, s.incident) for s in d.signals
             if s.name == "event loop wait (estimated)"}
    assert loops == {"gateway": pytest.approx((0.0005, 0.0006)), "inference": pytest.approx((0.0005, 0.1705))}
    stalled = {s.labels["service"]: (s.baseline, s.incident) for s in d.signals
               if s.name == "event loop stalled (share of time)"}
    assert stalled == {"gateway": pytest.approx((0.0005 / 0.5005, 0.0006 / 0.5006)),
                       "inference": pytest.approx((0.0005 / 0.5005, 0.1705 / 0.6705))}
    text = format_diagnosis(d)
    assert "event loop wait (estimated) (service=inference): 0.0005 s -> 0.171 s" in text
    assert "event loop stalled (share of time) (service=inference): 0.1% -> 25.4%" in text


# --- every source answers the reads: the simulated traffic of tests/diagnose/traffic.py -----------------------------

#: the incident: the inference loop's mean delay +170 ms, and the network time the same (the requests' wait on it)
STARVED = slower(network=0.17, inference_loop=0.17)
CLAUSE = "of which the event loop delay of inference rose"


def loop_of(d: Diagnosis) -> dict[str, object]:
    loop = network_row(d)["event_loop"]
    assert isinstance(loop, dict)
    return loop


def test_snapshots_and_the_scrape_source_say_the_peers_loop_is_starved() -> None:
    h = history(STARVED)
    expected = from_snapshots(h)
    got = diagnose(scrape_source(h), "gateway", incident=INCIDENT, baseline=BASELINE, at=h.incident_end)
    for d in (expected, got):
        assert d.cause == "network:gateway->inference"
        assert CLAUSE in d.verdict and "its loop is starved" in d.verdict
    assert loop_of(got) == pytest.approx(loop_of(expected), abs=1e-12)
    assert loop_of(expected)["peer_seconds"] == pytest.approx(0.17, rel=0.1)


@pytest.mark.slow
def test_prometheus_says_the_peers_loop_is_starved_like_the_snapshots() -> None:
    h = history(STARVED)
    expected = from_snapshots(h)
    with backfilled_prometheus(h.traffic.openmetrics()) as prom:
        d = diagnose(PrometheusWindows(prom.url), "gateway", incident=INCIDENT, baseline=BASELINE, at=h.incident_end)
    assert d.cause == "network:gateway->inference" and CLAUSE in d.verdict
    got, want = loop_of(d), loop_of(expected)
    assert got["explains"] is True
    for key in ("caller_seconds", "peer_seconds", "calls_per_request"):
        assert got[key] == pytest.approx(want[key], abs=5e-3), key


@pytest.mark.slow
def test_prometheus_network_rise_with_prompt_loops_names_no_loop(network_history: History,
                                                                   prometheus_url: str) -> None:
    d = diagnose(PrometheusWindows(prometheus_url), "gateway", incident=INCIDENT, baseline=BASELINE,
                 at=network_history.incident_end)
    assert d.cause == "network:gateway->inference" and "event loop" not in d.verdict
    assert loop_of(d)["explains"] is False


# --- the expected wait, not the mean delay per sample: tests/diagnose/loop_stalls.py simulates the sampler ----------

PROMPT = "prompt: 0.1-1 ms callbacks, 100/s"
ONE_SECOND = "1 s blocks after gaps of 0.9-1.1 s"


def simulated(what: str, watched: bool = True) -> dict[str, Any]:
    """A simulated loop's answers to the loop reads (the default interval, 0.1 s)."""
    s = sampled_patterns()[what]
    return loop_reads(s.delays, s.watched if watched else None)


def loop_signals(d: Diagnosis, name: str) -> dict[str, tuple[float | None, float | None]]:
    return {s.labels["service"]: (s.baseline, s.incident) for s in d.signals if s.name == name}


def test_a_prompt_loops_estimated_wait_is_its_mean_delay_per_sample() -> None:
    reads = simulated(PROMPT)
    w = window(0, 0.002, loops={"inference": reads})
    d = diagnose_windows(w, window(60, 0.003, loops={"inference": reads}), "gateway")
    wait = loop_signals(d, "event loop wait (estimated)")["inference"]
    assert wait == pytest.approx((reads["sum"] / reads["count"],) * 2, rel=1e-9)
    assert wait[0] == pytest.approx(0.0005, rel=0.05)


@pytest.mark.parametrize("what", [w for w in sampled_patterns() if w != PROMPT and "in step" not in w])
def test_the_estimated_wait_is_the_wait_of_a_random_arrival(what: str) -> None:
    """Within 15% of the exact wait of a uniformly random arrival, from the histogram's buckets, where the mean
    delay per sample was 2-50x low for stalls longer than the interval (docs/diagnose.md has the table)."""
    s = sampled_patterns()[what]
    reads = simulated(what)
    d = diagnose_windows(window(0, 0.002, loops={"inference": simulated(PROMPT)}),
                         window(60, 0.002 + s.true_wait, loops={"inference": reads}), "gateway")
    _, incident = loop_signals(d, "event loop wait (estimated)")["inference"]
    assert incident == pytest.approx(s.true_wait, rel=0.15)
    if "ms blocks" not in what:  # stalls of 300 ms and more
        assert s.mean() < 0.6 * s.true_wait  # the old estimate: far too low


def test_long_stalls_explain_the_network_rise_the_mean_delay_left_to_the_wire() -> None:
    # the inference loop blocked 1 s after gaps of 0.9-1.1 s: an arrival waits 250 ms on average, the mean delay per
    # sample is 91 ms; the network part rose by the wait
    s = sampled_patterns()[ONE_SECOND]
    assert s.mean() < EXPLAINS_SHARE * s.true_wait  # the old estimate did not explain the rise
    d = diagnose_windows(window(0, 0.002, loops={"inference": simulated(PROMPT)}),
                         window(60, 0.002 + s.true_wait, loops={"inference": simulated(ONE_SECOND)}), "gateway")
    assert "network gateway -> inference (+250 ms), of which the event loop delay of inference rose +2" in d.verdict
    assert "its loop is starved" in d.verdict
    loop = network_row(d)["event_loop"]
    assert isinstance(loop, dict) and loop["explains"] is True and loop["mean_delay_only"] == []
    assert loop["peer_seconds"] == pytest.approx(s.true_wait, rel=0.05)


def test_without_the_watched_time_the_mean_delay_per_sample_stands_in_and_the_report_says_so() -> None:
    # an aiwatch before aiwatch_event_loop_sampled_seconds_total: the mean delay per sample, in both windows
    old = {"inference": simulated(PROMPT, watched=False)}
    d = diagnose_windows(window(0, 0.002, loops=old),
                         window(60, 0.252, loops={"inference": simulated(ONE_SECOND, watched=False)}), "gateway")
    s = sampled_patterns()[ONE_SECOND]
    assert loop_signals(d, "event loop delay (mean)")["inference"] == pytest.approx(
        (sampled_patterns()[PROMPT].mean(), s.mean()))
    assert not loop_signals(d, "event loop wait (estimated)")
    assert not loop_signals(d, "event loop stalled (share of time)")
    loop = network_row(d)["event_loop"]
    assert isinstance(loop, dict) and loop["mean_delay_only"] == ["inference"] and loop["explains"] is False
    assert ("    inference: the mean delay per sample, no watched time (aiwatch_event_loop_sampled_seconds_total: an "
            "older aiwatch) in a window; it under-counts stalls longer than the sampling interval"
            ) in format_diagnosis(d)
    # one window without it (the baseline before an upgrade): that window's mean, the other's estimate
    d = diagnose_windows(window(0, 0.002, loops=old),
                         window(60, 0.252, loops={"inference": simulated(ONE_SECOND)}), "gateway")
    loop = network_row(d)["event_loop"]
    assert isinstance(loop, dict) and loop["mean_delay_only"] == ["inference"] and loop["explains"] is True
    assert loop_signals(d, "event loop stalled (share of time)")["inference"][0] is None


def test_stalls_of_the_inf_bucket_get_the_rest_of_the_sum() -> None:
    # two stalls of 20 s in 10 minutes, past the largest finite bucket (10 s), and prompt samples: the +Inf bucket's
    # samples take what the finite buckets leave of the sum
    prompt = 5600
    reads = loop_reads({0.0005: prompt, 19.95: 2}, prompt * 0.1005 + 2 * 20.05)
    assert reads["buckets"]["10"] == prompt and reads["buckets"]["+Inf"] == prompt + 2
    true = 2 * 20.0 ** 2 / 2 / reads["watched"]
    d = diagnose_windows(window(0, 0.002, inference_delay=0.0005),
                         window(60, 0.002 + true, loops={"inference": reads}), "gateway")
    _, incident = loop_signals(d, "event loop wait (estimated)")["inference"]
    assert incident == pytest.approx(true, rel=0.02)
    loop = network_row(d)["event_loop"]
    assert isinstance(loop, dict) and loop["explains"] is True


def test_a_restart_in_the_window_counts_the_loops_series_from_zero() -> None:
    # the snapshots' increase counts a histogram and the watched time from 0 after a restart (Prometheus' increase()
    # counts each series alone, the same here: every one of them went down)
    def scrape(reads: dict[str, Any], requests: float) -> Samples:
        key = (("service", "inference"),)
        return {"aiwatch_event_loop_delay_seconds_bucket": {(*key, ("le", le)): n
                                                            for le, n in reads["buckets"].items()},
                "aiwatch_event_loop_delay_seconds_sum": {key: reads["sum"]},
                "aiwatch_event_loop_delay_seconds_count": {key: reads["count"]},
                "aiwatch_event_loop_sampled_seconds_total": {key: reads["watched"]},
                "aiwatch_request_duration_seconds_count": {(("service", "gateway"),): requests}}

    before = scrape(loop_reads({0.0005: 50_000.0}, 50_000 * 0.1005), 9000.0)
    after_restart = simulated(ONE_SECOND)
    w = totals_from_snapshots(before, scrape(after_restart, 100.0), 0.0, 600.0)
    s = sampled_patterns()[ONE_SECOND]
    assert w.total("loop_sampled_seconds", "inference") == pytest.approx(s.watched)
    from aiwatch.diagnose.loops import wait_estimate  # here: the other tests also run on the code before it

    estimate = wait_estimate(w, "inference")
    assert estimate is not None and estimate.watched
    assert estimate.seconds == pytest.approx(s.true_wait, rel=0.05)


#: the incident: the inference loop stands still 0.375-1.125 s at a time after gaps of 3 s on average (its sampler
#: simulated): a request arriving at a random time waits 81 ms on average, which the network part gains, while the
#: mean delay per sample rises by about 22 ms, too little to explain it
STALLS = slower(network=stall_wait(0.75, 3.0), inference_stall=0.75)


def old_mean_rise(h: History) -> float:
    """The rise of the inference loop's mean delay per sample between the windows: the estimate before."""
    s = h.traffic.samples

    def mean(a: float, b: float) -> float:
        w = totals_from_snapshots(s(a), s(b), a, b)
        found = mean_delay(w, "inference")
        assert found is not None
        return found

    return mean(h.incident_start, h.incident_end) - mean(h.start, h.incident_start)


def test_snapshots_and_the_scrape_source_say_long_stalls_starve_the_peers_loop() -> None:
    h = history(STALLS, watched=True)
    expected = from_snapshots(h)
    rise = next(c for c in expected.contributors if c.part.component == "network").delta_seconds
    assert old_mean_rise(h) < EXPLAINS_SHARE * rise  # the mean delay per sample left it to the wire
    got = diagnose(scrape_source(h), "gateway", incident=INCIDENT, baseline=BASELINE, at=h.incident_end)
    for d in (expected, got):
        assert d.cause == "network:gateway->inference"
        assert CLAUSE in d.verdict and "its loop is starved" in d.verdict
    assert loop_of(got) == pytest.approx(loop_of(expected), abs=1e-12)
    assert loop_of(expected)["peer_seconds"] == pytest.approx(stall_wait(0.75, 3.0), rel=0.15)


@pytest.mark.slow
def test_prometheus_says_long_stalls_starve_the_peers_loop_like_the_snapshots() -> None:
    h = history(STALLS, watched=True)
    expected = from_snapshots(h)
    with backfilled_prometheus(h.traffic.openmetrics()) as prom:
        d = diagnose(PrometheusWindows(prom.url), "gateway", incident=INCIDENT, baseline=BASELINE, at=h.incident_end)
    assert d.cause == "network:gateway->inference" and CLAUSE in d.verdict, d.verdict
    got, want = loop_of(d), loop_of(expected)
    assert got["explains"] is True and got["mean_delay_only"] == []
    # increase() extrapolates each bucket, the sum and the watched time on its own: close, not equal
    for key in ("caller_seconds", "peer_seconds", "calls_per_request"):
        assert got[key] == pytest.approx(want[key], rel=0.05, abs=1e-3), key
    signals = {s.name: s.incident for s in d.signals if s.labels.get("service") == "inference"}
    assert signals["event loop stalled (share of time)"] == pytest.approx(0.75 / 3.75, rel=0.25)


def loop_window(delay_sum: float, watched: float, buckets: Mapping[str, float]) -> WindowTotals:
    """A window holding only inference's loop reads."""
    return WindowTotals(0.0, 60.0, {"loop_delay_seconds": {("inference",): delay_sum},
                                    "loop_delay_buckets": {("inference", le): n for le, n in buckets.items()},
                                    "loop_sampled_seconds": {("inference",): watched}})


def test_the_estimated_wait_and_stalled_share_are_at_most_the_watched_time() -> None:
    # one sample 50 s late in a window that watched 30 s (a stall that began before the window, or counters that
    # disagree): an arrival in the window cannot wait longer than it, nor the loop stand still more than all of it
    inf = float("inf")
    assert expected_wait([(10.0, 0), (inf, 1)], 50.0, 30.0) == 30.0
    w = loop_window(50.0, 30.0, {"10": 0.0, "+Inf": 1.0})
    estimate = wait_estimate(w, "inference")
    assert estimate is not None and estimate.seconds == 30.0 and estimate.watched
    assert stalled_share(w, "inference") == 1.0


def test_a_delay_sum_that_is_not_a_number_gives_no_estimate() -> None:
    nan, inf = float("nan"), float("inf")
    assert expected_wait([(0.001, 600), (inf, 600)], nan, 60.0) is None
    assert expected_wait([(0.001, 600), (inf, 600)], 0.3, nan) is None
    w = loop_window(nan, 60.0, {"0.001": 600.0, "+Inf": 600.0})
    assert wait_estimate(w, "inference") is None
    assert stalled_share(w, "inference") is None
    # without the watched time the mean delay per sample stands in: not a number either
    assert wait_estimate(loop_window(nan, 0.0, {"0.001": 600.0, "+Inf": 600.0}), "inference") is None


def test_the_estimators_doctests() -> None:
    import doctest

    import aiwatch.diagnose.loops

    result = doctest.testmod(aiwatch.diagnose.loops)
    assert result.attempted >= 3 and result.failed == 0


# --- a mixed fleet: replicas of an older aiwatch, without the watched time, next to new ones (a rolling upgrade) ---

#: each service's replicas that export the watched time and those that do not, every one's loop blocked 1 s after
#: gaps of 0.9-1.1 s (ONE_SECOND): an arrival waits 250 ms, and the loop stands still 48% of the time
FLEET = {"inference": (1, 3), "ranker": (2, 0), "legacy": (0, 2)}
FLEET_SCRAPES, FLEET_STEP = 20, 15.0


def scaled(reads: Mapping[str, Any], k: float) -> dict[str, Any]:
    """:func:`loop_reads` answers ``k`` times over (the estimate and the stalled share stay the same)."""
    return {key: {le: n * k for le, n in value.items()} if key == "buckets" else value * k
            for key, value in reads.items()}


def loop_exposition(service: str, instance: str, reads: Mapping[str, Any]) -> str:
    """One replica's ``/metrics`` holding its loop's :func:`loop_reads` (the watched time only where they have it)."""
    labels = f'instance="{instance}",job="{service}",service="{service}"'
    lines = ["# TYPE aiwatch_event_loop_delay_seconds histogram"]
    lines += [f'aiwatch_event_loop_delay_seconds_bucket{{{labels},le="{le}"}} {n!r}'
              for le, n in reads["buckets"].items()]
    lines += [f"aiwatch_event_loop_delay_seconds_sum{{{labels}}} {reads['sum']!r}",
              f"aiwatch_event_loop_delay_seconds_count{{{labels}}} {reads['count']!r}"]
    if "watched" in reads:
        lines += ["# TYPE aiwatch_event_loop_sampled_seconds_total counter",
                  f"aiwatch_event_loop_sampled_seconds_total{{{labels}}} {reads['watched']!r}"]
    return "\n".join(lines) + "\n"


def fleet_scrapes(start: float, restarted: float = 0.0) -> dict[str, list[tuple[float, str]]]:
    """Each :data:`FLEET` replica's ``(time, /metrics)`` scrapes, by ``instance``, from ``start`` every FLEET_STEP
    seconds for FLEET_SCRAPES intervals, over which each grew by ONE_SECOND's reads in equal steps. ``restarted``:
    inference's new replica restarted after the first scrape, which held its old process' prompt samples over
    ``restarted`` watched seconds: when that is a little less than a later scrape's, the histogram went down there
    and the watched time did not, and only the restart handling of both together counts them right."""
    one = simulated(ONE_SECOND)
    out: dict[str, list[tuple[float, str]]] = {}
    for service, (new, old) in FLEET.items():
        for n in range(new + old):
            instance, scrapes = f"{service}-{n}.test:8000", []
            for i in range(FLEET_SCRAPES + 1):
                reads = scaled(one, 1 + i / FLEET_SCRAPES)
                if restarted and (service, n) == ("inference", 0):
                    reads = loop_reads({0.0005: restarted / 0.1005}, restarted) if i == 0 else scaled(
                        one, i / FLEET_SCRAPES)
                if n >= new:
                    del reads["watched"]
                scrapes.append((start + i * FLEET_STEP, loop_exposition(service, instance, reads)))
            out[instance] = scrapes
    return out


def fleet_snapshots(restarted: float = 0.0) -> WindowTotals:
    """The FLEET window from its first and last scrapes (:func:`fleet_scrapes` from 0), merged."""
    fleet = fleet_scrapes(0.0, restarted)

    def snapshot(i: int) -> Samples:
        merged: Samples = {}
        for scrapes in fleet.values():
            for name, series in parse_metrics(scrapes[i][1]).items():
                merged.setdefault(name, {}).update(series)
        return merged

    return totals_from_snapshots(snapshot(0), snapshot(-1), 0.0, FLEET_SCRAPES * FLEET_STEP)


def assert_fleet_estimates(w: WindowTotals, rel: float) -> None:
    """Each FLEET service's estimates in ``w`` are those of one of its replicas with the watched time alone, left
    out the replicas without it (said); a service without it at all gets its mean delay per sample, as before."""
    one = simulated(ONE_SECOND)
    alone = loop_window(one["sum"], one["watched"], one["buckets"])
    want, share = wait_estimate(alone, "inference"), stalled_share(alone, "inference")
    assert want is not None and want.seconds == pytest.approx(sampled_patterns()[ONE_SECOND].true_wait, rel=0.01)
    for service, (new, old) in FLEET.items():
        got = wait_estimate(w, service)
        assert got is not None, service
        if new:
            assert got.watched and got.seconds == pytest.approx(want.seconds, rel=rel), service
            assert (got.left_out, got.replicas) == (old, new + old), service
            assert stalled_share(w, service) == pytest.approx(share, rel=rel), service
        else:
            assert not got.watched and got.seconds == pytest.approx(one["sum"] / one["count"], rel=rel), service
            assert stalled_share(w, service) is None, service


@pytest.mark.parametrize("restarted", [False, True])
def test_a_mixed_fleets_loop_estimate_pairs_each_replicas_delay_with_its_own_watched_time_snapshots(
        restarted: bool) -> None:
    # before, every replica's delay over the new replica's watched time: 0.89 s for 0.25 s, stalled share capped at 1
    # (restarted: the snapshots see the restart at the last scrape, the old process' watched time 90% of the new's)
    assert_fleet_estimates(fleet_snapshots(0.9 * simulated(ONE_SECOND)["watched"] if restarted else 0.0), 1e-9)


@pytest.mark.parametrize("restarted", [False, True])
def test_a_mixed_fleets_loop_estimate_pairs_each_replicas_delay_with_its_own_watched_time_scrape_source(
        restarted: bool) -> None:
    # restarted: the scrape source sees the restart at the second scrape, the old process' watched time 90% of the new's
    fleet = fleet_scrapes(0.0, 0.9 * simulated(ONE_SECOND)["watched"] / FLEET_SCRAPES if restarted else 0.0)
    src = ScrapeSource([f"http://{instance}/metrics" for instance in fleet], interval=FLEET_STEP, history=4000,
                       start=False)
    for instance, scrapes in fleet.items():
        for t, text in scrapes:
            src.record(f"http://{instance}/metrics", text, ts=t)
    assert_fleet_estimates(src.window_totals(0.0, FLEET_SCRAPES * FLEET_STEP), 1e-9)


@pytest.mark.slow
def test_a_mixed_fleets_loop_estimate_pairs_each_replicas_delay_with_its_own_watched_time_prometheus() -> None:
    start = float(int(time.time() - 3600) // FLEET_STEP * FLEET_STEP)
    fleet = fleet_scrapes(start)
    with backfilled_prometheus(openmetrics([s for scrapes in fleet.values() for s in scrapes])) as prom:
        w = PrometheusWindows(prom.url).window_totals(start, start + FLEET_SCRAPES * FLEET_STEP)
    # increase() extrapolates each series to the window's edges: steady growth, so close to exact
    assert_fleet_estimates(w, 1e-6)


def test_the_report_notes_the_replicas_a_loop_estimate_leaves_out() -> None:
    loops = fleet_snapshots()
    true = sampled_patterns()[ONE_SECOND].true_wait
    incident = window(60, 0.002 + true)
    incident = WindowTotals(60.0, 120.0, {**incident.values, **{k: loops.of(k) for k in (
        "loop_delay_seconds", "loop_delay_buckets", "loop_sampled_seconds")}})
    d = diagnose_windows(window(0, 0.002, loops={"inference": simulated(PROMPT)}), incident, "gateway")
    note = ("the incident window's event loop estimates of inference (wait, stalled share) leave out 3 of its 4 "
            "replicas: they export no aiwatch_event_loop_sampled_seconds_total (an older aiwatch, as in a rolling "
            "upgrade); the estimates are those of the replicas that do")
    assert d.notes == [note] and f"note: {note}" in format_diagnosis(d)
    assert json.loads(json.dumps(d.to_dict()))["notes"] == [note]
    assert loop_of(d)["peer_seconds"] == pytest.approx(true, rel=0.05)


def test_the_note_on_replicas_a_loop_estimate_leaves_out_is_for_the_diagnosed_graphs_services_only() -> None:
    loops = fleet_snapshots()
    incident = WindowTotals(60.0, 120.0, {k: loops.of(k) for k in (
        "loop_delay_seconds", "loop_delay_buckets", "loop_sampled_seconds")})
    assert len(unwatched_notes(incident, incident, {"gateway", "inference"})) == 2
    assert unwatched_notes(incident, incident, {"gateway", "search"}) == []


@pytest.mark.parametrize("le", ["x", "NaN"])
def test_a_loop_delay_bucket_whose_le_is_no_number_is_left_out(le: str) -> None:
    """As a request bucket's: a loop delay bucket whose ``le`` is no number is left out of the loop's estimate, and
    the diagnosis is the one without it."""
    def hostile(w: WindowTotals) -> WindowTotals:
        buckets = {**w.values["loop_delay_buckets"], ("inference", le): 1e9}
        return dataclasses.replace(w, values={**w.values, "loop_delay_buckets": buckets})

    before, after = window(0, 0.002, 0.0005, 0.0005), window(60, 0.182, 0.0005, 0.1705)
    expected = diagnose_windows(before, after, "gateway")
    d = diagnose_windows(hostile(before), hostile(after), "gateway")
    assert d.verdict == expected.verdict
    assert network_row(d)["event_loop"] == network_row(expected)["event_loop"]
