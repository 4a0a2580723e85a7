"""The request path's metric updates, written into prometheus_client's internals when their layout is known.

``Histogram.observe`` checks labels and exemplars and walks the buckets on every call; the request path observes
three or more histograms per request, so :func:`observe` does the same update directly: it finds the bucket by
bisection in the child's ``_upper_bounds``, adds under each ``MutexValue``'s ``_lock`` to ``_sum`` and the bucket's
``_value``, and sets the bucket's ``_exemplar`` under its ``_lock``. :func:`adder` hands out an ``inc`` that adds
to a gauge child's ``_value`` the same way.

Those are private names, so this module checks once, at import, that the installed prometheus_client still works
that way: it records the same observations into the contract's metrics on two throwaway registries, one through
the fast path and one through the public methods, and compares the samples. If anything differs, or
prometheus_client runs in multiprocess mode (values live in files, and a probe would write into them),
:data:`LAYOUT_PROBLEM` says why and :func:`observe` / :func:`adder` use the public ``observe`` / ``inc``.
pyproject.toml pins prometheus-client to the versions this check passed on; ``tests/test_fastpath.py`` fails when
the installed one no longer passes it.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, values
from prometheus_client.samples import Exemplar

from aiwatch.metrics import LATENCY_BUCKETS, Metrics

Adder = Callable[[float], None]


def public_observe(child: Any, amount: float, exemplar: dict[str, str] | None = None) -> None:
    """``child.observe(amount, exemplar)``: prometheus_client's own path."""
    child.observe(amount, exemplar)


def fast_observe(child: Any, amount: float, exemplar: dict[str, str] | None = None) -> None:
    """``child.observe(amount, exemplar)`` for a histogram child of :meth:`aiwatch.metrics.Metrics.child`, without
    prometheus_client's per-call checks. Exemplar labels must be valid (aiwatch only passes a 32-hex ``trace_id``).
    A child without the expected layout (a replaced ``observe``, a test double) gets its own ``observe`` called."""
    try:
        if "observe" in child.__dict__:  # observe() was replaced on this child (a wrapper, a test): respect it
            raise TypeError
        bucket = child._buckets[bisect_left(child._upper_bounds, amount)]
        total = child._sum
        total_lock = total._lock
        bucket_lock = bucket._lock
    except (AttributeError, IndexError, TypeError):
        child.observe(amount, exemplar)
        return
    # MutexValue.inc() inlined: two Python calls fewer per observation. `with`, not acquire() then try/finally
    # (half the interpreter's work): a signal handler that raises (a timeout, KeyboardInterrupt) runs after
    # acquire() returns and before the try, and left the lock held for good, hanging the next request
    with total_lock:
        total._value += amount
    with bucket_lock:
        bucket._value += 1
    if exemplar:
        found = Exemplar(exemplar, amount, time.time())
        with bucket_lock:  # MutexValue.set_exemplar() inlined
            bucket._exemplar = found


def public_adder(child: Any) -> Adder:
    """``child.inc`` (looked up at each call, so a broken child fails when used, where the failure is counted)."""

    def inc(amount: float) -> None:
        child.inc(amount)

    return inc


def fast_adder(child: Any) -> Adder:
    """A gauge or counter child's ``inc``, written into its ``MutexValue`` (``_value`` under its ``_lock``, read
    at each call): one Python call per update instead of two."""
    try:
        value = child._value
        if type(value) is values.MutexValue and not getattr(child, "_is_most_recent", False):

            def inc(amount: float) -> None:
                with value._lock:  # read per call: a forked child replaces a lock held at the fork
                    value._value += amount

            inc.value = value  # type: ignore[attr-defined]  # what check_layout() checks
            return inc
    except Exception:  # not a prometheus_client child: fail (and be counted) when used
        pass
    return public_adder(child)


_PROBE_VALUES = (0.0, 0.0005, 0.003, 0.1, 1.0, 59.9, 60.0, 61.0)


def check_layout() -> str | None:
    """``None`` if the fast path can be used: prometheus_client keeps a histogram child's state in ``_buckets``,
    ``_upper_bounds`` and ``_sum`` as ``MutexValue`` objects (``_lock``, ``_value``), a gauge child's in ``_value``,
    and the fast path records exactly the samples the public methods record. Otherwise the reason it cannot."""
    value_class = values.ValueClass
    if value_class is not values.MutexValue:
        if getattr(value_class, "__name__", "") == "MmapedValue":
            return "prometheus_client is in multiprocess mode"
        return f"prometheus_client's values are {value_class!r}, not MutexValue objects"
    try:
        fast_m, public_m = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
        labels = ("probe", "/probe", "GET", "200", "realtime")
        fast, public = fast_m.request_duration.labels(*labels), public_m.request_duration.labels(*labels)
        held = (fast._sum, *fast._buckets)
        if not (fast._upper_bounds == [*LATENCY_BUCKETS, float("inf")] and len(fast._buckets) == len(held) - 1
                and all(type(v) is values.MutexValue and hasattr(v, "_lock") and isinstance(v._value, float)
                        for v in held)):
            return "histogram children do not keep _upper_bounds, _buckets and _sum as MutexValue objects"
        for i, amount in enumerate(_PROBE_VALUES):
            exemplar = {"trace_id": f"{i:032x}"} if i % 2 else None
            fast_observe(fast, amount, exemplar)
            public.observe(amount, exemplar)
        fast_gauge = fast_m.requests_in_flight.labels("probe")
        add = fast_adder(fast_gauge)
        if getattr(add, "value", None) is not fast_gauge._value:
            return "gauge children do not keep their value in _value"
        add(2.5)
        public_m.requests_in_flight.labels("probe").inc(2.5)
        if _samples(fast_m.registry) != _samples(public_m.registry):
            return "the fast path records other samples than Histogram.observe and Gauge.inc"
    except Exception as exc:
        return f"prometheus_client's metric layout is not the expected one: {exc!r}"
    return None


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float, Any]]:
    """The samples in ``registry`` without creation times; exemplars without their timestamp."""
    out = []
    for family in registry.collect():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            exemplar = (s.exemplar.labels, s.exemplar.value) if s.exemplar else None
            out.append((s.name, s.labels, s.value, exemplar))
    return out


LAYOUT_PROBLEM: str | None = check_layout()
"""Why the fast path is off (``None``: it is on)."""

FAST = LAYOUT_PROBLEM is None

observe = fast_observe if FAST else public_observe
"""Observe into a histogram child: :func:`fast_observe` when the layout check passed, else :func:`public_observe`."""

adder = fast_adder if FAST else public_adder
"""A fast ``inc(amount)`` for a gauge or counter child: :func:`fast_adder` when the layout check passed, else
:func:`public_adder`."""
