"""Server interceptors for ``grpc`` (thread pool) and ``grpc.aio`` servers, covering all four RPC kinds.

Per RPC (see docs/grpc.md):

* ``aiwatch_request_duration_seconds{service, route, method, status}`` with ``route`` = the full method name
  (``/pkg.Service/Method``, through the recorder's cardinality guard), ``method`` = :data:`METHOD_LABEL` (``grpc``:
  the RPC kind is a fixed property of the route, so it would add series without adding information) and
  ``status`` = the gRPC status code name (``OK``, ``INVALID_ARGUMENT``...). An unhandled servicer exception is
  ``UNKNOWN``, as grpcio reports it; a call the client cancelled is ``CANCELLED``, or ``DEADLINE_EXCEEDED`` when its
  deadline had passed (or was within a margin of it, :func:`_cancel_margin`) when the call ended (also when the
  handler fails with the ``RpcError`` grpcio raises from such a call's request stream, and whatever code the servicer
  set or exception it raised after: none reaches a caller that left). A call to a method the
  server does not implement is recorded as ``UNIMPLEMENTED`` under the route ``__unmatched__`` (the client's method
  name never becomes a label, as a URL path never does).
  A unary request grpcio cannot deserialize (the handler never runs) is recorded with the status grpcio answers:
  ``INTERNAL`` (grpc.aio: ``UNKNOWN``). So is a request stream message it cannot deserialize: the thread-pool server
  answers ``INTERNAL`` (or the code the servicer set) and ends the handler's request stream as if the client had
  closed it; grpc.aio raises the error in the handler, which fails with it (``UNKNOWN``, as for any exception).
  A response (or a response stream message) grpcio cannot serialize is recorded with the status grpcio answers:
  ``INTERNAL`` (grpc.aio: ``UNKNOWN``) or the code the servicer set. A unary RPC whose response grpcio serializes is
  therefore recorded, and its ``server-timing`` trailer set, once grpcio has serialized its response (or the RPC
  ended), not when its handler returns: the serialization is inside its total and its trailer.
* ``aiwatch.phase(...)`` inside the servicer feeds ``aiwatch_phase_duration_seconds`` and the ``overhead`` phase: the
  servicer runs inside the RPC's timeline (for the thread-pool server, in the pool thread that runs the handler).
* Streaming RPCs are timed to the last message; RPCs with a streaming side also count messages in
  ``aiwatch_rpc_messages_total{service, route, direction=sent|received}``.
* The server reports its timing in trailing metadata ``server-timing`` (same format as the HTTP header, ``total`` =
  server time), for streams when the stream ends, on failures too. ``grpc.aio``'s ``context.abort()`` sends the
  status itself, so there the servicer gets a context whose ``abort()`` adds the timing (up to the abort) first.
  An attempt the channel retried (``grpc-previous-rpc-attempts: N`` in its metadata) has ``attempt=N+1`` on its
  ``total`` (:mod:`aiwatch.servertiming`): the caller's time holds the earlier attempts too.
* When a SERVER span is current when the handler starts (OpenTelemetry's server interceptor placed before this
  one), that span is the request's span and aiwatch's phase spans are its children; otherwise aiwatch starts its own
  SERVER span when tracing is on, parented by the W3C trace context in the invocation metadata (and current, in the
  caller's context, while the handler runs and while a streaming handler produces each reply), named and described
  as opentelemetry-instrumentation-grpc describes its own (:mod:`aiwatch.semconv`: ``pkg.Service/Method``,
  ``rpc.*``, ERROR for the server-error codes; the stable RPC set under ``OTEL_SEMCONV_STABILITY_OPT_IN=rpc``).
* An RPC to a service in ``excluded_services`` (default ``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES``; health checks, say)
  is left alone: not timed, not traced, no trailer (:mod:`aiwatch.exclusion`).

aiwatch's own failures are counted in ``aiwatch_instrumentation_errors_total`` and never change the RPC's outcome;
the servicer's exceptions, abort codes and trailing metadata pass through untouched.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

import grpc
import grpc.aio
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from aiwatch.exclusion import ExcludedServices
from aiwatch.flags import flag
from aiwatch.forksafe import at_fork_in_child
from aiwatch.grpc._common import metadata_dict, method_name, status_name, status_value
from aiwatch.grpc.serialization import SERIALIZE, MessageTimer, ended, take_pending, take_streamed
from aiwatch.metadatacapture import MetadataCapture
from aiwatch.metrics import Metrics
from aiwatch.middleware._common import UNMATCHED_ROUTE, capture_request_headers
from aiwatch.recording import resolve_recorder
from aiwatch.safety import logger, record_cut, record_error
from aiwatch.semconv import end_grpc_span, grpc_peer_attributes, grpc_span_start, rpc_conventions
from aiwatch.servertiming import ATTEMPT, HEADER, MAX_LENGTH, timing_tail
from aiwatch.streaming import ChunkTimer
from aiwatch.timing import RequestRecorder, RequestTimeline
from aiwatch.tracing import (
    attach_counted,
    carrier_fields,
    deactivate_counted,
    extract_context,
    iterate_in_context,
    span_in_progress,
)
from aiwatch.traffic import TrafficClasses

METHOD_LABEL = "grpc"
"""The ``method`` label of gRPC requests in ``aiwatch_request_duration_seconds``."""

QUEUE_PHASE = "queue_pool"
"""The phase of a thread-pool server's RPC spent waiting for a worker of the server's pool (a ``queue`` phase to the
diagnosis, :func:`aiwatch.diagnose.split.classify`)."""

COMPONENT = "grpc_server"
#: the metadata grpc-core adds to a retried (or hedged) attempt: how many attempts of the call came before
PREVIOUS_ATTEMPTS = "grpc-previous-rpc-attempts"
#: the longest ``server-timing`` trailer, in characters: phase entries that would make it longer are left out (the
#: overhead and total entries are always sent; :func:`aiwatch.servertiming.fit`). grpc-core's clients fail a call
#: whose metadata passes their limit (8 KiB by default: at random between 8 and 16 KiB) with RESOURCE_EXHAUSTED.
MAX_TRAILER = MAX_LENGTH
#: the trailing metadata a call may carry with aiwatch's trailer, in HPACK's measure (name + value + 32 per entry,
#: counting grpc-status and a short grpc-message too): when the servicer's own metadata and the trailer would pass
#: it, the trailer is not sent
MAX_TRAILING = 8192
_STATUS_ENTRIES = 64
#: ``aiwatch_instrumentation_errors_total{component}`` of a trailer cut short or left out for its size
TRAILER_COMPONENT = "grpc_server_trailer"

_clock = time.perf_counter

#: A call that ended this close to its deadline ended by it. The server's deadline is the client's plus the time the
#: call took to arrive (it is the client's remaining time, counted from when the server read it), so the client's
#: expiry reaches the server as a cancel a little before the server's own: 3-5 ms early on a loaded 2-core machine,
#: about a one-way trip between regions. A cancel this close to the deadline is taken for it; for a call whose
#: deadline was under a second away when it started, the margin is a tenth of that, at least
#: :data:`DEADLINE_MARGIN_FLOOR_SECONDS` (:func:`_cancel_margin`), so that the cancel of a call with a tight deadline
#: is not taken for its deadline.
DEADLINE_MARGIN_SECONDS = 0.1
#: the share of the time a call had to its deadline (when its handler started) taken as its margin, if smaller
DEADLINE_MARGIN_SHARE = 0.1
#: the smallest margin: a cancel this close to the deadline is the deadline's, however tight (the 3-5 ms above)
DEADLINE_MARGIN_FLOOR_SECONDS = 0.02
#: a call with more time left than this when it starts has no deadline (grpcio's thread-pool server reads none as
#: about 2**63 seconds away)
NO_DEADLINE_SECONDS = 1e9
_UNREAD = object()
_done_lock = threading.Lock()


def _renew_done_lock() -> None:
    global _done_lock
    _done_lock = threading.Lock()


at_fork_in_child(_renew_done_lock)  # a server thread may hold it when the process forks

_CANCEL_STATUSES = ("CANCELLED", "DEADLINE_EXCEEDED")
#: the package of opentelemetry-instrumentation-grpc's interceptors (:meth:`_ServerCore.check_order`)
OTEL_GRPC_MODULE = "opentelemetry.instrumentation.grpc"
# the status is already out (aio abort() sent it with the timing) or will never be sent (cancelled)
_SENT_ALREADY = (asyncio.CancelledError, grpc.aio.AbortError)


class _Call:
    """One RPC's state, kept in the wrapped behavior's closure (never on the interceptor)."""

    __slots__ = ("aborted", "attempt", "chunks", "deadline", "done", "ended", "margin", "otel_context", "received",
                 "remaining", "sent", "streaming", "timeline", "undecodable", "unserializable", "watched")

    def __init__(self, timeline: RequestTimeline, streaming: bool, otel_context: Any = None) -> None:
        self.timeline = timeline
        #: the OpenTelemetry context the handler runs in: aiwatch's SERVER span in the caller's context (``None``:
        #: not traced, or the span is another instrumentation's, current already)
        self.otel_context = otel_context
        self.chunks: ChunkTimer | None = None
        self.streaming = streaming
        self.done = False
        self.sent = 0
        self.received = 0
        #: this attempt's number when the channel retried the call (``grpc-previous-rpc-attempts`` + 1), else None
        self.attempt: int | None = None
        #: set when grpcio failed to deserialize a message of this RPC's request stream (and answered it)
        self.undecodable: _Undecodable | None = None
        #: set when grpcio failed to serialize this RPC's response, or a message of its response stream
        self.unserializable: _Unserializable | None = None
        #: how close to its deadline a cancel counts as the deadline (:func:`_cancel_margin`)
        self.margin = DEADLINE_MARGIN_SECONDS
        #: the call's deadline as a ``perf_counter`` time, from the time left read when it started (``None``: it has
        #: none), so that the time left later is computed, not asked of grpcio again (:func:`_left`)
        self.deadline: Any = _UNREAD
        #: the time left to the deadline when the RPC ended before its handler did (read then, by grpcio's callback)
        self.remaining: Any = _UNREAD
        #: whether grpcio calls :meth:`_ServerCore.rpc_ended` when the RPC ends
        self.watched = False
        #: set (under ``_done_lock``) by :meth:`_ServerCore.rpc_ended`: the RPC is over, nothing will be serialized
        self.ended = False
        #: set by grpc.aio's ``abort()`` through :class:`_AioContext`: the status went out then, even if the handler
        #: caught the ``AbortError`` and ran on
        self.aborted = False

    def server_timing(self, tail: str, now: float | None = None) -> tuple[str, str | None]:
        """The ``server-timing`` trailer so far, its ``total`` marked with the attempt's number on a retried one, and
        why it was cut short to :data:`MAX_TRAILER` (``None``: it was not; :func:`_with_timing` counts it, once per
        trailer). ``tail``: :attr:`_ServerCore.tail`, the overhead and total entries to fill in."""
        if self.attempt is not None:  # the total entry comes last, so a parameter appended to it is the total's
            tail = f"{tail};{ATTEMPT}={self.attempt:d}"
        value, cut = self.timeline.server_timing(_clock() if now is None else now, tail, MAX_TRAILER)
        return value, None if cut is None else f"server-timing trailer {cut}"


class _Undecodable:
    """Whether a message of one RPC's request stream failed to deserialize. The thread-pool server then answers the
    RPC itself (``INTERNAL``, or the code the servicer set) and ends the handler's request stream as if the client had
    closed it; the deserializer runs in grpcio's polling thread, so this flag is its only link to the RPC."""

    __slots__ = ("failed",)

    def __init__(self) -> None:
        self.failed = False

    def fail(self, start: float) -> None:
        self.failed = True


