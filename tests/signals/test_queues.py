"""instrument_queue on real queue.Queue / asyncio.Queue instances: depth, wait, item identity, undo."""

from __future__ import annotations

import asyncio
import gc
import linecache
import queue
import sys
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from aiwatch.metrics import Metrics
from aiwatch.signals import queues
from aiwatch.signals.queues import instrument_queue, uninstrument_queue


def depth(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value("aiwatch_queue_depth", {"queue": name})


def waits(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value("aiwatch_queue_wait_seconds_count", {"queue": name})


@pytest.mark.parametrize("cls", [queue.Queue, queue.LifoQueue, queue.PriorityQueue])
def test_thread_queue_depth_wait_and_items(cls: type[queue.Queue[object]], registry: CollectorRegistry,
                                           metrics: Metrics) -> None:
    q = instrument_queue(cls(), "jobs", metrics=metrics)
    items = [(3, "c"), (1, "a"), (2, {"b": 1})]
    q.put(items[0])
    q.put_nowait(items[1])
    q.put(items[2], timeout=1)
    assert depth(registry, "jobs") == 3.0 and q.qsize() == 3
    got = [q.get(), q.get_nowait(), q.get(timeout=1)]
    assert depth(registry, "jobs") == 0.0
    assert waits(registry, "jobs") == 3.0
    assert sorted(map(id, got)) == sorted(map(id, items))  # the very objects that were put
    if cls is queue.PriorityQueue:
        assert got == sorted(items, key=lambda t: t[0])
    if cls is queue.LifoQueue:
        assert got == items[::-1]
    with pytest.raises(queue.Empty):
        q.get_nowait()
    assert depth(registry, "jobs") == 0.0


async def test_asyncio_queue_depth_wait_and_items(registry: CollectorRegistry, metrics: Metrics) -> None:
    q: asyncio.Queue[object] = instrument_queue(asyncio.Queue(maxsize=2), "requests", metrics=metrics)
    a, b, c = object(), object(), object()
    await q.put(a)
    q.put_nowait(b)
    assert depth(registry, "requests") == 2.0
    blocked = asyncio.ensure_future(q.put(c))  # waits for room
    await asyncio.sleep(0)
    assert depth(registry, "requests") == 2.0
    assert await q.get() is a
    await blocked
    assert depth(registry, "requests") == 2.0
    assert q.get_nowait() is b
    assert await q.get() is c
    assert depth(registry, "requests") == 0.0
    assert waits(registry, "requests") == 3.0
    with pytest.raises(asyncio.QueueFull):
        q.put_nowait(1)
        q.put_nowait(2)
        q.put_nowait(3)
    assert depth(registry, "requests") == 2.0  # the rejected put is not counted


async def test_waiting_getter_gets_the_item_and_wait_is_measured(registry: CollectorRegistry, metrics: Metrics,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # a clock that reads 10.0 when the item is put and 10.25 when it is taken: the wait must be exactly 0.25 s
    readings = iter([10.0, 10.25])
    monkeypatch.setattr(queues, "_clock", lambda: next(readings))
    q: asyncio.Queue[str] = instrument_queue(asyncio.PriorityQueue(), "p", metrics=metrics)
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    await q.put("x")
    assert await getter == "x"
    assert waits(registry, "p") == 1.0
    assert registry.get_sample_value("aiwatch_queue_wait_seconds_sum", {"queue": "p"}) == pytest.approx(0.25)


def test_items_already_queued_count_in_depth_without_a_wait(registry: CollectorRegistry, metrics: Metrics) -> None:
    q: queue.Queue[int] = queue.Queue()
    q.put(1)
    q.put(2)
    instrument_queue(q, "pre", metrics=metrics)
    assert depth(registry, "pre") == 2.0
    q.put(3)
    assert [q.get(), q.get(), q.get()] == [1, 2, 3]
    assert depth(registry, "pre") == 0.0
    assert waits(registry, "pre") == 1.0


def test_instrument_is_idempotent_and_uninstrument_restores(registry: CollectorRegistry, metrics: Metrics) -> None:
    q: queue.Queue[str] = queue.Queue()
    assert instrument_queue(q, "x", metrics=metrics) is q
    instrument_queue(q, "x", metrics=metrics)
    with pytest.raises(ValueError, match="already instrumented as 'x'"):
        instrument_queue(q, "y", metrics=metrics)
    q.put("kept")
    q.put("also")
    assert depth(registry, "x") == 2.0
    uninstrument_queue(q)
    assert "_put" not in vars(q) and "_get" not in vars(q)
    assert list(q.queue) == ["kept", "also"]  # unwrapped in place
    assert depth(registry, "x") == 0.0
    assert q.get() == "kept"
    uninstrument_queue(q)  # a second time does nothing


def test_threads_instrumenting_one_queue_at_once_instrument_it_once(registry: CollectorRegistry,
                                                                     metrics: Metrics) -> None:
    # before: instrumenting was checked for before the queue's lock was taken, so threads relying on the call being
    # idempotent (a handler instrumenting a shared queue on each request) could each instrument it again: one put
    # read as a depth of 3 (and 3 waits), for good
    q: queue.Queue[str] = queue.Queue()
    threads = [threading.Thread(target=instrument_queue, args=(q, "shared"), kwargs={"metrics": metrics})
               for _ in range(3)]
    with q.mutex:  # every thread gets past the check and waits for the lock
        for t in threads:
            t.start()
        while not all(_waiting_for_the_lock(t) for t in threads):
            time.sleep(0.001)
    for t in threads:
        t.join()
    q.put("x")
    assert depth(registry, "shared") == 1.0
    assert q.get() == "x"
    assert (depth(registry, "shared"), waits(registry, "shared")) == (0.0, 1.0)


def test_threads_undoing_one_queue_at_once_undo_it_once(registry: CollectorRegistry, metrics: Metrics) -> None:
    # before: the second thread undid it again and raised AttributeError (its hooks were already gone)
    q: queue.Queue[str] = queue.Queue()
    instrument_queue(q, "undone", metrics=metrics)
    q.put("x")
    failures: list[BaseException] = []

    def undo() -> None:
        try:
            uninstrument_queue(q)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=undo) for _ in range(2)]
    with q.mutex:
        for t in threads:
            t.start()
        while not all(_waiting_for_the_lock(t, uninstrument_queue) for t in threads):
            time.sleep(0.001)
    for t in threads:
        t.join()
    assert failures == []
    assert depth(registry, "undone") == 0.0 and list(q.queue) == ["x"]


def _waiting_for_the_lock(thread: threading.Thread, function: object = instrument_queue) -> bool:
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code is getattr(function, "__code__", None):
            return "with _lock_of(q)" in linecache.getline(frame.f_code.co_filename, frame.f_lineno)
        frame = frame.f_back
    return False


def test_bad_arguments_are_clear_errors(metrics: Metrics) -> None:
    with pytest.raises(TypeError, match=r"needs a queue\.Queue or an asyncio\.Queue, got 'list'"):
        instrument_queue([], "x", metrics=metrics)
    with pytest.raises(TypeError, match="SimpleQueue"):
        instrument_queue(queue.SimpleQueue(), "x", metrics=metrics)
    with pytest.raises(ValueError, match="non-empty queue name"):
        instrument_queue(queue.Queue(), "", metrics=metrics)


def test_a_failing_metric_never_breaks_the_queue(registry: CollectorRegistry, metrics: Metrics) -> None:
    q: queue.Queue[str] = instrument_queue(queue.Queue(), "broken", metrics=metrics)

    class Broken:
        def inc(self, *a: object) -> None:
            raise RuntimeError("metrics backend down")

        dec = observe = inc

    inst = q._aiwatch_queue  # type: ignore[attr-defined]
    inst.depth = inst.wait = Broken()
    q.put("a")
    assert q.get() == "a"
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "queue"}) == 2.0


