"""requests integration: an HTTPAdapter that times each call and measures the network time to the peer.

    import requests
    import aiwatch.client

    session = aiwatch.client.instrument_requests(requests.Session(), service="gateway")
    with aiwatch.client.route("/predict"):
        session.post("http://inference:8000/predict", json=payload)

A call is timed until its body is read: requests reads it at the end of ``Session.send``, after it set
``Response.elapsed`` (the time to the headers) and ran the response hooks, and the call is recorded then; a response
dropped before its body was read (a response hook raised) is recorded when it is collected, as ``499``, as httpx's
are. With ``stream=True`` a call is timed only until the response headers arrive, and its body's bytes are counted
as received as they are read (a chunked body's too), not its ``Content-Length`` (a body never read counts none). A
redirect (a 3xx with a ``Location``) is timed to its headers too, its body counted as requests reads
it: requests reads it only to free the connection and ignores a body it cannot decode, which the adapter must not
raise. A call that urllib3 retried (the adapter's ``max_retries``) gives no network time: its time holds every
attempt and the backoff between them, the peer's ``Server-Timing`` only the last attempt's server time (the peer's
name in it still labels the call).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from aiwatch._optional import require
from aiwatch.client._core import ClientRecorder, PendingCall, body_length, headers_arrived
from aiwatch.recording import CLIENT_RECORDER_OPTIONS, resolve_client_recorder
from aiwatch.safety import record_error

require("requests", "http")
from requests import PreparedRequest, Response, Session  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402

__all__ = ["AiwatchHTTPAdapter", "instrument_requests"]


class AiwatchHTTPAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that records each call. Positional and non-aiwatch keyword arguments go to
    ``HTTPAdapter`` (``max_retries``, ``pool_maxsize``...); ``recorder`` or the client recorder options
    (``service``, ``peer``, ``registry``/``metrics``, ``tracer_provider``, ``route_resolver``,
    ``max_label_values``: :class:`~aiwatch.client.ClientRecorder`) configure aiwatch."""

    def __init__(self, *args: Any, recorder: ClientRecorder | None = None, **kwargs: Any) -> None:
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in CLIENT_RECORDER_OPTIONS}
        super().__init__(*args, **kwargs)
        self.aiwatch_recorder = resolve_client_recorder(recorder, options)

    def send(self, request: PreparedRequest, stream: bool = False, timeout: Any = None, verify: Any = True,
             cert: Any = None, proxies: Any = None) -> Response:
        recorder = self.aiwatch_recorder
        url = request.url or ""
        try:
            parts = urlsplit(url)
            scheme, host, port = parts.scheme, parts.hostname or "", parts.port
        except ValueError:
            scheme, host, port = "", "", None
        call = recorder.start(request.method or "GET", scheme, host, port, url, request.headers)
        token = recorder.enter(call)
        try:
            response = super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                                    proxies=proxies)
        except BaseException as exc:
            recorder.finish(call, type(exc).__name__, None, exc)
            raise
        finally:
            recorder.leave(token)
        recorder.capture_response(call, response.headers)
        server_timing = response.headers.get("server-timing")
        sent = body_length(request.body, request.headers)
        # Session.send reads the body once it set Response.elapsed and ran the hooks: the call ends with it. Not a
        # redirect's: requests reads it only to free the connection, and ignores a body it cannot decode
        if not stream and not response.is_redirect:
            _finish_at_body_end(response, PendingCall(recorder, call, server_timing, sent,
                                                      headers_arrived(response.headers), _retried(response)))
            return response
        count_later = _has_body(request, response) and _countable(response.raw)
        received = None if count_later else _streamed_length(request, response)
        peer = recorder.finish(call, str(response.status_code), server_timing, sent=sent, received=received,
                               retried=_retried(response))
        if count_later:
            _count_as_read(response.raw, recorder, peer, recorder.service_of(call.timeline))
        return response


def _finish_at_body_end(response: Response, pending: PendingCall) -> None:
    """Record ``pending`` when requests has read ``response``'s body (``Response.content`` reads it through
    ``iter_content``, which is wrapped on the instance for that), with the error that cut it short, if one; or, when
    the response is collected unread, as the application's dropping it (:meth:`PendingCall.dropped`). The wrapper
    holds the response only weakly, so that it is freed, not kept for a cycle collection."""
    status = str(response.status_code)
    if response.raw is None or getattr(response, "_content", False) is not False:  # nothing left to read
        pending.received = body_length(response.content, response.headers) or 0
        pending.finish(status, None)
        return
    dropped = weakref.finalize(response, pending.dropped, status)
    dropped.atexit = False  # a response still unread at exit: no recording while the interpreter ends
    ref = weakref.ref(response)
    original = type(response).iter_content

    def timed(chunks: Iterator[Any]) -> Iterator[Any]:
        try:
            for chunk in chunks:
                pending.received += len(chunk)
                yield chunk
        except GeneratorExit:  # left half read: recorded when the response is collected
            raise
        except BaseException as exc:
            dropped.detach()
            pending.finish(type(exc).__name__, exc)
            raise
        pending.ended = True
        dropped.detach()
        pending.finish(status, None)

    def iter_content(*args: Any, **kwargs: Any) -> Iterator[Any]:
        target = ref()
        if target is None:  # called on the response while it is being freed
            return iter(())
        chunks = original(target, *args, **kwargs)
        return chunks if pending.call is None else timed(chunks)

    try:
        response.iter_content = iter_content  # type: ignore[method-assign]
    except Exception as exc:  # a Response subclass with slots: recorded now, to its headers
        dropped.detach()
        record_error("client", exc, pending.recorder.metrics)
        pending.finish(status, None)