class _Unserializable:
    """One RPC's response (or a message of its response stream) grpcio could not serialize: the serializer raised or
    gave ``None``. grpcio then answers the RPC itself (the code the servicer set, else ``INTERNAL``; grpc.aio:
    ``UNKNOWN``). A unary RPC's response is serialized after its handler returned and before grpcio sends it with
    the status and the trailing metadata, so the interceptor holds that RPC's record (``pending``) until the
    serializer has run (:meth:`serialized`): its total, its phases and its trailer then include the serialization.
    :meth:`release` records it should the serializer never run."""

    __slots__ = ("error", "failed", "pending", "started")

    def __init__(self) -> None:
        self.failed = False
        self.error: BaseException | None = None
        #: set when grpcio called the serializer: a record still held at the RPC's end then is of a call that ended
        #: (its caller's cancel, its deadline) while its response was being serialized, before its status went out
        self.started = False
        #: the held record: called with whether the serializer ran, and how long it took when it succeeded
        self.pending: Callable[[bool, float | None], None] | None = None

    def fail(self, error: BaseException | None) -> None:
        self.failed = True
        self.error = error

    def serialized(self, seconds: float | None) -> bool:
        """The serializer ran (``seconds``: its time; ``None``: it failed): record the held RPC now, with it. False:
        no record was held (a stream's message, or an RPC recorded already: it ended first)."""
        pending = self._take()
        if pending is None:
            return False
        pending(True, seconds)
        return True

    def release(self, *_: Any) -> None:
        """Record the held RPC now, without a serialization (once; also a grpcio done-callback, so an RPC is never
        left unrecorded)."""
        pending = self._take()
        if pending is not None:
            pending(False, None)

    def _take(self) -> Callable[[bool, float | None], None] | None:
        """The held record, taken (once: whoever takes it records it)."""
        with _done_lock:  # `with`: a signal handler raising between acquire() and a try left the lock held
            pending, self.pending = self.pending, None
        return pending


#: methods whose (de)serializer timers a server keeps made (more are made per RPC): a catch-all generic handler
#: takes any method name a client sends, of up to 8 KiB of metadata, and 10 000 of them held about 100 MB
MAX_CACHED_METHODS = 1024


