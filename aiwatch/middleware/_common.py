"""What the ASGI and WSGI middleware share: building a recorder from the shared options."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from aiwatch.cardinality import LabelGuard
from aiwatch.metrics import Metrics, get_metrics
from aiwatch.timing import RequestRecorder

UNMATCHED_ROUTE = "__unmatched__"
"""The route label of requests that matched no route template: the raw path is never used as a label."""

#: HTTP methods used as the ``method`` label as they are; any other method (clients can send any token) is
#: labelled ``_OTHER`` so that the label stays bounded.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
OTHER_METHOD = "_OTHER"

#: The options that describe the recorder (where and under which labels requests are recorded).
RECORDER_OPTIONS = frozenset({"service", "model", "registry", "metrics", "tracer_provider", "max_label_values"})


def make_recorder(*, service: str | None = None, model: str = "", registry: CollectorRegistry | None = None,
                  metrics: Metrics | None = None, tracer_provider: Any = None,
                  max_label_values: int | None = None) -> RequestRecorder:
    """A :class:`~aiwatch.timing.RequestRecorder` for the shared middleware options.

    ``metrics`` wins over ``registry``; with neither, prometheus_client's global registry is used.
    """
    m = metrics if metrics is not None else get_metrics(registry)

    def count_overflow(label: str) -> None:
        m.child(m.label_overflow, (label,)).inc()

    guard = LabelGuard(max_values=max_label_values, on_overflow=count_overflow)
    return RequestRecorder(m, service, model, guard, tracer_provider)


def resolve_recorder(recorder: RequestRecorder | None, options: dict[str, Any]) -> RequestRecorder:
    """``recorder`` if given (then no recorder option may be set as well), else one built from ``options``."""
    if recorder is None:
        return make_recorder(**options)
    given = sorted(k for k, v in options.items() if v not in (None, ""))
    if given:
        raise TypeError(f"pass either recorder= or the recorder options, not both (got {', '.join(given)})")
    return recorder
