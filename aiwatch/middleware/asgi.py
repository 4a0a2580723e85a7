"""Pure ASGI middleware (Starlette, FastAPI, any ASGI 3 app) that records the latency split of every HTTP request.

    from fastapi import FastAPI
    from aiwatch.middleware.asgi import AiwatchMiddleware

    app = FastAPI()
    app.add_middleware(AiwatchMiddleware, service="recommender")

Per request it records ``aiwatch_request_duration_seconds`` (route template, method, status) timed to the last
body chunk, ``http.response.pathsend``, or the last ``http.response.trailers`` message of a response that announced
trailers (so streaming responses count in full and Starlette background tasks, which run after it, do not), the
request's phases and its ``overhead``, keeps ``aiwatch_requests_in_flight``, and adds a ``Server-Timing`` header
with the phases and the total up to the moment the headers are sent (at most
:data:`~aiwatch.servertiming.MAX_LENGTH` characters: phase entries past it are left out, the overhead and total
kept, and the cut counted under ``component="server_timing_header"``). Per-request state lives in closures and
contextvars, never on ``self``. A request whose response the server could not send because the client went away
(its ``send`` raised an ``OSError``, as ASGI spec 2.4 asks servers to, or was cancelled; or its ``receive`` said
``http.disconnect`` before the response ended, which is all that servers of older spec versions say: uvicorn 0.55
(2.3) and Hypercorn 0.18 (2.1) drop what the app sends once the client left, without raising) is recorded with
status ``499`` (:data:`~aiwatch.middleware._common.CLIENT_CLOSED_STATUS`), not as a server error; one whose message
the server refused (any other exception from ``send``) is a ``500``. So a client that leaves before the response
while the app does not read ``receive`` (a plain endpoint never does) is recorded with the app's status on those
servers (docs/http.md says what to read instead). An exception from ``send`` goes on to the app and the server
untouched. An aiwatch span is ended when the app returns, with the time its response ended: an exception
the app raises after its response (an error middleware inside aiwatch sent the 500, then re-raised) is on the span.
The first call on an event loop (the lifespan startup, else the first request) starts that loop's delay sampler
(``aiwatch_event_loop_delay_seconds``, :mod:`aiwatch.eventloop`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from aiwatch.contentlength import content_length
from aiwatch.exclusion import ExcludedUrls, asgi_url, check_request_path, exclude_path_set
from aiwatch.flags import flag
from aiwatch.headercapture import HeaderCapture
from aiwatch.metrics import Metrics
from aiwatch.middleware._common import (
    CLIENT_CLOSED_STATUS,
    OTHER_METHOD,
    UNMATCHED_ROUTE,
    begin_on_new_span,
    capture_request_headers,
    count_header_cut,
    is_fastapi,
    put_captured_headers,
    stored_route,
    takes_captured_headers,
)
from aiwatch.middleware.routes import litestar_route, starlette_route
from aiwatch.recording import resolve_recorder
from aiwatch.safety import call_hook, logger, record_error, resolve_route, sync_hook
from aiwatch.semconv import (
    end_http_server_span,
    http_server_attributes,
    known_http_methods,
    record_http_server_error,
)
from aiwatch.servertiming import HEADER
from aiwatch.streaming import ChunkTimer
from aiwatch.timing import RequestRecorder, RequestTimeline
from aiwatch.tracing import (
    MAX_PREFIXED,
    CarrierFields,
    add_repeated,
    carrier_fields,
    deactivate,
    extract_context,
    span_in_progress,
)
from aiwatch.traffic import TrafficClasses

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["UNMATCHED_ROUTE", "AiwatchMiddleware", "starlette_route"]

_SERVER_TIMING = HEADER.encode("latin-1")
_STATUS = {code: str(code) for code in range(100, 600)}
_clock = time.perf_counter


def _pathsend_size(headers: Any, message: Message, metrics: Metrics) -> int:
    """The body size of an ``http.response.pathsend`` response: its declared ``Content-Length``, else the size of
    the file it names (0 if neither is known). Never raises."""
    try:
        for name, value in headers or ():
            if name.lower() == b"content-length":
                declared = content_length(value)
                if declared is not None:
                    return declared
                break
        return os.stat(message["path"]).st_size
    except OSError:  # no such file: the server's to answer, not aiwatch's failure
        return 0
    except Exception as exc:
        record_error("metrics", exc, metrics)
        return 0


def app_path(path: str, root_path: Any) -> str:
    """``path`` without ``root_path``, as Starlette routes it: ASGI puts the root path in ``path`` (uvicorn's and
    hypercorn's ``--root-path``, a Starlette ``Mount``), so the app's own ``/metrics`` arrives as
    ``/api/metrics``. ``path`` itself when it is not under ``root_path`` (a server of an older spec left it out)."""
    if not root_path or not isinstance(root_path, str) or not path.startswith(root_path):
        return path
    rest = path[len(root_path):]
    return rest if rest.startswith("/") else path


def _client_gone(exc: BaseException) -> bool:
    """Whether ``send`` raising ``exc`` means the client went away: ASGI spec 2.4 has servers raise an ``OSError``
    then (for HTTP, none of uvicorn 0.55, Hypercorn 0.18 and granian does yet: uvicorn's ``ClientDisconnected`` is
    for WebSockets), and a cancelled send is the server dropping the request. Any other
    exception is the server refusing the app's message (a body before its start, more bytes than the
    Content-Length): a server failure, which the client sees as a 500 or a cut-short response."""
    return isinstance(exc, OSError) or not isinstance(exc, Exception)


class AiwatchMiddleware:
    """ASGI middleware; see the module docstring. All arguments are keyword-only.

    - ``recorder`` or the recorder options ``service``, ``model``, ``registry`` / ``metrics``,
      ``tracer_provider`` and ``max_label_values``: where and under which labels requests are recorded, as for
      every integration (:mod:`aiwatch.recording`; ``aiwatch.instrument`` passes a ``recorder`` so that phases
      outside requests share it).
    - ``server_timing``: add the ``Server-Timing`` response header (default on).
    - ``metrics_path``: serve ``/metrics`` from this path, untimed (``None`` to disable).
    - ``exclude_paths``: paths passed through untimed (health checks).
    - ``excluded_urls``: comma-separated regexes, each searched in the request's full URL (``scheme://host/path``),
      as OpenTelemetry's ``excluded_urls``: matching requests are neither timed nor traced. Default: the
      environment, ``OTEL_PYTHON_ASGI_EXCLUDED_URLS`` or else ``OTEL_PYTHON_EXCLUDED_URLS``, plus the regex in
      ``AIWATCH_EXCLUDED_URLS`` (:mod:`aiwatch.exclusion`).
    - ``route_resolver``: ``scope -> route template or None`` for non-Starlette apps. Without one, the route is the
      template stored in ``scope["aiwatch.route"]`` (Django's :mod:`aiwatch.middleware.django` stores it there, and
      so may any app), else the one Starlette's, FastAPI's or Litestar's router chose.
    - ``on_request_end``: hook called with ``(scope, timeline, status)`` after each request; failures are counted.
    """

    def __init__(self, app: ASGIApp, *, service: str | None = None, model: str = "",
                 registry: CollectorRegistry | None = None, metrics: Metrics | None = None,
                 tracer_provider: Any = None, server_timing: bool = True, metrics_path: str | None = "/metrics",
                 exclude_paths: Iterable[str] = (), route_resolver: Callable[[Scope], str | None] | None = None,
                 on_request_end: Callable[[Scope, RequestTimeline, str], None] | None = None,
                 max_label_values: int | None = None, recorder: RequestRecorder | None = None,
                 slow_threshold: float | None = None, excluded_urls: str | ExcludedUrls | None = None,
                 model_version: str = "", traffic_classes: TrafficClasses | None = None,
                 payload_sizes: bool = True) -> None:
        server_timing = flag(server_timing, "server_timing")
        payload_sizes = flag(payload_sizes, "payload_sizes")
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
                              else ExcludedUrls.from_env("ASGI") if excluded_urls is None
                              else ExcludedUrls.parse(excluded_urls))
        self.route_resolver = sync_hook("route_resolver", route_resolver)
        self.on_request_end = sync_hook("on_request_end", on_request_end)
        self.payload_sizes = payload_sizes
        #: the methods labelled as they are (any other is ``_OTHER``): $OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS
        self.known_methods = known_http_methods()
        #: the headers put on aiwatch's SERVER spans: $OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_*
        self.header_capture = HeaderCapture.server()
        self._metrics_app: ASGIApp | None = None
        #: FastAPI's built-in telemetry (0.136+) starts its own SERVER span from the request's headers alone, so
        #: behind aiwatch's span it makes a second one, in another trace unless the caller sent one: looked for
        #: at the response's start until seen once (then said in a warning)
        self._look_for_inner_server_span = is_fastapi(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.recorder.watch_loop()
        if scope["type"] != "http":
            await self.app(scope, receive, _closing_logs_at_shutdown(send) if scope["type"] == "lifespan" else send)
            return
        path = scope.get("path", "")
        root_path = scope.get("root_path", "")
        local = app_path(path, root_path) if root_path else path
        if path == self.metrics_path or local == self.metrics_path:
            await self._serve_metrics(scope, receive, send)
            return
        if (path in self.exclude_paths or (local is not path and local in self.exclude_paths)
                or (self.excluded_urls.active and self._excluded(scope))):
            await self.app(scope, receive, send)
            return

        recorder = self.recorder
        raw_method = scope.get("method", "GET")
        method = raw_method if raw_method in self.known_methods else OTHER_METHOD
        tracer = recorder.tracing.tracer()
        token = None
        if tracer is None:
            tl = recorder.begin_with(None, method)
        else:
            tl, token = self._begin_traced(tracer, scope, raw_method, method)
        code: int | None = None
        status = "500"
        finished = False
        send_failed = False
        client_left = False  # the server's receive said http.disconnect before the response ended
        ending = False  # the message that ends the response is being sent
        heard_end = False  # ... and the server's receive said http.disconnect meanwhile: the response is complete
        add_timing = self.server_timing
        sizes = self.payload_sizes
        capture_response = self.header_capture.response is not None
        # one pass over the request headers: the traffic class, and the body's size when it is declared
        traffic = recorder.traffic
        wanted = traffic.header_bytes
        named: list[bytes] | None = None
        length: bytes | None = None
        chunked = False
        for name, value in scope.get("headers") or ():
            if name == wanted:
                if named is None:
                    named = [value]
                else:
                    named.append(value)
            elif sizes and name == b"content-length":
                length = value
            elif sizes and name == b"transfer-encoding":
                chunked = True
        if named is not None:
            tl.traffic_class = traffic.from_headers(named)
        if traffic.has_routes:  # for the class its outgoing calls forward, once the app has routed it
            tl.route_of = lambda: self._route(scope, root_path)
        declared = content_length(length) if length is not None else None
        received: list[int] | None = None
        if declared is None and (chunked or length is not None):
            # a body of unknown size, or a Content-Length that is no count of bytes (+7, 1_000): count what the
            # app reads (receive_wrapper)
            received = [0]
        sent = 0
        chunks: ChunkTimer | None = None
        response_headers: Any = None
        trailers = False  # the response ends with trailers (ASGI's HTTP trailers extension), not its last body
        # the span's end (ns since the epoch) when the response was sent before the app returned: the span is ended
        # then, but only once the app returns, so that an exception it raises after its response is still on it
        span_end: int | None = None

        def finish(error: BaseException | None, keep_span_open: bool = False) -> None:
            nonlocal finished, status, span_end
            finished = True
            if send_failed or client_left:
                status = CLIENT_CLOSED_STATUS
            elif error is not None:
                status = "500"
            route = self._route(scope, root_path)
            if tl.span is not None and (tl.owns_span or code is None):  # a borrowed one: at the response's start
                self._describe(tl, method, route, code, error)
            end_span = True
            if keep_span_open and tl.span is not None and tl.owns_span:
                end_span, span_end = False, time.time_ns()
            if sizes:
                recorder.finish(tl, route or UNMATCHED_ROUTE, method, status, error,
                                request_bytes=received[0] if received is not None else declared or 0,
                                response_bytes=sent, end_span=end_span)
            else:
                recorder.finish(tl, route or UNMATCHED_ROUTE, method, status, error, end_span=end_span)
            if self.on_request_end is not None:
                call_hook("hook", self.on_request_end, self.metrics, scope, tl, status)

        async def receive_wrapper() -> Message:
            # a server of ASGI spec < 2.4 may drop what the app sends once the client left, without raising (uvicorn's
            # HTTP/2 and Hypercorn after a RST_STREAM): then only receive tells. Once the response ended, servers
            # answer http.disconnect too, and that is no client gone: Hypercorn answers it from inside the send of
            # the last message, and a task listening for it (Starlette's StreamingResponse) may run before that send
            # returns, so a disconnect heard once that send began is the response's end.
            nonlocal client_left, heard_end
            message = await receive()
            if not finished:
                try:
                    if message.get("type") == "http.disconnect":
                        if ending:
                            heard_end = True
                        else:
                            client_left = True
                    elif received is not None:
                        body = message.get("body")
                        if body:
                            received[0] += len(body)
                except Exception as exc:  # a message that is no mapping: the app's to find out, not aiwatch's
                    record_error("metrics", exc, self.metrics)
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, send_failed, code, sent, chunks, response_headers, trailers, ending
            kind = message["type"]
            last = False  # the message that ends the response: the request is recorded once it is sent
            if kind == "http.response.start":
                code = message.get("status", 500)
                response_headers = message.get("headers")
                trailers = message.get("trailers", False) is True
                try:
                    status = _STATUS.get(code) or str(code)
                except Exception as exc:  # a status that is unhashable or has no text: no server sends it
                    status = "500"
                    record_error("metrics", exc, self.metrics)
                if tl.span is not None and not tl.owns_span:  # its owner may end it with the last body chunk
                    self._describe(tl, method, self._route(scope, root_path), code, None)
                elif self._look_for_inner_server_span and tl.owns_span:
                    self._warn_of_inner_server_span(tl)
                if add_timing:
                    try:
                        value, cut = tl.server_timing()
                        entry = (_SERVER_TIMING, value.encode("latin-1"))
                        message = dict(message)  # a copy: the app's message and header list stay untouched
                        headers = message.get("headers")
                        message["headers"] = [*headers, entry] if headers else [entry]
                        if cut is not None:
                            count_header_cut(cut, self.metrics)
                    except Exception as exc:
                        record_error("server_timing", exc, self.metrics)
                if capture_response and takes_captured_headers(tl):  # the headers as sent
                    put_captured_headers(tl.span, self.header_capture.asgi_response_attributes,
                                         message.get("headers"), self.metrics)
            elif kind == "http.response.body":
                body = message.get("body")
                if sizes and body:
                    sent += len(body)
                if message.get("more_body", False):
                    if body:  # a stream's chunk (its headers went before: this is the body's own first byte)
                        if chunks is None:
                            chunks = ChunkTimer(recorder, tl.start, lambda: self._route(scope, root_path)
                                                or UNMATCHED_ROUTE, tl.trace_id)
                        chunks.chunk(_clock())
                elif not finished:
                    if chunks is not None and body:
                        chunks.chunk(_clock())
                    last = not trailers
            elif kind == "http.response.trailers":  # with trailers, the last trailers message ends the response
                last = not finished and not message.get("more_trailers", False)
            elif kind == "http.response.pathsend" and not finished:
                # the zero-copy extension (Starlette's FileResponse, when the server offers it): the file is the
                # whole body, and this message ends the response like a last body message
                if sizes:
                    sent += _pathsend_size(response_headers, message, self.metrics)
                last = True
            if last:
                ending = True
            try:
                await send(message)
            except BaseException as exc:
                # a send of the last message cancelled once the server said the response was complete: the app's
                # listener for http.disconnect heard that and cancelled the send (Starlette's StreamingResponse on
                # Hypercorn); the client has its response
                send_failed = _client_gone(exc) and not (last and heard_end and not isinstance(exc, Exception))
                raise
            if last:
                finish(None, keep_span_open=True)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except BaseException as exc:
            if not finished:
                finish(exc)
            elif span_end is not None:  # raised after its response (an error middleware inside aiwatch sent a 500)
                self._end_span(tl, span_end, exc)
                span_end = None
            raise
        finally:
            if span_end is not None:
                self._end_span(tl, span_end, None)
            if token is not None:
                deactivate(token)
        if not finished:  # the app returned without completing a response
            finish(None)

    def _warn_of_inner_server_span(self, tl: RequestTimeline) -> None:
        """Warn, once, when the FastAPI app aiwatch wraps opened a SERVER span of its own for the request: at the
        response's start, FastAPI's span is current."""
        try:
            current = span_in_progress(SpanKind.SERVER)
            if current is None or current is tl.span:
                return
            self._look_for_inner_server_span = False
            same_trace = current.get_span_context().trace_id == tl.span.get_span_context().trace_id
            logger.warning(
                "aiwatch: the FastAPI app AiwatchMiddleware wraps traces requests itself (FastAPI's built-in "
                "telemetry), so each request has two SERVER spans, %s: FastAPI reads the caller's trace context "
                "from the request's headers only, not aiwatch's span. Use aiwatch.instrument(app) instead (aiwatch "
                "then runs inside FastAPI and uses FastAPI's span), or turn FastAPI's tracing off with "
                "FastAPI(telemetry={'tracing': False}). This is said once.",
                "side by side under the caller's" if same_trace else "in two traces")
        except Exception as exc:
            record_error("tracing", exc, self.metrics)

    def _route(self, scope: Scope, root_path: str) -> str | None:
        resolver = self.route_resolver
        if resolver is not None:
            return resolve_route(resolver, self.metrics, scope)
        try:
            return stored_route(scope) or starlette_route(scope, root_path) or litestar_route(scope)
        except Exception as exc:
            record_error("route", exc, self.metrics)
            return None

    def _describe(self, tl: RequestTimeline, method: str, route: str | None, code: int | None,
                  error: BaseException | None) -> None:
        try:
            end_http_server_span(tl.span, tl.owns_span, method, route, code, error)
        except Exception as exc:
            record_error("tracing", exc, self.metrics)

    def _end_span(self, tl: RequestTimeline, end_time: int, error: BaseException | None) -> None:
        """End the span of a request whose response was sent before the app returned, at the time it was sent,
        with the exception the app raised after it, if any."""
        try:
            if error is not None:
                record_http_server_error(tl.span, error)
            self.recorder.tracing.end_server_span(tl.span, end_time)
        except Exception as exc:
            record_error("tracing", exc, self.metrics)

    def _begin_traced(self, tracer: Any, scope: Scope, raw_method: str, method: str) -> tuple[RequestTimeline, Any]:
        """Start a traced request: on the SERVER span OpenTelemetry's middleware in front already started, else on
        a new one (continuing the caller's trace, read by the global propagator) made current while the app runs.
        Returns the timeline and the token that :func:`~aiwatch.tracing.deactivate` takes (``None``: nothing was made
        current)."""
        recorder = self.recorder
        try:
            current = span_in_progress(SpanKind.SERVER)
            if current is not None:
                tl = recorder.begin_in_span(current)
                if self.header_capture.request is not None and takes_captured_headers(tl):
                    put_captured_headers(tl.span, self.header_capture.asgi_request_attributes,
                                         scope.get("headers"), self.metrics)
                return tl, None
            # one pass over the headers: the first Host, and the trace context's headers (those the global
            # propagator reads; a tuple: membership by ``==``, as a header name need not be hashable)
            fields = carrier_fields()
            trace_headers = fields.raw
            prefix = fields.prefix_raw  # baggage families (uberctx-): None unless such a propagator is global
            prefixed: set[bytes] | None = None  # the names taken, a repeated one counted once (as gRPC's)
            host = None
            user_agent = None
            found: list[tuple[Any, Any]] | None = None
            for item in scope.get("headers") or ():
                name = item[0]
                if name == b"host":
                    if host is None:
                        host = item[1].decode("latin-1")
                    continue
                if name == b"user-agent":
                    if user_agent is None:
                        user_agent = item[1].decode("latin-1")
                    continue
                if name not in trace_headers:
                    if prefix is None or not isinstance(name, bytes) or not name.startswith(prefix):
                        continue
                    if prefixed is None:
                        prefixed = {name}
                    elif name not in prefixed:
                        if len(prefixed) == MAX_PREFIXED:
                            continue
                        prefixed.add(name)
                if found is None:
                    found = [item]
                else:
                    found.append(item)
            parent = self._parent_context(found, fields) if found is not None else None
            server = scope.get("server")
            client = scope.get("client")
            attributes = http_server_attributes(
                raw_method, scope.get("scheme", "http"), scope.get("path", ""),
                (scope.get("query_string") or b"").decode("latin-1"), host,
                (server[0], server[1]) if server else None, scope.get("http_version"), self.known_methods,
                client[0] if client else None, user_agent)
        except Exception as exc:
            record_error("tracing", exc, self.metrics)
            return recorder.begin_with(None, method), None
        if self.header_capture.request is not None:
            attributes.update(capture_request_headers(self.header_capture.asgi_request_attributes,
                                                      scope.get("headers"), self.metrics))
        return begin_on_new_span(recorder, tracer, method, parent, attributes, self.metrics)

    def _excluded(self, scope: Scope) -> bool:
        try:
            return self.excluded_urls.excludes(asgi_url(scope))
        except Exception as exc:
            record_error("route", exc, self.metrics)
            return False

    @staticmethod
    def _parent_context(headers: list[tuple[Any, Any]], fields: CarrierFields) -> Any:
        """The caller's context from the request's headers that the global propagator reads (``fields``: W3C
        ``traceparent``, ``tracestate`` and ``baggage`` by default; a repeated one read as OpenTelemetry reads it:
        :func:`~aiwatch.tracing.extract_context`); ``None`` when they cannot be read."""
        try:
            carrier: dict[str, str] = {}
            for k, v in headers:
                if not isinstance(v, (bytes, bytearray)):  # malformed (ASGI servers send bytes): it alone left out
                    continue
                name = k.decode("latin-1")
                found = carrier.get(name)
                if found is None:
                    carrier[name] = v.decode("latin-1")
                else:
                    add_repeated(carrier, name, v.decode("latin-1"), found)
            return extract_context(carrier, fields) if carrier else None
        except Exception:
            return None

    async def _serve_metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._metrics_app is None:
            from aiwatch.exposition import make_asgi_app

            try:
                self._metrics_app = make_asgi_app(self.metrics.registry)
            except Exception as exc:  # a PROMETHEUS_MULTIPROC_DIR that is a file: a 503 saying so, tried again next
                record_error("metrics", exc, self.metrics)
                body = f"aiwatch cannot serve /metrics: {exc}\n".encode()
                await send({"type": "http.response.start", "status": 503,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self._metrics_app(scope, receive, send)


def _server_will_kill_process() -> bool:
    """The server serving this app caught a SIGTERM that it will raise again once it has shut down: uvicorn (its
    CLI, ``--workers``, ``--reload``'s child, gunicorn's ``UvicornWorker``) does so with the handler it found at its
    start restored, mostly the default one: the process is killed, and the ``atexit`` functions never run. uvicorn
    keeps the signals it caught in its handler's server. A SIGINT raised again is a KeyboardInterrupt, which runs
    them (or is caught, and the process goes on)."""
    handler = signal.getsignal(signal.SIGTERM)
    caught = getattr(getattr(handler, "__self__", None), "_captured_signals", None)
    return isinstance(caught, list) and signal.SIGTERM in caught


def _closing_logs_at_shutdown(send: Send) -> Send:
    """``send`` for the lifespan: when the app's shutdown is over and the server will kill the process without
    running ``atexit`` (:func:`_server_will_kill_process`), do what ``atexit`` would: close the prediction logs
    (uvicorn's SIGTERM lost every record queued and left the open files to a recovery) and count the drift monitors'
    pending rows. Otherwise (a test client, a server that exits normally) nothing: the app may start again here."""
    async def shutting_down(message: Message) -> None:
        if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            try:
                if _server_will_kill_process():
                    logs = sys.modules.get("aiwatch.feedback.log")  # not imported: no log to close
                    if logs is not None:
                        logs.close_all()
                    monitors = sys.modules.get("aiwatch.drift.monitor")
                    if monitors is not None:
                        monitors.flush_all()
            except Exception as exc:
                record_error("metrics", exc)
        await send(message)
    return shutting_down