class _ServerCore:
    """What the sync and aio interceptors share: starting and finishing one RPC's timeline."""

    def __init__(self, recorder: RequestRecorder, server_timing: bool, serialization: bool = True,
                 failed_status: str = "INTERNAL", serializes_any_code: bool = True) -> None:
        self.recorder = recorder
        #: what the server answers a request it cannot deserialize or a response it cannot serialize (grpc.aio:
        #: UNKNOWN)
        self.failed_status = failed_status
        #: whether the server serializes a unary handler's response whatever code the servicer set (the thread-pool
        #: server does; grpc.aio only while the code is OK)
        self.serializes_any_code = serializes_any_code
        self.metrics = recorder.metrics
        self.server_timing = flag(server_timing, "server_timing")
        self.serialization = serialization
        self.conventions = rpc_conventions()
        #: the request metadata SERVER spans carry (``None``: none configured)
        self.metadata_capture = MetadataCapture.server(self.conventions)
        #: the last peer string read and its attributes: the RPCs of one HTTP/2 connection share its peer
        self._last_peer: tuple[str, dict[str, Any]] = ("", {})
        #: the trailer's overhead and total entries, the total's ``desc`` the service name in printable ASCII (gRPC
        #: metadata allows nothing else: grpc-core fails the call on any other byte), cut short: :func:`timing_tail`
        self.tail = timing_tail(recorder.service, ascii_only=True)
        self._messages: dict[str, MessageTimer] = {}
        #: method -> (grpcio's deserializer, its timer, the timed deserializer of its unary requests)
        self._deserializers: dict[str, tuple[Any, MessageTimer, Callable[[bytes], Any]]] = {}
        #: the methods of plain-function handlers on a grpc.aio server whose RPCs go unrecorded, warned of once
        self._plain: set[str] = set()
        #: whether the server's interceptor order was checked (:meth:`check_order`, on the first instrumented RPC)
        self.order_checked = False

    def messages(self, method: str) -> MessageTimer:
        """The (de)serializer timer of ``method`` (one per method: grpcio asks for the handler per call)."""
        timer = self._messages.get(method)
        if timer is None:
            timer = MessageTimer(self.recorder, method)
            if len(self._messages) < MAX_CACHED_METHODS:
                self._messages[method] = timer
        return timer

    def plain_handler(self, method: str) -> None:
        """A grpc.aio server's handler of ``method`` is a plain function, which grpc.aio runs in its thread pool and
        aiwatch passes through: say so once per method (up to :data:`MAX_CACHED_METHODS`), as its RPCs are in no
        metric, span or trailer."""
        if method in self._plain or len(self._plain) >= MAX_CACHED_METHODS:
            return
        self._plain.add(method)
        logger.warning("aiwatch: the grpc.aio handler of %s is a plain function (grpc.aio runs it in its thread "
                       "pool): its RPCs are not recorded; make it an async def to record them", method)

    def check_order(self, behavior: Any) -> None:
        """Warn (once: the order is the server's, fixed) when ``behavior``, the handler aiwatch wraps, is
        OpenTelemetry's interceptor's: placed after aiwatch's, it starts its SERVER span from the call's metadata,
        not inside aiwatch's, so each RPC has two SERVER spans (siblings, or two traces without a caller's trace
        context), and aiwatch's phases and exemplars are not in OpenTelemetry's span."""
        self.order_checked = True
        module = getattr(behavior, "__module__", None)
        if isinstance(module, str) and module.startswith(OTEL_GRPC_MODULE):
            logger.warning("aiwatch: OpenTelemetry's gRPC server interceptor comes after aiwatch's in the server's "
                           "interceptors, so every RPC gets two SERVER spans (aiwatch's and OpenTelemetry's, not "
                           "one inside the other); put OpenTelemetry's first: interceptors=[otel, aiwatch], or use "
                           "both instrumentors (docs/grpc.md)")

    def unary_deserializer(self, method: str, messages: MessageTimer, deserialize: Any) -> Callable[[bytes], Any]:
        """``deserialize`` of ``method``'s unary requests, timed by ``messages`` (:meth:`undecodable` told of a
        failure): made once per method and deserializer, not on every RPC (grpcio asks for the handler per RPC, and
        nothing in it is the RPC's own)."""
        found = self._deserializers.get(method)
        if found is not None and found[0] is deserialize and found[1] is messages:
            return found[2]
        timed = messages.deserializer(deserialize, _clock, functools.partial(self.undecodable, method))
        if len(self._deserializers) < MAX_CACHED_METHODS:
            self._deserializers[method] = (deserialize, messages, timed)
        return timed

    def start(self, method: str, context: Any, streaming: bool, request: Any = None,
              arrived: float | None = None) -> _Call | None:
        """Begin one RPC's timeline (and aiwatch's span, started at ``arrived`` when given: the thread-pool server's
        call waited for a worker from then, :func:`_queued`); ``None`` when aiwatch failed to (counted)."""
        recorder = self.recorder
        otel_context = None
        try:
            metadata = context.invocation_metadata()
            span = span_in_progress(SpanKind.SERVER)
            if span is not None:  # OpenTelemetry's interceptor ran first: its span is the RPC's span
                tl = recorder.begin_in_span(span)
            else:
                tracer = recorder.tracing.tracer()
                if tracer is None:
                    tl = recorder.begin_with(None, method)
                else:
                    parent = None
                    if metadata:  # extracting costs: only when a field the global propagator reads is there
                        fields = carrier_fields()
                        names = fields.names
                        if any(item[0] in names for item in metadata):
                            parent = extract_context(metadata_dict(metadata, names, fields.prefix), fields)
                    name, attributes = grpc_span_start(method, self.conventions)
                    attributes.update(self._peer_attributes(context))
                    if self.metadata_capture is not None and metadata:
                        attributes.update(capture_request_headers(self.metadata_capture.attributes, metadata,
                                                                  self.metrics))
                    tl = recorder.begin_with(tracer, name, parent, attributes, span_start=arrived)
                    if tl.span is not None:
                        otel_context = trace.set_span_in_context(tl.span, parent)
            call = _Call(tl, streaming, otel_context)
            if metadata:  # one pass: the traffic class, and the attempt of a call the channel retried
                wanted = recorder.traffic.header
                named: list[Any] | None = None
                for item in metadata:
                    key = item[0]
                    if key == wanted:
                        if named is None:
                            named = [item[1]]
                        else:
                            named.append(item[1])
                    elif key == PREVIOUS_ATTEMPTS:
                        call.attempt = _attempt(item[1])
                if named is not None:
                    tl.traffic_class = recorder.traffic.from_headers(named)
            if recorder.traffic.has_routes:  # the method's rule, from the start: the class its outgoing calls forward
                tl.traffic_class = recorder.traffic.for_route(method, tl.traffic_class)
            if request is not None:
                take_pending(tl, request)
            remaining = context.time_remaining()
            # grpcio's thread-pool server reads a call without a deadline as ~2**63 s away; grpc.aio as None
            if remaining is None or not isinstance(remaining, int | float) or remaining > NO_DEADLINE_SECONDS:
                call.deadline = None
            else:
                call.margin = _cancel_margin(remaining)
                call.deadline = _clock() + remaining
            return call
        except Exception as exc:
            record_error(COMPONENT, exc, self.metrics)
            return None

    def _peer_attributes(self, context: Any) -> dict[str, Any]:
        """The span's peer attributes from ``context.peer()``; ``{}`` (the failure counted) when it cannot be read:
        the RPC is still recorded and traced."""
        try:
            peer = context.peer()
            last = self._last_peer  # one read: another thread may replace it meanwhile
            if peer == last[0]:
                return last[1]
            attributes = grpc_peer_attributes(peer, self.conventions)
            self._last_peer = (peer, attributes)
            return attributes
        except Exception as exc:
            record_error("tracing", exc, self.metrics)
            return {}

    def watch(self, call: _Call | None, context: Any) -> None:
        """Have grpcio tell the thread-pool server's unary ``call`` when the RPC ends (:meth:`rpc_ended`): a cancel
        ends it while the handler runs on, and the handler's end is too late to read the time left then."""
        if call is None:
            return
        try:
            call.watched = bool(context.add_callback(functools.partial(self.rpc_ended, call, context)))
        except Exception as exc:
            record_error(COMPONENT, exc, self.metrics)

    def rpc_ended(self, call: _Call, context: Any) -> None:
        """grpcio's callback at the end of a watched RPC: read the time left if the handler still runs, and record a
        unary RPC held for its response's serialization, should grpcio never have serialized it."""
        try:
            if not call.done:
                call.remaining = _left(call, context)
            held = call.unserializable
            pending = None
            with _done_lock:  # end() holds a record only while ended is unset (it checks under the same lock)
                call.ended = True
                if held is not None:
                    pending, held.pending = held.pending, None
            if pending is not None:
                pending(False, None)
        except Exception as exc:
            record_error(COMPONENT, exc, self.metrics)

    def sent(self, call: _Call | None, method: str) -> None:
        """A server stream sent a message: count it and time it as a chunk of the stream."""
        if call is None:
            return
        call.sent += 1
        try:
            chunks = call.chunks
            if chunks is None:
                chunks = call.chunks = ChunkTimer(self.recorder, call.timeline.start, method, call.timeline.trace_id)
            chunks.chunk(_clock())
        except Exception as exc:
            record_error(COMPONENT, exc, self.metrics)

    def end(self, call: _Call | None, method: str, context: Any, error: BaseException | None,
            terminated: bool = False, unary_response: bool = False) -> None:
        """Finish ``call`` once. ``terminated``: the RPC ended without the handler finishing (client cancel).
        ``unary_response``: the handler returned the RPC's one response, which grpcio serializes next, before it
        sends the status and the trailing metadata: such an RPC is recorded, and its trailer set, once the serializer
        has run (:class:`_Unserializable`). grpc.aio serializes only while the code is ``OK``: an RPC with another
        is recorded at once there."""
        if call is None:
            return
        end = _clock()
        with _done_lock:
            if call.done:
                return
            call.done = True
        try:
            held = call.unserializable
            status, report_error = _status(context, error, terminated,
                                           call.undecodable is not None and call.undecodable.failed,
                                           held is not None and held.failed, self.failed_status, call.margin,
                                           _left_at_end(call, context),
                                           not self.serializes_any_code and _cancel_requested(), call.aborted)
            if unary_response and call.streaming:  # a request stream's one response: was it sent?
                call.sent = int(status not in _CANCEL_STATUSES and (status == "OK" or self.serializes_any_code))
            hold = (held is not None and not held.failed and unary_response and error is None
                    and (status == "OK" or self.serializes_any_code))
            if self.server_timing and not hold and not terminated and not isinstance(error, _SENT_ALREADY):
                try:
                    _add_trailing(context, call.server_timing(self.tail, end), self.metrics)
                except Exception as exc:
                    record_error(COMPONENT, exc, self.metrics)
            if held is not None and held.failed:
                error, report_error = held.error, held.error is not None
                if call.streaming and call.sent:
                    call.sent -= 1  # the message grpcio could not serialize never went out
            elif hold and held is not None:
                record = functools.partial(self._record, call, method, context, status, end)
                with _done_lock:
                    over = call.ended
                    if not over:
                        held.pending = record
                if over:  # rpc_ended already ran and released nothing: nothing will be sent now
                    record(False, None)
                elif not call.watched:
                    _release_at_end(context, held)
                return
            self._finish(call, method, status, error if report_error else None, end)
        except Exception as exc:
            record_error(COMPONENT, exc, self.metrics)

    def _record(self, call: _Call, method: str, context: Any, status: str, end: float, serialized: bool,
                seconds: float | None) -> None:
        """Record a unary RPC held until its response was serialized (:meth:`end`). ``serialized``: the serializer
        ran, in ``seconds`` when it succeeded (``None``: it failed). The RPC's total then runs to now, and its trailer
        (set now: grpcio sends it next, with the status) includes the serialization; otherwise the total ends
        at ``end``, when the handler returned."""
        try:
            held = call.unserializable
            if serialized:
                if seconds is not None:
                    call.timeline.add(SERIALIZE, None, seconds)
                end = _clock()
                if self.server_timing:
                    try:
                        _add_trailing(context, call.server_timing(self.tail, end), self.metrics)
                    except Exception as exc:
                        record_error(COMPONENT, exc, self.metrics)
            error = None
            if held is not None and held.failed:
                error = held.error
                if status not in _CANCEL_STATUSES:  # a caller that left gets no answer
                    status = _code(context) or self.failed_status
                if call.streaming and call.sent:
                    call.sent -= 1  # the response never went out
            # a request stream grpcio could not deserialize was answered INTERNAL then; grpcio may still serialize
            # the response the handler returned after it (and drop it): that status went out, not a cancel's
            undecodable = call.undecodable is not None and call.undecodable.failed
            if status not in _CANCEL_STATUSES and not undecodable and self._over(call, context, serialized):
                status = _cancel_status(context, call.margin, _left_at_end(call, context))
                if call.streaming:
                    call.sent = 0
            self._finish(call, method, status, error, end)
        except Exception as exc:
            record_error(COMPONENT, exc, self.metrics)

    def _over(self, call: _Call, context: Any, serialized: bool) -> bool:
        """Whether a held unary RPC's call ended (its deadline, its caller's cancel) before grpcio could send its
        status: a response whose serialization outlasted the deadline never reaches the caller. ``serialized``: asked
        from the serializer, before the status is sent; otherwise at the RPC's end (the status may be out already), so
        a deadline that has passed, or a serialization that had started, tells."""
        if _expired(_left(call, context)):
            return True
        if not serialized:
            return call.unserializable is not None and call.unserializable.started
        return call.ended or not _active(context) or (not self.serializes_any_code and _cancel_requested())

    def _finish(self, call: _Call, method: str, status: str, error: BaseException | None, end: float) -> None:
        """Count ``call``'s messages, end its span and record it with ``status`` (``error``: the exception to report
        on the span and the request)."""
        tl = call.timeline
        recorder = self.recorder
        if call.streaming:
            m = self.metrics
            route = recorder.guard.fold("route", method)
            m.child(m.rpc_messages, (recorder.service, route, "sent")).inc(call.sent)
            m.child(m.rpc_messages, (recorder.service, route, "received")).inc(call.received)
        if tl.span is not None and tl.owns_span:
            try:
                end_grpc_span(tl.span, self.conventions, status, status_value(status), error, server=True)
            except Exception as exc:
                record_error("tracing", exc, self.metrics)
        recorder.finish(tl, method, METHOD_LABEL, status, error, end=end)

    def undecodable(self, method: str, start: float) -> None:
        """Record a unary-request RPC whose request grpcio failed to deserialize (from ``start``): grpcio answers it
        without running the handler, so the interceptor never sees it."""
        try:
            recorder = self.recorder
            tl = recorder.begin_with(None, "undecodable")
            tl.start = start
            recorder.finish(tl, method, METHOD_LABEL, self.failed_status)
        except Exception as exc:
            record_error(COMPONENT, exc, self.metrics)

    def unimplemented(self) -> None:
        """Record a call to a method the server does not have. Its route is :data:`UNMATCHED_ROUTE`: the method
        name comes from the client, and unknown names must not fill the route label's bound."""
        try:
            recorder = self.recorder
            recorder.finish(recorder.begin_with(None, "unimplemented"), UNMATCHED_ROUTE, METHOD_LABEL,
                            "UNIMPLEMENTED")
        except Exception as exc:
            record_error(COMPONENT, exc, self.metrics)


