"""Recording that a finalizer leaves to the next call of an instrumentation, or to the next scrape of its registry.

A garbage collection runs finalizers (``__del__``, :class:`weakref.finalize`) at whatever allocation starts it,
inside whatever lock its thread holds then. A dropped response's finalizer that recorded the request itself could
wait for ever on a lock its own thread holds: OpenTelemetry's span processors take plain locks when a span ends
(a ``threading.Event`` when the batch processor's queue fills), and aiwatch's own label guards took one until they
were made reentrant. So such a finalizer records nothing: it appends the work to :attr:`Metrics.deferred
<aiwatch.metrics.Metrics.deferred>` (a deque's append takes no lock), with the moment of the drop, and
:func:`run_deferred` does it later, outside any lock:

* at the next request or call through an instrumentation using those metrics (the WSGI middleware, the httpx and
  requests clients), which look at the deque first and record at most :data:`PER_CALL` of it, so that one request
  does not pay for a burst (a collection that frees thousands of dropped responses at once); each call adds at most
  one, so the deque stays bounded by the traffic;
* at the next scrape of the metrics' registry (:class:`RunDeferredOnScrape`, registered before the metrics, so that
  the scrape shows what it recorded), so a process that makes no further call still records it. A scrape of some
  names (``/metrics?name[]=...``) collects no collector that describes none: aiwatch's exposition apps run
  :func:`run_every_deferred` first for it (:func:`aiwatch.exposition.make_wsgi_app`). In
  prometheus_client's multiprocess mode a scrape reads the workers' sample files instead of a registry: aiwatch's
  merged exposition (:func:`aiwatch.exposition.serving_registry`) runs every queue of the worker serving it first
  (:func:`run_every_deferred`); another worker's wait for that worker's next call or scrape.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiwatch.safety import record_error

if TYPE_CHECKING:
    from aiwatch.metrics import Metrics

#: What a finalizer leaves: a call that records, never raising (what it raises is counted as a ``metrics`` error).
DeferredWork = Callable[[], None]
#: The most an instrumentation's call records of what was left (a scrape records all of it).
PER_CALL = 64


#: Every live :class:`~aiwatch.metrics.Metrics` of the process, for :func:`run_every_deferred`.
_everyone: weakref.WeakSet[Metrics] = weakref.WeakSet()
#: Checks run at every scrape, before the metrics are read (:func:`at_scrape`).
_scrape_checks: list[Callable[[], None]] = []


def at_scrape(check: Callable[[], None]) -> None:
    """Run ``check`` (which never raises) at every scrape of a registry holding aiwatch's metrics, before they are
    read, as the work finalizers left is: for state that no event of its own tells aiwatch has changed."""
    _scrape_checks.append(check)


def new_queue(metrics: Metrics) -> deque[DeferredWork]:
    """The queue of ``metrics`` (kept weakly, for :func:`run_every_deferred`)."""
    _everyone.add(metrics)
    return deque()


def run_scrape_checks() -> None:
    """Run the :func:`at_scrape` checks: each scrape's collector does, once (:class:`RunDeferredOnScrape` on a
    registry, :func:`run_every_deferred` on multiprocess mode's merged view)."""
    for check in _scrape_checks:
        check()


def run_every_deferred() -> None:
    """:func:`run_deferred` on every live ``Metrics`` of this process (and the :func:`at_scrape` checks)."""
    run_scrape_checks()
    for metrics in list(_everyone):
        if metrics.deferred:
            run_deferred(metrics)


def run_deferred(metrics: Metrics, limit: int | None = None) -> None:
    """Do the work finalizers left on ``metrics.deferred``, oldest first, each once (threads may drain at once);
    at most ``limit`` of it (default: all)."""
    queue = metrics.deferred
    left = -1 if limit is None else limit
    while queue and left:
        left -= 1
        try:
            work = queue.popleft()
        except IndexError:  # another thread took the last one
            return
        try:
            work()
        except Exception as exc:
            record_error("metrics", exc, metrics)


class RunDeferredOnScrape:
    """A collector of no metric whose collection runs :func:`run_deferred`: registered on a registry before the
    metrics, it records what finalizers left before the scrape reads them. It holds its metrics weakly."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = weakref.ref(metrics)

    def describe(self) -> list[Any]:  # no names: prometheus_client registers it without calling collect
        return []

    def collect(self) -> list[Any]:
        run_scrape_checks()
        metrics = self._metrics()
        if metrics is not None and metrics.deferred:
            run_deferred(metrics)
        return []
