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
from opentelemetry.propagate import extract, get_global_textmap

from aiwatch._version import __version__
from aiwatch.env import OTEL_SDK_DISABLED, TRACING
from aiwatch.safety import record_error

if TYPE_CHECKING:
    from aiwatch.metrics import Metrics

_current_context = context.get_current
_monotonic = time.monotonic


def tracing_disabled_by_env() -> bool:
    """Whether ``$AIWATCH_TRACING`` or ``$OTEL_SDK_DISABLED`` turn aiwatch's spans off. An ``$AIWATCH_TRACING`` that
    is neither on nor off (``disabled``) is a ValueError naming it, as every aiwatch switch's: read as on, it left
    spans on that the operator meant off. ``$OTEL_SDK_DISABLED`` is read as OpenTelemetry reads it: ``true`` or not."""
    return not TRACING.switch() or OTEL_SDK_DISABLED.raw().strip().lower() == "true"


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
#: the fields of OpenTelemetry's default propagators (W3C trace context and baggage), in the order looked for; what
#: a propagator whose ``fields`` cannot be read is given
W3C_FIELDS = ("traceparent", "tracestate", "baggage")


class CarrierFields:
    """The request fields one propagator reads (its ``fields``), in the forms the integrations look for them:
    ``names`` (lowercase, as ASGI and gRPC spell them), ``raw`` (the same as ASGI header bytes) and ``environ`` (each
    name with its WSGI environ key, ``HTTP_X_B3_TRACEID`` for ``x-b3-traceid``). ``declared``: the name the
    propagator looks up for each lowercase name it spells otherwise (AWS X-Ray's ``X-Amzn-Trace-Id``), ``None`` when
    it spells them all in lowercase."""

    __slots__ = ("declared", "environ", "names", "prefix", "prefix_environ", "prefix_raw", "raw", "textmap")

    def __init__(self, textmap: object, declared: tuple[str, ...], prefix: tuple[str, ...] | None = None) -> None:
        self.textmap = textmap
        self.names = tuple(name.lower() for name in declared)
        self.raw = tuple(name.encode("latin-1") for name in self.names)
        self.environ = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in self.names)
        renamed = {name.lower(): name for name in declared if name != name.lower()}
        self.declared: dict[str, str] | None = renamed or None
        #: the starts of the names of the families of fields the propagator reads besides ``names`` (which
        #: ``fields`` cannot declare; :data:`BAGGAGE_PREFIXES`), in the three forms, ``None`` when it reads none; at
        #: most :data:`MAX_PREFIXED` such fields are read (``str.startswith`` takes the tuple)
        self.prefix = prefix or None
        self.prefix_raw = None if not prefix else tuple(p.encode("latin-1") for p in prefix)
        self.prefix_environ = None if not prefix else tuple("HTTP_" + p.upper().replace("-", "_") for p in prefix)


#: Every header B3 sends (its propagators read all but ParentSpanId): the multi-header one (``b3multi``) names only
#: TraceId, SpanId and Sampled in its ``fields`` but reads ``X-B3-Flags`` (a debug request: no Sampled) and the
#: single ``b3`` header too, which wins when present; the single-header one (``b3``) names only ``b3`` but reads the
#: multi-header form too (it inherits the same extract)
B3_FIELDS = ("b3", "x-b3-flags", "x-b3-parentspanid", "x-b3-sampled", "x-b3-spanid", "x-b3-traceid")


#: The baggage header families of propagators whose ``fields`` cannot name them (``uberctx-KEY: value``), by the
#: propagator's class (its module and name: neither package need be installed): they read every header that starts
#: so, when the request has their trace context
BAGGAGE_PREFIXES = {
    ("opentelemetry.propagators.jaeger", "JaegerPropagator"): "uberctx-",
    ("opentelemetry.propagators.ot_trace", "OTTracePropagator"): "ot-baggage-",
}
#: the most headers of a propagator's prefixed families (:attr:`CarrierFields.prefix`) handed to it per request, the
#: first names (a repeated one counted once): the W3C baggage limit on entries, which OpenTelemetry's Jaeger
#: propagator (1.45 on) and OT Trace's borrow to bound the headers they look at; older ones look at every one
MAX_PREFIXED = 180


