"""diagnose's ranking, verdict, errors and JSON on simulated windows whose injected cause is known."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiwatch.diagnose import DiagnoseError, diagnose_windows, format_diagnosis
from aiwatch.diagnose.report import entry_service
from aiwatch.diagnose.window import WindowTotals
from tests.diagnose.simulate import Service, World


def world(model: float = 0.03, network: float = 0.005, features: float = 0.004, queue: float = 0.002) -> World:
    return World({
        "gateway": Service("gateway", {"features": features, "inference_call": 0.0005, "overhead": 0.001},
                           {"inference_call": [("inference", network, 1)]}),
        "inference": Service("inference", {"queue": queue, "inference": model, "overhead": 0.0005}),
    })


def windows(**incident: float) -> tuple[WindowTotals, WindowTotals]:
    return world().window("gateway", 3000, seed=10), world(**incident).window("gateway", 3000, seed=11, start=60)


@pytest.mark.parametrize(("injected", "cause"), [
    ({"network": 0.2}, "network:gateway->inference"),
    ({"model": 0.2}, "model:inference/inference"),
    ({"features": 0.05}, "phase:gateway/features"),
    ({"queue": 0.05}, "queue:inference"),
])
def test_the_injected_part_ranks_first(injected: dict[str, float], cause: str) -> None:
    d = diagnose_windows(*windows(**injected), "gateway")
    assert d.cause == cause
    top = d.contributors[0]
    assert top.delta_seconds == pytest.approx(max(injected.values()) - 0.0, rel=0.25)


def test_the_deltas_add_up_to_the_change_of_the_mean() -> None:
    d = diagnose_windows(*windows(network=0.1), "gateway")
    assert d.incident.mean_seconds is not None and d.baseline.mean_seconds is not None
    total = d.incident.mean_seconds - d.baseline.mean_seconds
    assert sum(c.delta_seconds for c in d.contributors) == pytest.approx(total, rel=1e-9)
    assert sum(c.share for c in d.contributors if c.share > 0) == pytest.approx(1.0)


def test_a_control_run_ranks_nothing_above_the_noise_floor() -> None:
    d = diagnose_windows(*windows(), "gateway")
    assert d.moved == []
    assert d.cause == "none"
    assert "no part moved" in d.verdict


def test_the_verdict_names_the_network_and_says_the_model_is_flat() -> None:
    d = diagnose_windows(*windows(network=0.3), "gateway")
    assert "100% of the added time is network gateway -> inference (+2" in d.verdict
    assert "the model's own time is flat" in d.verdict
    assert " at x1.0 load" in d.verdict


@pytest.mark.parametrize(("model", "trend"), [(0.06, "up (+30"), (0.005, "down (-25")])
def test_the_verdict_says_which_way_the_model_moved(model: float, trend: str) -> None:
    d = diagnose_windows(*windows(network=0.3, model=model), "gateway")
    assert d.cause == "network:gateway->inference"
    assert f"the model's own time is {trend}" in d.verdict


def test_the_verdict_reports_load() -> None:
    before = world().window("gateway", 1000, seed=1)
    after = world(queue=0.2).window("gateway", 10000, seed=2, start=60)
    d = diagnose_windows(before, after, "gateway")
    assert " at x10.0 load" in d.verdict
    assert d.cause == "queue:inference"


def test_drift_with_flat_latency_is_the_cause() -> None:
    before, after = windows()
    after = WindowTotals(after.start, after.end, {**after.values,
                                                  "drift_detected": {("ranker", "basket_value"): 1.0}})
    d = diagnose_windows(before, after, "gateway")
    assert d.cause == "drift:ranker/basket_value"
    assert "inputs drifted: basket_value (ranker)" in d.verdict


def test_the_entry_service_is_chosen_when_none_is_named() -> None:
    assert diagnose_windows(*windows(network=0.1)).service == "gateway"


def test_an_unknown_service_is_a_clear_error() -> None:
    with pytest.raises(DiagnoseError, match=r"no requests recorded for service 'nope'.*gateway, inference"):
        diagnose_windows(*windows(), "nope")


def test_a_window_without_traffic_is_a_clear_error() -> None:
    before, _ = windows()
    with pytest.raises(DiagnoseError, match="served no requests in the incident window"):
        diagnose_windows(before, WindowTotals(60, 120, {}), "gateway")
    with pytest.raises(DiagnoseError, match="no service served requests in both windows"):
        diagnose_windows(WindowTotals(0, 60, {}), WindowTotals(60, 120, {}))


def test_json_has_the_documented_shape() -> None:
    d = diagnose_windows(*windows(network=0.2), "gateway")
    out = json.loads(json.dumps(d.to_dict()))
    assert set(out) >= {"service", "baseline", "incident", "verdict", "contributors", "tail", "signals"}
    first = out["contributors"][0]
    assert set(first) == {"component", "service", "phase", "peer", "baseline_seconds", "incident_seconds",
                          "delta_seconds", "share", "event_loop"}
    assert (first["component"], first["service"], first["peer"]) == ("network", "gateway", "inference")
    assert out["tail"]["contributors"][0]["component"] == "network"
    assert out["incident"]["mean_seconds"] > out["baseline"]["mean_seconds"]


def test_a_callee_known_only_from_network_time_is_not_the_entry_service() -> None:
    # a caller whose client integration measured network time but recorded no client-time histogram (or one the
    # source does not hold): its peer is still a callee, never the entry service, even when its time rose most
    before, after = windows(model=0.3)
    strip = {"call_seconds": {}}
    before = WindowTotals(before.start, before.end, {**before.values, **strip})
    after = WindowTotals(after.start, after.end, {**after.values, **strip})
    assert diagnose_windows(before, after).service == "gateway"


def test_a_callee_called_only_in_the_baseline_is_not_the_entry_service() -> None:
    # the incident window holds no call to inference (the gateway's client metrics missing in it, say): inference
    # is still a callee, known from the baseline, never the entry service, even though its time rose the most
    served = {("gateway",): 100.0, ("inference",): 100.0}
    before = WindowTotals(0, 60, {"requests": served,
                                  "request_seconds": {("gateway",): 5.0, ("inference",): 3.0},
                                  "call_seconds": {("gateway", "inference", "inference_call"): 3.2}})
    after = WindowTotals(60, 120, {"requests": served,
                                   "request_seconds": {("gateway",): 6.0, ("inference",): 4.0}})
    assert entry_service(before, after) == "gateway"


def without(w: WindowTotals, service: str) -> WindowTotals:
    """``w`` as Prometheus answers it when ``service``'s own metrics are missing (its target down or not scraped)."""
    return WindowTotals(w.start, w.end, {key: {k: v for k, v in found.items() if k[0] != service}
                                         for key, found in w.values.items()})


