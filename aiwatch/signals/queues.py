"""Queue depth and wait time for the queues in front of a model, without subclassing.

    import asyncio, aiwatch

    requests = aiwatch.instrument_queue(asyncio.Queue(), "ranker")
    await requests.put(item)          # aiwatch_queue_depth{queue="ranker"} goes up
    item = await requests.get()       # ... down, and aiwatch_queue_wait_seconds observes enqueue -> dequeue

:func:`instrument_queue` works on ``queue.Queue``, ``queue.LifoQueue``, ``queue.PriorityQueue``, their asyncio
counterparts and subclasses of them (not on ``queue.SimpleQueue`` or ``multiprocessing`` queues). It replaces the
*instance's* ``_put`` and ``_get``, the two hooks every public method (``put``, ``put_nowait``, ``get``,
``get_nowait``) goes through exactly once; for ``queue.Queue`` they run under the queue's own lock, so the depth and
the wait are exact under any number of threads, and asyncio queues are single-threaded by design.

Each item is stored with its enqueue time in a small wrapper that ``get`` removes again: consumers receive exactly
the object that was put. (Code that reads the queue's internal container, ``q.queue`` / ``q._queue``, sees the
wrappers; a wrapper compares like its item, so priority queues keep their order.) Items already in the queue when
it is instrumented are wrapped too (a priority queue must never compare a bare item with a wrapper); they count in
the depth but have no wait time. A subclass that overrides ``_put`` or ``_get`` gets the depth only, no wait time:
its hooks may read the item, so they are given the item itself. A queue that is garbage-collected takes the items it
still held out of the depth (queues made per request do not inflate it for good). Recording failures are counted in
``aiwatch_instrumentation_errors_total{component="queue"}`` and never reach the producer or consumer.
"""

from __future__ import annotations

import asyncio
import queue as _queue_mod
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from aiwatch.amounts import shown
from aiwatch.cardinality import guard_for
from aiwatch.metrics import Metrics, get_metrics
from aiwatch.safety import errors_of

Q = TypeVar("Q")

_clock = time.perf_counter
_MARK = "_aiwatch_queue"


class _Stamped:
    """An item and the time it was put. Compares like the item (priority queues order by it)."""

    __slots__ = ("item", "t")

    def __init__(self, item: Any, t: float | None) -> None:
        self.item = item
        self.t = t

    def __lt__(self, other: Any) -> bool:
        return bool(self.item < (other.item if isinstance(other, _Stamped) else other))

    def __repr__(self) -> str:
        return f"_Stamped({self.item!r})"