def _status(context: Any, error: BaseException | None, terminated: bool, undecodable: bool = False,
            unserializable: bool = False, failed_status: str = "INTERNAL", margin: float = DEADLINE_MARGIN_SECONDS,
            remaining: Any = _UNREAD, cancel_requested: bool = False, aborted: bool = False) -> tuple[str, bool]:
    """The status name the client sees, and whether ``error`` is an unhandled servicer failure. ``undecodable``: the
    thread-pool server failed to deserialize a request stream message and sent the status already.
    ``unserializable``: grpcio failed to serialize a message of the response stream. In both grpcio sent the code the
    servicer had set, else ``failed_status``, whatever the handler did next. ``margin``: as for
    :func:`_cancel_status`. ``remaining``: the time the call had left when it ended (:func:`_left_at_end`; else it
    is read now). ``cancel_requested``: grpc.aio cancelled the handler's task (the handler swallowed the
    ``CancelledError``). ``aborted``: grpc.aio's ``abort()`` sent the status already."""
    if undecodable or unserializable:
        return _code(context) or failed_status, False
    if remaining is _UNREAD:
        remaining = _time_remaining(context)
    if terminated or isinstance(error, asyncio.CancelledError | GeneratorExit):
        return _cancel_status(context, margin, remaining), False
    code = _code(context)
    if not aborted and not isinstance(error, grpc.aio.AbortError) and (
            cancel_requested or not _active(context) or _expired(remaining)):
        # the call ended (cancel, deadline) before the handler did: no status the servicer set, nor the outcome of
        # its exception, reaches the caller (a request stream's RpcError included); a grpc.aio handler that ran
        # past its deadline without an await, or swallowed the cancel, is not cancelled. A failure of the servicer's
        # own (no abort, no RpcError of the ended call) is still its span's exception.
        failed = error is not None and not isinstance(error, grpc.RpcError) and code in (None, "OK")
        return _cancel_status(context, margin, remaining), failed
    if error is not None:
        if code is not None and code != "OK":
            return code, False  # abort(), or set_code() then raise: grpcio sends that code
        return "UNKNOWN", True
    if code is not None:
        return code, False
    return "OK", False


