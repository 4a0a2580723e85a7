"""A bound on label values that come from traffic (routes, models, peers, categories).

Each guarded label keeps at most ``max_values`` distinct values; later new values fold into :data:`OVERFLOW`, and
each fold is counted in ``aiwatch_label_overflow_total{label}``. Values seen before the limit was reached keep
passing through unchanged.

    >>> guard = LabelGuard(max_values=2)
    >>> [guard.fold("route", r) for r in ("/a", "/b", "/c", "/a")]
    ['/a', '/b', '__overflow__', '/a']
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

OVERFLOW = "__overflow__"
DEFAULT_MAX_VALUES = 100


def _default_max_values() -> int:
    raw = os.environ.get("AIWATCH_MAX_LABEL_VALUES", "")
    try:
        return int(raw) if raw else DEFAULT_MAX_VALUES
    except ValueError:
        raise ValueError(f"AIWATCH_MAX_LABEL_VALUES must be an integer, got {raw!r}") from None


class LabelGuard:
    """Folds label values beyond ``max_values`` distinct ones per label into :data:`OVERFLOW`."""

    def __init__(self, max_values: int | None = None, on_overflow: Callable[[str], None] | None = None) -> None:
        limit = _default_max_values() if max_values is None else max_values
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