class _Level:
    """This queue's share of the depth gauge (what it added and has not taken away)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


def _release(depth: Any, level: _Level, error: Callable[[BaseException], None]) -> None:
    try:
        depth.dec(level.n)
        level.n = 0
    except Exception as exc:
        error(exc)


class _QueueInstrumentation:
    __slots__ = ("depth", "error", "finalizer", "level", "metrics", "name", "orig_get", "orig_put", "size", "stamp",
                 "wait")

    def __init__(self, name: str, metrics: Metrics, orig_put: Callable[[Any], None],
                 orig_get: Callable[[], Any], stamp: bool, size: Callable[[], int]) -> None:
        self.name = name
        self.stamp = stamp
        self.metrics = metrics
        self.error = errors_of("queue", shown(name), metrics)
        label = guard_for(metrics).fold("queue", name)  # queue names may come from data (one per tenant...)
        self.depth = metrics.child(metrics.queue_depth, (label,))
        self.wait = metrics.child(metrics.queue_wait, (label,))
        self.orig_put = orig_put
        self.orig_get = orig_get
        self.level = _Level()
        self.size = size
        self.finalizer: weakref.finalize[Any, Any] | None = None

    def resync(self) -> None:
        """After a hook raised (a priority queue whose items do not order): it may have stored or dropped the item."""
        try:
            n = self.size()
            self.depth.inc(n - self.level.n)
            self.level.n = n
        except Exception as exc:
            self.error(exc)

    def put(self, item: Any) -> None:
        try:
            self.orig_put(_Stamped(item, _clock()) if self.stamp else item)
        except BaseException:
            self.resync()
            raise
        try:
            self.depth.inc()
            self.level.n += 1
        except Exception as exc:
            self.error(exc)

    def get(self) -> Any:
        try:
            item = self.orig_get()
        except BaseException:
            self.resync()
            raise
        try:
            if type(item) is _Stamped:
                t = item.t
                item = item.item
                if t is not None:  # None: queued before instrumenting
                    self.wait.observe(_clock() - t)
            self.depth.dec()
            self.level.n -= 1
        except Exception as exc:
            self.error(exc)
            if type(item) is _Stamped:
                item = item.item
        return item


def _lock_of(q: Any) -> AbstractContextManager[Any]:
    mutex = getattr(q, "mutex", None)
    return mutex if isinstance(mutex, type(threading.Lock())) else nullcontext()


_STDLIB_HOOKS = {cls.__dict__[hook] for cls in (_queue_mod.Queue, _queue_mod.LifoQueue, _queue_mod.PriorityQueue,
                                                 asyncio.Queue, asyncio.LifoQueue, asyncio.PriorityQueue)
                 for hook in ("_put", "_get")}


def _own_hooks(q: Any) -> bool:
    """Whether ``q``'s class keeps the standard library's ``_put`` and ``_get`` (so the items may be wrapped)."""
    return type(q)._put in _STDLIB_HOOKS and type(q)._get in _STDLIB_HOOKS


def _size(q: Any) -> int:
    return int(q._qsize() if isinstance(q, _queue_mod.Queue) else q.qsize())  # (the mutex is held: not qsize())


def _container(q: Any) -> Any:
    if isinstance(q, _queue_mod.Queue):
        return q.queue
    if isinstance(q, asyncio.Queue):
        return q._queue  # type: ignore[attr-defined]
    return None


def instrument_queue(q: Q, name: str, *, metrics: Metrics | None = None,
                     registry: CollectorRegistry | None = None) -> Q:
    """Keep ``aiwatch_queue_depth{queue=name}`` and ``aiwatch_queue_wait_seconds{queue=name}`` for ``q``.

    ``q`` is a ``queue.Queue`` or an ``asyncio.Queue`` (or a subclass); it is returned, instrumented in place.
    Instrumenting the same queue again under the same name does nothing; under another name it is an error.
    Several queues may share a name: the depth is then their total.
    """
    if not isinstance(q, (_queue_mod.Queue, asyncio.Queue)):
        raise TypeError(f"instrument_queue() needs a queue.Queue or an asyncio.Queue, got {type(q).__name__!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"instrument_queue() needs a non-empty queue name, got {name!r}")
    existing: _QueueInstrumentation | None = getattr(q, _MARK, None)
    if existing is not None:
        if existing.name != name:
            raise ValueError(f"this queue is already instrumented as {existing.name!r}, not {name!r}")
        return q
    if metrics is None:
        metrics = get_metrics(registry)
    target: Any = q
    with _lock_of(q):
        existing = getattr(q, _MARK, None)  # again, under the lock: another thread may have instrumented it since
        if existing is not None:
            if existing.name != name:
                raise ValueError(f"this queue is already instrumented as {existing.name!r}, not {name!r}")
            return q
        stamp = _own_hooks(q)
        inst = _QueueInstrumentation(name, metrics, target._put, target._get, stamp, partial(_size, q))
        if stamp:
            container = _container(q)
            for i in range(len(container)):
                container[i] = _Stamped(container[i], None)
        try:
            size = _size(q)
            inst.depth.inc(size)
            inst.level.n = size
        except Exception as exc:
            inst.error(exc)
        # the callback holds the gauge and the count, never the queue (nor inst, which holds the queue)
        inst.finalizer = weakref.finalize(q, _release, inst.depth, inst.level, inst.error)
        inst.finalizer.atexit = False
        target._put = inst.put
        target._get = inst.get
        setattr(target, _MARK, inst)
    return q


def uninstrument_queue(q: Any) -> None:
    """Undo :func:`instrument_queue`: the queue's own methods come back and waiting items are unwrapped."""
    inst: _QueueInstrumentation | None = getattr(q, _MARK, None)
    if inst is None:
        return
    with _lock_of(q):
        inst = getattr(q, _MARK, None)  # again, under the lock: another thread may have undone it since
        if inst is None:
            return
        if inst.stamp:
            container = _container(q)
            for i in range(len(container)):
                item = container[i]
                if type(item) is _Stamped:
                    container[i] = item.item
        if inst.finalizer is not None:
            inst.finalizer.detach()
        _release(inst.depth, inst.level, inst.error)
        del q._put
        del q._get
        delattr(q, _MARK)