@pytest.mark.parametrize("missing_in", ["baseline", "incident"])
def test_a_callee_whose_metrics_are_missing_in_one_window_is_not_split_in_either(missing_in: str) -> None:
    before, after = windows(network=0.105)
    if missing_in == "baseline":
        before = without(before, "inference")
    else:
        after = without(after, "inference")
    d = diagnose_windows(before, after, "gateway")
    # the model's time is unknown in one window: no part of inference may be said to have moved
    assert not [c for c in d.contributors if c.part.service == "inference"]
    server = next(c for c in d.contributors if c.part.component == "peer")
    assert server.delta_seconds == pytest.approx(0.0, abs=0.002)
    assert d.cause == "network:gateway->inference"
    assert d.moved[0].share == pytest.approx(1.0, abs=0.03)
    assert "model's own time is down" not in d.verdict
    assert "not instrumented" not in d.verdict


def test_the_verdict_names_the_part_that_offset_the_added_time() -> None:
    # the network added 200 ms while the features fell by 150 ms: the mean rose 50 ms. "100% of the added time is
    # the network (+200 ms)" alone leaves 150 ms unexplained; the verdict names what fell
    before = world(features=0.2).window("gateway", 20000, seed=1)
    after = world(features=0.05, network=0.205).window("gateway", 20000, seed=2, start=60)
    d = diagnose_windows(before, after, "gateway")
    assert d.cause == "network:gateway->inference"
    assert "100% of the added time is network gateway -> inference (+20" in d.verdict
    assert "; offset by features in gateway (-1" in d.verdict  # -150 ms drawn: -148 here
    assert "the model's own time is flat" in d.verdict