@pytest.mark.parametrize("make", [queue.PriorityQueue, asyncio.PriorityQueue])
def test_priority_queue_with_items_queued_before_instrumenting_keeps_order(
        make: type[queue.PriorityQueue[tuple[int, str]]], registry: CollectorRegistry, metrics: Metrics) -> None:
    # an item put afterwards is compared with the older ones both ways round in the heap: '<' between a tuple and
    # the wrapper raised TypeError out of put() and get()
    q = make()
    for p in (5, 3, 8):
        q.put_nowait((p, "old"))
    instrument_queue(q, "prio", metrics=metrics)
    q.put_nowait((1, "new"))
    q.put_nowait((9, "new"))
    assert [q.get_nowait() for _ in range(5)] == [(1, "new"), (3, "old"), (5, "old"), (8, "old"), (9, "new")]
    assert depth(registry, "prio") == 0.0
    assert waits(registry, "prio") == 2.0  # only the items put after instrumenting have a wait


class _Jobs(queue.PriorityQueue):  # type: ignore[type-arg]
    """A subclass whose hooks read the item: they must see the app's item, never aiwatch's wrapper."""

    def _put(self, item: dict[str, int]) -> None:
        super()._put((item["prio"], item["seq"], item))

    def _get(self) -> dict[str, int]:
        return super()._get()[2]  # type: ignore[no-any-return]


