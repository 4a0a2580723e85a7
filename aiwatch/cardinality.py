"""A bound on label values that come from traffic (routes, models, peers, categories).

Each guarded label keeps at most ``max_values`` distinct values; later new values fold into :data:`OVERFLOW`, and
each fold is counted in ``aiwatch_label_overflow_total{label}``. Values seen before the limit was reached keep
passing through unchanged.

    >>> guard = LabelGuard(max_values=2)
    >>> [guard.fold("route", r) for r in ("/a", "/b", "/c", "/a")]
    ['/a', '/b', '__overflow__', '/a']
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiwatch.env import MAX_LABEL_VALUES

if TYPE_CHECKING:
    from aiwatch.metrics import Metrics

OVERFLOW = "__overflow__"
DEFAULT_MAX_VALUES = int(MAX_LABEL_VALUES.default)


class LabelGuard:
    """Folds label values beyond ``max_values`` distinct ones per label into :data:`OVERFLOW`.

    ``max_values`` defaults to ``$AIWATCH_MAX_LABEL_VALUES`` or 100; ``on_overflow(label)`` is called on each fold.
    """

    def __init__(self, max_values: int | None = None, on_overflow: Callable[[str], None] | None = None) -> None:
        limit = MAX_LABEL_VALUES.integer() if max_values is None else max_values
        if limit < 1:
            raise ValueError(f"max_values must be at least 1, got {limit}")
        self.max_values = limit
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._on_overflow = on_overflow

    def fold(self, label: str, value: str) -> str:
        """``value`` if it is already known or there is room for it, else :data:`OVERFLOW`."""
        seen = self._seen.get(label)
        if seen is not None and value in seen:
            return value
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

    def known(self, label: str) -> frozenset[str]:
        """The values admitted so far for ``label``."""
        with self._lock:
            return frozenset(self._seen.get(label, ()))


def guard_for(metrics: Metrics, max_values: int | None = None) -> LabelGuard:
    """A guard whose folds are counted in ``metrics``' ``aiwatch_label_overflow_total{label}``. Every recorder gets
    its guard here, a new one per recorder; a registry-wide bound would be decided here alone."""

    def count_overflow(label: str) -> None:
        metrics.child(metrics.label_overflow, (label,)).inc()

    return LabelGuard(max_values=max_values, on_overflow=count_overflow)