def test_the_verdict_names_no_offset_when_nothing_fell_beyond_the_noise_floor() -> None:
    d = diagnose_windows(*windows(network=0.3), "gateway")
    assert "offset by" not in d.verdict


SECONDS = frozenset({"request_seconds", "phase_seconds", "call_seconds", "network_seconds", "slow_phase_seconds",
                     "slow_call_seconds", "slow_network_seconds", "slow_threshold"})


def scaled(w: WindowTotals, k: float) -> WindowTotals:
    """``w`` with every time multiplied by ``k`` (counts unchanged)."""
    return WindowTotals(w.start, w.end, {key: {labels: v * k if key in SECONDS else v for labels, v in found.items()}
                                         for key, found in w.values.items()})


means = st.tuples(*[st.floats(0.0, 0.3)] * 4)


@settings(max_examples=60, deadline=None)
@given(means, means, st.integers(0, 2**31), st.floats(0.1, 10.0))
def test_deltas_add_up_negate_when_swapped_and_scale_with_the_times(
        before_means: tuple[float, ...], after_means: tuple[float, ...], seed: int, k: float) -> None:
    names = ("features", "network", "queue", "model")
    before = world(**dict(zip(names, before_means, strict=True))).window("gateway", 40, seed=seed)
    after = world(**dict(zip(names, after_means, strict=True))).window("gateway", 50, seed=seed + 1, start=60)
    d = diagnose_windows(before, after, "gateway", noise_floor=0.002)
    assert d.incident.mean_seconds is not None and d.baseline.mean_seconds is not None
    assert math.isclose(sum(c.delta_seconds for c in d.contributors),
                        d.incident.mean_seconds - d.baseline.mean_seconds, rel_tol=1e-9, abs_tol=1e-12)
    rises = [c.share for c in d.contributors if c.share > 0]
    assert not rises or math.isclose(sum(rises), 1.0, rel_tol=1e-9)
    delta = {c.part: c.delta_seconds for c in d.contributors}
    swapped = {c.part: c.delta_seconds for c in diagnose_windows(after, before, "gateway").contributors}
    assert swapped.keys() == delta.keys()
    assert all(math.isclose(swapped[p], -delta[p], abs_tol=1e-12) for p in delta)
    times_k = diagnose_windows(scaled(before, k), scaled(after, k), "gateway", noise_floor=0.002 * k)
    assert all(math.isclose(c.delta_seconds, k * delta[c.part], rel_tol=1e-9, abs_tol=1e-12)
               for c in times_k.contributors)
    clearly_moved = {c.part for c in d.contributors if c.delta_seconds > 0.002 * (1 + 1e-6)}
    assert clearly_moved <= {c.part for c in times_k.moved}


def with_threshold(w: WindowTotals, seconds: float) -> WindowTotals:
    return WindowTotals(w.start, w.end, {**w.values, "slow_threshold": {("gateway",): seconds}})


def test_a_slow_threshold_changed_between_the_windows_is_said() -> None:
    # the objective went from 300 ms to 100 ms with the deploy: the tails count different requests, and the report
    # must say so instead of showing the change of the tail as if it were the latency's
    before, after = windows()
    d = diagnose_windows(with_threshold(before, 0.3), with_threshold(after, 0.1), "gateway")
    assert d.tail is not None
    assert (d.tail.baseline_threshold_seconds, d.tail.threshold_seconds) == (0.3, 0.1)
    assert d.to_dict()["tail"]["baseline_threshold_seconds"] == 0.3
    text = format_diagnosis(d)
    assert "slower than 100 ms (300 ms in the baseline: the two tails count different requests)" in text
    same = diagnose_windows(with_threshold(before, 0.1), with_threshold(after, 0.1), "gateway")
    assert same.tail is not None and same.tail.baseline_threshold_seconds == 0.1
    assert "in the baseline" not in format_diagnosis(same)