def test_subclass_overriding_put_and_get_sees_its_own_items(registry: CollectorRegistry, metrics: Metrics) -> None:
    q = _Jobs()
    q.put({"prio": 2, "seq": 0})
    instrument_queue(q, "jobs", metrics=metrics)
    q.put({"prio": 1, "seq": 1})
    assert depth(registry, "jobs") == 2.0
    assert [q.get(), q.get()] == [{"prio": 1, "seq": 1}, {"prio": 2, "seq": 0}]
    assert depth(registry, "jobs") == 0.0
    assert waits(registry, "jobs") == 0.0  # its hooks own the items: depth only
    uninstrument_queue(q)
    q.put({"prio": 3, "seq": 2})
    assert q.get() == {"prio": 3, "seq": 2}


@pytest.mark.parametrize("make", [queue.Queue, asyncio.Queue])
def test_a_collected_queue_takes_its_items_out_of_the_depth(make: type[queue.Queue[int]], registry: CollectorRegistry,
                                                            metrics: Metrics) -> None:
    # one queue per request under one name: the items a dropped queue still held stayed in the gauge for good
    kept = instrument_queue(make(), "per-request", metrics=metrics)
    kept.put_nowait(0)

    def handle_request() -> None:
        q = instrument_queue(make(), "per-request", metrics=metrics)
        q.put_nowait(1)
        q.put_nowait(2)
        q.put_nowait(3)
        q.get_nowait()

    for _ in range(3):
        handle_request()
    gc.collect()
    assert depth(registry, "per-request") == 1.0  # the live queue's item only
    assert kept.get_nowait() == 0
    assert depth(registry, "per-request") == 0.0


def test_a_put_that_raises_after_the_item_went_in_still_counts_it(registry: CollectorRegistry,
                                                                  metrics: Metrics) -> None:
    # equal priorities with payloads that do not order: heappush has already stored the item when the comparison
    # raises, in the plain queue too; the depth left it out and went negative once the items were taken
    q: queue.PriorityQueue[tuple[int, dict[str, int]]] = instrument_queue(queue.PriorityQueue(), "pq", metrics=metrics)
    q.put((1, {"a": 1}))
    with pytest.raises(TypeError, match="'<' not supported between instances of 'dict' and 'dict'"):
        q.put((1, {"b": 2}))
    assert q.qsize() == 2 and depth(registry, "pq") == 2.0
    assert sorted(q.get()[1].popitem() for _ in range(2)) == [("a", 1), ("b", 2)]
    assert depth(registry, "pq") == 0.0
