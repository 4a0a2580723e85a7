"""What the client integrations share: the client-side recorder (service, peer and route labels through one label
guard), and for HTTP calls timing, reading the peer's Server-Timing and trace propagation."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace

# OpenTelemetry's HTTP client instrumentations (httpx, urllib3...) make no span of their own while this key is set:
# how contrib's instrumentations keep one CLIENT span per call when one HTTP client wraps another.
from opentelemetry.context import _SUPPRESS_HTTP_INSTRUMENTATION_KEY
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from aiwatch.amounts import MAX_COUNT, MAX_SECONDS, as_count, as_elapsed, shown
from aiwatch.cardinality import guard_for
from aiwatch.contentlength import content_length
from aiwatch.deferred import PER_CALL, run_deferred
from aiwatch.env import service_label
from aiwatch.fastpath import observe
from aiwatch.headercapture import HeaderCapture
from aiwatch.metrics import Metrics, get_metrics
from aiwatch.middleware._common import CLIENT_CLOSED_STATUS, capture_request_headers, put_captured_headers
from aiwatch.safety import record_error, resolve_route, sync_hook
from aiwatch.semconv import end_http_client_span, http_client_attributes, known_http_methods
from aiwatch.servertiming import OVERHEAD, ServerTiming, parse
from aiwatch.timing import RequestTimeline, call_site, current_timeline, sampled_trace_id, traffic_class_to_forward
from aiwatch.tracing import TracerSource, activate_counted, deactivate_counted
from aiwatch.traffic import HEADER as TRAFFIC_CLASS_HEADER

UNMATCHED_ROUTE = "__unmatched__"
"""The ``route`` label of calls made without a route template: URL paths are never used as labels."""

ROUTE_EXTENSION = "aiwatch.route"
"""httpx request extension naming the call's route template: ``client.get(url, extensions={ROUTE_EXTENSION: ...})``."""

MAX_REPORTED_NAME = 128
"""The longest service name a peer may report in Server-Timing (its ``total``'s ``desc``) for the ``peer`` label."""

MARKUP_TEXT = "<>&@[]()"
"""The characters of :data:`MARKUP_CHARACTERS` as the docs, the ``peer`` option's text and the error name them."""
MARKUP_CHARACTERS = frozenset(MARKUP_TEXT)
"""Characters a reported service name may not hold: the ``peer`` label goes into alert notifications
(``AiwatchNetworkLatencyHigh``'s summary), where Slack reads ``<!channel>`` and ``<url|text>``, Discord and Teams
``@everyone``, markdown ``[text](url)`` and HTML ``<a>``: a peer (or a third-party API) could ping a channel or post
a link in every notification."""

NAMES_PER_ADDRESS = 16
"""The most distinct service names the peers at one address may report as ``peer`` labels; a further one is
refused (the call is labelled with the address): one peer cannot take the label guard's slots from all others."""

UNKNOWN_ADDRESS = "unknown"
"""The ``address`` of a call whose integration does not know where it went (a gRPC interceptor given no channel):
it names no one peer, so a name reported under it labels no call that brought none
(:meth:`ReportedNames.answering`)."""

_TRACKED_ADDRESSES = 1024  # addresses whose reported names are remembered; when full, forgotten and learnt again
_TRACKED_ROUTES = 4096  # (address, route) pairs whose answering name is remembered; the same

_route: ContextVar[str | None] = ContextVar("aiwatch_client_route", default=None)
_clock = time.perf_counter
_DEFAULT_PORTS = {"http": 80, "https": 443}


@contextmanager
def route(template: str) -> Iterator[None]:
    """Label the outgoing calls made inside the block with the route template ``template``::

        with aiwatch.client.route("/users/{id}"):
            session.get(f"{base}/users/{user_id}")
    """
    token = _route.set(template)
    try:
        yield
    finally:
        _route.reset(token)


class _Call:
    __slots__ = ("address", "method", "phase", "route", "span", "start", "timeline", "trace_id")

    def __init__(self, method: str, address: str, route: str, start: float) -> None:
        self.method = method
        self.address = address
        self.route = route
        self.start = start
        self.span: Any = None
        self.trace_id: str | None = None
        self.timeline, self.phase = call_site()


