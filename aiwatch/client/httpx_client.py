"""httpx integration: transports that time each call and measure the network time to the peer.

    import httpx
    import aiwatch.client

    client = aiwatch.client.instrument_httpx(httpx.Client(), service="gateway")
    client.get("http://inference:8000/predict", extensions={aiwatch.client.ROUTE_EXTENSION: "/predict"})

or build the client with the transport yourself::

    client = httpx.AsyncClient(transport=aiwatch.client.AiwatchAsyncTransport(service="gateway"))

A call is timed from the moment it is sent until its response body is closed (httpx closes it after reading it); a
response that a transport returns already read (``httpx.Response(content=...)``, as ``httpx.MockTransport`` does)
is recorded when the transport returns it. A response the application drops without closing it (sent with
``stream=True``) is recorded as it stood when it was collected, with the bytes read until then, as ``499`` when its
body was not read to its end (the client went away: the ASGI middleware's ``499``; the span keeps the peer's
status); the client's next call or the next scrape of its registry records it (:mod:`aiwatch.deferred`). The
network time of a streamed response (chunked) is counted to its headers, which carried the peer's Server-Timing.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

from aiwatch._optional import require
from aiwatch.client._core import ROUTE_EXTENSION, ClientRecorder, PendingCall, _Call, body_length, headers_arrived
from aiwatch.recording import resolve_client_recorder

require("httpx", "http")
import httpx  # noqa: E402

__all__ = ["AiwatchAsyncTransport", "AiwatchTransport", "instrument_httpx"]

C = TypeVar("C")


def _start(recorder: ClientRecorder, request: httpx.Request) -> _Call:
    url = request.url
    route = request.extensions.get(ROUTE_EXTENSION)
    return recorder.start(request.method, url.scheme, url.host, url.port, str(url), request.headers,
                          route if isinstance(route, str) else None)


def _finish_read(recorder: ClientRecorder, call: _Call, response: httpx.Response, request: httpx.Request) -> None:
    """Record a call whose response came back already read and closed: httpx never closes it again."""
    recorder.finish(call, str(response.status_code), response.headers.get("server-timing"),
                    sent=_sent(request), received=_read_length(response))


def _read_length(response: httpx.Response) -> int | None:
    try:
        return len(response.content)
    except Exception:  # closed without being read
        return None


def _sent(request: httpx.Request) -> int | None:
    try:
        return body_length(None, request.headers)
    except Exception:
        return None


class _CallFinisher:
    """A response stream's pending call: finished once, when the body is read to its end, fails or is closed, or
    when the stream is collected unclosed (the application dropped its response: httpx does nothing then). The
    finalizer holds the pending call, not the stream, so that aiwatch keeps nothing of the response alive."""

    def __init__(self, stream: Any, recorder: ClientRecorder, call: _Call, status: str,
                 server_timing: str | None, sent: int | None = None, headers_at: float | None = None) -> None:
        self._stream = stream
        self._status = status
        self._pending = PendingCall(recorder, call, server_timing, sent, headers_at)
        self._dropped = weakref.finalize(self, self._pending.dropped, status)
        self._dropped.atexit = False  # a response still open at exit: no recording while the interpreter ends

    def _done(self, status: str, error: BaseException | None) -> None:
        self._dropped.detach()
        self._pending.finish(status, error)


class _TimedStream(_CallFinisher, httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._stream:
                self._pending.received += len(chunk)
                yield chunk
            self._pending.ended = True
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._done(type(exc).__name__, exc)
            raise

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._done(self._status, None)


class _AsyncTimedStream(_CallFinisher, httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                self._pending.received += len(chunk)
                yield chunk
            self._pending.ended = True
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._done(type(exc).__name__, exc)
            raise

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._done(self._status, None)


class AiwatchTransport(httpx.BaseTransport):
    """A sync httpx transport wrapping ``transport`` (default ``httpx.HTTPTransport()``); the keyword options are
    ``recorder`` or the client recorder options (``service``, ``peer``, ``registry``/``metrics``,
    ``tracer_provider``, ``route_resolver``, ``max_label_values``: :class:`~aiwatch.client.ClientRecorder`)."""

    def __init__(self, transport: Any = None, *, recorder: ClientRecorder | None = None, **options: Any) -> None:
        self.transport = transport if transport is not None else httpx.HTTPTransport()
        self.recorder = resolve_client_recorder(recorder, options)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        call = _start(self.recorder, request)
        token = self.recorder.enter(call)
        try:
            response = self.transport.handle_request(request)
        except BaseException as exc:
            self.recorder.finish(call, type(exc).__name__, None, exc)
            raise
        finally:
            self.recorder.leave(token)
        self.recorder.capture_response(call, response.headers)
        if response.is_closed:  # built already read (Response(content=...), MockTransport): no body left to time
            _finish_read(self.recorder, call, response, request)
            return response
        response.stream = _TimedStream(response.stream, self.recorder, call, str(response.status_code),
                                       response.headers.get("server-timing"), _sent(request),
                                       headers_arrived(response.headers))
        return response

    def close(self) -> None:
        self.transport.close()


class AiwatchAsyncTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`AiwatchTransport` (default inner transport ``httpx.AsyncHTTPTransport()``)."""

    def __init__(self, transport: Any = None, *, recorder: ClientRecorder | None = None, **options: Any) -> None:
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self.recorder = resolve_client_recorder(recorder, options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        call = _start(self.recorder, request)
        token = self.recorder.enter(call)
        try:
            response = await self.transport.handle_async_request(request)
        except BaseException as exc:
            self.recorder.finish(call, type(exc).__name__, None, exc)
            raise
        finally:
            self.recorder.leave(token)
        self.recorder.capture_response(call, response.headers)
        if response.is_closed:
            _finish_read(self.recorder, call, response, request)
            return response
        response.stream = _AsyncTimedStream(response.stream, self.recorder, call, str(response.status_code),
                                            response.headers.get("server-timing"), _sent(request),
                                            headers_arrived(response.headers))
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()


def instrument_httpx(client: C, *, recorder: ClientRecorder | None = None, **options: Any) -> C:
    """Wrap every transport of an ``httpx.Client`` or ``httpx.AsyncClient`` (its default transport and its
    mounts) so its calls are timed; returns ``client``. Calling it again on the same client is a no-op.
    ``recorder`` and ``options`` are :class:`AiwatchTransport`'s."""
    is_async = isinstance(client, httpx.AsyncClient)
    if not is_async and not isinstance(client, httpx.Client):
        raise TypeError(f"instrument_httpx() needs an httpx.Client or httpx.AsyncClient, got {type(client).__name__}")
    wrapper: Any = AiwatchAsyncTransport if is_async else AiwatchTransport
    recorder = resolve_client_recorder(recorder, options)
    c: Any = client
    if not isinstance(c._transport, wrapper):
        c._transport = wrapper(c._transport, recorder=recorder)
    for pattern, transport in list(c._mounts.items()):
        if transport is not None and not isinstance(transport, wrapper):
            c._mounts[pattern] = wrapper(transport, recorder=recorder)
    return client
