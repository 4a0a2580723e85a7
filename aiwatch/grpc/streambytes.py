"""Bytes a streaming gRPC call moves, counted on the client as its messages pass (``aiwatch_client_bytes_total``).

A unary message's size is known when the call starts or ends. A stream's is not: grpcio consumes the request
iterator while the call runs, and the application reads the responses as they come. So each streaming call gets a
:class:`StreamBytes` tally, counted as the messages pass. The call's record, which runs on grpcio's thread (or a
task) when the call ends, takes what was counted (:meth:`StreamBytes.take`); a message counted concurrently with
it, or after it, goes straight to the ``peer``'s counters once the record has said which peer that is
(:meth:`StreamBytes.settle`), so no byte is lost or counted twice. Sizes are the messages' serialized sizes
(``ByteSize()``), as for unary calls.

The wrappers never change what the application sees: the request iterator's messages and errors pass through as
they are, and a response stream's messages, errors (grpcio raises the call itself, an ``RpcError``) and call methods
are the call's own. A response stream the application drops unread is cancelled, as grpcio cancels its own
(:mod:`aiwatch.grpc.heldcall`).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiwatch.grpc.heldcall import HeldStream
from aiwatch.metrics import Metrics
from aiwatch.safety import record_error

COMPONENT = "grpc_client"
SENT, RECEIVED = 0, 1


def message_size(message: Any) -> int | None:
    """A protobuf message's serialized size (``None`` for anything else: a request iterator, raw bytes' absence)."""
    try:
        if isinstance(message, bytes):
            return len(message)
        size = getattr(message, "ByteSize", None)
        return int(size()) if size is not None else None
    except Exception:
        return None


class StreamBytes:
    """The bytes one streaming call sent and received. Thread-safe: grpcio consumes a sync request iterator on its
    own thread while the application reads the responses on another."""

    __slots__ = ("_children", "_counts", "_lock", "_metrics")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._counts = [0, 0]
        self._children: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def add(self, direction: int, message: Any) -> None:
        """Count one message (``direction``: :data:`SENT` or :data:`RECEIVED`). Never raises."""
        try:
            size = message_size(message)
            if not size:
                return
            with self._lock:
                children = self._children
                if children is None:
                    self._counts[direction] += size
                    return
            children[direction].inc(size)
        except Exception as exc:
            record_error(COMPONENT, exc, self._metrics)

    def take(self) -> tuple[int, int]:
        """``(sent, received)`` counted so far, for the call's record; counting starts again from 0."""
        with self._lock:
            sent, received = self._counts
            self._counts = [0, 0]
            return sent, received

    def settle(self, service: str, peer: str) -> None:
        """The call was recorded against ``peer``: what passed since :meth:`take`, and everything after, goes to
        that peer's counters."""
        try:
            m = self._metrics
            children = (m.child(m.client_bytes, (service, peer, "sent")),
                        m.child(m.client_bytes, (service, peer, "received")))
            with self._lock:
                self._children = children
                late = self._counts
                self._counts = [0, 0]
            for child, size in zip(children, late, strict=True):
                if size:
                    child.inc(size)
        except Exception as exc:
            record_error(COMPONENT, exc, self._metrics)


def counted_requests(requests: Any, tally: StreamBytes) -> Any:
    """``requests`` (an iterator, or an async iterator for ``grpc.aio``), its messages counted as sent."""
    if hasattr(requests, "__aiter__"):
        return _counted_async(requests, tally, SENT)
    return _counted(requests, tally)


def _counted(requests: Any, tally: StreamBytes) -> Iterator[Any]:
    for message in requests:
        tally.add(SENT, message)
        yield message


async def _counted_async(messages: Any, tally: StreamBytes, direction: int) -> AsyncIterator[Any]:
    async for message in messages:
        tally.add(direction, message)
        yield message


def counted_aio_responses(call: Any, tally: StreamBytes) -> Any:
    """What a ``grpc.aio`` interceptor returns for a response stream: an async iterator of ``call``'s responses,
    counted as received (grpc.aio keeps ``call`` for the call's methods), or ``call`` itself when it cannot be
    iterated."""
    if not hasattr(call, "__aiter__"):
        return call
    return _counted_async(call, tally, RECEIVED)


class CountedResponses(HeldStream):
    """A sync response-streaming call whose messages are counted as received when the application reads them;
    everything else is the call's own (errors raised while iterating are the call's, as grpcio raises them), and
    dropped by the application it is cancelled (:class:`~aiwatch.grpc.heldcall.HeldCall`)."""

    def __init__(self, call: Any, tally: StreamBytes) -> None:
        super().__init__(call)
        self._tally = tally

    def __next__(self) -> Any:
        message = next(self._call)
        self._tally.add(RECEIVED, message)
        return message