def call_trace_id(span: Any, timeline: RequestTimeline | None, metrics: Metrics) -> str | None:
    """The ``trace_id`` a call's exemplars carry (:func:`aiwatch.timing.sampled_trace_id`): the trace of its CLIENT
    span ``span`` (aiwatch's), else of the current span (OpenTelemetry's CLIENT span, the caller's span), else of
    the aiwatch request ``timeline`` it was made in; ``None`` when that trace is not sampled, or there is none.
    Never raises: a failure is counted (component ``tracing``)."""
    try:
        if span is None:
            span = trace.get_current_span()
            if timeline is not None and timeline.span is not None and not span.get_span_context().is_valid:
                span = timeline.span
        return sampled_trace_id(span)
    except Exception as exc:
        record_error("tracing", exc, metrics)
        return None


class ReportedNames:
    """The service names peers reported in Server-Timing that a recorder took as ``peer`` labels, per address.

    A name is taken when it is printable text (no control characters; spaces, slashes and any letters are
    fine: a service may be called ``"fraud scorer"``) of 1 to :data:`MAX_REPORTED_NAME` characters without
    :data:`MARKUP_CHARACTERS`, and its address
    reported at most :data:`NAMES_PER_ADDRESS` names before it: that cap, not the name's characters, bounds the
    labels one peer can make. Lock-free: threads racing on one address may take a few names more, never without
    bound.

    It also keeps, per address and route template, the one name that answered there (:meth:`remember`,
    :meth:`answering`): the label of a later call to it that brings no name back."""

    __slots__ = ("_by_address", "_by_route")

    def __init__(self) -> None:
        self._by_address: dict[str, set[str]] = {}
        self._by_route: dict[tuple[str, str], str] = {}  # (address, route): the name that answered, "" for several

    def refusal(self, address: str, name: str) -> str | None:
        """Why ``name``, reported by the peer at ``address``, is no ``peer`` label; ``None`` when it is one."""
        known = self._by_address.get(address)
        if known is not None and name in known:
            return None
        if not 0 < len(name) <= MAX_REPORTED_NAME or not name.isprintable():
            return (f"the peer at {address!r} reported the service name {name[:40]!r}"
                    f"{'...' if len(name) > 40 else ''} ({len(name)} characters), which is no printable text of 1 "
                    f"to {MAX_REPORTED_NAME} characters: labelled with its address")
        if not MARKUP_CHARACTERS.isdisjoint(name):
            return (f"the peer at {address!r} reported the service name {name!r}, which holds one of "
                    f"{MARKUP_TEXT!r} (markup in an alert notification): labelled with its "
                    f"address")
        if known is None:
            if len(self._by_address) >= _TRACKED_ADDRESSES:
                self._by_address.clear()
            known = self._by_address.setdefault(address, set())
        if len(known) >= NAMES_PER_ADDRESS:
            return (f"the peer at {address!r} reported the service name {name!r} after {len(known)} others, past "
                    f"the {NAMES_PER_ADDRESS} kept per address: labelled with its address")
        known.add(name)
        return None

    def remember(self, address: str, route: str, name: str) -> None:
        """Note that the call to ``route`` at ``address`` was answered by ``name`` (a name :meth:`refusal` took), for
        :meth:`answering`. Calls with no route template (``__unmatched__``, ``__overflow__``) or no address are not
        noted: which peer behind a shared address (an ingress routing by path) answered them tells nothing of the
        next one."""
        if route.startswith("__") or address == UNKNOWN_ADDRESS:
            return
        key = (address, route)
        known = self._by_route.get(key)
        if known is None:
            if len(self._by_route) >= _TRACKED_ROUTES:
                self._by_route.clear()
            self._by_route[key] = name
        elif known and known != name:
            self._by_route[key] = ""  # answered by two names: which one a call that brought none was for is unknown

    def answering(self, address: str, route: str) -> str | None:
        """The one name that answered calls to ``route`` at ``address`` (:meth:`remember`): the ``peer`` label of a
        call to it that brought no name back (an error, a timeout, a load balancer's 503), so that it is counted
        under the peer it was meant for. ``None`` when none answered yet, or several."""
        return self._by_route.get((address, route)) or None


