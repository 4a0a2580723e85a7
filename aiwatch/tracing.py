"""OpenTelemetry tracing for aiwatch's integrations: one SERVER span per request, one child span per phase.

Tracing is on when a TracerProvider is passed to an integration, or when a real (SDK) provider is installed
globally, e.g. by ``opentelemetry-instrument`` from the standard ``OTEL_*`` environment. It is off with
``AIWATCH_TRACING=off`` or ``OTEL_SDK_DISABLED=true``. With tracing off, no span work is done on the request path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import context, trace
from opentelemetry.propagate import extract

from aiwatch._version import __version__
from aiwatch.env import OTEL_SDK_DISABLED, TRACING
from aiwatch.safety import record_error

if TYPE_CHECKING:
    from aiwatch.metrics import Metrics

_OFF = {"0", "false", "off", "no"}
_current_context = context.get_current
_monotonic = time.monotonic


def tracing_disabled_by_env() -> bool:
    """Whether ``$AIWATCH_TRACING`` or ``$OTEL_SDK_DISABLED`` turn aiwatch's spans off."""
    return TRACING.raw().strip().lower() in _OFF or OTEL_SDK_DISABLED.raw().strip().lower() == "true"


def _is_real_provider(provider: Any) -> bool:
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


#: How often a source without a tracer looks again for a global SDK provider (seconds). Looking is not free
#: (``get_tracer_provider`` reads ``os.environ``), so the request path does it at most this often.
RECHECK_SECONDS = 1.0


class TracerSource:
    """Finds the tracer to use, lazily: a global provider installed after the app started is picked up (within
    :data:`RECHECK_SECONDS`)."""

    __slots__ = ("_disabled", "_explicit", "_next_check", "_tracer")

    def __init__(self, tracer_provider: Any = None) -> None:
        self._explicit = tracer_provider
        self._tracer: Any = None
        self._next_check = 0.0
        self._disabled = tracing_disabled_by_env()
        if tracer_provider is not None and not self._disabled:
            self._tracer = tracer_provider.get_tracer("aiwatch", __version__)

    def tracer(self) -> Any:
        """The tracer, or ``None`` when tracing is off."""
        if self._tracer is not None or self._disabled:
            return self._tracer
        now = _monotonic()
        if now < self._next_check:
            return None
        self._next_check = now + RECHECK_SECONDS
        provider = trace.get_tracer_provider()
        if _is_real_provider(provider):
            self._tracer = provider.get_tracer("aiwatch", __version__)
        return self._tracer

    @staticmethod
    def end_server_span(span: Any, end_time: int | None = None) -> None:
        """End a server span aiwatch started (the integration described it first: :mod:`aiwatch.semconv`), at
        ``end_time`` (nanoseconds since the epoch) when given, else now."""
        if end_time is None:
            span.end()
        else:
            span.end(end_time=end_time)


def span_in_progress(kind: trace.SpanKind) -> Any:
    """The current span when it is a recording span of ``kind`` that another instrumentation started for this
    request or call (OpenTelemetry's middleware or interceptor in front of aiwatch's), else ``None``. A span whose
    kind cannot be read (not the SDK's) counts as one of ``kind``."""
    if not _current_context():  # no value in the context, so no span: the common case, looked up at half the cost
        return None
    span = trace.get_current_span()
    if span.is_recording() and getattr(span, "kind", kind) is kind:
        return span
    return None


def activate(span: Any, parent_context: Any = None, suppress: Any = None) -> object:
    """Make ``span`` current (in ``parent_context``, e.g. one carrying the caller's baggage) until
    :func:`deactivate`, so that spans the app starts meanwhile are its children. ``suppress``: a context key set to
    true meanwhile (OpenTelemetry's keys that tell its instrumentations not to trace a call aiwatch already traces)."""
    ctx = trace.set_span_in_context(span, parent_context)
    if suppress is not None:
        ctx = context.set_value(suppress, True, ctx)
    return context.attach(ctx)


def deactivate(token: object) -> None:
    """Undo :func:`activate` (in the same context it was called in)."""
    context.detach(token)  # type: ignore[arg-type]


def activate_counted(span: Any, parent_context: Any, suppress: Any, metrics: Metrics | None) -> object | None:
    """:func:`activate` on the request path: a failure is counted (``aiwatch_instrumentation_errors_total``,
    component ``tracing``) and logged instead of raised. Returns the token :func:`deactivate_counted` takes, or
    ``None`` when nothing was made current (``span`` is ``None``, or activating failed)."""
    if span is None:
        return None
    try:
        return activate(span, parent_context, suppress)
    except Exception as exc:
        record_error("tracing", exc, metrics)
        return None


def deactivate_counted(token: object | None, metrics: Metrics | None) -> None:
    """Undo :func:`activate_counted` (nothing when it returned ``None``), counting a failure instead of raising."""
    if token is not None:
        try:
            deactivate(token)
        except Exception as exc:
            record_error("tracing", exc, metrics)


def attach_counted(ctx: Any, metrics: Metrics | None) -> object | None:
    """Make the OpenTelemetry context ``ctx`` current again (``None``: nothing to do), counting a failure instead of
    raising; returns the token :func:`deactivate_counted` takes, or ``None``."""
    if ctx is None:
        return None
    try:
        return context.attach(ctx)
    except Exception as exc:
        record_error("tracing", exc, metrics)
        return None


T = TypeVar("T")


def iterate_in_context(items: Iterable[T], ctx: Any, metrics: Metrics | None) -> Iterator[T]:
    """``items``, each produced with ``ctx`` current: a streamed body or a stream of replies is produced while the
    server iterates it, in the server's code, outside the request's context (its span, the caller's baggage)."""
    token = attach_counted(ctx, metrics)
    try:
        iterator = iter(items)
    finally:
        deactivate_counted(token, metrics)
    while True:
        token = attach_counted(ctx, metrics)
        try:
            item = next(iterator)
        except StopIteration:
            return
        finally:
            deactivate_counted(token, metrics)
        yield item


#: the W3C trace context's one field whose repeats are joined (:func:`add_repeated`)
TRACESTATE = "tracestate"


def extract_context(carrier: dict[str, str]) -> Any:
    """The parent context from W3C ``traceparent``/``tracestate`` (and ``baggage``) in ``carrier`` (field name ->
    value). A request that repeats a field is read as OpenTelemetry's propagators read one: the first ``traceparent``
    wins, repeated ``tracestate`` fields are one list, joined in order with ``,`` (RFC 9110 5.3), and the first
    ``baggage`` wins (OpenTelemetry's W3C baggage propagator reads only the first, and drops all baggage past 8192
    bytes, so joining two could lose what the first alone keeps): the integrations build ``carrier`` so
    (:func:`add_repeated`, :func:`first_traceparent`). A WSGI server joins repeated headers itself, so behind one the
    ``baggage`` values arrive joined."""
    return extract(carrier)


def add_repeated(carrier: dict[str, str], name: str, value: str, found: str) -> None:
    """``carrier`` given the field ``name: value`` of a request that had ``name: found`` already: a ``tracestate`` is
    joined to the earlier values; any other field (``traceparent``, ``baggage``) after the first is left out."""
    if name == TRACESTATE:
        carrier[name] = f"{found},{value}"


def first_traceparent(value: str) -> str:
    """The first ``traceparent`` of ``value``, the request's ``traceparent`` fields as a WSGI server hands them: joined
    with commas into one ``HTTP_TRACEPARENT`` (a ``traceparent`` has none of its own)."""
    return value.partition(",")[0] if "," in value else value
