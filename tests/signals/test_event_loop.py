"""The event loop delay sampler (aiwatch/eventloop.py) on real asyncio loops: what it records on a blocked and a
healthy loop, that it ends with its loop, that its failures are counted and never reach the loop, its environment
variable, several loops (threads) and a fork."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import types
import weakref
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, multiprocess

from aiwatch import eventloop, safety
from aiwatch import timing as timing_module
from aiwatch.metrics import Metrics
from aiwatch.middleware.asgi import AiwatchMiddleware
from aiwatch.timing import RequestRecorder
from tests.servers import python_env
from tests.test_forksafe import child_while_held

INTERVAL = "AIWATCH_EVENT_LOOP_INTERVAL"
#: asyncio runs a timer due within its clock's resolution (a nanosecond here) at once: a sample's time since the
#: previous one may fall short of the interval by that much
EARLY = 1e-6


def bucket(metrics: Metrics, le: str, service: str = "svc") -> float:
    value = metrics.registry.get_sample_value("aiwatch_event_loop_delay_seconds_bucket",
                                              {"service": service, "le": le})
    return value or 0.0


def count(metrics: Metrics, service: str = "svc") -> float:
    return bucket(metrics, "+Inf", service)


def late(metrics: Metrics, le: str, service: str = "svc") -> float:
    """The samples later than ``le`` seconds, from one collection: a count and a bucket read one after the other can
    straddle a new prompt sample, which made a late sample seem missing (count 3 read, then a 4th sample, then
    bucket 3 read)."""
    buckets = {sample.labels["le"]: sample.value for family in metrics.registry.collect()
               if family.name == "aiwatch_event_loop_delay_seconds" for sample in family.samples
               if sample.name.endswith("_bucket") and sample.labels.get("service") == service}
    return buckets.get("+Inf", 0.0) - buckets.get(le, 0.0)


def errors(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "event_loop"})
    return value or 0.0


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTERVAL, "0.05")


def serve(recorder: RequestRecorder, work: Any) -> list[dict[str, Any]]:
    """Run ``work()`` (a coroutine function) in ``asyncio.run`` after a request-path call of ``watch_loop``; the
    contexts the loop's exception handler was given."""
    handled: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: handled.append(context))
        recorder.watch_loop()
        await work()

    asyncio.run(main())
    return handled


@pytest.mark.usefixtures("fast")
def test_a_blocked_loop_records_its_delay_and_a_healthy_one_small_ones(metrics: Metrics) -> None:
    blocked, healthy = Metrics(CollectorRegistry()), metrics

    async def block() -> None:
        await asyncio.sleep(0.2)
        time.sleep(0.3)  # the loop's thread blocked: the sample due in the next 0.05 s runs >= 0.25 s late
        await asyncio.sleep(0.2)

    async def idle() -> None:
        await asyncio.sleep(0.7)

    serve(RequestRecorder(blocked, "svc"), block)
    serve(RequestRecorder(healthy, "svc"), idle)
    assert late(blocked, "0.2") >= 1  # a delay over 0.2 s
    assert count(healthy) >= 1  # sampled (how promptly depends on the machine's load: see the next test)


def test_a_sample_is_how_late_its_timer_ran_not_the_interval(metrics: Metrics) -> None:
    """What one sample records, on a loop whose clock the test sets (a real loop's lateness depends on the load)."""
    class Clock:
        now = 100.0
        scheduled: list[float] = []

        def time(self) -> float:
            return self.now

        def call_at(self, when: float, callback: Any, context: Any = None) -> None:
            self.scheduled.append(when)

    loop = Clock()
    sampler = eventloop.LoopSampler(loop, 0.1)  # type: ignore[arg-type]
    sampler.add(metrics, *children(metrics))
    sampler.start()
    assert loop.scheduled == [pytest.approx(100.1)]
    loop.now = 100.1  # on time
    sampler._sample()
    assert loop.scheduled[-1] == pytest.approx(100.2)  # the next one is due an interval after this one ran
    loop.now = 100.45  # 0.25 s late
    sampler._sample()
    assert count(metrics) == 2 and bucket(metrics, "0.005") == 1 and bucket(metrics, "0.2") == 1
    assert total(metrics) == pytest.approx(0.25)


def test_each_sample_adds_the_time_since_the_previous_one_ran_from_the_samplers_start(metrics: Metrics) -> None:
    """aiwatch_event_loop_sampled_seconds_total: the seconds the sampler watched the loop (interval, delay and all),
    so that rate(_sum) over its rate is the share of the time the loop stood still, per loop."""
    loop = ClockLoop()
    sampler = eventloop.LoopSampler(loop, 0.1)  # type: ignore[arg-type]
    sampler.add(metrics, *children(metrics))
    sampler.start()
    assert watched(metrics) == 0  # nothing watched before the first sample
    loop.now = 100.1  # on time: 0.1 s since the start
    sampler._sample()
    assert watched(metrics) == pytest.approx(0.1)
    loop.now = 100.45  # 0.25 s late: 0.35 s since the previous sample ran
    sampler._sample()
    assert watched(metrics) == pytest.approx(0.45) and total(metrics) == pytest.approx(0.25)
    loop.now = 101.55  # 1 s late: the loop stood still 1.25 s of the 1.55 s watched
    sampler._sample()
    assert watched(metrics) == pytest.approx(1.55) and total(metrics) / watched(metrics) == pytest.approx(1.25 / 1.55)