def test_a_window_holding_counter_resets_gets_a_note_in_text_and_json_not_in_the_verdict() -> None:
    baseline, incident = windows(network=0.2)
    plain = diagnose_windows(baseline, incident, "gateway")
    d = diagnose_windows(baseline, dataclasses.replace(incident, resets={"gateway": 3.0, "inference": 1.0}), "gateway")
    assert plain.notes == []
    note = ("the incident window holds a restart (4 counter resets): parts may be undercounted; compare windows "
            "without a restart")
    assert d.notes == [note]
    assert d.verdict == plain.verdict
    lines = format_diagnosis(d).splitlines()
    assert lines[0] == d.verdict
    assert f"note: {note}" in lines
    assert json.loads(json.dumps(d.to_dict()))["notes"] == [note]
    assert json.loads(json.dumps(plain.to_dict()))["notes"] == []
    assert not any(line.startswith("note:") for line in format_diagnosis(plain).splitlines())


def test_a_restart_of_a_service_outside_the_diagnosed_graph_is_not_noted() -> None:
    baseline, incident = windows(network=0.2)
    d = diagnose_windows(baseline, dataclasses.replace(incident, resets={"batch-indexer": 5.0, "gateway": 0.0}),
                         "gateway")
    assert d.notes == []
    # inference is in gateway's graph (gateway calls it): its restart is
    d = diagnose_windows(baseline, dataclasses.replace(incident, resets={"batch-indexer": 5.0, "inference": 1.0}),
                         "gateway")
    assert d.notes == ["the incident window holds a restart (1 counter reset): parts may be undercounted; compare "
                       "windows without a restart"]


def test_a_restart_in_the_baseline_is_noted_for_the_baseline() -> None:
    baseline, incident = windows(network=0.2)
    d = diagnose_windows(dataclasses.replace(baseline, resets={"inference": 1.0}), incident, "gateway")
    assert d.notes == ["the baseline window holds a restart (1 counter reset): parts may be undercounted; compare "
                       "windows without a restart"]


def _with_clamps(w: WindowTotals, clamped: float) -> WindowTotals:
    """``w`` with ``clamped`` of gateway's calls to inference clamped (their network time recorded as 0)."""
    return dataclasses.replace(w, values={**w.values, "network_clamped": {("gateway", "inference"): clamped}})


def test_a_network_part_with_clamped_calls_is_noted_as_a_lower_bound() -> None:
    baseline, incident = windows()
    calls = incident.total("network_calls", "gateway", "inference")
    assert calls > 0
    d = diagnose_windows(baseline, _with_clamps(incident, 0.25 * calls), "gateway")
    note = ("network gateway -> inference is a lower bound: inference reported more time than gateway saw the call "
            "take in 25% of the calls in the incident window (0% in the baseline; aiwatch_network_clamped_total). "
            "Their network time counts as 0 and the whole call as inference's time, so inference's parts are upper "
            "bounds: compare the total in inference's Server-Timing with the time gateway measures (a total that "
            "counts time before the request reached it, or read on another clock)")
    assert d.notes == [note]
    assert f"note: {note}" in format_diagnosis(d).splitlines()
    assert json.loads(json.dumps(d.to_dict()))["notes"] == [note]
    plain = diagnose_windows(baseline, incident, "gateway")
    assert d.verdict == f"{plain.verdict}; caution: network gateway -> inference is a lower bound (see the note)"
    # in the baseline only: said the other way round
    (before,) = diagnose_windows(_with_clamps(baseline, 0.5 * calls), incident, "gateway").notes
    assert "in 0% of the calls in the incident window (" in before and "in the baseline;" in before


@pytest.mark.parametrize("share", [0.0, 0.009])
def test_a_few_clamped_calls_or_none_get_no_note(share: float) -> None:
    baseline, incident = windows()
    calls = incident.total("network_calls", "gateway", "inference")
    d = diagnose_windows(baseline, _with_clamps(incident, share * calls), "gateway")
    assert d.notes == [] and "caution" not in d.verdict


def test_clamps_of_a_peer_outside_the_split_get_no_note() -> None:
    baseline, incident = windows()
    clamped = dataclasses.replace(incident, values={**incident.values,
                                                    "network_clamped": {("gateway", "elsewhere"): 50.0}})
    assert diagnose_windows(baseline, clamped, "gateway").notes == []


