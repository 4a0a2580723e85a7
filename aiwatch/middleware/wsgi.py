"""WSGI middleware (Flask, Django, any PEP 3333 app) that records the latency split of every HTTP request.

    from flask import Flask
    import aiwatch

    app = aiwatch.instrument(Flask(__name__), service="recommender")

For Flask, :func:`aiwatch.instrument` wraps ``app.wsgi_app`` and registers a ``url_value_preprocessor`` that
stores the matched rule (``/items/<int:item_id>``) for the route label; for Django, :mod:`aiwatch.middleware.django`
stores the URL pattern that matched. Any other WSGI app::

    from aiwatch.middleware.wsgi import AiwatchWSGIMiddleware

    application = AiwatchWSGIMiddleware(application, service="recommender", route_resolver=my_resolver)

Per request it records ``aiwatch_request_duration_seconds`` (route template, method, status) timed until the
server closes the response iterable (so streamed bodies count in full; a server that drops it unclosed has the
request recorded as it stood then, by the next request, and counted in ``aiwatch_unclosed_responses_total``; one it
closes before its end, its write to a client gone having failed, is recorded as ``499``, as by the ASGI
middleware, and so is one whose ``write()`` raised an ``OSError``), the
request's phases and its ``overhead``,
keeps ``aiwatch_requests_in_flight``, and adds a ``Server-Timing`` header with the phases and the total up to the
moment ``start_response`` is called (at most :data:`~aiwatch.servertiming.MAX_LENGTH` characters: phase entries
past it are left out, the overhead and total kept, and the cut counted under ``component="server_timing_header"``).
Bytes the app sends through ``start_response``'s ``write()`` count in the response size; a chunked request body
(no ``CONTENT_LENGTH``) counts as the app reads it from ``wsgi.input``, which is wrapped for that. A response iterable
that has a length (a list) keeps it, so that a server can set the ``Content-Length`` of a one-item body. Requests
without a route template are labelled ``__unmatched__``, never with the raw path. The response iterable is wrapped, so a
server's ``wsgi.file_wrapper`` fast path is not used for instrumented responses. With tracing on, the context the app
was called in (aiwatch's SERVER span, the caller's baggage) is current again while the server takes each chunk of
the body and closes it: a streamed body is produced then, inside the request.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry import context
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from aiwatch.contentlength import content_length
from aiwatch.deferred import PER_CALL, run_deferred
from aiwatch.exclusion import ExcludedUrls, check_request_path, exclude_path_set, wsgi_url
from aiwatch.flags import flag
from aiwatch.headercapture import HeaderCapture, environ_headers
from aiwatch.metrics import Metrics
from aiwatch.middleware._common import (
    CLIENT_CLOSED_STATUS,
    OTHER_METHOD,
    ROUTE_KEY,
    UNMATCHED_ROUTE,
    begin_on_new_span,
    capture_request_headers,
    count_header_cut,
    put_captured_headers,
    stored_route,
    takes_captured_headers,
)
from aiwatch.recording import resolve_recorder
from aiwatch.safety import call_hook, record_error, resolve_route, sync_hook, warn_rate_limited
from aiwatch.semconv import (
    end_http_server_span,
    http_server_attributes,
    known_http_methods,
    port_number,
    status_number,
)
from aiwatch.servertiming import HEADER
from aiwatch.streaming import ChunkTimer
from aiwatch.timing import RequestRecorder, RequestTimeline
from aiwatch.tracing import (
    MAX_PREFIXED,
    attach_counted,
    carrier_fields,
    deactivate,
    deactivate_counted,
    extract_context,
    first_traceparent,
    iterate_in_context,
    span_in_progress,
)
from aiwatch.traffic import TrafficClasses

__all__ = ["ROUTE_ENVIRON_KEY", "UNMATCHED_ROUTE", "AiwatchWSGIMiddleware", "environ_route"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

ROUTE_ENVIRON_KEY = ROUTE_KEY
"""The environ key where a framework integration stores the matched route template."""

_SERVER_TIMING = "Server-Timing"
_clock = time.perf_counter
assert _SERVER_TIMING.lower() == HEADER


def environ_route(environ: Environ) -> str | None:
    """The route template stored in ``environ[ROUTE_ENVIRON_KEY]`` (Flask's and Django's integrations set it), if
    any."""
    return stored_route(environ)


class AiwatchWSGIMiddleware:
    """WSGI middleware; see the module docstring. All arguments but ``app`` are keyword-only and mean the same as
    :class:`aiwatch.middleware.asgi.AiwatchMiddleware`'s; here ``route_resolver`` and ``on_request_end`` receive
    the WSGI ``environ`` instead of the ASGI scope, and ``excluded_urls`` defaults to
    ``OTEL_PYTHON_WSGI_EXCLUDED_URLS`` or else ``OTEL_PYTHON_EXCLUDED_URLS``, plus ``AIWATCH_EXCLUDED_URLS``."""

    def __init__(self, app: WSGIApp, *, service: str | None = None, model: str = "",
                 registry: CollectorRegistry | None = None, metrics: Metrics | None = None,
                 tracer_provider: Any = None, server_timing: bool = True, metrics_path: str | None = "/metrics",
                 exclude_paths: Iterable[str] = (), route_resolver: Callable[[Environ], str | None] | None = None,
                 on_request_end: Callable[[Environ, RequestTimeline, str], None] | None = None,
                 max_label_values: int | None = None, recorder: RequestRecorder | None = None,
                 slow_threshold: float | None = None, excluded_urls: str | ExcludedUrls | None = None,
                 model_version: str = "", traffic_classes: TrafficClasses | None = None,
                 payload_sizes: bool = True) -> None:
        server_timing = flag(server_timing, "server_timing")
        payload_sizes = flag(payload_sizes, "payload_sizes")
        from aiwatch.exposition import check_sample_directory

        check_sample_directory()
        self.app = app
        self.recorder = resolve_recorder(recorder, {
            "service": service, "model": model, "registry": registry, "metrics": metrics,
            "tracer_provider": tracer_provider, "max_label_values": max_label_values,
            "slow_threshold": slow_threshold, "model_version": model_version,
            "traffic_classes": traffic_classes})
        self.metrics = self.recorder.metrics
        self.server_timing = server_timing
        self.metrics_path = metrics_path if metrics_path is None else check_request_path(metrics_path, "metrics_path")
        self.exclude_paths = exclude_path_set(exclude_paths)
        self.excluded_urls = (excluded_urls if isinstance(excluded_urls, ExcludedUrls)
                              else ExcludedUrls.from_env("WSGI") if excluded_urls is None
                              else ExcludedUrls.parse(excluded_urls))
        self.route_resolver = sync_hook("route_resolver", route_resolver) or environ_route
        self.on_request_end = sync_hook("on_request_end", on_request_end)
        self.payload_sizes = payload_sizes
        #: the methods labelled as they are (any other is ``_OTHER``): $OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS
        self.known_methods = known_http_methods()
        #: the headers put on aiwatch's SERVER spans: $OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_*
        self.header_capture = HeaderCapture.server()
        self._metrics_app: WSGIApp | None = None
        #: what finalizers left to record (a response body the server dropped unclosed): the next call records it
        self._deferred = self.metrics.deferred
        if metrics_path is not None:  # its /metrics app is made at the first scrape: a bad setting fails here
            from aiwatch.exposition import check_serving_settings

            check_serving_settings()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self._deferred:
            run_deferred(self.metrics, PER_CALL)
        path = environ.get("PATH_INFO", "")
        if path == self.metrics_path:
            return self._serve_metrics(environ, start_response)
        if path in self.exclude_paths or (self.excluded_urls.active and self._excluded(environ)):
            return self.app(environ, start_response)

        recorder = self.recorder
        raw_method = environ.get("REQUEST_METHOD", "GET")
        method = raw_method if raw_method in self.known_methods else OTHER_METHOD
        tracer = recorder.tracing.tracer()
        token = None
        if tracer is None:
            tl = recorder.begin_with(None, method)
        else:
            tl, token = self._begin_traced(tracer, environ, raw_method, method)
        traffic = recorder.traffic
        value = environ.get(traffic.environ_key)
        if value is not None:
            tl.traffic_class = traffic.from_header(value)
        if traffic.has_routes:  # for the class its outgoing calls forward, once the app has routed it
            tl.route_of = functools.partial(resolve_route, self.route_resolver, self.metrics, environ)
        request = _Request(self, environ, tl, method)
        if self.payload_sizes:
            # absent, or no count of bytes (+7, 1_000, past 2**53): no body declared
            declared = content_length(environ.get("CONTENT_LENGTH"))
            request.received = declared or 0
            if declared is None and "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower():
                stream = environ.get("wsgi.input")
                if stream is not None:  # a body of unknown size: count what the app reads
                    environ["wsgi.input"] = _CountingInput(stream, request)

        def start_response_wrapper(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            request.status = request.code = status.split(" ", 1)[0]
            request.length = _declared_length(headers, self.metrics)
            if self.server_timing:
                try:
                    value, cut = tl.server_timing()
                    headers = [*headers, (_SERVER_TIMING, value)]
                    # a second start_response (with exc_info, PEP 3333) replaces the headers: the one response's
                    # cut is counted once
                    if cut is not None and not request.cut_counted:
                        request.cut_counted = True
                        count_header_cut(cut, self.metrics)
                except Exception as exc:
                    record_error("server_timing", exc, self.metrics)
            if self.header_capture.response is not None and takes_captured_headers(tl):
                put_captured_headers(tl.span, self.header_capture.response_attributes, headers,
                                     self.metrics)  # as sent
            write = start_response(status, headers, exc_info)
            if not callable(write):
                return write

            def counted_write(data: bytes) -> Any:  # PEP 3333's write(): body bytes outside the iterable
                try:
                    result = write(data)
                except OSError:  # the client went away (BrokenPipeError, ConnectionResetError)
                    request.write_failed = True
                    raise
                if data:
                    request.sent += len(data)
                return result

            return counted_write

        if token is not None:  # the body is produced later, as the server iterates it: in this context too
            request.context = context.get_current()
        try:
            body = self.app(environ, start_response_wrapper)
        except BaseException as exc:
            request.finish(exc)
            raise
        finally:
            if token is not None:
                deactivate(token)
        # a sized body (a list) stays sized: servers set the Content-Length of a one-item body from its len()
        return (_SizedClosingBody if hasattr(type(body), "__len__") else _ClosingBody)(body, request)

    def _finish_dropped(self, request: _Request) -> None:
        """Record a request whose body the server dropped unclosed (:meth:`_ClosingBody.__del__`), ending when it
        was dropped."""
        self.metrics.child(self.metrics.unclosed_responses, (self.recorder.service,)).inc()
        warn_rate_limited("unclosed_response", "aiwatch: the WSGI server dropped a response body without closing it "
                          "(PEP 3333), so the request was recorded as it stood when dropped: %s %r", request.method,
                          str(request.environ.get("PATH_INFO", ""))[:200])
        request.finish(None)

    def _begin_traced(self, tracer: Any, environ: Environ, raw_method: str, method: str) -> tuple[
            RequestTimeline, Any]:
        """As the ASGI middleware's: on OpenTelemetry's SERVER span when its middleware is in front, else on a new
        one made current while the app is called (not while the server iterates the body)."""
        recorder = self.recorder
        try:
            current = span_in_progress(SpanKind.SERVER)
            if current is not None:
                tl = recorder.begin_in_span(current)
                if self.header_capture.request is not None and takes_captured_headers(tl):
                    put_captured_headers(tl.span, self.header_capture.request_attributes,
                                         environ_headers(environ), self.metrics)
                return tl, None
            parent = self._parent_context(environ)
            protocol = str(environ.get("SERVER_PROTOCOL", ""))
            port = str(environ.get("SERVER_PORT", ""))
            attributes = http_server_attributes(
                raw_method, str(environ.get("wsgi.url_scheme", "http")),
                f"{environ.get('SCRIPT_NAME', '')}{environ.get('PATH_INFO', '')}",
                str(environ.get("QUERY_STRING", "")), environ.get("HTTP_HOST"),
                (str(environ.get("SERVER_NAME", "")), port_number(port)),
                protocol.partition("/")[2] if protocol.startswith("HTTP/") else None, self.known_methods,
                environ.get("REMOTE_ADDR") or None, environ.get("HTTP_USER_AGENT") or None)
        except Exception as exc:
            record_error("tracing", exc, self.metrics)
            return recorder.begin_with(None, method), None
        if self.header_capture.request is not None:
            attributes.update(capture_request_headers(self.header_capture.request_attributes, environ_headers(environ),
                                                      self.metrics))
        return begin_on_new_span(recorder, tracer, method, parent, attributes, self.metrics)

    def _excluded(self, environ: Environ) -> bool:
        try:
            return self.excluded_urls.excludes(wsgi_url(environ))
        except Exception as exc:
            record_error("route", exc, self.metrics)
            return False

    @staticmethod
    def _parent_context(environ: Environ) -> Any:
        try:
            fields = carrier_fields()  # those the global propagator reads: W3C's three by default
            carrier = {name: environ[key] for name, key in fields.environ if key in environ}
            prefix = fields.prefix_environ  # baggage families (uberctx-): None unless such a propagator is global
            if prefix is not None:
                _add_prefixed(carrier, environ, prefix)
            if "traceparent" in carrier:  # the server joined repeated fields with commas: the first traceparent wins
                carrier["traceparent"] = first_traceparent(carrier["traceparent"])
            return extract_context(carrier, fields) if carrier else None
        except Exception:
            return None

    def _serve_metrics(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self._metrics_app is None:
            from aiwatch.exposition import make_wsgi_app

            try:
                self._metrics_app = make_wsgi_app(self.metrics.registry)
            except Exception as exc:  # PROMETHEUS_MULTIPROC_DIR made a file since: a 503 saying so, tried again next
                record_error("metrics", exc, self.metrics)
                start_response("503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
                return [f"aiwatch cannot serve /metrics: {exc}\n".encode()]
        return self._metrics_app(environ, start_response)


def _add_prefixed(carrier: dict[str, str], environ: Environ, prefix: tuple[str, ...]) -> None:
    """``carrier`` given the first :data:`~aiwatch.tracing.MAX_PREFIXED` environ entries whose key starts with
    one of ``prefix`` (``HTTP_UBERCTX_``), each under its header's name as OpenTelemetry's WSGI instrumentation
    spells it (lowercase, ``_`` read as ``-``)."""
    taken = 0
    for key, value in environ.items():
        if isinstance(key, str) and key.startswith(prefix) and isinstance(value, str):
            carrier[key[5:].lower().replace("_", "-")] = value
            taken += 1
            if taken == MAX_PREFIXED:
                return


class _Request:
    """One request's state: lives as long as its response body, never on the middleware."""

    __slots__ = ("chunks", "code", "context", "cut_counted", "dropped_at", "environ", "exhausted", "finished",
                 "length", "method", "middleware", "received", "sent", "status", "tl", "write_failed")

    def __init__(self, middleware: AiwatchWSGIMiddleware, environ: Environ, tl: RequestTimeline,
                 method: str) -> None:
        self.middleware = middleware
        self.environ = environ
        self.tl = tl
        self.method = method
        self.status = "500"
        #: the status line's code as the app sent it ("" until start_response), for the span
        self.code = ""
        self.finished = False
        #: whether the response's Server-Timing cut has been counted (once however often start_response is called)
        self.cut_counted = False
        #: request body bytes (``None``: payload sizes are off)
        self.received: int | None = None
        #: response body bytes the app gave the server (the iterable's and write()'s)
        self.sent = 0
        #: the response's Content-Length as the app declared it in start_response, if it did
        self.length: int | None = None
        #: the server took the iterable to its end (StopIteration)
        self.exhausted = False
        #: the server's write() raised an OSError: the client went away
        self.write_failed = False
        self.chunks: ChunkTimer | None = None
        #: the OpenTelemetry context the app was called in, with aiwatch's SERVER span (``None``: not traced, or
        #: the span is another instrumentation's, which keeps it current itself)
        self.context: Any = None
        #: when the server dropped the body without closing it: (:data:`_clock`, nanoseconds since the epoch)
        self.dropped_at: tuple[float, int] | None = None

    def route(self) -> str:
        """The route label (for a streamed body's chunk timer)."""
        return resolve_route(self.middleware.route_resolver, self.middleware.metrics, self.environ) or UNMATCHED_ROUTE

    def finish(self, error: BaseException | None) -> None:
        if self.finished:
            return
        self.finished = True
        mw = self.middleware
        if self.write_failed:  # whatever the app did with the exception, as the ASGI middleware's send
            self.status = CLIENT_CLOSED_STATUS
        elif error is not None:
            self.status = "500"
        elif self.dropped_at is None and self._client_left():  # a body dropped unclosed: why is unknown
            self.status = CLIENT_CLOSED_STATUS
        route = resolve_route(mw.route_resolver, mw.metrics, self.environ)
        tl = self.tl
        if tl.span is not None:
            try:
                code = status_number(self.code)
                end_http_server_span(tl.span, tl.owns_span, self.method, route, code, error)
            except Exception as exc:
                record_error("tracing", exc, mw.metrics)
        dropped_at = self.dropped_at
        mw.recorder.finish(tl, route or UNMATCHED_ROUTE, self.method, self.status, error,
                           end=None if dropped_at is None else dropped_at[0], request_bytes=self.received,
                           response_bytes=self.sent if mw.payload_sizes else None, end_span=dropped_at is None)
        if dropped_at is not None and tl.span is not None and tl.owns_span:
            try:
                mw.recorder.tracing.end_server_span(tl.span, end_time=dropped_at[1])
            except Exception as exc:
                record_error("tracing", exc, mw.metrics)
        if mw.on_request_end is not None:
            call_hook("hook", mw.on_request_end, mw.metrics, self.environ, self.tl, self.status)


    def _client_left(self) -> bool:
        """Whether the server closed the body before its end with no error from the app: it could not
        deliver the rest, the client having gone away (a write to its socket failed), as the ASGI middleware's
        ``499``. A body whose declared ``Content-Length`` the app gave in full is complete whatever the server did
        next (a server may stop iterating there), and so is one a response cannot have (a HEAD, a 1xx, 204 or 304):
        a server need not iterate it."""
        if self.exhausted or self.method == "HEAD" or self.code[:1] == "1" or self.code in ("204", "304"):
            return False
        return self.length is None or self.sent < self.length