class ClientRecorder:
    """Times outgoing calls and records ``aiwatch_client_request_duration_seconds`` and
    ``aiwatch_network_duration_seconds`` (client time minus the ``total`` the peer reported in ``Server-Timing``;
    for a streamed response, the client time up to its headers: :func:`headers_arrived`).

    Integrations get theirs from :func:`aiwatch.recording.make_client_recorder`; one recorder can serve several
    clients, HTTP and gRPC (they then share its label guard). Options, all keyword-only: the recorder options of
    :mod:`aiwatch.recording` (``service``, ``registry`` / ``metrics``, ``max_label_values``, ``tracer_provider``:
    a CLIENT span per HTTP call; W3C trace context is injected either way), and

    - ``peer``: a fixed ``peer`` label (default: the service name the peer reports in ``Server-Timing``, when
      :class:`ReportedNames` takes it; for a call that brought no name back, the one name that answered calls to
      its route template at its address before (:meth:`ReportedNames.answering`); else ``host:port`` of each URL
      or the gRPC interceptor's ``address``; bounded by the cardinality guard).
    - ``route_resolver``: ``(method, url) -> route template or None``, used when an HTTP call names no route.
    """

    def __init__(self, *, service: str | None = None, peer: str | None = None,
                 registry: CollectorRegistry | None = None, metrics: Metrics | None = None,
                 tracer_provider: Any = None, route_resolver: Callable[[str, str], str | None] | None = None,
                 max_label_values: int | None = None) -> None:
        self.metrics = metrics if metrics is not None else get_metrics(registry)
        self.service = service_label(service)
        #: ``service`` was given: every call is labelled with it; else a call made inside an aiwatch server request
        #: is labelled with that request's service (the caller the call graph needs), one outside with ``service``
        self.service_given = bool(service)
        self.guard = guard_for(self.metrics, max_label_values)
        self.peer = self.guard.fold("peer", peer) if peer else None
        self.reported_names = ReportedNames()
        self.route_resolver = sync_hook("route_resolver", route_resolver)
        self.tracing = TracerSource(tracer_provider)
        #: the methods named as they are on CLIENT spans (any other is ``_OTHER``):
        #: $OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS
        self.known_methods = known_http_methods()
        #: the headers put on CLIENT spans: $OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_*
        self.header_capture = HeaderCapture.client()

    def start(self, method: str, scheme: str, host: str, port: int | None, url: str,
              headers: MutableMapping[str, str], route: str | None = None) -> _Call:
        """Start timing a call, start its CLIENT span when tracing is on (unless another instrumentation's CLIENT
        span for it is current: OpenTelemetry's requests instrumentation in front) and inject trace context into
        ``headers``. Never raises."""
        if self.metrics.deferred:  # what dropped responses' finalizers left (aiwatch.deferred)
            run_deferred(self.metrics, PER_CALL)
        start = _clock()
        try:
            address = f"{host}:{port or _DEFAULT_PORTS.get(scheme, 0)}"
            route = route or _route.get()
            if route is None and self.route_resolver is not None:
                route = resolve_route(self.route_resolver, self.metrics, method, url)
            call = _Call(method, address, self.guard.fold("route", route) if route else UNMATCHED_ROUTE, start)
        except Exception as exc:
            record_error("client", exc, self.metrics)
            call = _Call(method, "", UNMATCHED_ROUTE, start)
        self._propagate(call, headers, scheme, host, port, url)
        call.trace_id = call_trace_id(call.span, call.timeline, self.metrics)
        try:
            traffic_class = traffic_class_to_forward()
            if traffic_class is not None and TRAFFIC_CLASS_HEADER not in headers:
                headers[TRAFFIC_CLASS_HEADER] = traffic_class
        except Exception as exc:
            record_error("client", exc, self.metrics)
        return call

    def _propagate(self, call: _Call, headers: MutableMapping[str, str], scheme: str, host: str,
                   port: int | None, url: str) -> None:
        try:
            context = None
            current = trace.get_current_span()
            # another instrumentation's CLIENT span is this call's span (OpenTelemetry's requests instrumentation
            # wraps Session.send, in front of the adapter): aiwatch makes no second one
            ours = not (current.is_recording() and getattr(current, "kind", None) is SpanKind.CLIENT)
            tracer = self.tracing.tracer() if ours else None
            if not current.get_span_context().is_valid:
                tl = current_timeline()  # inside an aiwatch server request: its span is the parent
                if tl is not None and tl.span is not None:
                    context = trace.set_span_in_context(tl.span)
            if tracer is not None:
                route = call.route if not call.route.startswith("__") else None  # unmatched, overflow: no route
                name, attributes = http_client_attributes(call.method, url, scheme, host, port, route,
                                                          self.known_methods)
                if self.header_capture.request is not None:  # the application's, before the trace context
                    attributes.update(capture_request_headers(self.header_capture.client_request_attributes,
                                                              headers, self.metrics))
                call.span = tracer.start_span(name, context=context, kind=SpanKind.CLIENT, attributes=attributes)
                context = trace.set_span_in_context(call.span, context)
            inject(headers, context=context)
        except Exception as exc:
            record_error("tracing", exc, self.metrics)

    def capture_response(self, call: _Call, headers: Any) -> None:
        """Put the response headers configured for capture on ``call``'s span, if it has one (a mapping of
        headers: httpx's keep repeated ones apart). Never raises."""
        if call.span is not None and self.header_capture.response is not None:
            put_captured_headers(call.span, self.header_capture.client_response_attributes, headers, self.metrics)

    def enter(self, call: _Call) -> object | None:
        """Make ``call``'s span current while the wrapped client sends it, with OpenTelemetry's HTTP client
        instrumentations told to stay out (one CLIENT span per call); ``None`` when it has no span."""
        return activate_counted(call.span, None, _SUPPRESS_HTTP_INSTRUMENTATION_KEY, self.metrics)

    def leave(self, token: object | None) -> None:
        """Undo :meth:`enter`."""
        deactivate_counted(token, self.metrics)

    def finish(self, call: _Call, status: str, server_timing: str | None,
               error: BaseException | None = None, sent: int | None = None, received: int | None = None,
               headers_at: float | None = None, retried: bool = False, abandoned: bool = False,
               ended: tuple[float, int] | None = None) -> str:
        """Record a finished call: ``status`` is the HTTP status or the client error's name; ``sent`` /
        ``received``: the request and response bodies' bytes, when known; ``headers_at``: the clock reading
        (:func:`headers_arrived`) at which the headers of a streamed response arrived, for its network time;
        ``retried``: the client made several attempts (no network time, as :meth:`record` says); ``abandoned``:
        the application dropped the response before its body's end, recorded as ``499``
        (:data:`~aiwatch.middleware._common.CLIENT_CLOSED_STATUS`, as the ASGI middleware records a client
        that went away) while the span keeps ``status``; ``ended``: when the call ended, if before now (the clock
        reading and nanoseconds since the epoch: a response dropped, recorded later). Returns the ``peer`` label it
        used (for :meth:`count_received`). Never raises."""
        m = self.metrics
        recorded = CLIENT_CLOSED_STATUS if abandoned else status
        end = _clock() if ended is None else ended[0]
        peer = self.record(call.start, end, call.address, call.route, recorded, server_timing, call.timeline,
                           call.phase, "server_timing", sent=sent, received=received, served_end=headers_at,
                           retried=retried, trace_id=call.trace_id)
        if call.span is not None:
            try:
                end_http_client_span(call.span, status, error, end_time=None if ended is None else ended[1])
            except Exception as exc:
                record_error("tracing", exc, m)
        return peer

    def service_of(self, timeline: RequestTimeline | None) -> str:
        """The ``service`` label of a call made inside ``timeline`` (``None``: outside any request): the recorder's
        when it was given one, else the request's, else the default (``$AIWATCH_SERVICE``...)."""
        return self.service if self.service_given or timeline is None else timeline.service

    def count_received(self, peer: str, received: int, service: str | None = None) -> None:
        """Add the bytes of a response body read after its call was recorded (a streamed body) to ``peer``'s
        received bytes; ``peer``: what :meth:`finish` returned, ``service``: the call's (:meth:`service_of`; default
        this recorder's). Never raises."""
        count: int | None = received
        if received and (received.__class__ is not int or not 0 < received <= MAX_COUNT):
            count = self._bytes(received, "received")
        if count:
            try:
                m = self.metrics
                m.child(m.client_bytes, (service or self.service, peer, "received")).inc(count)
            except Exception as exc:
                record_error("metrics", exc, self.metrics)

    def record(self, start: float, end: float, address: str, route: str, status: str, server_timing: str | None,
               timeline: RequestTimeline | None, phase: str, timing_component: str,
               fixed_peer: str | None = None, sent: int | None = None, received: int | None = None,
               served_end: float | None = None, retried: bool = False, trace_id: str | None = None) -> str:
        """Record one finished call, HTTP or gRPC: its client-observed time and, when the peer reported its time
        (``server_timing``: the ``Server-Timing`` value or the ``server-timing`` trailer), its network time: the
        client time up to ``served_end`` (when given: the moment the peer's report arrived, before the end) minus
        the peer's ``total``; none when the call was ``retried`` or the report is a retried attempt's
        (:attr:`aiwatch.servertiming.ServerTiming.retried`): its total misses the earlier attempts. The
        ``peer`` label is ``fixed_peer`` or this recorder's fixed peer, else the service name the peer reported when
        :class:`ReportedNames` takes it (a refused one is counted under ``timing_component``), else, when the call
        brought no name back, the one name that answered ``route`` at ``address`` before, else ``address``;
        ``timeline`` and ``phase`` are where the call was made (:func:`aiwatch.timing.call_site`); ``sent`` and
        ``received`` are bytes moved (``aiwatch_client_bytes_total``), when known: an integer from 0 to 2**53, else
        (a negative number, a float: the integration's mistake) counted as aiwatch's error (component ``client``)
        and left out. :func:`body_length` gives no such number: a ``Content-Length`` that is no count is unknown.
        ``trace_id``: the call's sampled trace (:func:`call_trace_id`), its observations' exemplar.
        A malformed ``server_timing`` is counted under ``timing_component``. A duration (``end - start``) that is
        no number of seconds from 0 to 1e9 (a NaN, an ``end`` from another clock) is counted (component
        ``client``) and the call's times are left out. Returns the ``peer`` label it used. Never raises."""
        m = self.metrics
        timing = None
        if server_timing:
            try:
                timing = parse(server_timing)
            except ValueError as exc:
                record_error(timing_component, exc, m)
        try:
            client: float | None = end - start
        except Exception:  # a start or an end that is no number (TypeError), or past float64 (OverflowError)
            client = None
        if client.__class__ is not float or not 0.0 <= client <= MAX_SECONDS:  # the common case: one test
            client = self._seconds(start, end)  # rare: NaN, numpy, a start and an end from two clocks
        network = None
        try:
            fixed = self.guard.fold("peer", fixed_peer) if fixed_peer else self.peer
            peer = fixed or self.guard.fold("peer", self._reported(timing, address, route, timing_component)
                                            or address)
            if phase and phase != OVERHEAD:  # the caller's phase: its name may come from data
                phase = self.guard.fold("phase", phase)
        except Exception as exc:
            record_error("client", exc, m)
            peer = address
        # bytes moved are ints from 0 to 2**53: a negative one failed the other direction, one past 2**53 overflowed
        if sent and (sent.__class__ is not int or not 0 < sent <= MAX_COUNT):
            sent = self._bytes(sent, "sent")
        if received and (received.__class__ is not int or not 0 < received <= MAX_COUNT):
            received = self._bytes(received, "received")
        service = self.service_of(timeline)
        exemplar = {"trace_id": trace_id} if trace_id else None
        try:
            if client is not None:
                observe(m.child(m.client_request_duration, (service, peer, route, status, phase)), client,
                        exemplar)
            if sent:
                m.child(m.client_bytes, (service, peer, "sent")).inc(sent)
            if received:
                m.child(m.client_bytes, (service, peer, "received")).inc(received)
        except Exception as exc:
            record_error("metrics", exc, m)
        # a retried call's time holds every attempt and the backoff, the report only the answering attempt's time
        total = timing.total if timing is not None and not (retried or timing.retried) else None
        if total is not None and client is not None:
            try:
                network = client - total
                if served_end is not None and start <= served_end <= end:
                    network = (served_end - start) - total
                if network < 0.0:
                    network = 0.0
                    m.child(m.network_clamped, (service, peer)).inc()
                observe(m.child(m.network_duration, (service, peer, phase)), network, exemplar)
            except Exception as exc:
                record_error("metrics", exc, m)
        if timeline is not None and client is not None:
            try:
                timeline.add_call(peer, phase, client, network)
            except Exception as exc:
                record_error("client", exc, m)
        return peer

    def _reported(self, timing: ServerTiming | None, address: str, route: str, component: str) -> str | None:
        """The service name the peer at ``address`` reported, when it may be its ``peer`` label; with no name
        reported (no report, or one without a service), the one name that answered ``route`` there before, if
        one."""
        names = self.reported_names
        name = timing.service if timing is not None else None
        if not name:
            return names.answering(address, route)
        refusal = names.refusal(address, name)
        if refusal is None:
            names.remember(address, route, name)
            return name
        record_error(component, ValueError(refusal), self.metrics)
        return None

    def _seconds(self, start: Any, end: Any) -> float | None:
        """A call's duration that is not a plain float from 0 to 1e9 s: as seconds (from numpy clock readings), or
        ``None`` and aiwatch's error (component ``client``) when ``end - start`` is none."""
        client = as_elapsed(start, end)
        if client is None:
            record_error("client", ValueError(f"a call's duration must be 0 to 1e9 seconds; it started at "
                                              f"{shown(start)} and ended at {shown(end)}"), self.metrics)
        return client

    def _bytes(self, moved: Any, direction: str) -> int | None:
        """A number of bytes sent or received that is not a plain int in range: as a count (a numpy integer), or
        ``None`` and aiwatch's error (component ``client``)."""
        number = as_count(moved)
        if number is None:
            record_error("client", ValueError(f"bytes {direction} must be an integer from 0 to 2**53, got "
                                              f"{shown(moved)}"), self.metrics)
        return number