def test_a_sample_adds_the_time_watched_before_its_delay_so_a_scrape_between_reads_the_share_low(
        metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scrape can fall between the two updates of one sample: with the time watched first, the delays' sum it reads
    is never ahead of the time watched (a share above 100%)."""
    loop = ClockLoop()
    delay, sampled = children(metrics)
    sampler = eventloop.LoopSampler(loop, 0.1)  # type: ignore[arg-type]
    sampler.add(metrics, delay, sampled)
    sampler.start()
    seen: list[tuple[float, float]] = []
    observe = delay.observe

    def scraped_midway(amount: float, exemplar: Any = None) -> None:
        seen.append((total(metrics), watched(metrics)))  # what a scrape before the observation reads
        observe(amount)

    monkeypatch.setattr(delay, "observe", scraped_midway)
    loop.now = 105.1  # 5 s late: the loop stood still 5 s of the 5.1 s watched
    sampler._sample()
    assert seen == [(0.0, pytest.approx(5.1))]
    assert total(metrics) == pytest.approx(5.0) and errors(metrics) == 0


def test_every_service_on_a_loop_counts_the_time_watched_once_per_sample(metrics: Metrics) -> None:
    loop = ClockLoop()
    eventloop.watch(loop, 0.1, metrics, *children(metrics, "svc"))  # type: ignore[arg-type]
    eventloop.watch(loop, 0.1, metrics, *children(metrics, "other"))  # type: ignore[arg-type]
    eventloop.watch(loop, 0.1, metrics, *children(metrics, "svc"))  # type: ignore[arg-type]  # the same target
    sampler = eventloop.sampler_for(loop)  # type: ignore[arg-type]
    assert sampler is not None
    loop.now = 100.3
    sampler._sample()
    assert watched(metrics, "svc") == pytest.approx(0.3) and watched(metrics, "other") == pytest.approx(0.3)


def stamp(metrics: Metrics, service: str = "svc") -> float | None:
    return metrics.registry.get_sample_value("aiwatch_event_loop_last_sample_timestamp_seconds", {"service": service})


class WallClock:
    """Stands in for ``time`` in :mod:`aiwatch.eventloop`: ``time()`` reads ``now``, or counts up from 1000 by 1 on
    each read when ``now`` is None."""

    def __init__(self, now: float | None = None) -> None:
        self.now = now
        self.reads = 0

    def time(self) -> float:
        self.reads += 1
        return self.now if self.now is not None else 999.0 + self.reads


def test_the_last_sample_timestamp_is_the_wall_clock_at_the_samplers_start_and_at_each_sample(
        metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiwatch_event_loop_last_sample_timestamp_seconds: set when the loop is first watched (a child is made at 0,
    which would read as no value until the first sample) and at each sample, from the wall clock Prometheus' time()
    compares it with, not the loop's clock (of no epoch)."""
    wall = WallClock(1000.0)
    monkeypatch.setattr(eventloop, "time", wall)
    loop = ClockLoop()
    eventloop.watch(loop, 0.1, metrics, *children(metrics),  # type: ignore[arg-type]
                    metrics.child(metrics.event_loop_last_sample, ("svc",)))
    sampler = eventloop.sampler_for(loop)  # type: ignore[arg-type]
    assert sampler is not None and count(metrics) == 0
    assert stamp(metrics) == 1000.0  # before any sample
    wall.now, loop.now = 1000.1, 100.1
    sampler._sample()
    assert stamp(metrics) == 1000.1
    wall.now, loop.now = 1005.1, 105.1  # 5 s late: the stamp moves only when the sample runs
    sampler._sample()
    assert stamp(metrics) == 1005.1 and count(metrics) == 2 and errors(metrics) == 0


def test_a_second_service_on_a_running_sampler_gets_its_timestamp_at_once(
        metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eventloop, "time", WallClock(1000.0))
    loop = ClockLoop()
    for service in ("svc", "other"):
        eventloop.watch(loop, 0.1, metrics, *children(metrics, service),  # type: ignore[arg-type]
                        metrics.child(metrics.event_loop_last_sample, (service,)))
    assert stamp(metrics, "svc") == stamp(metrics, "other") == 1000.0


def test_a_recorder_sets_its_loops_last_sample_timestamp_when_it_starts_watching_and_at_each_sample(
        metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    wall = WallClock()
    monkeypatch.setattr(eventloop, "time", wall)
    seen: list[float | None] = []

    async def work() -> None:
        seen.append(stamp(metrics))  # watch_loop ran, no sample yet
        while count(metrics) < 2:
            await asyncio.sleep(0.05)
        seen.extend((stamp(metrics), 999.0 + wall.reads))  # the latest of the start's and the samples'

    serve(RequestRecorder(metrics, "svc"), work)
    assert seen[0] == 1000.0 and seen[1] == seen[2] and wall.reads >= 3
    gc.collect()
    assert stamp(metrics) == float("inf")  # the loop closed and gone


def share(metrics: Metrics, service: str = "svc") -> float | None:
    return metrics.registry.get_sample_value("aiwatch_event_loop_stalled_ratio", {"service": service})


def test_the_stalled_ratio_is_the_share_of_the_last_five_minutes_the_loop_stood_still(metrics: Metrics) -> None:
    """aiwatch_event_loop_stalled_ratio: the sampler's own delays over the time it watched, over the last
    SHARE_WINDOW seconds of loop time (in buckets of 30 s): a stall leaves it once its bucket is older."""
    loop = ClockLoop()
    eventloop.watch(loop, 10.0, metrics, *children(metrics), None,  # type: ignore[arg-type]
                    metrics.child(metrics.event_loop_stalled, ("svc",)))
    sampler = eventloop.sampler_for(loop)  # type: ignore[arg-type]
    assert sampler is not None and share(metrics) == 0  # made, no sample yet
    loop.now = 110.0  # on time
    sampler._sample()
    assert share(metrics) == 0
    loop.now = 125.0  # due at 120: 5 s late, 15 s watched
    sampler._sample()
    assert share(metrics) == pytest.approx(5 / 25)
    while loop.now < 400:  # on time every 10 s from here on
        loop.now = loop.scheduled[-1]
        sampler._sample()
    assert loop.now == 405.0 and share(metrics) == pytest.approx(5 / 305) == total(metrics) / watched(metrics)
    loop.now = 415.0  # the bucket that holds the stall (from 110 s) is over 300 s old: dropped
    sampler._sample()
    assert share(metrics) == 0 and total(metrics) == pytest.approx(5)


def test_a_dropped_targets_timestamp_reads_removed_and_its_share_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """In multiprocess mode the gauge children are the process's and outlive a recorder whose metrics are gone (an
    app rebuilt): left at their last values, the timestamp froze and an idle worker read as hung. The sampler that
    drops the target sets the timestamp to +Inf (its removed value, which livemin passes over) and the share to 0."""
    monkeypatch.setattr(eventloop, "time", WallClock(1000.0))
    dropped = Metrics(CollectorRegistry())
    stamp_child = dropped.child(dropped.event_loop_last_sample, ("svc",))
    share_child = dropped.child(dropped.event_loop_stalled, ("svc",))
    loop = ClockLoop()
    eventloop.watch(loop, 10.0, dropped, *children(dropped), stamp_child, share_child)  # type: ignore[arg-type]
    sampler = eventloop.sampler_for(loop)  # type: ignore[arg-type]
    assert sampler is not None
    loop.now = 115.0  # 5 s late
    sampler._sample()
    registry = dropped.registry
    assert registry.get_sample_value("aiwatch_event_loop_last_sample_timestamp_seconds", {"service": "svc"}) == 1000
    assert registry.get_sample_value("aiwatch_event_loop_stalled_ratio", {"service": "svc"}) == pytest.approx(1 / 3)
    del dropped
    gc.collect()
    loop.now = 125.0
    sampler._sample()
    assert not sampler.running
    assert registry.get_sample_value("aiwatch_event_loop_last_sample_timestamp_seconds",
                                     {"service": "svc"}) == float("inf")
    assert registry.get_sample_value("aiwatch_event_loop_stalled_ratio", {"service": "svc"}) == 0


def test_a_sampler_whose_loop_is_gone_leaves_its_timestamp_removed(metrics: Metrics) -> None:
    loop = ClockLoop()
    eventloop.watch(loop, 10.0, metrics, *children(metrics),  # type: ignore[arg-type]
                    metrics.child(metrics.event_loop_last_sample, ("svc",)),
                    metrics.child(metrics.event_loop_stalled, ("svc",)))
    sampler = eventloop.sampler_for(loop)  # type: ignore[arg-type]
    assert sampler is not None and stamp(metrics) not in (None, float("inf"))
    del loop
    gc.collect()
    sampler._schedule()  # its next scheduling finds the loop collected
    assert not sampler.running and stamp(metrics) == float("inf") and share(metrics) == 0


def test_a_loop_closed_and_collected_leaves_its_timestamp_removed_and_its_share_zero(metrics: Metrics) -> None:
    """asyncio.run closes its loop with the next sample pending: no sample runs again to find the loop gone, so the
    loop's collection retires the targets; left at its last value the timestamp aged as if the loop hung."""
    async def work() -> None:
        await asyncio.sleep(0.2)

    serve(RequestRecorder(metrics, "svc"), work)
    gc.collect()
    # left to the next scrape (or call): a collection runs inside whatever lock its thread holds, a gauge's too
    assert len(metrics.deferred) == 1
    assert count(metrics) >= 1
    assert not metrics.deferred
    assert stamp(metrics) == float("inf") and share(metrics) == 0


def loops_closed_but_kept(recorder: RequestRecorder, times: int, work: Any) -> list[asyncio.AbstractEventLoop]:
    """Run ``work()`` in ``times`` calls of ``asyncio.run`` (as pytest-asyncio, or a worker thread per job, does),
    each after a request-path call of ``watch_loop``; the loops, closed and still referenced."""
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        recorder.watch_loop()
        await work()

    for _ in range(times):
        asyncio.run(main())
    return loops


@pytest.mark.usefixtures("fast")
def test_a_loop_closed_but_still_referenced_is_retired_at_the_next_scrape(metrics: Metrics) -> None:
    """A closed loop drops the pending sample, and one still referenced is never collected: its timestamp aged and
    its share stood at the last stall's for good, as a loop hung for good would show (a share of 0.39 still read
    seconds later), and each such loop kept a running sampler in the table."""
    async def stall() -> None:
        await asyncio.sleep(0.06)
        time.sleep(0.1)
        await asyncio.sleep(0.06)

    [loop] = loops_closed_but_kept(RequestRecorder(metrics, "svc"), 1, stall)
    assert count(metrics) >= 1  # sampled while it ran (this read is a scrape: it retires the closed loop)
    assert stamp(metrics) == float("inf") and share(metrics) == 0
    assert eventloop.sampler_for(loop) is None


@pytest.mark.usefixtures("fast")
def test_the_samplers_of_loops_closed_but_kept_do_not_pile_up_without_a_scrape(metrics: Metrics) -> None:
    async def work() -> None:
        await asyncio.sleep(0.06)

    loops = loops_closed_but_kept(RequestRecorder(metrics, "svc"), 5, work)
    # each new loop's sampler retires those of the loops closed before it; the last one waits for a scrape
    assert [eventloop.sampler_for(loop) is not None for loop in loops] == [False] * 4 + [True]


def test_a_closed_loops_retirement_leaves_the_gauges_another_running_loop_sets(metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, "svc")
    running = ClockLoop()
    eventloop.watch(running, 10.0, metrics, *children(metrics),  # type: ignore[arg-type]
                    metrics.child(metrics.event_loop_last_sample, ("svc",)),
                    metrics.child(metrics.event_loop_stalled, ("svc",)))

    async def work() -> None:
        await asyncio.sleep(0)

    [closed] = loops_closed_but_kept(recorder, 1, work)
    assert stamp(metrics) not in (None, float("inf"))  # the scrape retired the closed loop's sampler only
    assert eventloop.sampler_for(closed) is None and eventloop.sampler_for(running) is not None  # type: ignore[arg-type]


@pytest.mark.usefixtures("fast")
def test_the_samples_do_not_run_in_the_context_of_the_request_that_started_the_sampler(metrics: Metrics) -> None:
    """The chain of timers ran every sample in a copy of the first request's context, which kept that request's
    timeline and span (and anything else it set) alive for the loop's life."""
    request = contextvars.ContextVar[object]("request")
    seen: list[object] = []
    recorder = RequestRecorder(metrics, "svc")

    class Payload:
        pass

    payloads: list[weakref.ref[Payload]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def first_request() -> None:
            payload = Payload()
            payloads.append(weakref.ref(payload))
            request.set(payload)
            recorder.watch_loop()

        await asyncio.create_task(first_request())
        sampler = eventloop.sampler_for(loop)
        assert sampler is not None and sampler.running
        sample = sampler._sample

        def spy() -> None:
            seen.append(request.get(None))
            sample()

        sampler._sample = spy  # type: ignore[method-assign]
        await asyncio.sleep(0.3)
        gc.collect()
        seen.append(payloads[0]())  # the request's context is gone with it

    asyncio.run(main())
    assert len(seen) >= 2 and seen == [None] * len(seen)


def test_a_dropped_target_leaves_a_live_targets_timestamp_alone(metrics: Metrics) -> None:
    """Two recorders' metrics sharing one timestamp child (one process's metric objects in multiprocess mode) on
    different histogram children: the one dropped does not mark the child the other still sets."""
    loop = ClockLoop()
    shared = metrics.child(metrics.event_loop_last_sample, ("svc",))
    eventloop.watch(loop, 10.0, metrics, *children(metrics), shared)  # type: ignore[arg-type]
    dropped = Metrics(CollectorRegistry())
    eventloop.watch(loop, 10.0, dropped, *children(dropped), shared)  # type: ignore[arg-type]
    sampler = eventloop.sampler_for(loop)  # type: ignore[arg-type]
    assert sampler is not None and len(sampler.targets) == 2
    del dropped
    gc.collect()
    loop.now = 110.0
    sampler._sample()
    assert sampler.running and len(sampler.targets) == 1
    assert stamp(metrics) not in (None, float("inf"))


def test_a_failing_share_is_counted_and_the_other_series_still_recorded(metrics: Metrics) -> None:
    loop = ClockLoop()
    eventloop.watch(loop, 10.0, metrics, *children(metrics), None,  # type: ignore[arg-type]
                    metrics.child(metrics.event_loop_stalled, ("svc",)))
    sampler = eventloop.sampler_for(loop)  # type: ignore[arg-type]
    assert sampler is not None

    class Failing:
        def add(self, now: float, watched: float, delay: float) -> float | None:
            raise ArithmeticError("share")

    sampler._share = Failing()  # type: ignore[assignment]
    loop.now = 110.0
    sampler._sample()
    assert errors(metrics) == 1 and count(metrics) == 1 and sampler.running


def test_a_recorders_stalled_ratio_is_its_loops_delays_over_the_time_watched(metrics: Metrics) -> None:
    async def block() -> None:
        await asyncio.sleep(0.1)
        time.sleep(0.3)  # the loop's thread blocked
        while count(metrics) < 3:
            await asyncio.sleep(0.05)
        # read while the loop runs: its end retires the share to 0
        seen.extend((share(metrics), total(metrics) / watched(metrics)))

    seen: list[float | None] = []
    serve(RequestRecorder(metrics, "svc"), block)
    found, ratio = seen
    assert found is not None and found > 0
    assert found == pytest.approx(ratio)  # under 5 minutes: the counters' own ratio


class ClockLoop:
    """Stands in for a loop whose clock the test sets: it records the due times the sampler asks for."""

    def __init__(self) -> None:
        self.now = 100.0
        self.scheduled: list[float] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any, context: Any = None) -> None:
        self.scheduled.append(when)

    def is_closed(self) -> bool:
        return False


def children(metrics: Metrics, service: str = "svc") -> tuple[Any, Any]:
    """The delay histogram's and the watched-time counter's children a recorder for ``service`` hands the sampler."""
    return (metrics.child(metrics.event_loop_delay, (service,)),
            metrics.child(metrics.event_loop_sampled, (service,)))


def test_the_sampler_does_not_keep_the_metrics_of_a_recorder_that_is_gone_alive(metrics: Metrics) -> None:
    """A loop outlives the recorders made on it (a reloaded app, a middleware rebuilt per mount, tests): its sampler
    held each one's metrics, kept its registry alive and observed into it for the loop's life."""
    loop = ClockLoop()
    eventloop.watch(loop, 0.1, metrics, *children(metrics))  # type: ignore[arg-type]
    dropped = Metrics(CollectorRegistry())
    eventloop.watch(loop, 0.1, dropped, *children(dropped))  # type: ignore[arg-type]
    sampler = eventloop.sampler_for(loop)  # type: ignore[arg-type]
    assert sampler is not None and len(sampler.targets) == 2
    gone = weakref.ref(dropped)
    del dropped
    gc.collect()
    assert gone() is None
    loop.now = 100.1
    sampler._sample()
    assert len(sampler.targets) == 1 and count(metrics) == 1 and errors(metrics) == 0
    assert sampler.running and loop.scheduled[-1] == pytest.approx(100.2)


def test_a_child_two_metrics_share_is_observed_once_and_kept_while_either_is_alive() -> None:
    """In multiprocess mode every Metrics of a process holds the same metric objects, so two recorders' metrics give
    one child: it was observed once per sample (the first one's target), and must stay a target while the second
    recorder lives, though the first one's metrics are gone."""
    loop = ClockLoop()
    holder = Metrics(CollectorRegistry())  # stands for the process's file-backed metric, which outlives both
    shared = children(holder)
    first, second = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    for metrics in (first, second):
        eventloop.watch(loop, 0.1, metrics, *shared)  # type: ignore[arg-type]
    sampler = eventloop.sampler_for(loop)  # type: ignore[arg-type]
    assert sampler is not None and len(sampler.targets) == 1
    del first, metrics
    gc.collect()
    loop.now = 100.1
    sampler._sample()
    assert count(holder) == 1 and sampler.running and len(sampler.targets) == 1
    del second
    gc.collect()
    loop.now = 100.2
    sampler._sample()
    assert count(holder) == 1 and not sampler.running and sampler.targets == ()


def test_recorders_made_and_dropped_on_one_loop_leave_no_targets_and_the_sampler_stops_with_the_last() -> None:
    loop = ClockLoop()
    made: list[weakref.ref[Metrics]] = []
    for _ in range(20):
        metrics = Metrics(CollectorRegistry())
        made.append(weakref.ref(metrics))
        eventloop.watch(loop, 0.1, metrics, *children(metrics))  # type: ignore[arg-type]
    del metrics
    gc.collect()
    assert [ref for ref in made if ref() is not None] == []  # all collected: the sampler held none
    sampler = eventloop.sampler_for(loop)  # type: ignore[arg-type]
    assert sampler is not None and len(sampler._targets) == 1  # each one gone was dropped when the next came
    loop.now = 100.1
    sampler._sample()
    assert sampler._targets == () and not sampler.running
    assert loop.scheduled == [pytest.approx(100.1)]  # nothing left to sample into: no next sample
    again = Metrics(CollectorRegistry())
    eventloop.watch(loop, 0.1, again, *children(again))  # type: ignore[arg-type]
    restarted = eventloop.sampler_for(loop)  # type: ignore[arg-type]
    assert restarted is not None and restarted is not sampler and restarted.running
    assert len(restarted.targets) == 1


def test_a_recorder_asking_a_loop_for_another_interval_gets_the_first_and_a_warning_once_per_loop(
        metrics: Metrics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="aiwatch")
    monkeypatch.setenv(INTERVAL, "0.05")
    first, same = RequestRecorder(metrics, "first"), RequestRecorder(metrics, "same")
    monkeypatch.setenv(INTERVAL, "0.5")
    others = [RequestRecorder(metrics, f"other{i}") for i in range(3)]
    samplers: list[Any] = []

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "already sampled" in r.getMessage()]

    async def request() -> None:
        before = len(warnings())
        first.watch_loop()
        same.watch_loop()
        assert len(warnings()) == before  # the same interval: nothing to say
        for recorder in others:
            recorder.watch_loop()
        samplers.append(eventloop.sampler_for(asyncio.get_running_loop()))

    for _ in range(2):  # two loops, one warning each
        asyncio.run(request())
    assert len(warnings()) == 2
    assert "every 0.05 s" in warnings()[0] and "every 0.5 s" in warnings()[0]
    assert [s.interval for s in samplers] == [0.05, 0.05] and all(len(s.targets) == 5 for s in samplers)


def total(metrics: Metrics, service: str = "svc") -> float:
    value = metrics.registry.get_sample_value("aiwatch_event_loop_delay_seconds_sum", {"service": service})
    return value or 0.0


def watched(metrics: Metrics, service: str = "svc") -> float:
    value = metrics.registry.get_sample_value("aiwatch_event_loop_sampled_seconds_total", {"service": service})
    return value or 0.0


@pytest.mark.usefixtures("fast")
def test_a_stall_is_one_late_sample_of_its_length_so_the_sum_not_the_share_of_samples_is_the_time_stood_still(
        metrics: Metrics) -> None:
    # docs/signals.md: rate(_sum) is the seconds the loop was late per second; the share of late samples is not
    async def stall_once() -> None:
        await asyncio.sleep(0.3)
        time.sleep(0.6)  # half of the run's time: no sample is taken while the thread is held
        await asyncio.sleep(0.3)

    serve(RequestRecorder(metrics, "svc"), stall_once)
    assert late(metrics, "0.5") == 1  # the whole stall is one sample, taken when it ended
    assert count(metrics) >= 5  # the idle stretches' samples, each prompt, outnumber it
    assert total(metrics) >= 0.6 - 0.05  # the sum holds the stall's length (less at most one interval)


@pytest.mark.usefixtures("fast")
def test_the_time_watched_covers_every_delay_and_interval_and_no_more_than_the_loop_ran(metrics: Metrics) -> None:
    """On a real loop (read after it closed: no sample can land between two reads): each sample adds at least the
    interval and its own delay, and the additions telescope to the time from the sampler's start to its last
    sample, so the counter lies between those sums and the loop's whole run; the stall is inside it."""
    async def stall_once() -> None:
        await asyncio.sleep(0.3)
        time.sleep(0.6)
        await asyncio.sleep(0.3)

    started = time.monotonic()
    serve(RequestRecorder(metrics, "svc"), stall_once)
    ran = time.monotonic() - started
    samples, stood_still, seconds = count(metrics), total(metrics), watched(metrics)
    assert samples >= 1 and late(metrics, "0.5") == 1  # the stall's sample, at least
    assert seconds >= stood_still + samples * (0.05 - EARLY)  # each sample: its interval and its delay, at least
    assert seconds >= 0.6  # the stall is inside the time watched
    assert seconds <= ran  # asyncio's clock is time.monotonic(): never more than the run
    assert 0 < stood_still / seconds < 1


@pytest.mark.usefixtures("fast")
def test_one_sampler_per_loop_records_for_every_service_on_it(metrics: Metrics) -> None:
    first, second = RequestRecorder(metrics, "svc"), RequestRecorder(metrics, "other")
    samplers: list[Any] = []

    async def work() -> None:
        for _ in range(3):
            first.watch_loop()
            second.watch_loop()
        samplers.append(eventloop.sampler_for(asyncio.get_running_loop()))
        await asyncio.sleep(0.3)

    serve(first, work)
    assert samplers[0] is not None and len(samplers[0].targets) == 2
    assert count(metrics, "svc") >= 2 and count(metrics, "svc") == count(metrics, "other")


@pytest.mark.usefixtures("fast")
def test_each_loop_of_each_thread_gets_its_own_sampler(metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, "svc")
    samplers: list[Any] = []

    async def work() -> None:
        loop = asyncio.get_running_loop()
        sampler = eventloop.sampler_for(loop)
        assert sampler is not None and sampler.loop() is loop
        samplers.append(sampler)
        await asyncio.sleep(0.3)

    threads = [threading.Thread(target=serve, args=(recorder, work)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(samplers) == 2 and samplers[0] is not samplers[1]
    assert count(metrics) >= 4  # both loops sampled


def test_the_sampler_does_not_keep_its_loop_alive(metrics: Metrics) -> None:
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def work() -> None:
        loop = asyncio.get_running_loop()
        assert eventloop.sampler_for(loop) is not None
        loops.append(weakref.ref(loop))

    serve(RequestRecorder(metrics, "svc"), work)
    gc.collect()
    assert loops[0]() is None


async def test_a_pytest_asyncio_loop_per_test_is_sampled_and_its_sampler_ends_with_it(metrics: Metrics) -> None:
    # pytest-asyncio closes this test's loop after it: the sampler's pending timer goes with it (the next test's
    # loop gets a sampler of its own)
    recorder = RequestRecorder(metrics, "svc")
    recorder.watch_loop()
    sampler = eventloop.sampler_for(asyncio.get_running_loop())
    assert sampler is not None and sampler.running
    recorder.watch_loop()
    assert eventloop.sampler_for(asyncio.get_running_loop()) is sampler and len(sampler.targets) == 1
    await asyncio.sleep(0.25)
    assert count(metrics) >= 1


def test_a_loop_run_to_its_end_exits_without_a_warning_or_a_pending_callback() -> None:
    # asyncio.run() closes the loop with the sampler's next sample pending; -X dev and -W error make any warning
    # about a pending task or callback, an unclosed loop or resource, an error
    code = """
import asyncio, time
from prometheus_client import CollectorRegistry, multiprocess
from aiwatch.metrics import Metrics
from aiwatch import timing as timing_module
from aiwatch.timing import RequestRecorder
metrics = Metrics(CollectorRegistry())
recorder = RequestRecorder(metrics, "svc")
async def main():
    recorder.watch_loop()
    await asyncio.sleep(0.3)
loop = asyncio.new_event_loop()
loop.run_until_complete(main())
loop.close()
asyncio.run(main())
print(metrics.registry.get_sample_value("aiwatch_event_loop_delay_seconds_count", {"service": "svc"}) > 0)
"""
    done = subprocess.run([sys.executable, "-X", "dev", "-W", "error", "-c", code], capture_output=True, text=True,
                          timeout=60, env=python_env(AIWATCH_EVENT_LOOP_INTERVAL="0.05"))
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "True", "")


@pytest.mark.usefixtures("fast")
def test_a_failing_observation_is_counted_and_the_sampler_goes_on(metrics: Metrics,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = RequestRecorder(metrics, "svc")
    child = metrics.child(metrics.event_loop_delay, ("svc",))
    failures = [0]

    def broken(amount: float, exemplar: Any = None) -> None:
        failures[0] += 1
        raise RuntimeError("injected")

    monkeypatch.setattr(child, "observe", broken)

    async def work() -> None:
        await asyncio.sleep(0.3)

    handled = serve(recorder, work)
    assert handled == []
    assert failures[0] >= 2  # sampled again after the first failure
    assert errors(metrics) == failures[0]


@pytest.mark.usefixtures("fast")
def test_a_failure_to_schedule_the_next_sample_is_counted_and_ends_the_sampler(metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, "svc")
    samplers: list[Any] = []

    async def work() -> None:
        loop = asyncio.get_running_loop()
        sampler = eventloop.sampler_for(loop)
        samplers.append(sampler)
        real = loop.call_at
        calls = [0]

        def failing(when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(callback, "__self__", None) is sampler:
                calls[0] += 1
                raise RuntimeError("injected")
            return real(when, callback, *args, **kwargs)

        loop.call_at = failing  # type: ignore[method-assign]
        await asyncio.sleep(0.3)
        samplers.append(calls[0])

    handled = serve(recorder, work)
    assert handled == []
    assert samplers[1] == 1 and errors(metrics) == 1  # it tried once, then stopped
    assert not samplers[0].running
    assert count(metrics) == 1  # the one sample before the failure


# under a millisecond the loop cannot wait for the sample: uvloop rounds a timer under 0.5 ms to 0 and asyncio runs
# one within its clock's resolution at once, so the loop polls without blocking and the sampler takes a core
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-0", "0.1s", "fast", "1e10", "0.0004", "1e-9",
                                   "1e-300", "0.000999"])
def test_a_hostile_interval_is_refused_by_name_at_start(monkeypatch: pytest.MonkeyPatch, metrics: Metrics,
                                                        value: str) -> None:
    monkeypatch.setenv(INTERVAL, value)
    refused = f"^{INTERVAL} must be a number of seconds from 0.001 .*'off'.*got '"
    with pytest.raises(ValueError, match=refused):
        RequestRecorder(metrics, "svc")
    with pytest.raises(ValueError, match=refused):
        AiwatchMiddleware(lambda scope, receive, send: None, metrics=metrics)


@pytest.mark.parametrize(("value", "expected"), [("", 0.1), ("0.25", 0.25), ("0.001", 0.001), ("1e9", 1e9),
                                               (" OFF ", None), ("off", None)])
def test_the_interval_variable(value: str, expected: float | None) -> None:
    assert eventloop.loop_interval({INTERVAL: value}) == expected


def test_off_starts_no_sampler(monkeypatch: pytest.MonkeyPatch, metrics: Metrics) -> None:
    monkeypatch.setenv(INTERVAL, "off")
    seen: list[Any] = []

    async def work() -> None:
        seen.append(eventloop.sampler_for(asyncio.get_running_loop()))
        await asyncio.sleep(0.2)

    serve(RequestRecorder(metrics, "svc"), work)
    assert seen == [None] and count(metrics) == 0


def test_watching_outside_a_loop_does_nothing(metrics: Metrics) -> None:
    RequestRecorder(metrics, "svc").watch_loop()
    assert count(metrics) == 0 and errors(metrics) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX")
@pytest.mark.usefixtures("fast")
def test_a_child_starts_its_loops_sampler_while_the_samplers_lock_was_held_at_the_fork(metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, "svc")

    def sample_in_the_child() -> bool:
        async def work() -> None:
            await asyncio.sleep(0.2)

        serve(recorder, work)
        return count(metrics) >= 1

    assert child_while_held([eventloop._lock], sample_in_the_child) == "done"


#: A process's loop sampled for 0.3 s by service "svc" (run with ``python -c``, more lines appended).
_SAMPLED_FOR_A_MOMENT = """
import asyncio
from aiwatch.recording import make_recorder
recorder = make_recorder(service="svc")
async def main():
    recorder.watch_loop()
    await asyncio.sleep(0.3)
# left open and never collected, as a worker's loop is while it serves (or hangs): a loop closed and collected (at
# the interpreter's exit too) retires its timestamp and share
import atexit, os, sys
atexit.register(lambda: (sys.stdout.flush(), os._exit(0)))
loop = asyncio.new_event_loop()
loop.run_until_complete(main())
"""


def test_the_delay_reaches_the_merged_view_in_multiprocess_mode(tmp_path: Path) -> None:
    code = _SAMPLED_FOR_A_MOMENT + """
from aiwatch.exposition import serving_registry
print(serving_registry().get_sample_value("aiwatch_event_loop_delay_seconds_count", {"service": "svc"}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=python_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), AIWATCH_EVENT_LOOP_INTERVAL="0.05"))
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) >= 2
    assert list(tmp_path.glob("histogram_*.db"))


def test_the_time_watched_by_two_processes_adds_up_in_the_merged_view(tmp_path: Path) -> None:
    """gunicorn -k uvicorn workers: one scrape target merges every worker's sample files, so the counter's rate is
    the number of loops watched and the merged delay sum over it the mean share of the time they stood still."""
    code = _SAMPLED_FOR_A_MOMENT + """
import os
print(os.getpid())
"""
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), AIWATCH_EVENT_LOOP_INTERVAL="0.05")
    pids = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        pids.append(int(done.stdout))
    alone = [merged(tmp_path, f"*_{pid}.db") for pid in pids]  # each worker's own files
    both = merged(tmp_path, "*.db")
    for seconds, delays, samples in alone:
        assert samples >= 2 and seconds >= delays + samples * (0.05 - EARLY)
    assert both[0] == pytest.approx(alone[0][0] + alone[1][0])
    assert both[2] == alone[0][2] + alone[1][2]
    assert both[1] / both[0] < 1  # the merged share: the two loops' stood-still seconds over their watched ones


def test_a_merged_target_serves_the_stalest_live_processs_timestamp_and_a_dead_ones_goes(tmp_path: Path) -> None:
    """Two workers' loops sampled one after the other: the merged time watched grows with both, and the merged
    timestamp is the first one's last sample (livemin: the stalest, as a worker whose loop is blocked for good would
    leave it), until the worker is marked dead (aiwatch.gunicorn.child_exit) and the other's shows."""
    code = _SAMPLED_FOR_A_MOMENT + """
import os
from prometheus_client import REGISTRY
print(os.getpid(), REGISTRY.get_sample_value("aiwatch_event_loop_last_sample_timestamp_seconds", {"service": "svc"}))
"""
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), AIWATCH_EVENT_LOOP_INTERVAL="0.05")
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        pid, last = done.stdout.split()
        runs.append((int(pid), float(last)))
    (first, first_last), (_, second_last) = runs
    assert 0 < first_last < second_last  # the second ran after the first ended

    def timestamp() -> float | None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
        return registry.get_sample_value("aiwatch_event_loop_last_sample_timestamp_seconds", {"service": "svc"})

    assert timestamp() == first_last
    multiprocess.mark_process_dead(first, str(tmp_path))  # type: ignore[no-untyped-call]
    assert timestamp() == second_last
    assert merged(tmp_path, "*.db")[0] > 0  # the dead worker's counts stay