#: urllib3's response methods that read its body (stream(), readinto() and the data property read through read();
#: stream() reads a chunked body through read_chunked(), which takes each chunk's bytes from _handle_chunk() and
#: leaves tell() alone) or end it (urllib3 calls release_conn at the body's end; requests' Response.close() calls
#: close and release_conn).
_READS = ("read", "read1")
_CHUNK = "_handle_chunk"
_ENDS = ("release_conn", "close")
_FLUSH_EVERY = 1 << 16  # bytes read between two additions to the counter (iter_content() reads a byte at a time)


def _countable(raw: Any) -> bool:
    """Whether ``raw`` is a urllib3 response whose bytes read off the wire can be counted as they are read: it has
    ``tell()`` and the methods :func:`_count_as_read` wraps, not already wrapped on the instance."""
    try:
        return (callable(getattr(raw, "tell", None)) and "read" not in vars(raw)
                and all(callable(getattr(type(raw), name, None)) for name in ("read", *_ENDS)))
    except Exception:  # no urllib3 response (a test double without __dict__)
        return False


def _count_as_read(raw: Any, recorder: ClientRecorder, peer: str, service: str) -> None:
    """Counts the body bytes ``raw`` pulls off the wire as received (``tell()``: their encoded size, as a
    ``Content-Length`` is): every 64 KiB, and when the body ends or the response is closed (by requests'
    ``Response.close()``, the app, or its collection). The wrappers are ``raw``'s own attributes and hold it
    only weakly: a strong reference would keep an unread response, and its socket, alive until a cycle
    collection. urllib3 releases the connection at the body's end before it adds the last read to ``tell()``:
    the read's own wrapper counts those bytes when it returns. A chunked body read through ``stream()`` (requests'
    ``iter_content()``) does not move ``tell()``: the bytes of its chunks (without their framing) are added to it."""
    ref = weakref.ref(raw)
    lock = threading.Lock()
    counted = 0
    chunked = 0

    def flush(target: Any, reading: bool) -> None:
        nonlocal counted
        try:
            with lock:
                new = target.tell() + chunked - counted
                if new <= 0 or (reading and new < _FLUSH_EVERY and not target.closed):
                    return
                counted += new
            recorder.count_received(peer, new, service)
        except Exception as exc:
            record_error("client", exc, recorder.metrics)

    def wrap(original: Any, reads: bool) -> Any:
        def counting(*args: Any, **kwargs: Any) -> Any:
            target = ref()
            if target is None:  # freed by a cycle collection, which clears weak references first
                return None
            try:
                return original(target, *args, **kwargs)
            finally:
                flush(target, reads)
        return counting

    def wrap_chunk(original: Any) -> Any:
        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal chunked
            target = ref()
            if target is None:
                return b""
            data = original(target, *args, **kwargs)
            try:
                with lock:
                    chunked += len(data)
            except Exception as exc:
                record_error("client", exc, recorder.metrics)
            flush(target, True)
            return data
        return counting

    try:
        for name in (*_READS, *_ENDS):
            original = getattr(type(raw), name, None)
            if callable(original):
                setattr(raw, name, wrap(original, name in _READS))
        handle_chunk = getattr(type(raw), _CHUNK, None)
        if callable(handle_chunk):
            setattr(raw, _CHUNK, wrap_chunk(handle_chunk))
    except Exception as exc:
        record_error("client", exc, recorder.metrics)


def _has_body(request: PreparedRequest, response: Response) -> bool:
    """Whether a response has a body, whatever its headers say (RFC 9110 §6.4.1: the answer to a HEAD, a 1xx, 204
    or 304 has none)."""
    status = response.status_code
    return request.method != "HEAD" and isinstance(status, int) and status >= 200 and status not in (204, 304)


def _streamed_length(request: PreparedRequest, response: Response) -> int | None:
    """The body size of a response left unread: its ``Content-Length``, unless it has no body."""
    return body_length(None, response.headers) if _has_body(request, response) else None


def _retried(response: Response) -> bool:
    """Whether urllib3 made more than one attempt at the call (the adapter's ``max_retries``)."""
    try:
        retries = response.raw.retries
        return retries is not None and bool(retries.history)
    except Exception:  # no urllib3 response (a test double), or one that kept no retries
        return False


def instrument_requests(session: Session, *, recorder: ClientRecorder | None = None, **options: Any) -> Session:
    """Mount an :class:`AiwatchHTTPAdapter` on ``session`` for ``http://`` and ``https://`` (keeping the
    ``max_retries`` of the adapters it replaces); returns ``session``. A second call is a no-op. ``recorder`` or
    the client recorder options configure aiwatch, as for :class:`AiwatchHTTPAdapter`."""
    if not isinstance(session, Session):
        raise TypeError(f"instrument_requests() needs a requests.Session, got {type(session).__name__}")
    recorder = resolve_client_recorder(recorder, options)
    for prefix in ("https://", "http://"):
        current = session.adapters.get(prefix)
        if isinstance(current, AiwatchHTTPAdapter):
            continue
        retries = getattr(current, "max_retries", 0)
        session.mount(prefix, AiwatchHTTPAdapter(max_retries=retries, recorder=recorder))
    return session
