"""What the ASGI and WSGI middleware share: the bounded ``route`` and ``method`` labels of HTTP requests, the
component that counts a ``Server-Timing`` header cut short, and starting a request on a new SERVER span."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aiwatch.cardinality import UNMATCHED_ROUTE
from aiwatch.metrics import Metrics
from aiwatch.safety import record_cut, record_error
from aiwatch.semconv import OTHER_METHOD, http_span_name
from aiwatch.timing import RequestRecorder, RequestTimeline
from aiwatch.tracing import activate_counted

__all__ = ["CLIENT_CLOSED_STATUS", "HEADER_COMPONENT", "OTHER_METHOD", "ROUTE_KEY", "UNMATCHED_ROUTE",
           "begin_on_new_span", "capture_request_headers", "count_header_cut", "is_fastapi", "put_captured_headers",
           "stored_route", "takes_captured_headers"]

H = TypeVar("H")


ROUTE_KEY = "aiwatch.route"
"""The WSGI environ or ASGI scope key where a framework integration (Flask's, Django's, or the app's own code)
stores the route template the request matched."""


def stored_route(environ_or_scope: Any) -> str | None:
    """The route template stored under :data:`ROUTE_KEY` in a WSGI environ or an ASGI scope, if any."""
    route = environ_or_scope.get(ROUTE_KEY)
    return str(route) if route else None

#: ``aiwatch_instrumentation_errors_total{component}`` of a ``Server-Timing`` header cut short to
#: :data:`aiwatch.servertiming.MAX_LENGTH` (phase entries left out), once per response
HEADER_COMPONENT = "server_timing_header"


def is_fastapi(app: Any) -> bool:
    """Whether ``app`` is a FastAPI application (an instance of a class from the ``fastapi`` package)."""
    return any(cls.__module__.split(".")[0] == "fastapi" for cls in type(app).__mro__)


def count_header_cut(cut: str, metrics: Metrics) -> None:
    """Count and log a ``Server-Timing`` header cut short (``cut``: why, from
    :meth:`~aiwatch.timing.RequestTimeline.server_timing`), under :data:`HEADER_COMPONENT`."""
    record_cut(HEADER_COMPONENT, f"Server-Timing header {cut} (the rest was sent)", metrics)


CLIENT_CLOSED_STATUS = "499"
"""The ``status`` label of a request whose response could not be delivered because the client went away (the
server's ``send`` raised an ``OSError`` or was cancelled): nginx's "client closed request". It is not a 5xx, so the
availability SLO's error selector (``slo.error_status``, default ``5..|...``) does not count it against the
service."""


def begin_on_new_span(recorder: RequestRecorder, tracer: Any, method: str, parent: Any,
                      attributes: dict[str, Any], metrics: Metrics | None) -> tuple[RequestTimeline, Any]:
    """Start a request on a new SERVER span named after ``method``, continuing ``parent``, and make the span current.
    Returns the timeline and the token :func:`~aiwatch.tracing.deactivate` takes (``None``: nothing was made
    current); a failure to make it current is counted, and the request is still recorded."""
    tl = recorder.begin_with(tracer, http_span_name(method), parent, attributes)
    return tl, activate_counted(tl.span, parent, None, metrics)


def capture_request_headers(capture: Callable[[H], dict[str, list[str]]], headers: H,
                            metrics: Metrics | None) -> dict[str, list[str]]:
    """The ``http.request.header.*`` attributes ``capture`` (a :class:`~aiwatch.headercapture.HeaderCapture`'s
    method) takes from ``headers``, for a span about to start; ``{}`` when reading them fails (counted under
    ``tracing``: the span is still made)."""
    try:
        return capture(headers)
    except Exception as exc:
        record_error("tracing", exc, metrics)
        return {}


def put_captured_headers(span: Any, capture: Callable[[H], dict[str, list[str]]], headers: H,
                         metrics: Metrics | None) -> None:
    """Put the header attributes ``capture`` (a :class:`~aiwatch.headercapture.HeaderCapture`'s method) takes from
    ``headers`` on ``span``, which has started; a failure is counted under ``tracing``, never raised."""
    try:
        attributes = capture(headers)
        if attributes:
            span.set_attributes(attributes)
    except Exception as exc:
        record_error("tracing", exc, metrics)


def takes_captured_headers(tl: RequestTimeline) -> bool:
    """Whether aiwatch puts the configured headers on the request's span: one it started, or one another owner
    started that captures none itself. OpenTelemetry's instrumentations (scope ``opentelemetry.instrumentation.*``)
    read the same variables; FastAPI's built-in telemetry (scope ``fastapi``) does not."""
    span = tl.span
    if span is None:
        return False
    if tl.owns_span:
        return True
    name = getattr(getattr(span, "instrumentation_scope", None), "name", None)
    return not (isinstance(name, str) and name.startswith("opentelemetry.instrumentation."))
