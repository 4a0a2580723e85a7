"""A pool of daemon threads for the console's sources and its views' panel questions (:class:`Prefetch`): a call
stuck on an endpoint (or a Prometheus) that never answers does not hold up the process' exit."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import Any, TypeVar

T = TypeVar("T")


class DaemonPool:
    """Runs submitted calls on ``workers`` daemon threads. Unlike ``ThreadPoolExecutor``, whose workers the
    interpreter joins at exit, a call stuck on an endpoint that never answers does not hold up the process' exit
    until its timeout: a scrape or a query has nothing to finish once the process is leaving."""

    def __init__(self, workers: int, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._workers = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True) for i in range(workers)]
        for worker in self._workers:
            worker.start()

    def submit(self, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._calls.put((future, call))
        return future

    def _work(self) -> None:
        while (item := self._calls.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:  # the caller's to see, in its future
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        """Cancel the calls not started; the workers end once their running calls return (not waited for)."""
        with self._lock:
            self._closed = True
        while True:
            try:
                item = self._calls.get_nowait()
            except queue.Empty:
                break
            # notified too: a cancelled future is "done" to concurrent.futures.wait() only once notified, which a
            # worker does for a call it takes off the queue; this one no worker will take (a Prefetch leaving its
            # block, Streamlit's rerun among the causes, waited for it for ever)
            if item is not None and item[0].cancel():
                item[0].set_running_or_notify_cancel()
        for _ in self._workers:
            self._calls.put(None)


class Prefetch:
    """Asks a view's panel questions at once, on worker threads, when the view starts: the view then waits for its
    slowest question (each bounded by its source's timeout), not for their sum, and a slow question holds up only
    its own panel. ``prefetch(fetch)`` returns a callable that gives ``fetch``'s answer or raises its error, for
    :func:`~aiwatch.console.app.panel`. Leaving the ``with`` block cancels the questions not started and waits for
    those still running; its workers are daemon threads, so a question hung on its source does not hold up the
    console's exit until the source's timeout."""

    def __init__(self) -> None:
        self._pool = DaemonPool(8, "aiwatch-console-panel")
        self._asked: list[Future[Any]] = []

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown()
        wait(self._asked)

    def __call__(self, fetch: Callable[[], T]) -> Callable[[], T]:
        future = self._pool.submit(fetch)
        self._asked.append(future)
        return future.result
