"""diagnose's split: the parts of a service's request time add up to its mean, exactly, down the call graph."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiwatch.diagnose.split import Part, mean_seconds, request_split, tail_split
from aiwatch.diagnose.window import WindowTotals
from tests.diagnose.simulate import Service, World


def chain(model: float = 0.03, network: float = 0.005, features: float = 0.004, queue: float = 0.002) -> World:
    return World({
        "gateway": Service("gateway", {"features": features, "inference_call": 0.0005, "overhead": 0.001},
                           {"inference_call": [("inference", network, 1)]}),
        "inference": Service("inference", {"queue": queue, "inference": model, "overhead": 0.0005}),
    })


def test_parts_add_up_to_the_mean_request_time() -> None:
    w = chain().window("gateway", 500, seed=1)
    parts = request_split(w, "gateway")
    assert sum(parts.values()) == pytest.approx(mean_seconds(w, "gateway"), rel=1e-12)
    assert parts[Part("unaccounted", "gateway")] == pytest.approx(0.0, abs=1e-12)


def test_the_callers_network_time_and_the_callees_phases_are_separate_parts() -> None:
    w = chain().window("gateway", 500, seed=2)
    parts = request_split(w, "gateway")
    requests = w.total("requests", "gateway")
    assert parts[Part("network", "gateway", "inference_call", "inference")] == pytest.approx(
        w.total("network_seconds", "gateway", "inference", "inference_call") / requests)
    # inference serves only the gateway, once per gateway request: its phases are split exactly
    assert parts[Part("model", "inference", "inference")] == pytest.approx(
        w.total("phase_seconds", "inference", "inference") / requests)
    assert parts[Part("queue", "inference", "queue")] == pytest.approx(
        w.total("phase_seconds", "inference", "queue") / requests)
    # what is left of the calling phase is the phase's own time outside the call
    assert parts[Part("phase", "gateway", "inference_call")] == pytest.approx(
        (w.total("phase_seconds", "gateway", "inference_call")
         - w.total("call_seconds", "gateway", "inference", "inference_call")) / requests)


def test_a_callee_called_twice_per_request_counts_twice() -> None:
    world = chain()
    world.services["gateway"].calls["inference_call"] = [("inference", 0.005, 2)]
    w = world.window("gateway", 300, seed=3)
    parts = request_split(w, "gateway")
    assert sum(parts.values()) == pytest.approx(mean_seconds(w, "gateway"), rel=1e-12)
    assert parts[Part("model", "inference", "inference")] == pytest.approx(
        w.total("phase_seconds", "inference", "inference") / w.total("requests", "gateway"))


def test_an_uninstrumented_peer_is_one_part() -> None:
    world = chain()
    world.services["gateway"].calls["features"] = [("redis:6379", 0.001, 1)]
    w = world.window("gateway", 200, seed=4)
    parts = request_split(w, "gateway")
    assert parts[Part("peer", "gateway", "features", "redis:6379")] == pytest.approx(world.uninstrumented_seconds)
    assert sum(parts.values()) == pytest.approx(mean_seconds(w, "gateway"), rel=1e-12)


def test_a_call_cycle_stops_at_the_repeated_service() -> None:
    # a -> b -> a (recorded): the split must terminate and still add up
    w = WindowTotals(0, 60, {
        "requests": {("a",): 10, ("b",): 10}, "request_seconds": {("a",): 3.0, ("b",): 2.0},
        "phase_seconds": {("a", "call"): 3.0, ("b", "call"): 2.0},
        "call_seconds": {("a", "b", "call"): 2.5, ("b", "a", "call"): 1.5},
        "network_seconds": {("a", "b", "call"): 0.5, ("b", "a", "call"): 0.5}})
    parts = request_split(w, "a")
    assert sum(parts.values()) == pytest.approx(0.3)
    assert Part("peer", "b", "call", "a") in parts


def test_a_callee_shared_by_two_callers_is_split_in_its_own_proportions() -> None:
    # inference serves gateway (1 call/request) and batch (not diagnosed); the gateway's share of inference's
    # server time is exact, its split among inference's phases follows all of inference's requests
    w = WindowTotals(0, 60, {
        "requests": {("gateway",): 100, ("inference",): 300, ("batch",): 200},
        "request_seconds": {("gateway",): 100 * 0.05, ("inference",): 300 * 0.04, ("batch",): 200 * 0.04},
        "phase_seconds": {("gateway", "call"): 100 * 0.05, ("inference", "queue"): 300 * 0.01,
                          ("inference", "inference"): 300 * 0.03, ("batch", "call"): 200 * 0.04},
        "call_seconds": {("gateway", "inference", "call"): 100 * 0.045},
        "network_seconds": {("gateway", "inference", "call"): 100 * 0.005}})
    parts = request_split(w, "gateway")
    assert parts[Part("queue", "inference", "queue")] == pytest.approx(0.04 * 0.25)
    assert parts[Part("model", "inference", "inference")] == pytest.approx(0.04 * 0.75)
    assert sum(parts.values()) == pytest.approx(0.05)


def test_no_requests_no_parts() -> None:
    assert request_split(WindowTotals(0, 60, {}), "gateway") == {}


def test_the_tail_split_adds_up_to_the_seconds_in_slow_requests_per_request() -> None:
    world = chain(model=0.05)
    world.slow_threshold = 0.08
    w = world.window("gateway", 800, seed=5)
    tail = tail_split(w, "gateway")
    expected = w.total("slow_phase_seconds", "gateway") / w.total("requests", "gateway")
    assert expected > 0
    assert sum(tail.values()) == pytest.approx(expected, rel=1e-12)
    # slow requests are mostly the ones whose model took long: the model part dominates the tail
    assert max(tail, key=lambda p: tail[p]).component == "model"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 0.2), min_size=3, max_size=3), st.floats(0.0, 0.1), st.integers(1, 3),
       st.integers(0, 2**31))
def test_any_chain_adds_up(gateway: list[float], network: float, calls: int, seed: int) -> None:
    world = World({
        "gateway": Service("gateway", dict(zip(("features", "call", "overhead"), gateway, strict=True)),
                           {"call": [("inference", network, calls)]}),
        "inference": Service("inference", {"queue": 0.01, "inference": 0.02},
                             {"inference": [("store", 0.001, 1)]}),
        "store": Service("store", {"lookup": 0.003}),
    })
    w = world.window("gateway", 50, seed=seed)
    parts = request_split(w, "gateway")
    assert math.isclose(sum(parts.values()), mean_seconds(w, "gateway") or 0.0, rel_tol=1e-9, abs_tol=1e-12)
    # every service on the chain shows up with its own parts
    assert {p.service for p in parts} >= {"gateway", "inference", "store"}
