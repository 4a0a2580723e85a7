"""A minimal asyncio micro-batcher in front of the model (to be replaced by ``aiwatch.signals.MicroBatcher``).

Requests wait in one queue; a single worker takes up to ``max_batch`` of them (waiting at most ``max_wait`` seconds
for the batch to fill) and runs the model on one worker thread, so the model serves one batch at a time, like one
accelerator. Each request then records two phases of its own timeline: ``queue`` (enqueue until its batch started)
and ``inference`` (its batch's model time). The queue exports ``aiwatch_queue_depth``, ``aiwatch_queue_wait_seconds``
and ``aiwatch_batch_size``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import aiwatch
from aiwatch.metrics import Metrics
from aiwatch.safety import record_error

T = TypeVar("T")
R = TypeVar("R")

_Item = tuple[T, "asyncio.Future[tuple[R, float, float]]", float]


class MicroBatcher(Generic[T, R]):
    """``await batcher.submit(item)`` returns ``fn([... item ...])``'s result for that item."""

    def __init__(self, fn: Callable[[Sequence[T]], Sequence[R]], *, metrics: Metrics, model: str,
                 queue: str = "model", max_batch: int = 2, max_wait: float = 0.002) -> None:
        if max_batch < 1 or max_wait < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait >= 0, got {max_batch}, {max_wait}")
        self.fn = fn
        self.model = model
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[tuple[R, float, float]], float]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batcher-{queue}")
        self._depth = metrics.child(metrics.queue_depth, (queue,))
        self._wait = metrics.child(metrics.queue_wait, (queue,))
        self._size = metrics.child(metrics.batch_size, (model,))
        self._metrics = metrics

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def submit(self, item: T) -> R:
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        future: asyncio.Future[tuple[R, float, float]] = asyncio.get_running_loop().create_future()
        self._depth.inc()
        await self._queue.put((item, future, time.perf_counter()))
        result, waited, model_seconds = await future
        aiwatch.record_phase("queue", waited)
        aiwatch.record_phase("inference", model_seconds, model=self.model)
        return result

    async def _next_batch(self) -> list[tuple[T, asyncio.Future[tuple[R, float, float]], float]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            started = time.perf_counter()
            try:
                self._depth.dec(len(batch))
                self._size.observe(len(batch))
                for _, _, enqueued in batch:
                    self._wait.observe(started - enqueued)
            except Exception as exc:
                record_error("demo_batcher", exc, self._metrics)
            items = [item for item, _, _ in batch]
            try:
                results, seconds = await loop.run_in_executor(self._executor, _timed, self.fn, items)
            except Exception as exc:  # the model's failure is the requests' failure
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future, enqueued), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result((result, started - enqueued, seconds))


def _timed(fn: Callable[[Sequence[T]], Sequence[R]], items: list[T]) -> tuple[Sequence[R], float]:
    start = time.perf_counter()
    results = fn(items)
    return results, time.perf_counter() - start
