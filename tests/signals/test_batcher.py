"""MicroBatcher: batching, per-caller results and exceptions, phases in each caller's request, shutdown."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch import timing
from aiwatch.metrics import Metrics
from aiwatch.signals.batcher import BatcherClosedError, BatchResultError, MicroBatcher
from aiwatch.timing import RequestRecorder, current_timeline, phase, set_default_recorder
from tests.hostile_numbers import BAD_SECONDS, OTHER_SECONDS
from tests.labels import with_defaults


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, with_defaults(name, labels))


async def test_full_batches_go_at_once_and_each_caller_gets_its_own_result(registry: CollectorRegistry,
                                                                          metrics: Metrics) -> None:
    calls: list[list[int]] = []

    async def double(items: list[int]) -> list[int]:
        calls.append(list(items))
        return [2 * x for x in items]

    # a max wait far beyond the test: batches can only have been sent because they were full
    async with MicroBatcher(double, max_batch_size=4, max_wait_seconds=3600, model="m", metrics=metrics) as b:
        results = await asyncio.gather(*(b.submit(i) for i in range(8)))
    assert results == [2 * i for i in range(8)]
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert sample(registry, "aiwatch_batch_size_count", model="m") == 2.0
    assert sample(registry, "aiwatch_batch_size_sum", model="m") == 8.0
    assert sample(registry, "aiwatch_queue_wait_seconds_count", queue="m") == 8.0
    assert sample(registry, "aiwatch_queue_depth", queue="m") == 0.0


async def test_a_partial_batch_goes_after_max_wait(metrics: Metrics) -> None:
    calls: list[list[str]] = []

    def upper(items: list[str]) -> list[str]:  # a sync model function: runs in a thread
        calls.append(list(items))
        assert threading.current_thread() is not threading.main_thread()
        return [s.upper() for s in items]

    b = MicroBatcher(upper, max_batch_size=100, max_wait_seconds=0.001, metrics=metrics)
    assert await asyncio.gather(b.submit("a"), b.submit("b")) == ["A", "B"]
    assert calls == [["a", "b"]]
    await b.aclose()


async def test_batch_exception_goes_to_that_batch_only(metrics: Metrics) -> None:
    async def fn(items: list[int]) -> list[int]:
        if 13 in items:
            raise RuntimeError("model crashed on this batch")
        return items

    async with MicroBatcher(fn, max_batch_size=2, max_wait_seconds=3600, metrics=metrics) as b:
        results = await asyncio.gather(*(b.submit(i) for i in (1, 2, 13, 4, 5, 6)), return_exceptions=True)
    assert results[0:2] == [1, 2]
    assert all(isinstance(r, RuntimeError) and str(r) == "model crashed on this batch" for r in results[2:4])
    assert results[4:] == [5, 6]


async def test_per_item_exceptions_with_return_exceptions(metrics: Metrics) -> None:
    async def fn(items: list[int]) -> list[object]:
        return [ValueError(f"bad {x}") if x < 0 else x for x in items]

    async with MicroBatcher(fn, max_batch_size=4, max_wait_seconds=3600, return_exceptions=True,
                            metrics=metrics) as b:
        results = await asyncio.gather(*(b.submit(i) for i in (1, -2, 3, -4)), return_exceptions=True)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad -2"
    assert isinstance(results[3], ValueError) and str(results[3]) == "bad -4"


@pytest.mark.parametrize("bad", [[1], None, "ab"])
async def test_wrong_number_of_results_is_a_clear_error(metrics: Metrics, bad: object) -> None:
    async def fn(items: list[int]) -> object:
        return bad

    async with MicroBatcher(fn, max_batch_size=2, max_wait_seconds=3600, metrics=metrics) as b:
        results = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
    for r in results:
        assert isinstance(r, BatchResultError)
        assert "for a batch of 2 items" in str(r) and "one result per item" in str(r)


class StalledModel:
    """A model whose calls wait until released (a hung kernel), recording each batch it was given."""

    def __init__(self) -> None:
        self.seen: list[list[int]] = []
        self.release = asyncio.Event()

    async def __call__(self, items: list[int]) -> list[int]:
        self.seen.append(list(items))
        await self.release.wait()
        return items


async def test_cancelled_caller_does_not_break_the_batch(registry: CollectorRegistry, metrics: Metrics) -> None:
    fn = StalledModel()
    seen, release = fn.seen, fn.release
    b = MicroBatcher(fn, max_batch_size=3, max_wait_seconds=3600, model="c", metrics=metrics)
    # cancelled while waiting for its batch: it leaves the queue, and the batch goes without it
    early = asyncio.ensure_future(b.submit(0))
    await asyncio.sleep(0)
    early.cancel()
    await asyncio.sleep(0)
    assert sample(registry, "aiwatch_queue_depth", queue="c") == 0.0
    first = [asyncio.ensure_future(b.submit(i)) for i in (1, 2, 3)]
    while not seen:
        await asyncio.sleep(0)
    assert seen == [[1, 2, 3]]  # a full batch of callers still waiting
    # cancelled while its batch is in the model: the others still get their results
    first[0].cancel()
    release.set()
    done = await asyncio.gather(*first, return_exceptions=True)
    await b.aclose()
    assert isinstance(done[0], asyncio.CancelledError)
    assert done[1:] == [2, 3]
    assert seen == [[1, 2, 3]]
    assert early.cancelled()
    assert sample(registry, "aiwatch_queue_depth", queue="c") == 0.0


async def test_callers_that_gave_up_leave_the_queue_while_the_model_is_stalled(registry: CollectorRegistry,
                                                                              metrics: Metrics) -> None:
    """A model call that stalls (a hung kernel) while callers time out or are cancelled (clients gone, retried):
    their entries stayed queued until their batch was due, holding their items, and ``aiwatch_queue_depth``, an
    autoscaling signal, counted them (2 000 timed-out calls: 2 000 items queued for nobody). They leave the queue
    when their caller gives up; the model gets only items whose callers still wait."""
    fn = StalledModel()
    seen, release = fn.seen, fn.release
    b = MicroBatcher(fn, max_batch_size=8, max_wait_seconds=0.001, model="s", metrics=metrics)
    stalled = asyncio.ensure_future(b.submit(-1))  # the batch in the model, until released
    while not seen:
        await asyncio.sleep(0)
    for wave in range(10):
        waiting = [asyncio.ensure_future(b.submit(1000 * wave + i, timeout=0.01)) for i in range(50)]
        cancelled = [asyncio.ensure_future(b.submit(1000 * wave + 500 + i)) for i in range(50)]
        await asyncio.sleep(0)
        for task in cancelled:
            task.cancel()
        done = await asyncio.gather(*waiting, *cancelled, return_exceptions=True)
        assert all(isinstance(d, TimeoutError | asyncio.CancelledError) for d in done)
    assert len(b._pending) == 0
    assert sample(registry, "aiwatch_queue_depth", queue="s") == 0.0
    late = asyncio.ensure_future(b.submit(7))
    release.set()
    assert await stalled == -1 and await late == 7
    await b.aclose()
    assert seen == [[-1], [7]]
    assert sample(registry, "aiwatch_queue_depth", queue="s") == 0.0


@pytest.mark.parametrize("timeout", [float("nan"), "1", True, 10**400], ids=["nan", "text", "True", "10**400"])
async def test_aclose_refuses_a_timeout_that_is_no_number_of_seconds_and_closes_nothing(
        metrics: Metrics, timeout: object) -> None:
    # NaN, True or 10**400 reached asyncio.wait, which raised its own error (or waited 1 s for True) mid-close
    async def fn(items: list[int]) -> list[int]:
        return items

    b = MicroBatcher(fn, max_batch_size=2, max_wait_seconds=0.01, metrics=metrics)
    with pytest.raises(ValueError, match=r"^timeout must be a number of seconds \(at most 1e9\) or None, got "):
        await b.aclose(timeout)  # type: ignore[arg-type]
    assert await b.submit(7) == 7  # still open
    await b.aclose(5)


async def test_aclose_drains_submitted_items_then_refuses_new_ones(metrics: Metrics) -> None:
    async def fn(items: list[int]) -> list[int]:
        return [x + 1 for x in items]

    b = MicroBatcher(fn, max_batch_size=2, max_wait_seconds=3600, metrics=metrics)
    pending = [asyncio.ensure_future(b.submit(i)) for i in range(5)]
    await asyncio.sleep(0)
    await b.aclose()  # the odd item out would wait an hour without the drain
    assert [p.result() for p in pending] == [1, 2, 3, 4, 5]
    with pytest.raises(BatcherClosedError, match="submit\\(\\) after aclose\\(\\)"):
        await b.submit(1)
    await b.aclose()


async def test_queue_and_inference_are_phases_of_each_callers_request(registry: CollectorRegistry,
                                                                      metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, service="svc", model="ranker")

    async def fn(items: list[int]) -> list[int]:
        await asyncio.sleep(0.01)
        return items

    b = MicroBatcher(fn, max_batch_size=3, max_wait_seconds=3600, model="ranker", metrics=metrics)
    timelines = []

    async def request(i: int) -> int:
        tl = recorder.begin()
        timelines.append(tl)
        result = await b.submit(i)
        phases = dict(tl.phases)
        recorder.finish(tl, "/predict", "POST", "200")
        assert set(phases) == {("queue", "ranker"), ("inference", "ranker")}
        return result

    assert await asyncio.gather(request(1), request(2), request(3)) == [1, 2, 3]
    await b.aclose()
    count = sample(registry, "aiwatch_phase_duration_seconds_count", service="svc", model="ranker",
                   phase="inference")
    assert count == 3.0
    inference = sample(registry, "aiwatch_phase_duration_seconds_sum", service="svc", model="ranker",
                       phase="inference")
    assert inference is not None and inference >= 3 * 0.01  # each caller is charged its batch's model time
    assert sample(registry, "aiwatch_phase_duration_seconds_count", service="svc", model="ranker",
                  phase="queue") == 3.0


async def test_the_batch_function_runs_in_no_callers_request(registry: CollectorRegistry, metrics: Metrics) -> None:
    # before: the worker task was created in the first caller's context, so every later batch's function ran inside
    # that request, long finished: what it recorded (a phase, a model set, the spans of its calls) went into that
    # dead timeline and was lost, and while that request was open its time counted twice (the phase inside the
    # model call and the batcher's inference phase around it: 20 ms of phases in a 10 ms request). Its phase is
    # given to each caller with the result, the inference phase then being the rest of the model call
    recorder = RequestRecorder(metrics, service="svc", model="ranker")
    seen: list[object] = []

    async def fn(items: list[int]) -> list[int]:
        seen.append(current_timeline())
        with phase("preprocess"):
            await asyncio.sleep(0.01)
        return items

    b = MicroBatcher(fn, max_batch_size=1, max_wait_seconds=0, model="ranker", metrics=metrics)

    async def request(i: int) -> int:
        tl = recorder.begin()
        result = await b.submit(i)
        assert set(tl.phases) == {("queue", "ranker"), ("preprocess", "ranker"), ("inference", "ranker")}
        assert tl.phases[("queue", "ranker")] + tl.phases[("preprocess", "ranker")] + tl.phases[
            ("inference", "ranker")] <= tl.elapsed()
        recorder.finish(tl, "/predict", "POST", "200")
        return result

    assert [await request(i) for i in range(3)] == [0, 1, 2]
    await b.aclose()
    assert seen == [None, None, None]
    assert sample(registry, "aiwatch_overhead_clamped_total", service="svc") in (None, 0.0)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_what_the_batch_function_records_goes_to_each_callers_request(
        kind: str, registry: CollectorRegistry, metrics: Metrics, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # before: the batch function's phase went to the background histogram with the one-time warning "recorded
    # outside any request (run_in_executor?)", whose advice does not apply to a batcher, and degraded() there
    # counted once per batch for the default service (model ""), not for the requests it answered
    monkeypatch.setattr(timing, "_told_of_background", False)
    set_default_recorder(RequestRecorder(metrics, service="default"))
    recorders = {"a": RequestRecorder(metrics, service="svc-a", model="ranker"),
                 "b": RequestRecorder(metrics, service="svc-b", model="ranker")}

    def sync_fn(items: list[int]) -> list[int]:  # run in a thread
        with phase("features"):
            time.sleep(0.02)
        aiwatch.degraded("smaller_model")
        time.sleep(0.01)
        return items

    async def async_fn(items: list[int]) -> list[int]:
        with phase("features"):
            await asyncio.sleep(0.02)
        aiwatch.degraded("smaller_model")
        await asyncio.sleep(0.01)
        return items

    fn: Any = async_fn if kind == "async" else sync_fn
    b = MicroBatcher(fn, max_batch_size=3, max_wait_seconds=3600, model="ranker", metrics=metrics)

    async def request(service: str, i: int) -> dict[tuple[str, str], float]:
        recorder = recorders[service]
        tl = recorder.begin()
        assert await b.submit(i) == i
        phases = dict(tl.phases)
        recorder.finish(tl, "/predict", "POST", "200")
        return phases

    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        seen = await asyncio.gather(request("a", 1), request("a", 2), request("b", 3))
    await b.aclose()
    for phases in seen:
        assert set(phases) == {("queue", "ranker"), ("features", "ranker"), ("inference", "ranker")}
        assert phases[("features", "ranker")] >= 0.02
        assert phases[("inference", "ranker")] >= 0.01  # the rest of the model call: exclusive of its features phase
    assert sample(registry, "aiwatch_phase_duration_seconds_count", service="svc-a", model="ranker",
                  phase="features") == 2.0
    assert sample(registry, "aiwatch_phase_duration_seconds_count", service="svc-b", model="ranker",
                  phase="features") == 1.0
    assert sample(registry, "aiwatch_background_phase_duration_seconds_count", service="default", model="",
                  phase="features") is None
    assert [r.getMessage() for r in caplog.records if "outside any request" in r.getMessage()] == []
    assert sample(registry, "aiwatch_degraded_responses_total", service="svc-a", model="ranker",
                  reason="smaller_model") == 2.0
    assert sample(registry, "aiwatch_degraded_responses_total", service="svc-b", model="ranker",
                  reason="smaller_model") == 1.0
    assert sample(registry, "aiwatch_degraded_responses_total", service="default", model="",
                  reason="smaller_model") is None
    for service in ("svc-a", "svc-b"):
        assert sample(registry, "aiwatch_overhead_clamped_total", service=service) in (None, 0.0)


async def test_callable_object_with_async_call_is_awaited(metrics: Metrics) -> None:
    class Model:
        async def __call__(self, items: list[int]) -> list[int]:
            return [-x for x in items]

    async with MicroBatcher(Model(), max_batch_size=1, metrics=metrics) as b:
        assert await b.submit(4) == -4


async def test_a_sync_function_returning_an_awaitable_has_it_awaited(metrics: Metrics) -> None:
    # before: the coroutine a lambda over an async model returned was taken for the results: every caller got a
    # BatchResultError ("returned a coroutine, which has no length") and the model never ran
    class Model:
        async def apredict(self, items: list[int]) -> list[int]:
            return [-x for x in items]

    model = Model()
    async with MicroBatcher(lambda items: model.apredict(items), max_batch_size=2, max_wait_seconds=3600,
                            metrics=metrics) as b:
        assert await asyncio.gather(b.submit(4), b.submit(5)) == [-4, -5]


def test_bad_arguments_are_clear_errors(metrics: Metrics) -> None:
    with pytest.raises(TypeError, match="callable"):
        MicroBatcher(42, metrics=metrics)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 1, got 0"):
        MicroBatcher(list, max_batch_size=0, metrics=metrics)
    with pytest.raises(ValueError, match="max_wait_seconds must be a finite number >= 0"):
        MicroBatcher(list, max_wait_seconds=-1, metrics=metrics)


@pytest.mark.parametrize("bad", BAD_SECONDS)
def test_a_max_wait_that_is_no_number_of_seconds_is_a_value_error_naming_it(metrics: Metrics, bad: Any) -> None:
    # before: 10**400 raised OverflowError; True was a second; 2**53+1 and a Unix timestamp were accepted
    with pytest.raises(ValueError, match="max_wait_seconds must be a finite number >= 0"):
        MicroBatcher(list, max_wait_seconds=bad, metrics=metrics)


@pytest.mark.parametrize("other", OTHER_SECONDS)
def test_a_max_wait_of_another_numeric_type_is_kept_as_a_float(metrics: Metrics, other: Any) -> None:
    # before: a numpy float32 or int64, a Decimal or a Fraction was a ValueError
    wait = MicroBatcher(list, max_wait_seconds=other, metrics=metrics).max_wait_seconds
    assert type(wait) is float and wait == float(other)


async def test_failing_metrics_never_break_the_callers(registry: CollectorRegistry, metrics: Metrics) -> None:
    async def fn(items: list[int]) -> list[int]:
        return items

    class Broken:
        def inc(self, *a: object) -> None:
            raise RuntimeError("metrics down")

        dec = observe = inc

    b = MicroBatcher(fn, max_batch_size=2, max_wait_seconds=3600, metrics=metrics)
    b._depth = b._wait = b._batch_size = Broken()
    assert await asyncio.gather(b.submit(1), b.submit(2)) == [1, 2]
    await b.aclose()
    assert sample(registry, "aiwatch_instrumentation_errors_total", component="batcher") == 4.0


def test_one_batcher_per_event_loop(metrics: Metrics) -> None:
    async def fn(items: list[int]) -> list[int]:
        return items

    b = MicroBatcher(fn, max_batch_size=1, metrics=metrics)
    assert asyncio.run(b.submit(1)) == 1  # that loop is closed now: a new loop may take the batcher over
    assert asyncio.run(b.submit(2)) == 2

    async def on_two_loops() -> None:
        await b.submit(3)
        with pytest.raises(RuntimeError, match="runs on another event loop"):
            await asyncio.to_thread(lambda: asyncio.run(b.submit(4)))  # a second loop, in another thread
        await b.aclose()

    asyncio.run(on_two_loops())


def test_aclose_from_another_threads_loop_runs_the_submitted_items_and_stops_the_worker(
        registry: CollectorRegistry, metrics: Metrics) -> None:
    # before: from another loop, aclose() set the worker's Event and cancelled its Task from the wrong thread, which
    # did not wake the worker's loop: aclose() returned at once with the worker still running (for good, on an idle
    # loop), and the items already submitted were failed rather than run
    async def double(items: list[int]) -> list[int]:
        return [2 * x for x in items]

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        b = MicroBatcher(double, max_batch_size=64, max_wait_seconds=3600, model="t", metrics=metrics,
                         record_phases=False)
        futures = [asyncio.run_coroutine_threadsafe(b.submit(i), loop) for i in range(3)]

        async def submitted() -> int:
            return b.pending

        while asyncio.run_coroutine_threadsafe(submitted(), loop).result() < 3:
            pass
        asyncio.run(b.aclose())  # the app's shutdown, on the main thread's loop
        assert b._worker is not None and b._worker.done()
        assert [f.result() for f in futures] == [0, 2, 4]
        assert sample(registry, "aiwatch_queue_depth", queue="t") == 0.0
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_aclose_with_a_timeout_from_another_thread_returns_while_the_batchers_loop_is_blocked(
        metrics: Metrics) -> None:
    async def fn(items: list[int]) -> list[int]:
        return items

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    release = threading.Event()
    try:
        b = MicroBatcher(fn, max_batch_size=4, max_wait_seconds=3600, metrics=metrics, record_phases=False)
        pending = asyncio.run_coroutine_threadsafe(b.submit(1), loop)

        async def submitted() -> int:
            return b.pending

        while asyncio.run_coroutine_threadsafe(submitted(), loop).result() < 1:
            pass
        blocked = threading.Event()

        def block() -> None:
            blocked.set()
            release.wait()

        loop.call_soon_threadsafe(block)
        blocked.wait()
        asyncio.run(b.aclose(timeout=0.05))  # returns although the loop cannot run the close yet
        release.set()
        assert pending.result() == 1  # and the close, once that loop runs again, runs what was submitted
    finally:
        release.set()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_aclose_after_its_loop_was_closed_does_not_raise(metrics: Metrics) -> None:
    # before: RuntimeError('Event loop is closed'), from setting the closed loop's Event
    async def fn(items: list[int]) -> list[int]:
        return items

    b = MicroBatcher(fn, max_batch_size=4, max_wait_seconds=0.001, metrics=metrics, record_phases=False)
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(b.submit(1)) == 1
    loop.close()
    asyncio.run(b.aclose())
    with pytest.raises(BatcherClosedError):
        asyncio.run(b.submit(2))
