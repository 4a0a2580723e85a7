"""Client interceptors for ``grpc`` and ``grpc.aio`` channels: client time, network time and status per call.

Per call (see docs/grpc.md):

* ``aiwatch_client_request_duration_seconds{service, peer, route, status}``: client-observed time from the call to
  its end (for streams: until the stream ends), ``status`` = the gRPC status name the client saw, including
  client-side ones (``DEADLINE_EXCEEDED``, ``CANCELLED``, ``UNAVAILABLE``).
* ``aiwatch_network_duration_seconds{service, peer}`` = client time - the ``total`` the server reported in the
  ``server-timing`` trailing metadata. A negative difference (clock granularity, a bogus server) is recorded as 0
  and counted in ``aiwatch_network_clamped_total``; malformed ``server-timing`` from a peer is counted in
  ``aiwatch_instrumentation_errors_total{component="grpc_server_timing"}`` and skipped. A call the channel retried
  (the trailer's ``total`` has ``attempt`` above 1) gives no network time: its client time holds every attempt and
  the backoff, the trailer only the last attempt's server time.
* The current trace context is injected into the call's metadata by OpenTelemetry's global propagator (W3C's by
  default), unless the metadata already has a trace-context key that propagator writes (its ``fields``; B3's all
  where it writes one of them): then the app's own context is the call's, and nothing is added. What the app set of
  a trace context's companions (``tracestate``; baggage: ``baggage``, Jaeger's ``uberctx-*``, OT Trace's
  ``ot-baggage-*``) is not added a second time; the trace context still is. Keys are written in lowercase.
* With tracing on (``tracer_provider=`` or a global SDK provider) each call gets a CLIENT span named and described
  as opentelemetry-instrumentation-grpc describes its own (:mod:`aiwatch.semconv`: ``pkg.Service/Method``,
  ``rpc.*``, ERROR for any status but ``OK``; the stable RPC set under ``OTEL_SEMCONV_STABILITY_OPT_IN=rpc``),
  unless a CLIENT span is already current (OpenTelemetry's client interceptor in front: its span is the call's).
  While aiwatch's span is current, OpenTelemetry's instrumentations behind aiwatch's interceptor stay out, so a call
  has one CLIENT span in either order.

``service`` is the calling service's name; ``peer`` is the ``peer`` given to the interceptor, else the service name
the server reports in its trailer (see :class:`aiwatch.client.ReportedNames`), else the ``address`` given to it (the
instrumentor passes the target of each channel it creates), else :data:`UNKNOWN_PEER`: an interceptor handed to
``grpc.intercept_channel`` does not see the channel, and grpcio's call objects tell no peer. The interceptors never
raise anything new: the call's outcome, errors included, reaches the caller unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, NamedTuple

import grpc
import grpc.aio
from opentelemetry import trace

# contrib's gRPC client interceptor makes no span while this key is set (its is_instrumentation_enabled())
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.propagate import inject
from opentelemetry.propagators.textmap import Setter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from aiwatch.client import ClientRecorder
from aiwatch.client._core import UNKNOWN_ADDRESS, call_trace_id
from aiwatch.exclusion import ExcludedServices
from aiwatch.flags import flag
from aiwatch.grpc._common import metadata_value, method_name, status_name, status_value
from aiwatch.grpc.heldcall import HeldCall, HeldStream
from aiwatch.grpc.streambytes import (
    RECEIVED,
    CountedResponses,
    StreamBytes,
    counted_aio_responses,
    counted_requests,
    message_size,
)
from aiwatch.metadatacapture import MetadataCapture
from aiwatch.metrics import Metrics
from aiwatch.middleware._common import capture_request_headers
from aiwatch.recording import resolve_client_recorder
from aiwatch.safety import record_error, warn_rate_limited
from aiwatch.semconv import end_grpc_span, grpc_span_start, rpc_conventions
from aiwatch.servertiming import HEADER
from aiwatch.timing import RequestTimeline, call_site, current_timeline, traffic_class_to_forward
from aiwatch.tracing import (
    CarrierFields,
    activate_counted,
    carrier_fields,
    deactivate_counted,
)
from aiwatch.traffic import HEADER as TRAFFIC_CLASS_HEADER

COMPONENT = "grpc_client"
TIMING_COMPONENT = "grpc_server_timing"
UNKNOWN_PEER = UNKNOWN_ADDRESS
"""The ``peer`` label of calls whose interceptor was given no ``peer`` nor ``address``, to a server that reports no
service name."""

_clock = time.perf_counter


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    pass


class _AioCallDetails(
    collections.namedtuple(
        "_AioCallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready")),
    grpc.aio.ClientCallDetails,  # type: ignore[misc]
):
    pass


class _ClientCore:
    """What the sync and aio client interceptors share: the recorder's labels and metrics, and one call's record."""

    def __init__(self, recorder: ClientRecorder, peer: str | None, propagate: bool,
                 address: str | None = None, excluded: ExcludedServices | None = None) -> None:
        self.recorder = recorder
        #: the services whose calls are handed on untouched (not timed, traced or given trace context)
        self.excluded = excluded if excluded is not None else ExcludedServices.resolve(None)
        self.metrics = recorder.metrics
        self.guard = recorder.guard
        #: a fixed ``peer`` label (else the name the server reports, else ``address``, else UNKNOWN_PEER)
        self.peer = peer
        self.address = address
        self.propagate = flag(propagate, "propagate")
        self.conventions = rpc_conventions()
        #: the metadata the app sends that CLIENT spans carry (``None``: none configured)
        self.metadata_capture = MetadataCapture.client(self.conventions)

    @classmethod
    def of(cls, recorder: ClientRecorder | None, peer: str | None, propagate: bool, *, service: str | None,
           registry: CollectorRegistry | None, metrics: Metrics | None, max_label_values: int | None,
           address: str | None = None, tracer_provider: Any = None,
           excluded_services: Iterable[str] | None = None) -> _ClientCore:
        return cls(resolve_client_recorder(recorder, {"service": service, "registry": registry, "metrics": metrics,
                                                      "max_label_values": max_label_values,
                                                      "tracer_provider": tracer_provider}), peer, propagate,
                   address, ExcludedServices.resolve(excluded_services))

    def start_span(self, method: str, metadata: Any = None) -> Any:
        """The call's CLIENT span, or ``None``: tracing is off, or another instrumentation's CLIENT span is
        current (it is the call's span). ``metadata``: the app's, for :attr:`metadata_capture`. Never raises."""
        try:
            current = trace.get_current_span()
            if current.is_recording() and getattr(current, "kind", None) is SpanKind.CLIENT:
                return None
            tracer = self.recorder.tracing.tracer()
            if tracer is None:
                return None
            context = None
            if not current.get_span_context().is_valid:
                tl = current_timeline()  # inside an aiwatch server request: its span is the parent
                if tl is not None and tl.span is not None:
                    context = trace.set_span_in_context(tl.span)
            name, attributes = grpc_span_start(method, self.conventions, self.address)
            if self.metadata_capture is not None and metadata:
                attributes.update(capture_request_headers(self.metadata_capture.attributes, metadata, self.metrics))
            return tracer.start_span(name, context=context, kind=SpanKind.CLIENT, attributes=attributes)
        except Exception as exc:
            record_error("tracing", exc, self.metrics)
            return None

    def end_span(self, span: Any, code: Any) -> None:
        """Describe and end ``span`` (``None``: nothing to do) with the call's status ``code``."""
        if span is None:
            return
        try:
            status = status_name(code) or "UNKNOWN"
            end_grpc_span(span, self.conventions, status, status_value(status), None, server=False)
            span.end()
        except Exception as exc:
            record_error("tracing", exc, self.metrics)

    def enter(self, span: Any) -> object | None:
        """Make ``span`` current while the call is handed on, with OpenTelemetry's instrumentations told to stay
        out (its client interceptor behind aiwatch's would make a second CLIENT span)."""
        return activate_counted(span, None, _SUPPRESS_INSTRUMENTATION_KEY, self.metrics)

    def leave(self, token: object | None) -> None:
        """Undo :meth:`enter`."""
        deactivate_counted(token, self.metrics)

    def carrier(self, metadata: Any, span: Any = None) -> list[tuple[str, Any]] | None:
        """Metadata with the trace context added (``span``'s, else the current one) and the current request's
        traffic class when it is not the default one, or ``None`` when there is nothing to add. What the app's
        metadata already carries is not added again (:func:`_not_the_apps`)."""
        pairs = [(item[0], item[1]) for item in metadata or ()]
        added = False
        if self.propagate and (span is not None or trace.get_current_span().get_span_context().is_valid):
            headers: dict[str, str] = {}
            inject(headers, context=trace.set_span_in_context(span) if span is not None else None,
                   setter=_METADATA_SETTER)
            kept = _not_the_apps(headers, pairs, carrier_fields())
            pairs.extend(kept)
            added = bool(kept)
        traffic_class = traffic_class_to_forward()
        if traffic_class is not None and not any(k == TRAFFIC_CLASS_HEADER for k, _ in pairs):
            pairs.append((TRAFFIC_CLASS_HEADER, traffic_class))
            added = True
        return pairs if added else None

    def record(self, method: str, start: float, end: float, code: Any, trailing: Any,
               site: tuple[RequestTimeline | None, str], sent: int | None = None,
               received: int | None = None, streamed: StreamBytes | None = None, trace_id: str | None = None) -> None:
        """Record a finished call made from ``site`` (:func:`aiwatch.timing.call_site`). ``sent`` / ``received``:
        the unary messages' sizes; ``streamed``: the tally of the call's streamed messages; ``trace_id``: its
        sampled trace (:func:`aiwatch.client._core.call_trace_id`), its observations' exemplar."""
        try:
            route = self.guard.fold("route", method)
            status = status_name(code) or "UNKNOWN"
            value = metadata_value(trailing, HEADER)
            if streamed is not None:
                streamed_sent, streamed_received = streamed.take()
                sent, received = sent or streamed_sent, received or streamed_received
        except Exception as exc:
            record_error(COMPONENT, exc, self.metrics)
            return
        timeline, phase = site
        peer = self.recorder.record(start, end, self.address or UNKNOWN_PEER, route, status, value, timeline,
                                    phase, TIMING_COMPONENT, fixed_peer=self.peer, sent=sent, received=received,
                                    trace_id=trace_id)
        if streamed is not None:
            streamed.settle(self.recorder.service_of(timeline), peer)


#: what grpc-core takes as a metadata key: any other fails the call ("Illegal header key")
_METADATA_KEY = re.compile(r"[0-9a-z_.-]+")


class _MetadataSetter(Setter[dict[str, str]]):
    """Writes what the propagator injects under lowercase keys, as OpenTelemetry's gRPC client instrumentation does:
    Jaeger and OT Trace spell a baggage key as the app did (``uberctx-userId``), which grpc-core refuses, failing the
    call. A key that is still none grpc-core takes (``ot-baggage-a!``) is left out, and logged."""

    def set(self, carrier: dict[str, str], key: str, value: str) -> None:
        lowered = key.lower()
        if _METADATA_KEY.fullmatch(lowered):
            carrier[lowered] = value
        else:
            warn_rate_limited("grpc_client_metadata_key", "aiwatch: the trace context's %r is no gRPC metadata key "
                              "(0-9, a-z, '_', '.', '-'): left out of the call's metadata", key)


_METADATA_SETTER = _MetadataSetter()


def _family(key: str, fields: CarrierFields) -> str | None:
    """The family of companions of a trace context ``key`` (lowercase) is in: ``tracestate`` (ignored without a
    ``traceparent``), or ``baggage`` for every form of baggage the global propagator reads (W3C's ``baggage`` where
    it reads it, Jaeger's ``uberctx-*``, OT Trace's ``ot-baggage-*``: a composite merges them, and one form of the
    same entry would override another); ``None`` for any other key."""
    if key == "tracestate":
        return key
    if key == "baggage":
        return key if key in fields.names else None
    prefixes = fields.prefix
    if prefixes is not None and key.startswith(prefixes):
        return "baggage"
    return None


def _not_the_apps(injected: dict[str, str], pairs: list[tuple[str, Any]],
                  fields: CarrierFields) -> list[tuple[str, str]]:
    """The ``injected`` entries to send besides the app's metadata ``pairs``. None when the app set a trace-context
    key of the global propagator (one of its ``fields`` but a companion; all of B3's where it names one of them):
    the app's context is the call's, and a second one under the propagator's other keys would win on a server that
    reads those last (``b3multi,tracecontext``). Else each injected entry but those of a companion family the app set
    (:func:`_family`: its ``tracestate``; its baggage, in any form the propagator reads): none is sent twice, and the
    trace context still is. Keys compared in any case: grpcio refuses an uppercase key, but an interceptor in front
    of aiwatch's may have added one."""
    names = fields.names
    apps: set[str] = set()
    for key, _ in pairs:
        if isinstance(key, str):
            key = key.lower()
            family = _family(key, fields)
            if family is not None:
                apps.add(family)
            elif key in names:
                return []
    if not apps:
        return list(injected.items())
    return [(k, v) for k, v in injected.items() if _family(k, fields) not in apps]


def _future_call(continuation: Any) -> bool | None:
    """Whether the call is a ``future()`` (``True``) or a blocking call (``False``: ``stub.X(...)``,
    ``with_call``), which grpcio's interceptor API does not say: the continuation it passes is a closure of its
    multicallable's ``future`` or ``_with_call`` (grpcio's private names, as in the 1.85 this project requires;
    tests/grpc/test_grpc_client_sync.py fails should they change). ``None`` for any other continuation: then a
    call not yet done is taken for a future."""
    qualname = getattr(continuation, "__qualname__", None)
    if not isinstance(qualname, str):
        return None
    if ".future.<locals>." in qualname:
        return True
    if "._with_call.<locals>." in qualname:
        return False
    return None


def _recorded_stream(responses: Iterator[Any], tally: StreamBytes | None,
                     finish: Callable[[float, Any, Any], None]) -> Iterator[Any]:
    """A response stream an interceptor behind aiwatch's handed back as a plain iterator, not grpcio's call
    (OpenTelemetry's client interceptor gives a generator for unary-stream calls): it has no done callback, so the
    call is recorded as the stream ends, by ``finish(end, code, trailing metadata)``: when it is exhausted, the
    status and trailer of grpcio's call when the iterator delegates to it (:func:`_delegated_call`), else ``OK`` and
    no trailer (no network time); the code and trailer of the ``RpcError`` it raises (grpcio raises its call);
    ``UNKNOWN`` for any other error; ``CANCELLED`` when the application closes or drops it before its end (closing
    the iterator under it, as dropping it would, cancels grpcio's call). Messages and errors pass as they are."""
    code: Any = grpc.StatusCode.CANCELLED
    trailing = None
    call = None
    try:
        for message in responses:
            if tally is not None:
                tally.add(RECEIVED, message)
            if call is None:
                call = _delegated_call(responses)
            yield message
        code = grpc.StatusCode.OK
        if call is not None:
            try:
                code, trailing = call.code(), call.trailing_metadata()
            except Exception:
                code, trailing = grpc.StatusCode.OK, None
    except grpc.RpcError as error:
        code = grpc.StatusCode.UNKNOWN
        with contextlib.suppress(Exception):  # an RpcError that is no call: its code is unknown
            code, trailing = error.code(), error.trailing_metadata()
        raise
    except Exception:
        code = grpc.StatusCode.UNKNOWN
        raise
    finally:
        end = _clock()
        close = getattr(responses, "close", None)
        try:
            if code is grpc.StatusCode.CANCELLED and close is not None:
                close()
        finally:
            finish(end, code, trailing)


def _delegated_call(responses: Any) -> Any:
    """grpcio's call a generator is reading with ``yield from`` (OpenTelemetry's stream wrapper does: ``yield from
    invoker(...)``), through generators doing the same, found by the generators' ``gi_yieldfrom``; ``None`` if
    none (the call's status and trailer are then not known)."""
    try:
        for _ in range(8):
            if isinstance(responses, grpc.Call):
                return responses
            responses = getattr(responses, "gi_yieldfrom", None)
            if responses is None:
                return None
    except Exception:
        pass
    return None


class AiwatchClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """One interceptor for all four kinds of call on a sync channel: ``grpc.intercept_channel(channel, it)``.

    Keyword arguments as :func:`grpc_client_interceptor`.
    """

    def __init__(self, *, recorder: ClientRecorder | None = None, service: str | None = None,
                 peer: str | None = None, registry: CollectorRegistry | None = None, metrics: Metrics | None = None,
                 max_label_values: int | None = None, propagate: bool = True, address: str | None = None,
                 tracer_provider: Any = None, excluded_services: Iterable[str] | None = None) -> None:
        self._core = _ClientCore.of(recorder, peer, propagate, service=service, registry=registry, metrics=metrics,
                                    max_label_values=max_label_values, address=address,
                                    tracer_provider=tracer_provider, excluded_services=excluded_services)

    @property
    def recorder(self) -> ClientRecorder:
        """The recorder calls are recorded through."""
        return self._core.recorder

    def _intercept(self, continuation: Callable[[Any, Any], Any], details: Any, request: Any,
                   unary_response: bool = False, unary_request: bool = False) -> Any:
        excluded = self._core.excluded
        if excluded.active and excluded.excludes(method_name(details.method)):
            return continuation(details, request)
        start = _clock()
        sent = message_size(request) if unary_request else None
        site = call_site()
        core = self._core
        streamed = None
        if not (unary_request and unary_response):
            try:
                streamed = StreamBytes(core.metrics)
                if not unary_request:
                    request = counted_requests(request, streamed)
            except Exception as exc:
                record_error(COMPONENT, exc, core.metrics)
        method = method_name(details.method)
        span = core.start_span(method, details.metadata)
        trace_id = call_trace_id(span, site[0], core.metrics)
        try:
            pairs = core.carrier(details.metadata, span)
            if pairs is not None:
                details = _CallDetails(details.method, details.timeout, pairs, details.credentials,
                                       details.wait_for_ready, getattr(details, "compression", None))
        except Exception as exc:
            record_error(COMPONENT, exc, core.metrics)
        token = core.enter(span)
        try:
            call = continuation(details, request)
        except BaseException:
            core.end_span(span, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            core.leave(token)
        try:

            def finish(end: float, code: Any, trailing: Any, finished: Any = None) -> None:
                core.end_span(span, code)
                received = None
                if unary_response and code == grpc.StatusCode.OK and finished is not None:
                    try:
                        received = message_size(finished.result())
                    except Exception:
                        received = None
                core.record(method, start, end, code, trailing, site, sent, received, streamed, trace_id)

            def done(finished: Any) -> None:
                end = _clock()
                try:
                    code, trailing = finished.code(), finished.trailing_metadata()
                except Exception as exc:
                    record_error(COMPONENT, exc, core.metrics)
                    core.end_span(span, None)
                    return
                finish(end, code, trailing, finished)

            if not unary_response and not hasattr(call, "add_done_callback") and hasattr(call, "__next__"):
                return _recorded_stream(call, streamed, finish)
            call.add_done_callback(done)
            if not unary_response and hasattr(call, "__next__"):
                return HeldStream(call) if streamed is None else CountedResponses(call, streamed)
            future = _future_call(continuation)
            if future or (future is None and not call.done()):  # a call future: cancelled if dropped
                return HeldCall(call)
        except Exception as exc:
            record_error(COMPONENT, exc, core.metrics)
        return call

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return self._intercept(continuation, client_call_details, request, unary_response=True, unary_request=True)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return self._intercept(continuation, client_call_details, request, unary_request=True)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return self._intercept(continuation, client_call_details, request_iterator, unary_response=True)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return self._intercept(continuation, client_call_details, request_iterator)


class _Sizes(NamedTuple):
    """What a ``grpc.aio`` call's record needs besides its timing: to size its messages, and its trace."""

    sent: int | None
    unary_response: bool
    streamed: StreamBytes | None
    trace_id: str | None  # the call's sampled trace: its exemplar


class _AioClientBase:
    def __init__(self, *, recorder: ClientRecorder | None = None, service: str | None = None,
                 peer: str | None = None, registry: CollectorRegistry | None = None, metrics: Metrics | None = None,
                 max_label_values: int | None = None, propagate: bool = True, core: _ClientCore | None = None,
                 address: str | None = None, tracer_provider: Any = None,
                 excluded_services: Iterable[str] | None = None) -> None:
        self._core = core if core is not None else _ClientCore.of(
            recorder, peer, propagate, service=service, registry=registry, metrics=metrics,
            max_label_values=max_label_values, address=address, tracer_provider=tracer_provider,
            excluded_services=excluded_services)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def recorder(self) -> ClientRecorder:
        """The recorder calls are recorded through."""
        return self._core.recorder

    async def _intercept(self, continuation: Callable[[Any, Any], Awaitable[Any]], details: Any,
                         request: Any, unary_request: bool, unary_response: bool) -> Any:
        excluded = self._core.excluded
        if excluded.active and excluded.excludes(method_name(details.method)):
            return await continuation(details, request)
        start = _clock()
        site = call_site()
        core = self._core
        sent, streamed = None, None
        try:
            if unary_request:
                sent = message_size(request)
            if not (unary_request and unary_response):
                streamed = StreamBytes(core.metrics)
                if not unary_request:
                    request = counted_requests(request, streamed)
        except Exception as exc:
            record_error(COMPONENT, exc, core.metrics)
        method = method_name(details.method)
        span = core.start_span(method, details.metadata)
        trace_id = call_trace_id(span, site[0], core.metrics)
        try:
            pairs = core.carrier(details.metadata, span)
            if pairs is not None:
                details = _AioCallDetails(details.method, details.timeout, grpc.aio.Metadata(*pairs),
                                          details.credentials, details.wait_for_ready)
        except Exception as exc:
            record_error(COMPONENT, exc, core.metrics)
        token = core.enter(span)
        try:
            call = await continuation(details, request)
        except grpc.aio.AioRpcError as error:  # another interceptor awaited the call and it failed
            core.end_span(span, error.code())
            core.record(method, start, _clock(), error.code(), error.trailing_metadata(), site, trace_id=trace_id)
            raise
        except asyncio.CancelledError:
            # the caller was cancelled (asyncio.wait_for, a task's cancel()) while another interceptor awaited the
            # call (OpenTelemetry's waits for a unary call's status): the caller sees its call cancelled
            end = _clock()
            core.end_span(span, grpc.StatusCode.CANCELLED)
            core.record(method, start, end, grpc.StatusCode.CANCELLED, None, site, sent, None, streamed, trace_id)
            raise
        except BaseException:
            core.end_span(span, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            core.leave(token)
        try:
            self._watch(call, method, start, site, span, _Sizes(sent, unary_response, streamed, trace_id))
            if streamed is not None and not unary_response:
                return counted_aio_responses(call, streamed)
        except Exception as exc:
            record_error(COMPONENT, exc, core.metrics)
            core.end_span(span, None)
        return call

    def _watch(self, call: Any, method: str, start: float, site: tuple[RequestTimeline | None, str],
               span: Any, sizes: _Sizes) -> None:
        def done(finished: Any) -> None:
            self._spawn(self._record(finished, method, start, _clock(), site, span, sizes))

        try:
            call.add_done_callback(done)
        except NotImplementedError:  # a response object returned by another interceptor: no callbacks
            self._spawn(self._record(call, method, start, None, site, span, sizes))

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except Exception as exc:
            coro.close()
            record_error(COMPONENT, exc, self._core.metrics)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, call: Any, method: str, start: float, end: float | None,
                      site: tuple[RequestTimeline | None, str], span: Any, sizes: _Sizes) -> None:
        try:
            code = await call.code()
            if end is None:
                end = _clock()
            trailing = await call.trailing_metadata()
        except asyncio.CancelledError:
            self._core.end_span(span, grpc.StatusCode.CANCELLED)
            return
        except Exception as exc:
            record_error(COMPONENT, exc, self._core.metrics)
            self._core.end_span(span, None)
            return
        self._core.end_span(span, code)
        received = None
        if sizes.unary_response and code == grpc.StatusCode.OK:
            try:
                received = message_size(await call)  # the call is done: its response, not a wait
            except Exception:
                received = None
        self._core.record(method, start, end, code, trailing, site, sizes.sent, received, sizes.streamed,
                          sizes.trace_id)


class AioUnaryUnaryClientInterceptor(_AioClientBase, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """aiwatch's interceptor for unary-unary calls on a ``grpc.aio`` channel."""

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._intercept(continuation, client_call_details, request, True, True)


class AioUnaryStreamClientInterceptor(_AioClientBase, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """aiwatch's interceptor for unary-stream calls on a ``grpc.aio`` channel."""

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._intercept(continuation, client_call_details, request, True, False)


class AioStreamUnaryClientInterceptor(_AioClientBase, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    """aiwatch's interceptor for stream-unary calls on a ``grpc.aio`` channel."""

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any,
                                     request_iterator: Any) -> Any:
        return await self._intercept(continuation, client_call_details, request_iterator, False, True)


class AioStreamStreamClientInterceptor(_AioClientBase, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    """aiwatch's interceptor for stream-stream calls on a ``grpc.aio`` channel."""

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any,
                                      request_iterator: Any) -> Any:
        return await self._intercept(continuation, client_call_details, request_iterator, False, False)


def grpc_client_interceptor(*, recorder: ClientRecorder | None = None, service: str | None = None,
                            peer: str | None = None, registry: CollectorRegistry | None = None,
                            metrics: Metrics | None = None, max_label_values: int | None = None,
                            propagate: bool = True, tracer_provider: Any = None,
                            address: str | None = None,
                            excluded_services: Iterable[str] | None = None) -> AiwatchClientInterceptor:
    """An interceptor for sync channels: ``grpc.intercept_channel(channel, grpc_client_interceptor(...))``.

    - ``recorder`` or the recorder options ``service`` (the calling service), ``registry`` / ``metrics`` and
      ``max_label_values``, as for every integration (:mod:`aiwatch.recording`); a
      :class:`~aiwatch.client.ClientRecorder` can be shared with other clients, HTTP ones included.
    - ``peer``: a fixed ``peer`` label (default: the recorder's ``peer``, else the service name the server reports in
      its ``server-timing`` trailer when :class:`~aiwatch.client.ReportedNames` takes it, else ``address``, else
      :data:`UNKNOWN_PEER`: this interceptor does not see the channel it is given to). Pass ``peer`` to keep what a
      server says out of the label.
    - ``address``: the channel's target, the label when the server reports no name (the instrumentor passes it).
    - ``propagate``: inject the current trace context into the call's metadata with the global propagator (default on).
    - ``tracer_provider``: the provider of the calls' CLIENT spans (default: the global one, if an SDK provider is
      installed); ``address`` also gives them ``server.address`` / ``server.port`` in the stable RPC set.
    - ``excluded_services``: full service names whose calls are handed on untouched: not timed, not traced, no
      trace context added (default: ``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES``; :mod:`aiwatch.exclusion`).
    """
    return AiwatchClientInterceptor(recorder=recorder, service=service, peer=peer, registry=registry,
                                    metrics=metrics, max_label_values=max_label_values, propagate=propagate,
                                    tracer_provider=tracer_provider, address=address,
                                    excluded_services=excluded_services)


def grpc_aio_client_interceptors(*, recorder: ClientRecorder | None = None, service: str | None = None,
                                 peer: str | None = None, registry: CollectorRegistry | None = None,
                                 metrics: Metrics | None = None, max_label_values: int | None = None,
                                 propagate: bool = True, address: str | None = None,
                                 tracer_provider: Any = None,
                                 excluded_services: Iterable[str] | None = None) -> list[Any]:
    """The four interceptors for ``grpc.aio.insecure_channel(target, interceptors=...)`` (grpc.aio files each
    interceptor under one call kind only, so there is one per kind); arguments as :func:`grpc_client_interceptor`.
    """
    core = _ClientCore.of(recorder, peer, propagate, service=service, registry=registry, metrics=metrics,
                          max_label_values=max_label_values, address=address, tracer_provider=tracer_provider,
                          excluded_services=excluded_services)
    return [cls(core=core) for cls in (AioUnaryUnaryClientInterceptor, AioUnaryStreamClientInterceptor,
                                       AioStreamUnaryClientInterceptor, AioStreamStreamClientInterceptor)]
