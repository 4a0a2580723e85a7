"""Timing a gRPC server's message (de)serialization and measuring the messages' sizes, by wrapping the handler's
``request_deserializer`` and ``response_serializer`` (no servicer code).

Each message gives ``aiwatch_rpc_message_size_bytes{service, route, direction=request|response}`` (its serialized
size) and a phase of its RPC, ``deserialize`` or ``serialize``, under the request's model. When each runs decides
what the phase means:

* **request messages** are deserialized by grpcio *before* the handler, so before the interceptor's timeline begins
  (for a unary request; the thread-pool server even does it in its polling thread), or as the handler iterates the
  request stream. A message deserialized outside the timeline is handed to it when it begins (:func:`take_pending`,
  matched by the message object) or when the handler takes it from the stream. For a unary request the RPC's
  start moves back to the deserializer's start, so the request's total, its overhead and the ``server-timing``
  trailer include it.
* **response messages of streams** are serialized between the handler's yields, inside the timeline: part of the
  total and of the trailer sent when the stream ends.
* **the response of a unary RPC** is serialized by grpcio *after* the handler returned, before it sends the status
  and the trailing metadata. The interceptor holds the RPC's record until then (:class:`aiwatch.grpc.server.
  _Unserializable`), so its ``serialize`` phase is inside the request's total, its overhead and the trailer, and the
  caller's network time (client time minus the trailer's total) leaves it out. Only a serialization after the RPC
  was recorded (its caller cancelled first) is recorded on its own, outside that total.

A serializer that raises or gives ``None`` fails the RPC (grpcio answers it); the interceptor is told (``failed``), so
that it records the status grpcio sent.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from aiwatch.fastpath import observe
from aiwatch.safety import record_error
from aiwatch.timing import add_measured_phase, current_timeline, record_phase

if TYPE_CHECKING:
    from aiwatch.timing import RequestRecorder, RequestTimeline

class Watch(Protocol):
    """What a response's serializer tells (:class:`aiwatch.grpc.server._Unserializable`): ``started`` is set when
    the serializer is called; ``fail(error)`` when it raises or gives ``None`` (``error`` ``None`` for the latter);
    ``serialized(seconds)`` after a unary RPC's response, and after any message that failed (``seconds`` ``None``),
    which gives whether it took the RPC's record, waiting for this serialization."""

    started: bool

    def fail(self, error: BaseException | None) -> None: ...

    def serialized(self, seconds: float | None) -> bool: ...


DESERIALIZE = "deserialize"
SERIALIZE = "serialize"
REQUEST = "request"
RESPONSE = "response"
COMPONENT = "grpc_server"

#: Request messages deserialized outside their RPC's timeline (grpcio's thread-pool server deserializes in its
#: polling thread), by ``id``: (message, start, seconds). Bounded: entries nobody takes (an RPC aiwatch failed to
#: start) are dropped oldest first. The message is held so that its ``id`` cannot be reused meanwhile.
_pending: dict[int, tuple[Any, float, float]] = {}
_MAX_PENDING = 1024
#: A unary RPC the interceptor has ended, whose response grpcio is about to serialize (in the same context).
_ended: ContextVar[RequestTimeline | None] = ContextVar("aiwatch_grpc_ended_unary", default=None)


def _hold(message: Any, start: float, seconds: float) -> None:
    _pending[id(message)] = (message, start, seconds)
    while len(_pending) > _MAX_PENDING:
        try:
            del _pending[next(iter(_pending))]
        except (KeyError, RuntimeError, StopIteration):  # another thread took or changed it meanwhile
            break


def take_pending(tl: RequestTimeline, request: Any) -> None:
    """Give a just-begun unary-request RPC the time its request message took to deserialize, moving its start back
    to the deserializer's start."""
    entry = _pending.pop(id(request), None)
    if entry is not None and entry[0] is request:
        _, start, seconds = entry
        if start < tl.start:
            tl.start = start
        tl.add(DESERIALIZE, None, seconds)