def _time_remaining(context: Any) -> Any:
    """``context.time_remaining()`` (``None``: no deadline, or unreadable)."""
    try:
        return context.time_remaining()
    except Exception:
        return None


def _left(call: _Call, context: Any) -> Any:
    """The time ``call`` has left to its deadline now (``None``: it has none), from the deadline read when it started:
    the deadline does not move, and asking grpcio costs a call and a lock each time."""
    deadline = call.deadline
    if deadline is None:
        return None
    if deadline is _UNREAD:  # not read when it started
        return _time_remaining(context)
    return max(deadline - _clock(), 0.0)


def _left_at_end(call: _Call, context: Any) -> Any:
    """The time ``call`` had left when its RPC ended: read by grpcio's end-of-RPC callback when the RPC ended before
    its handler did, else the time left now (:func:`_left`)."""
    remaining = call.remaining
    return _left(call, context) if remaining is _UNREAD else remaining


def _cancel_requested() -> bool:
    """Whether the running asyncio task (a grpc.aio RPC's) has a cancel pending: grpc.aio cancels the handler's task
    when the caller cancels or the deadline passes, and a handler may catch the ``CancelledError`` and return."""
    try:
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0
    except Exception:
        return False


def _release_at_end(context: Any, held: _Unserializable) -> None:
    """Have ``held`` recorded when the RPC ends, should grpcio never run the serializer (another interceptor around
    aiwatch's raised, say); at once when the RPC has ended already."""
    try:
        if hasattr(context, "add_done_callback"):  # grpc.aio
            context.add_done_callback(held.release)
        elif not context.add_callback(held.release):
            held.release()
    except Exception:
        held.release()
        raise


def _code(context: Any) -> str | None:
    """The name of the code the servicer set on ``context`` (``None``: none, or unreadable)."""
    try:
        return status_name(context.code())
    except Exception:
        return None


def _attempt(previous: Any) -> int | None:
    """The number of this attempt of a call the channel retried (gRFC A6), from its ``grpc-previous-rpc-attempts``
    value; ``None`` for a first attempt, or a value that is no count of attempts."""
    if isinstance(previous, str) and previous.isascii() and previous.isdigit() and len(previous) <= 9:
        return int(previous) + 1 if int(previous) > 0 else None
    return None


def _active(context: Any) -> bool:
    try:
        return bool(context.is_active())
    except Exception:
        return True


def _cancel_margin(remaining: Any) -> float:
    """The margin of a call that had ``remaining`` seconds to its deadline when its handler started."""
    if isinstance(remaining, int | float) and remaining == remaining:  # not NaN
        return min(DEADLINE_MARGIN_SECONDS, max(DEADLINE_MARGIN_FLOOR_SECONDS, remaining * DEADLINE_MARGIN_SHARE))
    return DEADLINE_MARGIN_SECONDS


def _cancel_status(context: Any, margin: float = DEADLINE_MARGIN_SECONDS, remaining: Any = _UNREAD) -> str:
    """``DEADLINE_EXCEEDED`` for a call that ended at (or within ``margin`` seconds of) its deadline, else
    ``CANCELLED``: the client gave up. ``remaining``: the time that was left when the call ended, if read then (else
    it is read now)."""
    if remaining is _UNREAD:
        try:
            remaining = context.time_remaining()
        except Exception:
            remaining = None
    deadline = isinstance(remaining, int | float) and remaining <= margin
    return "DEADLINE_EXCEEDED" if deadline else "CANCELLED"