def _declared_length(headers: Any, metrics: Metrics) -> int | None:
    """The ``Content-Length`` among the response ``headers`` the app passed to ``start_response``, if one that is a
    count of bytes."""
    try:
        for name, value in headers:
            if name.lower() == "content-length":
                return content_length(value)
    except Exception as exc:  # headers that are no (name, value) pairs: the server's to refuse
        record_error("metrics", exc, metrics)
    return None


class _CountingInput:
    """``wsgi.input``, adding the bytes the app reads to its request's ``received``."""

    __slots__ = ("_request", "_stream")

    def __init__(self, stream: Any, request: _Request) -> None:
        self._stream = stream
        self._request = request

    def _count(self, data: bytes) -> bytes:
        if data:
            self._request.received += len(data)  # type: ignore[operator]
        return data

    def read(self, *args: Any) -> bytes:
        return self._count(self._stream.read(*args))

    def readline(self, *args: Any) -> bytes:
        return self._count(self._stream.readline(*args))

    def readlines(self, *args: Any) -> list[bytes]:
        return [self._count(line) for line in self._stream.readlines(*args)]

    def readinto(self, buffer: Any) -> int | None:
        n: int | None = self._stream.readinto(buffer)
        if n:
            self._request.received += n  # type: ignore[operator]
        return n

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            yield self._count(line)

    def __getattr__(self, name: str) -> Any:  # the server's own extras (close, ...)
        return getattr(self._stream, name)