def _baggage_prefixes(textmap: Any) -> tuple[str, ...]:
    """The :data:`BAGGAGE_PREFIXES` of ``textmap`` (a subclass's too) or of the propagators of a CompositePropagator
    (``OTEL_PROPAGATORS=tracecontext,jaeger``; nested too)."""
    found: list[str] = []
    seen = 0
    pending = [textmap]
    while pending and seen < 256:  # a composite of composites, bounded against a cycle
        seen += 1
        item = pending.pop()
        for cls in getattr(item, "__class__", type(item)).__mro__:  # a proxy's (wrapt) class is its target's
            prefix = BAGGAGE_PREFIXES.get((cls.__module__, cls.__qualname__))
            if prefix is not None:
                if prefix not in found:
                    found.append(prefix)
                break
        inner = getattr(item, "_propagators", None)  # CompositePropagator's
        if isinstance(inner, (list, tuple)):
            pending.extend(reversed(inner))
    return tuple(found)


def _declared_fields(textmap: Any) -> tuple[str, ...]:
    """``textmap.fields`` (a CompositePropagator's: the union of its propagators'), one name per lowercase spelling,
    the W3C ones first in their order, then the rest sorted (of two spellings of one name, the first sorted is kept).
    A name that is not text, or that no HTTP header could carry (not latin-1), is left out. ``fields`` are the keys a
    propagator *injects*, which need not be all it reads: where one of B3's is named, all of B3's are
    (:data:`B3_FIELDS`)."""
    declared = textmap.fields
    if isinstance(declared, str):  # one name, not its letters
        declared = (declared,)
    names = {name for name in declared if isinstance(name, str) and name}
    if any(name.lower() in B3_FIELDS for name in names):
        names.update(B3_FIELDS)
    lowered: dict[str, str] = {}
    for name in sorted(names):
        try:
            name.encode("latin-1")
        except UnicodeEncodeError:
            continue
        lowered.setdefault(name.lower(), name)
    first = tuple(lowered.pop(name) for name in W3C_FIELDS if name in lowered)
    return first + tuple(sorted(lowered.values()))


_fields = CarrierFields(None, W3C_FIELDS)


def carrier_fields() -> CarrierFields:
    """The fields the global propagator (``OTEL_PROPAGATORS``, or ``set_global_textmap``) reads: read once per
    propagator object, so on the request path this is a call and an identity check. A propagator whose ``fields``
    cannot be read is given the W3C ones (:data:`W3C_FIELDS`), and nothing is counted."""
    fields = _fields
    textmap = get_global_textmap()
    if fields.textmap is textmap:
        return fields
    return _fields_of(textmap)


def _fields_of(textmap: object) -> CarrierFields:
    global _fields
    try:
        fields = CarrierFields(textmap, _declared_fields(textmap), _baggage_prefixes(textmap))
    except Exception:
        fields = CarrierFields(textmap, W3C_FIELDS)
    _fields = fields
    return fields


def extract_context(carrier: dict[str, str], fields: CarrierFields | None = None) -> Any:
    """The parent context that the global propagator reads from ``carrier`` (field name, lowercase -> value), built
    from the request's :func:`carrier_fields` (``fields``: the ones it was built for). A request that repeats a field
    is read as OpenTelemetry's propagators read one: the first ``traceparent`` wins, repeated ``tracestate`` fields
    are one list, joined in order with ``,`` (RFC 9110 5.3), and the first ``baggage`` wins (OpenTelemetry's W3C
    baggage propagator reads only the first, and drops all baggage past 8192 bytes, so joining two could lose what
    the first alone keeps), as does the first of any other field (B3's, Jaeger's): the integrations build ``carrier``
    so (:func:`add_repeated`, :func:`first_traceparent`). A WSGI server joins repeated headers itself, so behind one
    the ``baggage`` values, and those of a repeated field other than the W3C ones, arrive joined."""
    if fields is not None and fields.declared is not None:
        declared = fields.declared
        carrier = {declared.get(name, name): value for name, value in carrier.items()}
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