class PendingCall:
    """A call whose response body is read after the integration returned it (httpx's stream, the body requests
    reads in ``Session.send``): recorded once, by :meth:`finish`, or, when the application drops the response
    first, by :meth:`dropped`."""

    __slots__ = ("call", "ended", "headers_at", "received", "recorder", "retried", "sent", "server_timing")

    def __init__(self, recorder: ClientRecorder, call: _Call, server_timing: str | None, sent: int | None,
                 headers_at: float | None, retried: bool = False) -> None:
        self.recorder = recorder
        self.call: _Call | None = call
        self.server_timing = server_timing
        self.sent = sent
        self.headers_at = headers_at
        self.retried = retried
        self.received = 0
        self.ended = False  # the body was read to its end

    def finish(self, status: str, error: BaseException | None, abandoned: bool = False,
               ended: tuple[float, int] | None = None) -> None:
        call, self.call = self.call, None
        if call is not None:
            self.recorder.finish(call, status, self.server_timing, error, self.sent, self.received, self.headers_at,
                                 retried=self.retried, abandoned=abandoned, ended=ended)

    def dropped(self, status: str) -> None:
        """The application dropped the response unclosed (the finalizer): recorded as of now, abandoned unless
        its body was read to its end, by the client's next call or the next scrape (:mod:`aiwatch.deferred`: a
        finalizer records nothing itself)."""
        try:
            ended, abandoned = (_clock(), time.time_ns()), not self.ended
            self.recorder.metrics.deferred.append(lambda: self.finish(status, None, abandoned, ended))
        except Exception:  # at interpreter exit, the module's globals may be gone
            pass


def headers_arrived(headers: Any) -> float | None:
    """The moment a response's headers arrived (now), when its body is streamed (of unknown length: chunked): the
    ``Server-Timing`` sent with those headers covers the server's time up to them, not the time it then spends
    producing the body (an LLM generating tokens), so the network time is counted to them. ``None`` for a body of
    declared length, which the server had whole when it sent its headers: its transfer is network time."""
    now = _clock()
    try:
        declared = content_length(headers.get("content-length"))
    except Exception:  # a Content-Length that is no count: its body's length is unknown too
        declared = None
    return now if declared is None else None


def body_length(body: Any, headers: Any) -> int | None:
    """A body's size in bytes: ``len(body)`` for bytes or text, else its declared ``Content-Length`` (``None``:
    unknown: a stream of unknown size, or a ``Content-Length`` that is no count of bytes, such as ``+7``)."""
    if isinstance(body, bytes | bytearray | memoryview):
        return len(body)
    if isinstance(body, str):
        return len(body.encode("utf-8"))
    try:
        return content_length(headers.get("content-length")) if headers is not None else None
    except (TypeError, ValueError):
        return None