def test_a_removed_timestamp_leaves_the_other_processes_minimum(tmp_path: Path) -> None:
    """Metrics.remove in multiprocess mode cannot take a series out of the files: the timestamp's removed value is
    +Inf, which livemin passes over (0 or NaN would be the merged value, or win by file order)."""
    code = _SAMPLED_FOR_A_MOMENT + """
import sys
from aiwatch.metrics import default_metrics
m = default_metrics()
if sys.argv[1] == "remove":
    m.remove(m.event_loop_last_sample, ("svc",))
"""
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), AIWATCH_EVENT_LOOP_INTERVAL="0.05")
    for action in ("remove", "keep"):
        done = subprocess.run([sys.executable, "-c", code, action], capture_output=True, text=True, timeout=120,
                              env=env)
        assert done.returncode == 0, done.stderr
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    value = registry.get_sample_value("aiwatch_event_loop_last_sample_timestamp_seconds", {"service": "svc"})
    assert value is not None and 0 < value < float("inf")


def test_a_merged_target_serves_the_largest_live_processs_stalled_ratio_not_the_mean(tmp_path: Path) -> None:
    """One process whose loop stood still much of the time, one prompt: the counters' merged ratio is the mean of
    the two, diluted; the merged aiwatch_event_loop_stalled_ratio is the stalled one's own (livemax)."""
    code = """
import asyncio, os, sys, time
from aiwatch.recording import make_recorder
from prometheus_client import REGISTRY
recorder = make_recorder(service="svc")
async def main():
    recorder.watch_loop()
    await asyncio.sleep(0.1)
    if sys.argv[1] == "stall":
        time.sleep(0.4)
    await asyncio.sleep(0.3)
import atexit
atexit.register(lambda: (sys.stdout.flush(), os._exit(0)))  # a loop closed and collected retires its share to 0
loop = asyncio.new_event_loop()
loop.run_until_complete(main())
print(REGISTRY.get_sample_value("aiwatch_event_loop_stalled_ratio", {"service": "svc"}))
"""
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), AIWATCH_EVENT_LOOP_INTERVAL="0.05")
    own = {}
    for kind in ("stall", "prompt"):
        done = subprocess.run([sys.executable, "-c", code, kind], capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        own[kind] = float(done.stdout)
    assert own["stall"] > own["prompt"]
    seconds, delays, _ = merged(tmp_path, "*.db")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("aiwatch_event_loop_stalled_ratio", {"service": "svc"}) == own["stall"]
    assert delays / seconds < own["stall"]  # the mean of the two


def merged(directory: Path, pattern: str) -> tuple[float, float, float]:
    """The time watched, the delay sum and the sample count of service "svc", as a multiprocess /metrics serves
    them from the sample files in ``directory`` matching ``pattern``."""
    only = directory / pattern.replace("*", "x").replace(".db", "")
    only.mkdir()
    for path in directory.glob(pattern):
        shutil.copy(path, only / path.name)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(only))
    label = {"service": "svc"}
    values = (registry.get_sample_value("aiwatch_event_loop_sampled_seconds_total", label),
              registry.get_sample_value("aiwatch_event_loop_delay_seconds_sum", label),
              registry.get_sample_value("aiwatch_event_loop_delay_seconds_count", label))
    assert None not in values, values
    return values  # type: ignore[return-value]


