"""An instrumented async micro-batcher: many concurrent callers, one model call per batch.

    import aiwatch

    async def rank(batch: list[dict]) -> list[float]:      # or a plain function: it then runs in a thread
        return model.predict(batch)

    ranker = aiwatch.MicroBatcher(rank, max_batch_size=32, max_wait_seconds=0.005, model="ranker")

    @app.post("/predict")
    async def predict(body: dict) -> dict:
        return {"score": await ranker.submit(body)}

A batch is sent to the model when it is full (``max_batch_size``) or when its oldest item has waited
``max_wait_seconds``, whichever comes first; one batch runs at a time (a GPU runs one anyway). Per batch it records:

* ``aiwatch_queue_depth{queue}``: items submitted and not yet taken into a batch;
* ``aiwatch_queue_wait_seconds{queue}``: per item, from ``submit`` to the start of its batch's model call;
* ``aiwatch_batch_size{model}``: items per model call;

and in each caller's own request (its context, after its result arrives) the ``queue`` phase (the same wait) and the
``inference`` phase (its batch's model time), so the request's latency split shows both. ``fn`` itself runs in no
caller's request (a batch serves many: its spans start no caller's trace), but it works for each of them, as its
model time does: a phase it records (``with aiwatch.phase("features")``) goes to each caller's request too, the
``inference`` phase then being the rest of the model call (nested phases are exclusive), and
``aiwatch.degraded(reason)`` marks each caller's response as served by that fallback (counted with the caller's
service and model, and on its span). ``set_model`` there changes nothing (no request is current); a phase that a
task ``fn`` leaves running records after ``fn`` returned is background work
(``aiwatch_background_phase_duration_seconds``).

Results and exceptions go to their own caller only: ``fn`` returns one result per item, in order (a list, a tuple,
a numpy array: anything with ``len`` and integer indexing). With ``return_exceptions=True`` an exception *instance*
in the returned list is raised to that item's caller alone. A caller that is cancelled while waiting, or whose
``submit(item, timeout=)`` runs out (``TimeoutError``), leaves the batch (or the model call it is in) undisturbed.

When ``fn`` misbehaves, that batch's callers fail and no other batch is touched:

* ``fn`` raises an ``Exception``: every caller of the batch gets that exception;
* ``fn`` raises a ``BaseException`` that is not an ``Exception`` (``CancelledError`` from inside the model call,
  ``SystemExit``, ``KeyboardInterrupt``, ...): every caller gets a :class:`BatchFunctionError` whose ``__cause__``
  is the original; ``SystemExit`` and ``KeyboardInterrupt`` then go on to the event loop (they ask the process to
  stop), the others are contained;
* ``fn`` returns something that is not one result per item (a wrong length, a set or dict, a string, a sequence
  whose indexing raises): every caller gets a :class:`BatchResultError` saying what came back.

The worker keeps running after all of these; if it ever stops (the loop cancelled it, or ``SystemExit`` went
through it), the items it had not run fail with :class:`BatcherClosedError` and the next ``submit`` starts a new one.

Shutdown: :meth:`MicroBatcher.aclose` stops taking items (``submit`` then raises :class:`BatcherClosedError`), runs
the batches already submitted and waits for them; with ``aclose(timeout=)`` it stops waiting after ``timeout``
seconds, cancels the model call in progress (for an async ``fn``; a sync one runs on in its thread) and fails the
callers still waiting with :class:`BatcherClosedError`. When the event loop shuts down without ``aclose`` (it
cancels the worker), the callers still waiting fail with :class:`BatcherClosedError` too. No caller waits forever
for a worker that is gone; a caller that must not wait for a slow model passes ``submit(item, timeout=)``.

A batcher belongs to the event loop of its first ``submit``; call ``submit`` from coroutines on that loop (from a
thread, use ``asyncio.run_coroutine_threadsafe``).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Executor, ThreadPoolExecutor
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from prometheus_client import CollectorRegistry

from aiwatch.amounts import MAX_SECONDS, as_seconds, as_timeout, shown, warn_implausible
from aiwatch.cardinality import guard_for
from aiwatch.degradation import degraded
from aiwatch.flags import flag
from aiwatch.metrics import Metrics, get_metrics
from aiwatch.safety import record_error
from aiwatch.timing import SharedWork, end_shared_work, record_phase, share_work

T = TypeVar("T")
R = TypeVar("R")

#: A ``max_wait_seconds`` above this (a second) is warned of: ``5`` meant as milliseconds holds each request 5 s.
LONG_WAIT = 1.0

_clock = time.perf_counter


class BatchResultError(ValueError):
    """The batch function broke its contract (not one result per item); raised to every caller of the batch."""


class BatchFunctionError(RuntimeError):
    """The batch function raised a ``BaseException`` that is not an ``Exception``; raised to every caller of the
    batch, with the original as ``__cause__``."""


class BatcherClosedError(RuntimeError):
    """``submit`` after ``aclose``, or the batcher's worker stopped before the item's result was known."""


class _Entry:
    __slots__ = ("enqueued", "future", "item", "model_seconds", "shared", "started")

    def __init__(self, item: Any, future: asyncio.Future[Any], enqueued: float) -> None:
        self.item = item
        self.future = future
        self.enqueued = enqueued
        self.started: float | None = None
        self.model_seconds: float | None = None
        #: What the batch function recorded for its batch (phases, fallbacks), when it recorded anything
        self.shared: SharedWork | None = None


def _is_async(fn: Callable[..., Any]) -> bool:
    call = type(fn).__call__ if not inspect.isroutine(fn) else None
    return inspect.iscoroutinefunction(fn) or (call is not None and inspect.iscoroutinefunction(call))


class MicroBatcher(Generic[T, R]):
    """Collects concurrent ``submit(item)`` calls into batches for one model function; see the module docstring.

    - ``fn``: ``async def fn(items: list[T]) -> Sequence[R]``, or a sync function (run in ``executor``, default
      the loop's default thread pool) returning one result per item, in order (or an awaitable of them, awaited on
      the loop: ``lambda items: model.apredict(items)``).
    - ``max_batch_size`` (an integer >= 1) and ``max_wait_seconds`` (a number of seconds from 0 to 1e9): when a
      batch is sent.
    - ``model``: the ``model`` label of ``aiwatch_batch_size`` and of the callers' phases (default ``fn``'s name for
      the batch size; the request's model for the phases).
    - ``queue``: the ``queue`` label of the depth and wait metrics (default the model label).
    - ``return_exceptions``: an exception instance in ``fn``'s result list is raised to that item's caller.
    - ``record_phases``: record ``queue`` and ``inference`` as phases of each caller's request (default on).
    - ``metrics`` / ``registry``: where the metrics go (default prometheus_client's global registry).
    """

    def __init__(self, fn: Callable[[list[T]], Awaitable[Sequence[R]]] | Callable[[list[T]], Sequence[R]], *,
                 max_batch_size: int = 32, max_wait_seconds: float = 0.005, model: str | None = None,
                 queue: str | None = None, return_exceptions: bool = False, record_phases: bool = True,
                 executor: Executor | None = None, metrics: Metrics | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"MicroBatcher needs a callable batch function, got {type(fn).__name__!r}")
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
        wait = as_seconds(max_wait_seconds)
        if wait is None:
            raise ValueError(f"max_wait_seconds must be a finite number >= 0 (at most 1e9), got "
                             f"{shown(max_wait_seconds)}")
        warn_implausible(wait, "max_wait_seconds", above=LONG_WAIT,
                         effect="a request that finds the batch not full waits that long for it to fill (the default "
                                "is 0.005)")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = wait
        self.model = model
        label = model or getattr(fn, "__name__", None) or type(fn).__name__
        self.queue = queue or label
        self.return_exceptions = flag(return_exceptions, "return_exceptions")
        self.record_phases = flag(record_phases, "record_phases")
        self.executor = executor
        self.metrics = metrics if metrics is not None else get_metrics(registry)
        m = self.metrics
        guard = guard_for(m)
        queue_label = guard.fold("queue", self.queue)
        self._depth = m.child(m.queue_depth, (queue_label,))
        self._wait = m.child(m.queue_wait, (queue_label,))
        self._batch_size = m.child(m.batch_size, (guard.fold("model", label),))
        self._async = _is_async(fn)
        self._pending: deque[_Entry] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        """Items submitted and not yet taken into a batch."""
        return len(self._pending)

    async def submit(self, item: T, timeout: float | None = None) -> R:
        """Add ``item`` to the next batch and return its result (or raise its exception).

        ``timeout``: seconds to wait at most for the result (default: no limit); past it, ``TimeoutError`` is
        raised and the item leaves its batch (or its result is dropped if the model call already started). A
        ``timeout`` that is no number of seconds from 0 to 1e9 (NaN, infinite, a ``bool``, a string) is a
        ValueError, raised before the item is taken."""
        if self._closing:
            raise BatcherClosedError("MicroBatcher is closed: submit() after aclose()")
        if timeout is not None and (timeout.__class__ is not float or not 0.0 <= timeout <= MAX_SECONDS):
            seconds = as_seconds(timeout)
            if seconds is None:
                raise ValueError(f"timeout must be a finite number of seconds >= 0 or None (at most 1e9), got "
                                 f"{shown(timeout)}")
            timeout = seconds
        loop = asyncio.get_running_loop()
        worker = self._worker
        if self._loop is not loop or worker is None or worker.done():
            self._start(loop)
        future: asyncio.Future[R] = loop.create_future()
        entry = _Entry(item, future, _clock())
        pending = self._pending
        pending.append(entry)
        try:
            self._depth.inc()
        except Exception as exc:
            record_error("batcher", exc, self.metrics)
        if len(pending) == 1 or len(pending) >= self.max_batch_size:
            assert self._wakeup is not None
            self._wakeup.set()
        try:
            if timeout is None:
                return await future
            try:
                return await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise TimeoutError(f"MicroBatcher: no result within {timeout} s") from None
        except BaseException:
            if entry.started is None:  # still waiting for its batch: nobody wants its result now
                self._abandon(entry)
            raise
        finally:
            if entry.started is not None and (self.record_phases or entry.shared is not None):
                self._record_phases(entry)

    def _abandon(self, entry: _Entry) -> None:
        """Take the entry of a caller that timed out or was cancelled out of the queue: left there until its batch
        was due, it held its item and counted in ``aiwatch_queue_depth`` (an autoscaling signal) while the model was
        stalled, however many callers had given up (2 000 timed-out calls: 2 000 items queued for nobody). Callers
        give up oldest first, near the queue's head, where the search starts."""
        try:
            self._pending.remove(entry)
        except ValueError:  # the worker took it already (and skips it: its future is done)
            return
        try:
            self._depth.dec()
        except Exception as exc:
            record_error("batcher", exc, self.metrics)

    def _record_phases(self, entry: _Entry) -> None:
        try:
            assert entry.started is not None
            inside = 0.0
            shared = entry.shared
            if shared is not None:
                for (name, model), seconds in shared.phases.items():
                    record_phase(name, seconds, model)
                    inside += seconds
                for reason, model in shared.degraded:
                    degraded(reason, model)
            if self.record_phases:
                record_phase("queue", max(entry.started - entry.enqueued, 0.0), self.model)
                if entry.model_seconds is not None:
                    record_phase("inference", max(entry.model_seconds - inside, 0.0), self.model)
        except Exception as exc:
            record_error("batcher", exc, self.metrics)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        old = self._loop
        if old is not None and not old.is_closed() and self._worker is not None and not self._worker.done():
            raise RuntimeError("this MicroBatcher runs on another event loop; create one batcher per loop")
        self._loop = loop
        self._wakeup = asyncio.Event()
        # in a context of its own: a task copies its creator's, and the first caller's request (its timeline, its
        # span) would be the context of every batch's model call from then on
        self._worker = contextvars.Context().run(loop.create_task, self._work(), name=f"aiwatch-batcher-{self.queue}")

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop taking items, run every batch already submitted, and wait for the worker (idempotent). With
        ``timeout``, stop waiting after that many seconds: the worker is cancelled and the callers still waiting
        fail with :class:`BatcherClosedError`. Awaited on another thread's loop (an app's shutdown), it does all that
        on the batcher's own loop and waits for it; once the batcher's loop is closed it only stops taking items. A
        ``timeout`` that is no number of seconds (NaN, a string) is a ValueError naming it, before anything is
        closed."""
        wait = None if timeout is None else as_timeout(timeout)
        if timeout is not None and wait is None:
            raise ValueError(f"timeout must be a number of seconds (at most 1e9) or None, got {shown(timeout)}")
        self._closing = True
        worker, loop = self._worker, self._loop
        if loop is not None and loop is not asyncio.get_running_loop():
            if worker is None or worker.done() or loop.is_closed():  # closed: its worker never runs again
                return
            if loop.is_running():
                # the worker's loop runs in another thread: close there (asyncio objects are not thread-safe; an
                # Event set or a Task cancelled from here did not wake that loop) and wait here, ``timeout`` at most
                # (that loop may be blocked: the close there then goes on when it runs again)
                closing = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.aclose(timeout), loop))
                await asyncio.wait({closing}, timeout=wait)
                if closing.done():
                    closing.result()
            else:
                worker.cancel()
            return
        if self._wakeup is not None:
            self._wakeup.set()
        if worker is None or worker.done():
            return
        done, _ = await asyncio.wait({worker}, timeout=wait)
        if not done:
            worker.cancel()
            await asyncio.wait({worker})

    async def __aenter__(self) -> MicroBatcher[T, R]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    # --- the worker ---------------------------------------------------------------------------------------
    async def _work(self) -> None:
        assert self._loop is not None and self._wakeup is not None
        loop, wakeup, pending = self._loop, self._wakeup, self._pending
        running: list[_Entry] = []
        try:
            while True:
                if not pending:
                    if self._closing:
                        return
                    wakeup.clear()
                    await wakeup.wait()
                    continue
                if len(pending) < self.max_batch_size and not self._closing:
                    remaining = pending[0].enqueued + self.max_wait_seconds - _clock()
                    if remaining > 0:
                        wakeup.clear()
                        timer = loop.call_later(remaining, wakeup.set)
                        try:
                            await wakeup.wait()
                        finally:
                            timer.cancel()
                        continue
                batch = [pending.popleft() for _ in range(min(len(pending), self.max_batch_size))]
                try:
                    self._depth.dec(len(batch))
                except Exception as exc:
                    record_error("batcher", exc, self.metrics)
                running[:] = [e for e in batch if not e.future.done()]
                await self._run_batch(loop, running)
                running.clear()
        finally:
            for entry in running:
                if not entry.future.done():
                    entry.future.set_exception(
                        BatcherClosedError("the MicroBatcher's worker stopped while this item's batch ran"))
            left = len(pending)
            while pending:
                entry = pending.popleft()
                if not entry.future.done():
                    entry.future.set_exception(
                        BatcherClosedError("the MicroBatcher's worker stopped before this item ran"))
            if left:
                try:
                    self._depth.dec(left)
                except Exception as exc:
                    record_error("batcher", exc, self.metrics)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Entry]) -> None:
        if not batch:
            return  # every caller of this batch was cancelled while waiting
        start = _clock()
        try:
            for entry in batch:
                entry.started = start
                self._wait.observe(start - entry.enqueued)
            self._batch_size.observe(len(batch))
        except Exception as exc:
            record_error("batcher", exc, self.metrics)
        items = [entry.item for entry in batch]
        work = SharedWork()
        token = share_work(work)  # in the worker's own context: what fn records is its batch's
        try:
            if self._async:
                results: Any = await cast(Callable[[list[T]], Awaitable[Sequence[R]]], self.fn)(items)
            else:
                if self.executor is None or isinstance(self.executor, ThreadPoolExecutor):
                    # run_in_executor copies no context; another kind of executor may pickle what it runs
                    results = await loop.run_in_executor(self.executor, contextvars.copy_context().run, self.fn,
                                                         items)
                else:
                    results = await loop.run_in_executor(self.executor, self.fn, items)
                if inspect.isawaitable(results):  # a sync function handing an async one's work back (a lambda)
                    results = await results
        except Exception as exc:  # the model's exception: every caller of this batch gets it
            self._resolve(batch, start, work, error=exc)
            return
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and _worker_cancelled():
                raise  # aclose(timeout=) or the loop's shutdown: _work fails the callers as it stops
            error = BatchFunctionError(f"MicroBatcher's batch function raised {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self._resolve(batch, start, work, error=error)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return
        finally:
            end_shared_work(work, token)
        try:
            values = _one_result_per_item(results, len(batch))
        except BatchResultError as exc:
            self._resolve(batch, start, work, error=exc)
            return
        self._resolve(batch, start, work, results=values)

    def _resolve(self, batch: list[_Entry], start: float, work: SharedWork, results: list[Any] | None = None,
                 error: BaseException | None = None) -> None:
        seconds = _clock() - start
        shared = work if work.phases or work.degraded else None
        for i, entry in enumerate(batch):
            entry.model_seconds = seconds
            entry.shared = shared
            if entry.future.done():
                continue
            if error is not None:
                entry.future.set_exception(error)
                continue
            assert results is not None
            result = results[i]
            if self.return_exceptions and isinstance(result, BaseException):
                entry.future.set_exception(result)
            else:
                entry.future.set_result(result)


def _worker_cancelled() -> bool:
    """Whether the running task (the worker) is being cancelled, rather than the batch function having raised a
    ``CancelledError`` of its own. Python 3.10 cannot tell the two apart: there, both stop the worker."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


def _one_result_per_item(results: Any, n: int) -> list[Any]:
    """``results`` as a list of ``n`` results, or :class:`BatchResultError` saying why it is not one."""
    problem = ""
    if isinstance(results, (str, bytes, bytearray, Mapping, AbstractSet)):
        problem = f"a {type(results).__name__}, which is not a sequence of results"
    else:
        try:
            count = len(results)
        except Exception:
            problem = f"a {type(results).__name__}, which has no length"
        else:
            if count != n:
                problem = f"{count} results"
    if not problem:
        try:
            return [results[i] for i in range(n)]
        except Exception as exc:
            problem = f"a {type(results).__name__} whose indexing raised {exc!r}"
    raise BatchResultError(f"MicroBatcher's batch function returned {problem} for a batch of {n} items; it must "
                           "return one result per item, in order (a list, a tuple, an array)")
