"""A bound on label values that come from traffic (routes, models, phases, peers, features, queues, caches).

Each guarded label keeps at most ``max_values`` distinct values, each of at most :data:`MAX_VALUE_LENGTH`
characters; later new values, and longer ones, fold into :data:`OVERFLOW`, and each fold is counted in
``aiwatch_label_overflow_total{label}`` and logged (a warning per label at most once a minute, saying how many folds
it did not log). Values seen before the limit was reached keep passing through
unchanged, with one dict and one set lookup and no lock.

    >>> guard = LabelGuard(max_values=2)
    >>> [guard.fold("route", r) for r in ("/a", "/b", "/c", "/a")]
    ['/a', '/b', '__overflow__', '/a']

**One guard per registry.** :func:`guard_for` gives every integration, recorder, batcher, queue, cache and drift
monitor that records into one :class:`~aiwatch.metrics.Metrics` (one registry) the *same* guard, so the bound holds
for the registry's series however many instrumented clients, servers or wrappers are created (a new httpx client
per call over a thousand hosts still gives at most ``max_values`` peers). When integrations on one registry ask for
different bounds (``max_label_values=``), the largest wins: a bound only ever grows, so adding an integration never
folds the values another one was promised, and the result does not depend on the order they were created in.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiwatch.env import MAX_LABEL_VALUES
from aiwatch.forksafe import at_fork_in_child, renew_at_fork
from aiwatch.safety import record_error, warn_rate_limited
from aiwatch.utf8 import text_or_value

if TYPE_CHECKING:
    from aiwatch.metrics import Metrics

OVERFLOW = "__overflow__"
UNMATCHED_ROUTE = "__unmatched__"
"""The ``route`` label of a request (or a call) that matched no route template: URL paths are never labels."""
DEFAULT_MAX_VALUES = int(MAX_LABEL_VALUES.default)
MAX_VALUE_LENGTH = 1024
"""The longest label value a guard admits, in characters. A value is written in every series of its label (a
histogram's buckets too): without it, a hundred 100 kB model names sent by a client made /metrics 540 MB."""


def _limit(max_values: int | None) -> int:
    limit = MAX_LABEL_VALUES.integer() if max_values is None else max_values
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        # the variable's name when it gave the bound: the operator who set it to 0 reads no argument of any call
        source = "max_values" if max_values is not None else MAX_LABEL_VALUES.name
        raise ValueError(f"{source} must be an integer of at least 1, got {limit!r}")
    return limit


class LabelGuard:
    """Folds label values beyond ``max_values`` distinct ones per label into :data:`OVERFLOW`.

    ``max_values`` defaults to ``$AIWATCH_MAX_LABEL_VALUES`` or 100; ``on_overflow(label)`` is called on each fold.
    """

    def __init__(self, max_values: int | None = None, on_overflow: Callable[[str], None] | None = None) -> None:
        self.max_values = _limit(max_values)
        self._seen: dict[str, set[str]] = {}
        self._on_overflow = on_overflow
        #: called instead of ``on_overflow`` for a value folded for its length (``guard_for`` logs it as such)
        self._on_long: Callable[[str], None] | None = None
        self._renew_after_fork()
        renew_at_fork(self)

    def _renew_after_fork(self) -> None:
        # reentrant: a garbage collection can start inside the block (at its set()) and run a finalizer that
        # records through this guard in the same thread (a dropped httpx response's)
        self._lock = threading.RLock()

    def fold(self, label: str, value: str) -> str:
        """``value`` if it is already known or there is room for it, else :data:`OVERFLOW`; a str longer than
        :data:`MAX_VALUE_LENGTH` is never admitted. A value UTF-8 cannot encode (a lone surrogate) is kept with that
        character escaped (:func:`~aiwatch.utf8.utf8_text`): as it is, it made every later scrape of the registry
        fail."""
        seen = self._seen.get(label)
        if seen is not None and value in seen:
            return value
        if value.__class__ is str and len(value) > MAX_VALUE_LENGTH:
            return self._fold_long(label)
        value = text_or_value(value)  # (a caller's int passes as before: prometheus_client writes str() of it)
        if value.__class__ is str and len(value) > MAX_VALUE_LENGTH:  # its escapes made it longer
            return self._fold_long(label)
        with self._lock:
            seen = self._seen.setdefault(label, set())
            if value in seen:
                return value
            if len(seen) < self.max_values:
                seen.add(value)
                return value
        if self._on_overflow is not None:
            self._on_overflow(label)
        return OVERFLOW

    def _fold_long(self, label: str) -> str:
        report = self._on_long or self._on_overflow
        if report is not None:
            report(label)
        return OVERFLOW

    def widen(self, max_values: int) -> None:
        """Raise the bound to ``max_values`` if it is lower (a bound never shrinks: values admitted stay)."""
        limit = _limit(max_values)
        with self._lock:
            if limit > self.max_values:
                self.max_values = limit

    def known(self, label: str) -> frozenset[str]:
        """The values admitted so far for ``label``."""
        with self._lock:
            return frozenset(self._seen.get(label, ()))


_guards: weakref.WeakKeyDictionary[Metrics, LabelGuard] = weakref.WeakKeyDictionary()
_guards_lock = threading.RLock()  # reentrant, as LabelGuard's lock, for a finalizer run inside the block


def _renew_guards_lock() -> None:
    global _guards_lock
    _guards_lock = threading.RLock()


at_fork_in_child(_renew_guards_lock)


def guard_for(metrics: Metrics, max_values: int | None = None) -> LabelGuard:
    """The label guard of ``metrics``' registry, created on first use: every recorder and signal gets its guard
    here, and all that record into one :class:`~aiwatch.metrics.Metrics` share it. ``max_values`` (default
    ``$AIWATCH_MAX_LABEL_VALUES`` or 100) raises the shared bound when it is larger (see the module docstring).
    Folds are counted in ``aiwatch_label_overflow_total{label}`` and logged, rate-limited."""
    limit = _limit(max_values)
    with _guards_lock:
        guard = _guards.get(metrics)
        if guard is None:
            guard = LabelGuard(max_values=limit)
            report = _OverflowReport(metrics, guard)
            guard._on_overflow = report
            guard._on_long = report.long
            _guards[metrics] = guard
            return guard
    guard.widen(limit)
    return guard


class _OverflowReport:
    """Counts a fold in the registry's ``aiwatch_label_overflow_total{label}`` and logs it, rate-limited."""

    __slots__ = ("_guard", "_metrics")

    def __init__(self, metrics: Metrics, guard: LabelGuard) -> None:
        # a weak reference: the guard is kept in a WeakKeyDictionary keyed by the metrics it reports into
        self._metrics = weakref.ref(metrics)
        self._guard = guard

    def __call__(self, label: str) -> None:
        if self._count(label):
            warn_rate_limited(
                f"label_overflow:{label}",
                "aiwatch: label %r reached its bound of %d distinct values; new values are recorded as %r "
                "(aiwatch_label_overflow_total counts them; raise max_label_values or AIWATCH_MAX_LABEL_VALUES "
                "if they are legitimate)", label, self._guard.max_values, OVERFLOW)

    def long(self, label: str) -> None:
        """A value folded for its length."""
        if self._count(label):
            warn_rate_limited(
                f"label_too_long:{label}",
                "aiwatch: a value of label %r is longer than %d characters; it is recorded as %r "
                "(aiwatch_label_overflow_total counts it)", label, MAX_VALUE_LENGTH, OVERFLOW)

    def _count(self, label: str) -> bool:
        """Count a fold in ``aiwatch_label_overflow_total{label}``; whether the metrics are still there."""
        metrics = self._metrics()
        if metrics is None:
            return False
        try:
            metrics.child(metrics.label_overflow, (label,)).inc()
        except Exception as exc:
            record_error("cardinality", exc, metrics)
        return True