def test_a_loop_that_cannot_be_weakly_referenced_is_counted_not_raised_into_the_request(
        metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = RequestRecorder(metrics, "svc")

    def no_weak_references(obj: Any, *args: Any) -> Any:
        raise TypeError(f"cannot create weak reference to {type(obj).__name__!r} object")

    async def request() -> None:
        monkeypatch.setattr(timing_module.weakref, "ref", no_weak_references)
        recorder.watch_loop()  # as the middleware does on each request: must not raise

    asyncio.run(request())
    assert errors(metrics) >= 1  # the sampler could not be kept either (its table is weak too), counted


def requests_on_one_loop(recorder: RequestRecorder, times: int) -> asyncio.AbstractEventLoop:
    """Call ``recorder.watch_loop()`` as ``times`` requests on one new event loop would; the loop (closed)."""
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        for _ in range(times):
            recorder.watch_loop()

    asyncio.run(main())
    return loops[0]


@pytest.fixture
def one_warning_per_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh burst log whose bursts outlast the test: the first failure of a component is logged, later ones not."""
    monkeypatch.setattr(safety, "_burst", safety._BurstLog(burst_seconds=3600))


def logged_failures(caplog: pytest.LogCaptureFixture) -> list[tuple[str, Any]]:
    return [(r.getMessage(), r.exc_info[1] if r.exc_info else None) for r in caplog.records]


@pytest.mark.usefixtures("one_warning_per_burst")
def test_a_delay_metric_child_that_cannot_be_made_is_counted_in_the_recorders_metrics_per_request_and_logged_once(
        metrics: Metrics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    recorder = RequestRecorder(metrics, "svc")
    refused = RuntimeError("no child")

    def no_child(*labels: str) -> Any:
        raise refused

    monkeypatch.setattr(metrics.event_loop_delay, "labels", no_child)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        loop = requests_on_one_loop(recorder, 3)
    assert errors(metrics) == 3  # nothing remembered: each request asks again
    assert logged_failures(caplog) == [
        ("aiwatch: event_loop failed and was skipped: RuntimeError('no child')", refused)]
    assert eventloop.sampler_for(loop) is None  # no sampler started without its metrics


@pytest.mark.usefixtures("one_warning_per_burst")
def test_a_loop_recorder_cannot_weakly_reference_is_counted_per_request_and_logged_once_and_still_sampled(
        metrics: Metrics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    recorder = RequestRecorder(metrics, "svc")
    refused = TypeError("cannot create weak reference to 'Loop' object")

    def no_weak_references(obj: Any, *args: Any) -> Any:
        raise refused

    # timing's own weakref only: the sampler's table (eventloop's weak references) works, so every error counted
    # is the recorder's
    monkeypatch.setattr(timing_module, "weakref", types.SimpleNamespace(ref=no_weak_references))
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        loop = requests_on_one_loop(recorder, 3)
    # read before the scrape below, which retires the sampler of the loop closed (retire_closed)
    sampler = eventloop.sampler_for(loop)
    assert sampler is not None and len(sampler.targets) == 1  # the loop is sampled; the same target each time
    assert errors(metrics) == 3  # not remembered: asked again on each request
    assert logged_failures(caplog) == [
        ("aiwatch: event_loop failed and was skipped: TypeError(\"cannot create weak reference to 'Loop' object\")",
         refused)]


def test_a_recorder_hands_each_loop_to_the_sampler_once_and_later_requests_on_it_only_compare_the_loop(
        metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = RequestRecorder(metrics, "svc")
    handed: list[asyncio.AbstractEventLoop] = []

    def counting_watch(loop: asyncio.AbstractEventLoop, *args: Any) -> None:
        handed.append(loop)
        eventloop.watch(loop, *args)

    monkeypatch.setattr(timing_module, "watch", counting_watch)
    first = requests_on_one_loop(recorder, 3)
    second = requests_on_one_loop(recorder, 2)
    assert handed == [first, second]
    assert errors(metrics) == 0


def test_an_interval_longer_than_half_the_stuck_window_is_warned_once(caplog: pytest.LogCaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """AIWATCH_EVENT_LOOP_INTERVAL=1000 (meant as milliseconds) sampled every 1000 s, and said nothing: the alert's
    stuck branch and the console's loop table (no sample over 2m: stuck) took every healthy loop for a stuck one."""
    from aiwatch.rules.config import Latency, duration_ns

    monkeypatch.setattr(eventloop, "_long_intervals_warned", set(), raising=False)  # warned once per process
    caplog.set_level(logging.WARNING, logger="aiwatch")
    assert eventloop.loop_interval({"AIWATCH_EVENT_LOOP_INTERVAL": "60"}) == 60.0
    assert not caplog.records
    for _ in range(2):
        assert eventloop.loop_interval({"AIWATCH_EVENT_LOOP_INTERVAL": "1000"}) == 1000.0
    (record,) = caplog.records
    assert record.getMessage().startswith("aiwatch: AIWATCH_EVENT_LOOP_INTERVAL is 1000 seconds (seconds, not "
                                          "milliseconds): AiwatchEventLoopDelayHigh and the console's loop table")
    assert duration_ns(Latency().loop_stuck_window) == eventloop.DEFAULT_STUCK_WINDOW * 1e9  # the rules' default


class TwoLoops:
    """Two event loops, each run by a thread of its own, recording through one recorder (two threads each running
    asyncio, sharing an app)."""

    def __init__(self, recorder: RequestRecorder) -> None:
        self.recorder = recorder
        self.loops: list[asyncio.AbstractEventLoop] = []
        self.threads: list[threading.Thread] = []
        for _ in range(2):
            ready = threading.Event()

            def run(ready: threading.Event = ready) -> None:
                loop = asyncio.new_event_loop()
                self.loops.append(loop)
                ready.set()
                loop.run_forever()
                loop.close()

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            assert ready.wait(10)
            self.threads.append(thread)

    def request(self, i: int) -> None:
        async def request() -> None:
            self.recorder.watch_loop()

        asyncio.run_coroutine_threadsafe(request(), self.loops[i]).result(10)

    def block(self, i: int) -> threading.Event:
        """Block loop ``i`` until the event returned is set."""
        blocked, release = threading.Event(), threading.Event()

        def hold() -> None:
            blocked.set()
            release.wait(30)

        self.loops[i].call_soon_threadsafe(hold)
        assert blocked.wait(10)
        return release

    def close(self) -> None:
        for loop in self.loops:
            loop.call_soon_threadsafe(loop.stop)
        for thread in self.threads:
            thread.join(10)
        eventloop.retire_closed()


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"not {what} in 30 s"
        time.sleep(0.005)


@pytest.mark.usefixtures("fast")
def test_a_recorder_serving_two_loops_by_turns_asks_for_each_loops_sampler_once(
        metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    # it remembered the last loop only: requests served by turns asked the samplers' table, under its lock, and set
    # the timestamp at each request (200 asks for 200 requests)
    asked: list[asyncio.AbstractEventLoop] = []
    watch = timing_module.watch
    monkeypatch.setattr(timing_module, "watch", lambda loop, *args: (asked.append(loop), watch(loop, *args)))
    loops = TwoLoops(RequestRecorder(metrics, service="svc"))
    try:
        for i in range(200):
            loops.request(i % 2)
        assert asked == loops.loops
    finally:
        loops.close()


@pytest.mark.usefixtures("fast")
def test_a_loop_blocked_while_another_loop_of_its_service_samples_shows_its_last_sample_time(
        metrics: Metrics) -> None:
    # both loops' samplers set the service's one timestamp: the other loop's samples kept it fresh, and a loop blocked
    # for good never read as stuck (2.5 s blocked read 0.006 s old)
    loops = TwoLoops(RequestRecorder(metrics, service="svc"))
    try:
        loops.request(0)
        loops.request(1)
        release = loops.block(0)
        try:
            blocked_since = time.time()  # loop 0 sampled last before it
            samples = count(metrics)
            wait_for(lambda: count(metrics) >= samples + 2, "the other loop sampled")  # (loop 0 takes none)
            assert stamp(metrics) < blocked_since
        finally:
            release.set()
    finally:
        loops.close()


@pytest.mark.usefixtures("fast")
def test_the_stalled_ratio_of_a_service_on_two_loops_is_the_larger_loops(metrics: Metrics) -> None:
    # both loops' samplers set the service's one share: it read the loop that sampled last's (0.02 and 0.8 by turns)
    loops = TwoLoops(RequestRecorder(metrics, service="svc"))
    try:
        loops.request(0)
        loops.request(1)
        loops.loops[0].call_soon_threadsafe(time.sleep, 0.3)  # loop 0 stood still, loop 1 did not
        wait_for(lambda: (share(metrics) or 0.0) > 0.1, "loop 0's stall sampled")
        release = loops.block(0)  # loop 0 sets nothing from here
        try:
            samples = count(metrics)
            wait_for(lambda: count(metrics) >= samples + 2, "the other loop sampled")  # (loop 0 takes none)
            assert (share(metrics) or 0.0) > 0.1
        finally:
            release.set()
    finally:
        loops.close()


@pytest.mark.usefixtures("fast")
def test_a_loop_kept_open_but_not_running_leaves_its_services_timestamp_to_the_running_loop(
        metrics: Metrics) -> None:
    # a loop run for a call and kept for the next (run_until_complete, not closed) is idle, not blocked: read as the
    # least recently sampled loop, its last sample aged the service's timestamp as a stuck loop's would
    recorder = RequestRecorder(metrics, service="svc")
    loops = TwoLoops(recorder)
    kept = asyncio.new_event_loop()
    try:
        async def request() -> None:
            recorder.watch_loop()

        caller = threading.Thread(target=kept.run_until_complete, args=(request(),))
        caller.start()
        caller.join(10)
        assert eventloop.sampler_for(kept) is not None and not kept.is_running() and not kept.is_closed()
        idle_since = time.time()
        loops.request(1)
        samples = count(metrics)
        wait_for(lambda: count(metrics) >= samples + 2, "the running loop sampled")
        assert stamp(metrics) >= idle_since
    finally:
        loops.close()
        kept.close()
        eventloop.retire_closed()