class _ClosingBody:
    """The app's response iterable, finishing the request when the server closes it (PEP 3333)."""

    __slots__ = ("_body", "_request")

    def __init__(self, body: Iterable[bytes], request: _Request) -> None:
        self._body = body
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        request = self._request
        try:
            for chunk in (self._body if request.context is None
                          else iterate_in_context(self._body, request.context, request.middleware.metrics)):
                if chunk:
                    request.sent += len(chunk)
                    chunks = request.chunks
                    if chunks is None:
                        chunks = request.chunks = ChunkTimer(request.middleware.recorder, request.tl.start,
                                                             request.route, request.tl.trace_id)
                    chunks.chunk(_clock())
                yield chunk
            request.exhausted = True
        except GeneratorExit:  # the iterator was dropped; close() finishes the request
            raise
        except BaseException as exc:
            request.finish(exc)
            raise

    def close(self) -> None:
        request = self._request
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                token = attach_counted(request.context, request.middleware.metrics)
                try:
                    close()
                finally:
                    deactivate_counted(token, request.middleware.metrics)
        except BaseException as exc:
            request.finish(exc)
            raise
        request.finish(None)

    def __del__(self) -> None:
        # PEP 3333: the server must close the body, and aiwatch records the request then. werkzeug's development
        # server skips the close when the client resets the connection. The request is left, with the moment it
        # was dropped, to the middleware's next call or the next scrape (aiwatch.deferred): a finalizer records
        # nothing and takes no lock.
        try:
            request = self._request
            if not request.finished and request.dropped_at is None:
                request.dropped_at = (_clock(), time.time_ns())
                middleware = request.middleware
                middleware._deferred.append(functools.partial(middleware._finish_dropped, request))
        except Exception:  # at interpreter exit, the module's globals may be gone
            pass


class _SizedClosingBody(_ClosingBody):
    """A response iterable that has a length (a list, a tuple), with that length: PEP 3333 servers set the
    ``Content-Length`` of a body that is a sequence of one item from ``len()`` (wsgiref, waitress), which a wrapper
    without one hid. Only for such bodies: waitress calls ``len()`` on any iterable that has ``__len__``."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._body)  # type: ignore[arg-type]