def test_two_network_parts_with_clamped_calls_are_both_cautioned() -> None:
    def two_peers() -> World:
        return World({"gateway": Service("gateway", {"features": 0.004, "call": 0.001},
                                         {"call": [("inference", 0.005, 1), ("ranker", 0.005, 1)]}),
                      "inference": Service("inference", {"inference": 0.03}),
                      "ranker": Service("ranker", {"inference": 0.02})})

    baseline = two_peers().window("gateway", 500, seed=1)
    incident = two_peers().window("gateway", 500, seed=2, start=60)
    clamped = dataclasses.replace(incident, values={**incident.values, "network_clamped": {
        ("gateway", "inference"): 100.0, ("gateway", "ranker"): 50.0}})
    d = diagnose_windows(baseline, clamped, "gateway")
    assert [n.split(":")[0] for n in d.notes] == ["network gateway -> inference is a lower bound",
                                                  "network gateway -> ranker is a lower bound"]
    assert d.verdict.endswith("; caution: network gateway -> inference, network gateway -> ranker are lower bounds "
                              "(see the notes)")


def _with_overlap(w: WindowTotals, service: str, seconds: float, share: float) -> WindowTotals:
    """``w`` with ``service``'s phases adding up to ``seconds`` per request more than its requests (phases run at
    once), ``share`` of its requests counted in aiwatch_overhead_clamped_total."""
    requests = w.total("requests", service)
    shorter = {**w.of("request_seconds"), (service,): w.total("request_seconds", service) - seconds * requests}
    return dataclasses.replace(w, values={**w.values, "request_seconds": shorter,
                                          "overhead_clamped": {(service,): share * requests}})


def overlap_note(service: str, incident_ms: str, baseline_ms: str, incident: str, baseline: str) -> str:
    return (f"{service}'s phases overlap: in the incident window they add up to {incident_ms} ms more than its mean "
            f"request ({baseline_ms} ms in the baseline), from {incident} of its requests ({baseline} in the "
            "baseline; aiwatch_overhead_clamped_total). Phases that run at once each count their whole time, so a "
            "phase that grew beside a longer one may have added nothing to the request; the part 'time outside "
            f"{service}'s phases' is that overlap, below 0")


def test_phases_that_overlap_are_noted_and_cautioned() -> None:
    # the features lookup grew by 20 ms beside the call: the phase grew, the requests did not
    baseline, incident = windows(features=0.024)
    d = diagnose_windows(baseline, _with_overlap(incident, "gateway", 0.02, 0.8), "gateway")
    note = overlap_note("gateway", "20", "0.0", "80%", "0%")
    assert d.notes == [note]
    assert f"note: {note}" in format_diagnosis(d).splitlines()
    assert json.loads(json.dumps(d.to_dict()))["notes"] == [note]
    assert d.cause == "phase:gateway/features"
    assert "; offset by time outside gateway's phases (-20 ms)" in d.verdict
    assert d.verdict.endswith("; caution: gateway's phases overlap (see the note)")
    unaccounted = next(c for c in d.contributors if c.part.component == "unaccounted" and c.part.service == "gateway")
    assert unaccounted.incident_seconds == pytest.approx(-0.02) and unaccounted.baseline_seconds == pytest.approx(0)
    # in the baseline only: said the other way round
    (before,) = diagnose_windows(_with_overlap(baseline, "gateway", 0.02, 0.5), incident, "gateway").notes
    assert before == overlap_note("gateway", "0.0", "20", "0%", "50%")


def test_an_overlap_under_the_noise_floor_gets_no_note() -> None:
    baseline, incident = windows()
    d = diagnose_windows(baseline, _with_overlap(incident, "gateway", 0.0005, 0.5), "gateway")
    assert d.noise_floor_seconds > 0.0005
    assert d.notes == [] and "caution" not in d.verdict


def test_a_callees_overlap_is_noted_with_a_network_lower_bound() -> None:
    baseline, incident = windows(model=0.06)
    calls = incident.total("network_calls", "gateway", "inference")
    incident = _with_clamps(_with_overlap(incident, "inference", 0.01, 0.3), 0.25 * calls)
    d = diagnose_windows(baseline, incident, "gateway")
    assert [n.split(":")[0] for n in d.notes] == ["network gateway -> inference is a lower bound",
                                                  "inference's phases overlap"]
    assert d.notes[1] == overlap_note("inference", "10", "0.0", "30%", "0%")
    assert d.verdict.endswith("; caution: network gateway -> inference is a lower bound (see the note); caution: "
                              "inference's phases overlap (see the note)")


