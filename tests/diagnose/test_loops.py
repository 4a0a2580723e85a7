"""The event loops' share of a network part's rise: windows built by hand, then two real uvicorn services."""

from __future__ import annotations

import json

import pytest

from aiwatch.diagnose import PrometheusWindows, diagnose, diagnose_windows, format_diagnosis
from aiwatch.diagnose.report import Diagnosis
from aiwatch.diagnose.window import WindowTotals
from tests.diagnose.backfill import backfilled_prometheus
from tests.diagnose.test_sources import scrape_source
from tests.diagnose.traffic import BASELINE, INCIDENT, History, from_snapshots, history, slower

MODEL = 0.03
REQUESTS = 100.0
SAMPLES = 600.0  # a minute of the loop sampler at 0.1 s


def window(start: float, network: float, gateway_delay: float | None = None, inference_delay: float | None = None,
           calls: int = 1) -> WindowTotals:
    """A minute of gateway calling inference ``calls`` times per request; ``network`` seconds per call; each loop's
    mean sampled delay, or ``None`` for a service without the signal."""
    n, c = REQUESTS, REQUESTS * calls
    values: dict[str, dict[tuple[str, ...], float]] = {
        "requests": {("gateway",): n, ("inference",): c},
        "request_seconds": {("gateway",): c * (MODEL + network) + n * 0.001, ("inference",): c * MODEL},
        "phase_seconds": {("gateway", "inference_call"): c * (MODEL + network), ("gateway", "overhead"): n * 0.001,
                          ("inference", "inference"): c * MODEL},
        "call_seconds": {("gateway", "inference", "inference_call"): c * (MODEL + network)},
        "network_seconds": {("gateway", "inference", "inference_call"): c * network},
        "network_calls": {("gateway", "inference", "inference_call"): c},
        "loop_delay_seconds": {}, "loop_delay_samples": {},
    }
    for service, delay in (("gateway", gateway_delay), ("inference", inference_delay)):
        if delay is not None:
            values["loop_delay_seconds"][(service,)] = SAMPLES * delay
            values["loop_delay_samples"][(service,)] = SAMPLES
    return WindowTotals(start, start + 60, values)


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
                    "seconds": pytest.approx(0.170), "calls_per_request": pytest.approx(1.0), "explains": True}


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


def test_each_loops_mean_delay_is_a_signal() -> None:
    d = diagnose_windows(window(0, 0.002, 0.0005, 0.0005), window(60, 0.182, 0.0006, 0.1705), "gateway")
    loops = {s.labels["service"]: (s.baseline, s.incident) for s in d.signals if s.name == "event loop delay (mean)"}
    assert loops == {"gateway": pytest.approx((0.0005, 0.0006)), "inference": pytest.approx((0.0005, 0.1705))}
    assert "event loop delay (mean) (service=inference): 0.0005 s -> 0.171 s" in format_diagnosis(d)


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