def _trailing_pairs(context: Any) -> tuple[Any, ...]:
    """The trailing metadata the servicer set on ``context``, as ``(key, value)`` pairs."""
    metadata = context.trailing_metadata()
    return tuple([(k, v) for k, v in metadata]) if metadata else ()


def _with_timing(pairs: tuple[Any, ...], timing: tuple[str, str | None], metrics: Metrics
                 ) -> tuple[Any, ...] | None:
    """``pairs`` (the servicer's trailing metadata) with the trailer added; ``None`` when together they would pass
    :data:`MAX_TRAILING`, so that the trailer does not push the call over the client's metadata limit. ``timing``:
    the trailer and why it was cut short (:meth:`_Call.server_timing`). Either is counted, once per trailer."""
    value, cut = timing
    size = len(HEADER) + len(value) + 32 + _STATUS_ENTRIES
    for key, item in pairs:
        size += len(key) + len(item) + 32
    if size > MAX_TRAILING:
        record_cut(TRAILER_COMPONENT,
                   f"server-timing trailer left out: the trailing metadata would be {size} bytes, over {MAX_TRAILING} "
                   "(the servicer's own trailing metadata was sent)",
                   metrics)
        return None
    if cut is not None:
        record_cut(TRAILER_COMPONENT, f"{cut} (the rest was sent)", metrics)
    return (*pairs, (HEADER, value))


def _add_trailing(context: Any, timing: tuple[str, str | None], metrics: Metrics) -> None:
    metadata = _with_timing(_trailing_pairs(context), timing, metrics)
    if metadata is not None:
        context.set_trailing_metadata(metadata)


class _AioContext:
    """The grpc.aio servicer context, with ``abort()`` marking the call aborted (grpc.aio sends the status inside
    ``abort()``, before the interceptor sees the outcome, and a handler may catch the ``AbortError`` and run on) and
    adding the server timing to the trailing metadata first (``tail``: :attr:`_ServerCore.tail`; ``None``: no
    trailer)."""

    __slots__ = ("_call", "_context", "_tail")

    def __init__(self, context: Any, call: _Call, tail: str | None) -> None:
        self._context = context
        self._call = call
        self._tail = tail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        self._call.aborted = True
        if self._tail is not None:
            try:
                timing = self._call.server_timing(self._tail)
                pairs = tuple(trailing_metadata) if trailing_metadata else _trailing_pairs(self._context)
                with_timing = _with_timing(pairs, timing, self._call.timeline.recorder.metrics)
                if with_timing is not None:
                    trailing_metadata = with_timing
            except Exception as exc:
                record_error(COMPONENT, exc, self._call.timeline.recorder.metrics)
        await self._context.abort(code, details, trailing_metadata)

    async def abort_with_status(self, status: Any) -> None:
        await self.abort(status.code, status.details, status.trailing_metadata)


grpc.aio.ServicerContext.register(_AioContext)


def _handler_parts(handler: Any) -> tuple[Any, Callable[..., Any]]:
    if handler.request_streaming and handler.response_streaming:
        return handler.stream_stream, grpc.stream_stream_rpc_method_handler
    if handler.request_streaming:
        return handler.stream_unary, grpc.stream_unary_rpc_method_handler
    if handler.response_streaming:
        return handler.unary_stream, grpc.unary_stream_rpc_method_handler
    return handler.unary_unary, grpc.unary_unary_rpc_method_handler


def _rewrap(handler: Any, behavior: Callable[..., Any], factory: Callable[..., Any],
            messages: MessageTimer | None = None, failed: Callable[[float], None] | None = None,
            unserializable: _Unserializable | None = None, timed: Callable[[bytes], Any] | None = None) -> Any:
    """``handler`` with ``behavior``, its (de)serializers timed by ``messages``; ``timed``: its deserializer timed
    already (:meth:`_ServerCore.unary_deserializer`)."""
    deserializer, serializer = handler.request_deserializer, handler.response_serializer
    if messages is not None:
        deserializer = timed if timed is not None else messages.deserializer(deserializer, _clock, failed)
        serializer = messages.serializer(serializer, _clock, unserializable)
    return factory(behavior, request_deserializer=deserializer, response_serializer=serializer)


def _instrument_handler(interceptor: Any, handler: Any, handler_call_details: Any, *, only_async: bool,
                        arrived: float | None = None) -> Any:
    """``handler`` with its behavior wrapped by ``interceptor._wrap_unary``/``_wrap_stream``; on any failure of
    aiwatch's own, the handler as it was (counted). With ``only_async``, plain-function handlers pass through.
    No handler (a method the server does not implement): the call is recorded as ``UNIMPLEMENTED`` now, since
    grpcio answers it without running anything aiwatch could wrap. An RPC to an excluded service
    (:mod:`aiwatch.exclusion`) gets its handler as it is, and nothing is recorded. ``arrived``: when the thread-pool
    server asked for the handler (:func:`_queued`)."""
    excluded = interceptor._excluded
    if excluded.active and excluded.excludes(method_name(handler_call_details.method)):
        return handler
    if handler is None:
        interceptor._core.unimplemented()
        return None
    try:
        method = method_name(handler_call_details.method)
        behavior, factory = _handler_parts(handler)
        core = interceptor._core
        if not core.order_checked:
            core.check_order(behavior)
        if only_async and not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
            core.plain_handler(method)
            return handler
        wrap = interceptor._wrap_stream if handler.response_streaming else interceptor._wrap_unary
        messages = core.messages(method) if core.serialization else None
        # grpcio asks for the handler per RPC: one flag per RPC (none without the serializer that sets it)
        out = _Unserializable() if messages is not None else None
        if not handler.request_streaming:
            timed = (core.unary_deserializer(method, messages, handler.request_deserializer)
                     if messages is not None else None)
            return _rewrap(handler, wrap(behavior, method, False, out, arrived=arrived), factory, messages, None, out,
                           timed)
        if only_async:  # grpc.aio raises the deserializer's error in the handler: its outcome, seen as usual
            return _rewrap(handler, wrap(behavior, method, True, out), factory, messages, None, out)
        undecodable = _Undecodable()
        return _rewrap(handler, wrap(behavior, method, True, out, undecodable, arrived), factory, messages,
                       undecodable.fail, out)
    except Exception as exc:
        record_error(COMPONENT, exc, interceptor._core.metrics)
        return handler


class AiwatchServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Server interceptor for ``grpc.server`` (thread pool). Keyword arguments as :func:`grpc_server_interceptor`.

    Place it after OpenTelemetry's interceptor (``interceptors=[otel, aiwatch]``) so OpenTelemetry's span is the
    request's span.
    """

    def __init__(self, *, recorder: RequestRecorder | None = None, service: str | None = None, model: str = "",
                 registry: CollectorRegistry | None = None, metrics: Metrics | None = None,
                 tracer_provider: Any = None, max_label_values: int | None = None,
                 server_timing: bool = True, slow_threshold: float | None = None, model_version: str = "",
                 traffic_classes: TrafficClasses | None = None, excluded_services: Iterable[str] | None = None
                 ) -> None:
        self._excluded = ExcludedServices.resolve(excluded_services)
        self._core = _ServerCore(resolve_recorder(recorder, {
            "service": service, "model": model, "registry": registry, "metrics": metrics,
            "tracer_provider": tracer_provider, "max_label_values": max_label_values,
            "slow_threshold": slow_threshold, "model_version": model_version,
            "traffic_classes": traffic_classes}), server_timing)

    @property
    def recorder(self) -> RequestRecorder:
        """The recorder RPCs are recorded into."""
        return self._core.recorder

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        arrived = _clock()  # grpcio asks for the handler in its polling thread, before the call waits for a worker
        return _instrument_handler(self, continuation(handler_call_details), handler_call_details, only_async=False,
                                   arrived=arrived)

    def _wrap_unary(self, behavior: Callable[..., Any], method: str, request_streaming: bool,
                    unserializable: _Unserializable | None = None, undecodable: _Undecodable | None = None,
                    arrived: float | None = None) -> Callable[..., Any]:
        core = self._core

        def unary(request: Any, context: Any) -> Any:
            call = core.start(method, context, request_streaming, None if request_streaming else request, arrived)
            if call is not None:
                if arrived is not None:
                    _queued(call.timeline, arrived)
                call.unserializable = unserializable
                core.watch(call, context)
            if call is not None and request_streaming:
                request = _count_in(request, call, context)
                call.undecodable = undecodable
            # _enter() / _leave() written out: nothing to do (two calls fewer) unless aiwatch's span is to be current
            token = _enter(call) if call is not None and call.otel_context is not None else None
            try:
                response = behavior(request, context)
            except BaseException as exc:
                core.end(call, method, context, exc)
                raise
            finally:
                if token is not None:
                    _leave(token, call)
            core.end(call, method, context, None, unary_response=True)
            if call is not None:
                ended(call.timeline)
            return response

        return unary

    def _wrap_stream(self, behavior: Callable[..., Any], method: str, request_streaming: bool,
                     unserializable: _Unserializable | None = None, undecodable: _Undecodable | None = None,
                     arrived: float | None = None) -> Callable[..., Any]:
        core = self._core

        def stream(request: Any, context: Any) -> Iterator[Any]:
            call = core.start(method, context, True, None if request_streaming else request, arrived)
            if call is not None:
                if arrived is not None:
                    _queued(call.timeline, arrived)
                call.unserializable = unserializable
                call.undecodable = undecodable
                if request_streaming:
                    request = _count_in(request, call, context)
                else:
                    call.received = 1
                try:
                    # grpcio stops iterating a cancelled stream without closing it: finish it when the RPC ends.
                    context.add_callback(lambda: core.end(call, method, context, None, terminated=True))
                except Exception as exc:
                    record_error(COMPONENT, exc, core.metrics)
            try:
                token = _enter(call)
                try:
                    result = behavior(request, context)
                finally:
                    _leave(token, call)
                if not hasattr(type(result), "__next__"):
                    next(result)  # grpcio takes each response with next(): a list (or None) fails as it does there
                for item in result if call is None or call.otel_context is None else _in_context(result, call):
                    core.sent(call, method)
                    yield item
            except BaseException as exc:
                core.end(call, method, context, exc)
                raise
            core.end(call, method, context, None)

        return stream


def _queued(tl: RequestTimeline, arrived: float) -> None:
    """The thread-pool server's RPC arrived at ``arrived`` (grpcio asked the interceptors for its handler then, in its
    polling thread) and waited for a worker of the server's pool until its timeline began (at the unary request's
    deserialization, or the handler's start): that wait is its :data:`QUEUE_PHASE`, and its start moves back to its
    arrival, so that its total and its trailer hold it (the caller's network time did)."""
    wait = tl.start - arrived
    if wait > 0:
        tl.start = arrived
        tl.add(QUEUE_PHASE, None, wait)


def _enter(call: _Call | None) -> object | None:
    """Make ``call``'s OpenTelemetry context current, so that the spans the handler starts are in the RPC's trace
    (``None``: nothing made current)."""
    if call is None:
        return None
    return attach_counted(call.otel_context, call.timeline.recorder.metrics)


def _leave(token: object | None, call: _Call | None) -> None:
    if token is not None and call is not None:
        deactivate_counted(token, call.timeline.recorder.metrics)


def _in_context(responses: Iterable[Any], call: _Call) -> Iterator[Any]:
    """A streaming handler's responses, each produced in ``call``'s OpenTelemetry context (grpcio's code that sends
    them runs outside it)."""
    return iterate_in_context(responses, call.otel_context, call.timeline.recorder.metrics)


async def _ain_context(responses: AsyncIterator[Any], call: _Call) -> AsyncIterator[Any]:
    """:func:`_in_context` for an aio handler's async iterator of responses."""
    iterator = responses.__aiter__()
    while True:
        token = _enter(call)
        try:
            item = await iterator.__anext__()
        except StopAsyncIteration:
            return
        finally:
            _leave(token, call)
        yield item


def _count_in(requests: Iterator[Any], call: _Call, context: Any) -> Iterator[Any]:
    for item in requests:
        call.received += 1
        take_streamed(item)
        yield item
    _ended_at_deadline(call, context)


def _expired(remaining: Any) -> bool:
    """Whether ``remaining``, the time a call had left when it ended (read then), says its deadline had passed."""
    return isinstance(remaining, int | float) and remaining <= 0


def _ended_at_deadline(call: _Call, context: Any) -> None:
    """The request stream of ``call`` ended: when its deadline had passed by then, grpc-core ended it (and the call,
    ``DEADLINE_EXCEEDED``) without a message, which grpcio hands the handler as if the client had closed the stream
    (the thread-pool server may not have marked the call inactive yet when the handler returns; grpc.aio does not
    cancel the handler): the time left (none) is kept as the call's at its end, so that it is not recorded ``OK``.
    A stream that ends within the call's margin of its deadline ended by it too, as a cancel that close does
    (:data:`DEADLINE_MARGIN_SECONDS`): the client's expiry reaches the server as the stream's end a little before the
    server's own deadline (5 ms before it on a loaded 2-core machine, and grpc.aio says neither ``cancelled()`` nor
    ``done()`` then). A client that closes its request stream that close to its deadline itself, and gets its answer
    in the time left, is recorded ``DEADLINE_EXCEEDED``."""
    try:
        remaining = context.time_remaining() if call.deadline is _UNREAD else _left(call, context)
        if (isinstance(remaining, int | float) and remaining <= call.margin and call.remaining is _UNREAD):
            call.remaining = min(remaining, 0.0)
    except Exception as exc:
        record_error(COMPONENT, exc, call.timeline.recorder.metrics)


async def _acount_in(requests: AsyncIterator[Any], call: _Call, context: Any) -> AsyncIterator[Any]:
    async for item in requests:
        call.received += 1
        take_streamed(item)
        yield item
    _ended_at_deadline(call, context)  # grpc.aio, too, ends the stream at the deadline and lets the handler run on


class AiwatchAioServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Server interceptor for ``grpc.aio.server``. Keyword arguments as :func:`grpc_server_interceptor`.

    Handlers that are plain (non-async) functions, which grpc.aio runs in its migration thread pool, are passed
    through uninstrumented. The first RPC on the server's event loop starts that loop's delay sampler
    (``aiwatch_event_loop_delay_seconds``, :mod:`aiwatch.eventloop`).
    """

    def __init__(self, *, recorder: RequestRecorder | None = None, service: str | None = None, model: str = "",
                 registry: CollectorRegistry | None = None, metrics: Metrics | None = None,
                 tracer_provider: Any = None, max_label_values: int | None = None,
                 server_timing: bool = True, slow_threshold: float | None = None, model_version: str = "",
                 traffic_classes: TrafficClasses | None = None, excluded_services: Iterable[str] | None = None
                 ) -> None:
        self._excluded = ExcludedServices.resolve(excluded_services)
        self._core = _ServerCore(resolve_recorder(recorder, {
            "service": service, "model": model, "registry": registry, "metrics": metrics,
            "tracer_provider": tracer_provider, "max_label_values": max_label_values,
            "slow_threshold": slow_threshold, "model_version": model_version,
            "traffic_classes": traffic_classes}), server_timing, failed_status="UNKNOWN", serializes_any_code=False)

    @property
    def recorder(self) -> RequestRecorder:
        """The recorder RPCs are recorded into."""
        return self._core.recorder

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                handler_call_details: Any) -> Any:
        self._core.recorder.watch_loop()
        handler = await continuation(handler_call_details)
        return _instrument_handler(self, handler, handler_call_details, only_async=True)

    def _wrap_unary(self, behavior: Callable[..., Any], method: str, request_streaming: bool,
                    unserializable: _Unserializable | None = None, undecodable: _Undecodable | None = None,
                    arrived: float | None = None) -> Callable[..., Any]:
        # undecodable, arrived: the thread-pool server's (grpc.aio raises a request's decoding error in the
        # handler, and calls the interceptor when the call starts)
        core = self._core

        async def unary(request: Any, context: Any) -> Any:
            call = core.start(method, context, request_streaming, None if request_streaming else request)
            inner = context
            if call is not None:
                call.unserializable = unserializable
                if request_streaming and hasattr(request, "__aiter__"):
                    request = _acount_in(request, call, context)
                # also without the trailer: the context tells the RPC's end that abort() sent the status
                inner = _AioContext(context, call, core.tail if core.server_timing else None)
            token = _enter(call)
            try:
                response = await behavior(request, inner)
            except BaseException as exc:
                core.end(call, method, context, exc)
                raise
            finally:
                _leave(token, call)
            core.end(call, method, context, None, unary_response=True)
            if call is not None:
                ended(call.timeline)
            return response

        return unary

    def _wrap_stream(self, behavior: Callable[..., Any], method: str, request_streaming: bool,
                     unserializable: _Unserializable | None = None, undecodable: _Undecodable | None = None,
                     arrived: float | None = None) -> Callable[..., Any]:
        # undecodable, arrived: the thread-pool server's (grpc.aio raises a request's decoding error in the
        # handler, and calls the interceptor when the call starts)
        core = self._core

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            call = core.start(method, context, True, None if request_streaming else request)
            inner = context
            if call is not None:
                call.unserializable = unserializable
                if request_streaming and hasattr(request, "__aiter__"):
                    request = _acount_in(request, call, context)
                elif not request_streaming:
                    call.received = 1
                # also without the trailer: the context tells the RPC's end that abort() sent the status
                inner = _AioContext(context, call, core.tail if core.server_timing else None)
            try:
                token = _enter(call)
                try:
                    result = behavior(request, inner)
                finally:
                    _leave(token, call)
                if hasattr(result, "__aiter__"):
                    async for item in (result if call is None or call.otel_context is None
                                       else _ain_context(result, call)):
                        core.sent(call, method)
                        yield item
                else:  # a coroutine that writes with context.write()
                    token = _enter(call)
                    try:
                        await result
                    finally:
                        _leave(token, call)
            except BaseException as exc:
                core.end(call, method, context, exc)
                raise
            core.end(call, method, context, None)

        return stream


def grpc_server_interceptor(*, recorder: RequestRecorder | None = None, service: str | None = None,
                            model: str = "", registry: CollectorRegistry | None = None,
                            metrics: Metrics | None = None, tracer_provider: Any = None,
                            max_label_values: int | None = None, server_timing: bool = True,
                            slow_threshold: float | None = None, model_version: str = "",
                            traffic_classes: TrafficClasses | None = None,
                            excluded_services: Iterable[str] | None = None) -> AiwatchServerInterceptor:
    """An interceptor for ``grpc.server(..., interceptors=[...])``.

    - ``recorder`` or the recorder options ``service``, ``model``, ``registry`` / ``metrics``,
      ``tracer_provider``, ``max_label_values``, ``slow_threshold``, ``model_version`` and ``traffic_classes``:
      where and under which labels RPCs are recorded, as for every integration (:mod:`aiwatch.recording`).
    - ``server_timing``: report timing in the ``server-timing`` trailing metadata (default on).
    - ``excluded_services``: full service names whose RPCs are neither timed nor traced (health checks:
      ``["grpc.health.v1.Health"]``); default: ``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES``
      (:mod:`aiwatch.exclusion`).
    """
    return AiwatchServerInterceptor(recorder=recorder, service=service, model=model, registry=registry,
                                    metrics=metrics, tracer_provider=tracer_provider,
                                    max_label_values=max_label_values, server_timing=server_timing,
                                    slow_threshold=slow_threshold, model_version=model_version,
                                    traffic_classes=traffic_classes, excluded_services=excluded_services)


def grpc_aio_server_interceptor(*, recorder: RequestRecorder | None = None, service: str | None = None,
                                model: str = "", registry: CollectorRegistry | None = None,
                                metrics: Metrics | None = None, tracer_provider: Any = None,
                                max_label_values: int | None = None, server_timing: bool = True,
                                slow_threshold: float | None = None, model_version: str = "",
                                traffic_classes: TrafficClasses | None = None,
                                excluded_services: Iterable[str] | None = None) -> AiwatchAioServerInterceptor:
    """An interceptor for ``grpc.aio.server(interceptors=[...])``; arguments as :func:`grpc_server_interceptor`."""
    return AiwatchAioServerInterceptor(recorder=recorder, service=service, model=model, registry=registry,
                                       metrics=metrics, tracer_provider=tracer_provider,
                                       max_label_values=max_label_values, server_timing=server_timing,
                                       slow_threshold=slow_threshold, model_version=model_version,
                                       traffic_classes=traffic_classes, excluded_services=excluded_services)