def _with_unmeasured(w: WindowTotals, share: float, seconds: float = 0.2) -> WindowTotals:
    """``w`` with as many more gateway calls to inference as make ``share`` of them unmeasured: each ``seconds``
    long, with no network time (no report came back), in gateway's inference_call phase and requests."""
    calls = w.total("calls", "gateway", "inference")
    extra = share * calls / (1.0 - share)
    key, phase, request = ("gateway", "inference", "inference_call"), ("gateway", "inference_call"), ("gateway",)

    def plus(read: str, k: tuple[str, ...], value: float) -> dict[tuple[str, ...], float]:
        return {**w.of(read), k: w.of(read).get(k, 0.0) + value}

    return dataclasses.replace(w, values={**w.values, "calls": plus("calls", key, extra),
                                          "call_seconds": plus("call_seconds", key, extra * seconds),
                                          "phase_seconds": plus("phase_seconds", phase, extra * seconds),
                                          "request_seconds": plus("request_seconds", request, extra * seconds)})


def test_calls_without_a_network_time_make_the_network_a_lower_bound() -> None:
    baseline, incident = windows()
    d = diagnose_windows(baseline, _with_unmeasured(incident, 0.1), "gateway")
    (note,) = d.notes
    assert note.startswith("network gateway -> inference is a lower bound: 10% of gateway's calls to inference in "
                           "the incident window (0% in the baseline) have no network time, since no total came back "
                           "from inference")
    assert d.verdict.endswith("; caution: network gateway -> inference is a lower bound (see the note)")
    # in the baseline only: said for the baseline
    (before,) = diagnose_windows(_with_unmeasured(baseline, 0.05), incident, "gateway").notes
    assert "0% of gateway's calls to inference in the incident window (5% in the baseline)" in before
    # under the threshold: nothing
    few = diagnose_windows(baseline, _with_unmeasured(incident, 0.009), "gateway")
    assert few.notes == [] and "caution" not in few.verdict


def test_a_part_that_is_a_lower_bound_twice_is_cautioned_once() -> None:
    baseline, incident = windows()
    calls = incident.total("network_calls", "gateway", "inference")
    d = diagnose_windows(baseline, _with_clamps(_with_unmeasured(incident, 0.1), 0.25 * calls), "gateway")
    clamped, unmeasured = d.notes
    assert clamped.startswith("network gateway -> inference is a lower bound: inference reported more time")
    assert unmeasured.startswith("network gateway -> inference is a lower bound: 10% of gateway's calls")
    assert d.verdict.endswith("; caution: network gateway -> inference is a lower bound (see the notes)")


def _with_bucket(w: WindowTotals, read: str, key: tuple[str, ...], count: float) -> WindowTotals:
    values = {k: dict(v) for k, v in w.values.items()}
    values.setdefault(read, {})[key] = count
    return dataclasses.replace(w, values=values)


@pytest.mark.parametrize("le", ["x", "", "NaN", "0,5"])
def test_a_request_bucket_whose_le_is_no_number_is_left_out(le: str) -> None:
    """A source answering a ``_bucket`` series whose ``le`` is no number (a hostile Prometheus, an exporter that is
    not aiwatch's) has that bucket left out, as the console's Prometheus source does: the diagnosis is made from the
    rest, never a ``ValueError`` (which the command took for an invalid argument, exit 2)."""
    baseline, incident = windows(network=0.2)
    expected = diagnose_windows(baseline, incident, "gateway")
    hostile = [_with_bucket(w, "request_buckets", ("gateway", le), 1e9) for w in (baseline, incident)]
    d = diagnose_windows(*hostile, "gateway")
    assert d.cause == expected.cause == "network:gateway->inference"
    assert (d.baseline.p99_seconds, d.incident.p99_seconds) == (expected.baseline.p99_seconds,
                                                                expected.incident.p99_seconds)
    assert d.verdict == expected.verdict
