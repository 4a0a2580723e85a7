"""The WSGI middleware behind a real server (werkzeug's threaded server on loopback): what PEP 3333 lets an app do
that a test client does not show."""

from __future__ import annotations

import gc
import http.client
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import make_server as make_wsgiref_server

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from werkzeug.serving import make_server

import aiwatch
from aiwatch.metrics import Metrics
from aiwatch.middleware.wsgi import AiwatchWSGIMiddleware
from aiwatch.timing import RequestRecorder
from tests.servers import wait_until


@contextmanager
def serving(app: Any) -> Iterator[http.client.HTTPConnection]:
    """A connection to ``app`` served by werkzeug's threaded development server (its port: ``conn.port``)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        yield conn
    finally:
        conn.close()
        server.shutdown()
        thread.join(10)


class _QuietWSGIRequestHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def wsgiref_serving(app: Any) -> Iterator[int]:
    """``app`` served by the standard library's wsgiref server, one request at a time; yields its port."""
    server = make_wsgiref_server("127.0.0.1", 0, app, handler_class=_QuietWSGIRequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def served_by(name: str, app: Any) -> Iterator[int]:
    """``app`` served by werkzeug's or wsgiref's server; yields its port."""
    if name == "wsgiref":
        with wsgiref_serving(app) as port:
            yield port
    else:
        with serving(app) as conn:
            yield conn.port


def size(registry: CollectorRegistry, direction: str, method: str = "GET") -> tuple[float | None, float | None]:
    labels = {"service": "svc", "route": "__unmatched__", "method": method}
    return (registry.get_sample_value(f"aiwatch_{direction}_size_bytes_count", labels),
            registry.get_sample_value(f"aiwatch_{direction}_size_bytes_sum", labels))


def test_bytes_written_through_write_count_as_the_response(registry: CollectorRegistry) -> None:
    """PEP 3333's ``write()`` callable sends body bytes outside the iterable; before, a response written that way
    was recorded as 0 bytes."""
    def legacy(environ: Any, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Length", "13")])
        write(b"hello ")
        write(b"world")
        return [b"!!"]

    with serving(aiwatch.instrument(legacy, registry=registry, service="svc")) as conn:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"hello world!!")
    wait_until(lambda: size(registry, "response")[0] == 1, what="the request recorded")  # at close(), after the body
    assert size(registry, "response") == (1.0, 13.0)


def test_a_chunked_request_body_counts_as_the_app_reads_it(registry: CollectorRegistry) -> None:
    """A chunked upload declares no size (no ``CONTENT_LENGTH``; werkzeug's server dechunks it and sets
    ``wsgi.input_terminated``). docs/http.md says such a body is counted as the app reads it; before, the WSGI
    middleware recorded it as 0 bytes."""
    def upload(environ: Any, start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        data = stream.readline() + stream.read(3) + b"".join(stream)
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return [data]

    body = b"first line\n" + b"x" * 5000
    with serving(aiwatch.instrument(upload, registry=registry, service="svc")) as conn:
        conn.request("POST", "/upload", body=iter([body[:7], body[7:]]), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, body)
    wait_until(lambda: size(registry, "request", "POST")[0] == 1, what="the request recorded")
    assert size(registry, "request", "POST") == (1.0, float(len(body)))


def test_a_request_whose_client_resets_the_connection_is_still_recorded(registry: CollectorRegistry) -> None:
    """werkzeug's development server, after the response, reads what is left of the request and only then closes
    the body (PEP 3333); when the client resets the connection, that read raises and the close is skipped. aiwatch
    records a WSGI request at the close, so it lost such requests (a CI run failed on one). Now the dropped body is
    recorded by the next request, and counted as unclosed."""
    def app(environ: Any, start_response: Any) -> list[bytes]:  # answers without reading the upload
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    mw = aiwatch.instrument(app, registry=registry, service="svc", route_resolver=lambda env: env["PATH_INFO"])
    upload = 200_000  # more than the server buffers while reading the headers: its drain reads the rest
    with serving(mw) as conn:
        with socket.create_connection(("127.0.0.1", conn.port), timeout=10) as raw:
            raw.sendall(b"POST /reset HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % upload
                        + b"x" * upload)
            answer = b""
            while not answer.endswith(b"\r\n\r\nok"):
                data = raw.recv(4096)
                assert data, f"the server closed before answering: {answer!r}"
                answer += data
            assert answer.startswith(b"HTTP/1.1 200")
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() resets

        def recorded() -> bool:
            conn.request("GET", "/next")
            conn.getresponse().read()
            return registry.get_sample_value("aiwatch_request_duration_seconds_count", {
                "service": "svc", "route": "/reset", "method": "POST", "status": "200",
                "traffic_class": "realtime"}) == 1

        wait_until(recorded, what="the reset request recorded by a later one")
    # the reset skipped the close: otherwise this test no longer shows the case it is about
    assert registry.get_sample_value("aiwatch_unclosed_responses_total", {"service": "svc"}) == 1


def test_a_one_item_body_keeps_the_content_length_wsgiref_infers(registry: CollectorRegistry) -> None:
    """PEP 3333 servers may set the Content-Length of a body that is a sequence of one item (wsgiref does, from
    ``len()`` of the iterable; so does waitress): before, the wrapped body had no length, and the response went out
    without a Content-Length. A body without a length still gets none."""
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"] if environ["PATH_INFO"] == "/list" else iter([b"hello"])

    wrapped = AiwatchWSGIMiddleware(app, service="svc", registry=registry)
    got = {}
    with wsgiref_serving(wrapped) as port:
        for path in ("/list", "/iterator"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", path)
            response = connection.getresponse()
            got[path] = (response.getheader("Content-Length"), response.read())
            connection.close()
    assert got == {"/list": ("5", b"hello"), "/iterator": (None, b"hello")}
    assert registry.get_sample_value("aiwatch_response_size_bytes_sum", {
        "service": "svc", "route": "__unmatched__", "method": "GET"}) == 10


def statuses(registry: CollectorRegistry, route: str) -> dict[str, float]:
    return {sample.labels["status"]: sample.value for family in registry.collect() for sample in family.samples
            if sample.name == "aiwatch_request_duration_seconds_count" and sample.labels["route"] == route}


def endless_stream(produced: list[int], through_write: bool = False) -> Any:
    """A WSGI app streaming ``?n`` chunks (default 1000, 10 ms apart), noting each one in ``produced``; as the body
    it returns, or ``through_write``: through PEP 3333's ``write()``, returning an empty body."""
    def chunks(environ: Any) -> Iterator[bytes]:
        for i in range(int(environ.get("QUERY_STRING") or 1000)):
            produced.append(i)
            yield b"chunk %d\n" % i
            time.sleep(0.01)

    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        if not through_write:
            return chunks(environ)
        for chunk in chunks(environ):
            write(chunk)
        return []

    return app


def leave_mid_stream(port: int, path: str) -> None:
    """GET ``path`` from the server at ``port``, read until its third chunk (``chunk 2``) and reset the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % path.encode())
        answer = b""
        while b"chunk 2\n" not in answer:
            data = raw.recv(4096)
            assert data, f"the server closed mid-stream: {answer!r}"
            answer += data
        assert answer.startswith(b"HTTP/1.")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() resets


@pytest.mark.parametrize("through_write", [False, True], ids=["body", "write"])
@pytest.mark.parametrize("server", ["werkzeug", "wsgiref"])
def test_a_client_gone_mid_stream_is_499(registry: CollectorRegistry, server: str, through_write: bool) -> None:
    """The client resets the connection after three chunks of a stream: the server's next write fails and it closes
    the body before its end (PEP 3333). Before, that request was recorded with the app's 200, as if delivered; the
    ASGI middleware records such a request as 499 (the client went away), and now so does the WSGI one. (gunicorn:
    tests/http/test_http_e2e.py.) A stream sent through ``write()`` gets the server's OSError in the app, which
    raises it: it was recorded as the app's failure, 500."""
    produced: list[int] = []
    mw = aiwatch.instrument(endless_stream(produced, through_write), registry=registry, service="svc",
                            route_resolver=lambda environ: environ["PATH_INFO"])
    with served_by(server, mw) as port:
        leave_mid_stream(port, "/gone")
        wait_until(lambda: statuses(registry, "/gone") != {}, what="the request recorded")
        # the server stopped the stream: the client did leave before the end
        assert statuses(registry, "/gone") == {"499": 1.0} and len(produced) < 1000

        # a stream the client reads to its end keeps its status
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/whole?5")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"".join(b"chunk %d\n" % i for i in range(5)))
        connection.close()
        wait_until(lambda: statuses(registry, "/whole") != {}, what="the request recorded")
        assert statuses(registry, "/whole") == {"200": 1.0}


def test_a_generator_dropped_mid_phase_and_collected_in_another_thread_ends_its_phase_there_alone(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """The app reads one item of a token stream that holds a phase across its yields and drops it (a ``break``);
    the generator is in a reference cycle, so the garbage collector closes it later, in whatever thread collects:
    here the test's, in a request of its own with a phase of the same name open. Before, the dropped phase's end
    took that open phase for its own (ending it there, in no request), the test's phase then exited "out of order",
    and the dropped phase's span never ended. Now the dropped phase's span ends, its time is in no request (its
    request was recorded; it is counted as the phase's error, saying to close the generator), and the collecting
    thread's phase is its request's."""
    def app(environ: Any, start_response: Any) -> list[bytes]:
        cycle: dict[str, Any] = {}

        def tokens() -> Iterator[bytes]:
            assert cycle  # the generator refers to the dict that refers to it
            with aiwatch.phase("generate"):
                for i in range(10):
                    yield b"token %d" % i

        cycle["tokens"] = stream = tokens()
        first = next(stream)
        start_response("200 OK", [("Content-Length", str(len(first)))])
        return [first]

    mw = aiwatch.instrument(app, metrics=metrics, service="svc", tracer_provider=provider,
                            route_resolver=lambda environ: environ["PATH_INFO"])
    collector = RequestRecorder(metrics, service="collector")
    gc.disable()  # the generator is collected below, not by a collection in the server's thread
    try:
        with serving(mw) as conn:
            conn.request("GET", "/tokens")
            assert conn.getresponse().read() == b"token 0"
            wait_until(lambda: statuses(metrics.registry, "/tokens") == {"200": 1.0}, what="the request recorded")
        tl = collector.begin()
        with aiwatch.phase("generate"):
            assert gc.collect() > 0
        collector.finish(tl, "/collect", "GET", "200")
    finally:
        gc.enable()
    assert sorted(span.name for span in exporter.get_finished_spans()) == ["GET /tokens", "generate"]
    assert metrics.registry.get_sample_value("aiwatch_phase_duration_seconds_count", {
        "service": "collector", "model": "", "model_version": "", "phase": "generate"}) == 1
    assert metrics.registry.get_sample_value("aiwatch_phase_duration_seconds_count", {
        "service": "svc", "model": "", "model_version": "", "phase": "generate"}) is None
    assert metrics.registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "phase"}) == 1
