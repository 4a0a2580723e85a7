"""MicroBatcher against a batch function that misbehaves: each misbehaviour fails that batch's callers with a
clear error, the worker keeps serving later batches (or a new one starts on the next submit), and no caller waits
forever."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from aiwatch.metrics import Metrics
from aiwatch.signals.batcher import BatcherClosedError, BatchFunctionError, BatchResultError, MicroBatcher
from tests.hostile_numbers import BAD_SECONDS, OTHER_SECONDS

#: No test here should wait anywhere near this long: it only turns a hang (the bug) into a failure.
HANG = 30.0


class Stop(BaseException):
    """A BaseException that is not an Exception, like those some frameworks raise to unwind."""


class RaisingIndex(list[int]):
    def __getitem__(self, index: Any) -> Any:
        raise IndexError("results cannot be indexed")


def first_batch_then_echo(bad: Callable[[list[int]], Any]) -> Callable[[list[int]], Any]:
    """A batch function that misbehaves (``bad``) on its first batch and echoes its items afterwards."""
    calls = 0

    async def fn(items: list[int]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            return bad(items)
        return list(items)

    return fn


def raise_(exc: BaseException) -> Callable[[list[int]], Any]:
    def bad(items: list[int]) -> Any:
        raise exc

    return bad


BAD_RESULTS = {
    "set of the right length": (lambda items: set(items), BatchResultError, "a set, which is not a sequence"),
    "dict of the right length": (lambda items: {i: x for i, x in enumerate(items)}, BatchResultError,
                                 "a dict, which is not a sequence"),
    "sequence whose indexing raises": (lambda items: RaisingIndex(items), BatchResultError,
                                       "indexing raised IndexError"),
    "too few results": (lambda items: items[:1], BatchResultError, "1 results for a batch of 2 items"),
    "a generator": (lambda items: (x for x in items), BatchResultError, "which has no length"),
    "BaseException": (raise_(Stop("unwind")), BatchFunctionError, "raised Stop: unwind"),
    "CancelledError from inside the model": (raise_(asyncio.CancelledError()), BatchFunctionError,
                                             "raised CancelledError"),
}


@pytest.mark.parametrize("case", list(BAD_RESULTS), ids=list(BAD_RESULTS))
async def test_a_misbehaving_batch_fails_its_callers_and_the_worker_goes_on(case: str, metrics: Metrics) -> None:
    bad, error, message = BAD_RESULTS[case]
    async with MicroBatcher(first_batch_then_echo(bad), max_batch_size=2, max_wait_seconds=3600,
                            metrics=metrics) as b:
        first = await asyncio.wait_for(asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True), HANG)
        for result in first:
            assert isinstance(result, error), result
            assert message in str(result)
        # the same worker serves the next batch
        worker = b._worker
        assert await asyncio.wait_for(asyncio.gather(b.submit(3), b.submit(4)), HANG) == [3, 4]  # type: ignore[comparison-overlap]
        assert b._worker is worker


async def test_the_original_base_exception_is_the_cause(metrics: Metrics) -> None:
    async with MicroBatcher(first_batch_then_echo(raise_(Stop("unwind"))), max_batch_size=1,
                            metrics=metrics) as b:
        with pytest.raises(BatchFunctionError) as info:
            await asyncio.wait_for(b.submit(1), HANG)
    assert isinstance(info.value.__cause__, Stop)


async def test_a_sync_batch_function_raising_a_base_exception_in_its_thread(metrics: Metrics) -> None:
    calls = 0

    def fn(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Stop("in the thread")
        return items

    async with MicroBatcher(fn, max_batch_size=1, metrics=metrics) as b:
        with pytest.raises(BatchFunctionError, match="Stop: in the thread"):
            await asyncio.wait_for(b.submit(1), HANG)
        assert await asyncio.wait_for(b.submit(2), HANG) == 2


def test_system_exit_fails_the_batch_reaches_the_loop_and_a_new_worker_starts(metrics: Metrics) -> None:
    b = MicroBatcher(first_batch_then_echo(raise_(SystemExit(3))), max_batch_size=1, metrics=metrics)
    caller: asyncio.Future[Any] | None = None

    async def submit_one() -> None:
        nonlocal caller
        caller = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(HANG)  # SystemExit ends the loop long before this

    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(SystemExit):  # it asks the process to stop: aiwatch does not swallow it
            loop.run_until_complete(submit_one())
        assert caller is not None
        with pytest.raises(BatchFunctionError, match="SystemExit"):  # its caller was told, not left waiting
            loop.run_until_complete(asyncio.wait_for(caller, HANG))
        assert b._worker is not None and b._worker.done()
        # the worker is gone; the next submit starts a new one
        assert loop.run_until_complete(asyncio.wait_for(b.submit(2), HANG)) == 2
        loop.run_until_complete(b.aclose())
    finally:
        loop.close()


async def test_submit_timeout_stops_waiting_for_a_hung_model(metrics: Metrics) -> None:
    release = asyncio.Event()

    async def hung(items: list[int]) -> list[int]:
        await release.wait()
        return items

    b = MicroBatcher(hung, max_batch_size=1, metrics=metrics)
    with pytest.raises(TimeoutError, match=r"no result within 0\.05 s"):
        await b.submit(1, timeout=0.05)
    release.set()
    assert await asyncio.wait_for(b.submit(2, timeout=HANG), HANG) == 2
    await b.aclose()


async def test_bad_timeout_is_a_clear_error(metrics: Metrics) -> None:
    b = MicroBatcher(lambda items: items, metrics=metrics)
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout must be a finite number"):
            await b.submit(1, timeout=bad)


def waits(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("aiwatch_queue_wait_seconds_count", {"queue": "<lambda>"}) or 0


@pytest.mark.parametrize("bad", [p for p in BAD_SECONDS if p.id != "None"])
async def test_a_timeout_that_is_no_number_of_seconds_is_a_value_error_before_the_item_is_taken(
        metrics: Metrics, bad: Any) -> None:
    # before: 10**400 raised OverflowError and Decimal("1e400") TypeError from asyncio.wait_for after the item was
    # queued (it then ran and its result was dropped); a string raised TypeError, a Decimal NaN
    # decimal.InvalidOperation; True, 2**53+1 and a Unix timestamp were accepted
    b = MicroBatcher(lambda items: items, max_wait_seconds=0, metrics=metrics)
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds >= 0 or None"):
        await b.submit(1, timeout=bad)
    assert (b.pending, waits(metrics)) == (0, 0)
    assert await b.submit(2, timeout=HANG) == 2
    assert waits(metrics) == 1
    await b.aclose()


@pytest.mark.parametrize("other", OTHER_SECONDS)
async def test_a_timeout_of_another_numeric_type_is_used_as_seconds(metrics: Metrics, other: Any) -> None:
    # before: a Decimal raised TypeError from asyncio.wait_for, after the item was queued
    b = MicroBatcher(lambda items: items, max_wait_seconds=0, metrics=metrics)
    assert await b.submit(1, timeout=other) == 1
    await b.aclose()


async def test_aclose_timeout_fails_the_callers_of_a_hung_model(metrics: Metrics) -> None:
    started = asyncio.Event()

    async def hung(items: list[int]) -> list[int]:
        started.set()
        await asyncio.Event().wait()  # never returns
        return items

    b = MicroBatcher(hung, max_batch_size=1, max_wait_seconds=0, metrics=metrics)
    running = asyncio.ensure_future(b.submit(1))
    queued = asyncio.ensure_future(b.submit(2))
    await asyncio.wait_for(started.wait(), HANG)
    await asyncio.wait_for(b.aclose(timeout=0.05), HANG)
    results = await asyncio.wait_for(asyncio.gather(running, queued, return_exceptions=True), HANG)
    assert [type(r) for r in results] == [BatcherClosedError, BatcherClosedError]
    assert "while this item's batch ran" in str(results[0])
    assert "before this item ran" in str(results[1])


async def test_items_failed_by_aclose_timeout_leave_the_queue_depth(metrics: Metrics) -> None:
    # before: the items still pending when aclose(timeout=) cancelled the worker were failed but never taken out of
    # aiwatch_queue_depth, which then showed them queued forever
    started = asyncio.Event()

    async def hung(items: list[int]) -> list[int]:
        started.set()
        await asyncio.Event().wait()  # never returns
        return items

    b = MicroBatcher(hung, max_batch_size=1, max_wait_seconds=0, queue="closing", metrics=metrics)
    callers = [asyncio.ensure_future(b.submit(i)) for i in range(3)]
    await asyncio.wait_for(started.wait(), HANG)
    assert metrics.registry.get_sample_value("aiwatch_queue_depth", {"queue": "closing"}) == 2
    await asyncio.wait_for(b.aclose(timeout=0.05), HANG)
    results = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), HANG)
    assert [type(r) for r in results] == [BatcherClosedError] * 3
    assert metrics.registry.get_sample_value("aiwatch_queue_depth", {"queue": "closing"}) == 0


async def test_a_worker_cancelled_by_the_loop_fails_its_callers_and_the_next_submit_restarts_it(
        metrics: Metrics) -> None:
    started = asyncio.Event()
    calls = 0

    async def fn(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await asyncio.Event().wait()
        return items

    b = MicroBatcher(fn, max_batch_size=1, max_wait_seconds=0, metrics=metrics)
    caller = asyncio.ensure_future(b.submit(1))
    await asyncio.wait_for(started.wait(), HANG)
    assert b._worker is not None
    b._worker.cancel()  # what a loop shutting down does to every task
    with pytest.raises(BatcherClosedError):
        await asyncio.wait_for(caller, HANG)
    assert await asyncio.wait_for(b.submit(2), HANG) == 2
    await b.aclose()