def take_streamed(request: Any) -> None:
    """A request stream's message reached the handler: its deserialization, if done outside, is a phase now."""
    entry = _pending.pop(id(request), None)
    if entry is not None and entry[0] is request:
        record_phase(DESERIALIZE, entry[2])


def ended(tl: RequestTimeline | None) -> None:
    """A unary RPC ended: its response's serialization, next in this context, belongs to ``tl``."""
    _ended.set(tl)


class MessageTimer:
    """Wraps one handler's (de)serializers for ``route`` (the method name) of ``recorder``'s service."""

    __slots__ = ("_recorder", "_sizes")

    def __init__(self, recorder: RequestRecorder, route: str) -> None:
        self._recorder = recorder
        m = recorder.metrics
        label = recorder.guard.fold("route", route)
        self._sizes = (m.child(m.rpc_message_size, (recorder.service, label, REQUEST)),
                       m.child(m.rpc_message_size, (recorder.service, label, RESPONSE)))

    def deserializer(self, deserialize: Callable[[bytes], Any] | None, clock: Callable[[], float],
                     failed: Callable[[float], None] | None = None) -> Callable[[bytes], Any]:
        """``deserialize``, timed; ``failed(start)`` is told when it raises (which grpcio then answers)."""
        size = self._sizes[0]
        recorder = self._recorder

        def timed(data: bytes) -> Any:
            start = clock()
            try:
                message = deserialize(data) if deserialize is not None else data
            except Exception:
                if failed is not None:
                    failed(start)
                raise
            seconds = clock() - start
            try:
                observe(size, len(data))
                tl = current_timeline()
                if tl is not None and tl.recorder is recorder:  # a request stream, read by the handler
                    add_measured_phase(tl, DESERIALIZE, seconds)  # exclusive of a phase the handler has open
                else:
                    _hold(message, start, seconds)
            except Exception as exc:
                record_error(COMPONENT, exc, recorder.metrics)
            return message

        return timed

    def serializer(self, serialize: Callable[[Any], bytes] | None, clock: Callable[[], float],
                   watch: Watch | None = None) -> Callable[[Any], bytes | None]:
        """``serialize``, timed, telling ``watch`` (one RPC's: the serializer is made per RPC) when it starts, fails
        (which grpcio then answers) and ends."""
        size = self._sizes[1]
        recorder = self._recorder

        def timed(message: Any) -> bytes | None:
            if watch is not None:
                watch.started = True
            start = clock()
            try:
                data = serialize(message) if serialize is not None else message
            except Exception as exc:
                if watch is not None:
                    watch.fail(exc)
                    watch.serialized(None)
                raise
            seconds = clock() - start
            if data is None:  # grpcio fails the RPC: "Failed to serialize response!"
                if watch is not None:
                    watch.fail(None)
                    watch.serialized(None)
                return None  # grpcio answers it, as it would without aiwatch
            try:
                tl = current_timeline()
                # a stream's message, inside the RPC; a unary RPC's timeline is still current after its handler
                # returned (_ServerCore.end), and its record waits for this serialization: its phase, through
                # ``serialized``, unless the RPC was recorded already (it ended first)
                if tl is not None and tl.recorder is recorder and _ended.get() is not tl:
                    add_measured_phase(tl, SERIALIZE, seconds)
                else:
                    done = _ended.get()
                    if done is not None and done.recorder is recorder:
                        _ended.set(None)
                        if watch is None or not watch.serialized(seconds):
                            recorder.observe_late_phase(done, SERIALIZE, seconds)
            except Exception as exc:
                record_error(COMPONENT, exc, recorder.metrics)
            try:  # apart: a size that cannot be observed must not keep the RPC's record and trailer waiting
                observe(size, len(data))
            except Exception as exc:
                record_error(COMPONENT, exc, recorder.metrics)
            return data

        return timed
