"""httpx (sync, async) and requests integrations against a real loopback peer."""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
import time
import weakref
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from urllib3.util.retry import Retry

import aiwatch.client
from aiwatch._optional import MissingExtraError
from aiwatch.metrics import Metrics
from aiwatch.timing import RequestRecorder
from tests.hostile_numbers import BAD_SECONDS
from tests.http.peer import peer


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with peer() as url:
        yield url


def peer_label(base: str) -> str:
    return base.removeprefix("http://")


def client_count(registry: CollectorRegistry, peer: str, route: str, status: str) -> float | None:
    return registry.get_sample_value("aiwatch_client_request_duration_seconds_count",
                                     {"service": "gw", "peer": peer, "route": route, "status": status, "phase": ""})


def network(registry: CollectorRegistry, peer: str, suffix: str = "count") -> float | None:
    return registry.get_sample_value(f"aiwatch_network_duration_seconds_{suffix}",
                                     {"service": "gw", "peer": peer, "phase": ""})


def test_httpx_sync_records_client_and_network_time(base: str, registry: CollectorRegistry) -> None:
    with aiwatch.client.instrument_httpx(httpx.Client(), service="gw", registry=registry) as client:
        resp = client.get(f"{base}/ok", extensions={aiwatch.client.ROUTE_EXTENSION: "/ok"})
        assert resp.status_code == 200
        client.get(f"{base}/missing")
    p = peer_label(base)
    assert client_count(registry, p, "/ok", "200") == 1
    assert client_count(registry, p, "__unmatched__", "404") == 1  # no template given: never the URL path
    assert network(registry, p) == 2


def test_network_time_is_exactly_client_minus_server(base: str, registry: CollectorRegistry) -> None:
    with aiwatch.client.instrument_httpx(httpx.Client(), service="gw", registry=registry, peer="inference") as c:
        for _ in range(3):
            c.get(f"{base}/tiny")  # the peer reports 1 µs: no call can be faster, so none is clamped
    client_sum = registry.get_sample_value("aiwatch_client_request_duration_seconds_sum",
                                           {"service": "gw", "peer": "inference", "route": "__unmatched__",
                                            "status": "200", "phase": ""})
    net = network(registry, "inference", "sum")
    assert registry.get_sample_value("aiwatch_network_clamped_total", {"service": "gw", "peer": "inference"}) is None
    assert client_sum is not None and net is not None
    assert net == pytest.approx(client_sum - 3 * 0.000001, abs=1e-9)


async def test_httpx_async_records_and_uses_the_route_context(base: str, registry: CollectorRegistry) -> None:
    client = aiwatch.client.instrument_httpx(httpx.AsyncClient(), service="gw", registry=registry)
    async with client:
        with aiwatch.client.route("/users/{id}"):
            assert (await client.get(f"{base}/ok")).status_code == 200
    assert client_count(registry, peer_label(base), "/users/{id}", "200") == 1
    assert network(registry, peer_label(base)) == 1


def test_requests_session_records_and_keeps_retries(base: str, registry: CollectorRegistry) -> None:
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(max_retries=3))
    aiwatch.client.instrument_requests(session, service="gw", registry=registry,
                                       route_resolver=lambda method, url: "/resolved")
    aiwatch.client.instrument_requests(session, service="gw", registry=registry)  # no-op the second time
    adapter = session.get_adapter(f"{base}/ok")
    assert isinstance(adapter, aiwatch.client.AiwatchHTTPAdapter) and adapter.max_retries.total == 3
    with session:
        assert session.get(f"{base}/ok").json()["host"]
    assert client_count(registry, peer_label(base), "/resolved", "200") == 1
    assert network(registry, peer_label(base)) == 1


def test_a_client_route_resolver_that_returns_no_str_leaves_the_call_unmatched(base: str,
                                                                                registry: CollectorRegistry) -> None:
    session = requests.Session()
    aiwatch.client.instrument_requests(session, service="gw", registry=registry, route_resolver=lambda method, url: 7)
    with session:
        assert session.get(f"{base}/ok").status_code == 200
    assert client_count(registry, peer_label(base), "__unmatched__", "200") == 1
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "route"}) == 1


def test_peer_without_server_timing_records_no_network_time(base: str, registry: CollectorRegistry) -> None:
    with aiwatch.client.instrument_requests(requests.Session(), service="gw", registry=registry) as s:
        s.get(f"{base}/none")
    assert client_count(registry, peer_label(base), "__unmatched__", "200") == 1
    assert network(registry, peer_label(base)) is None


def test_server_time_above_client_time_is_clamped_and_counted(base: str, registry: CollectorRegistry) -> None:
    with aiwatch.client.instrument_httpx(httpx.Client(), service="gw", registry=registry) as client:
        client.get(f"{base}/huge")
    p = peer_label(base)
    assert network(registry, p, "sum") == 0.0 and network(registry, p) == 1
    assert registry.get_sample_value("aiwatch_network_clamped_total", {"service": "gw", "peer": p}) == 1


def test_connection_error_is_recorded_with_its_name_and_raised(registry: CollectorRegistry) -> None:
    from tests.servers import free_port

    port = free_port()  # nothing listens there
    with aiwatch.client.instrument_httpx(httpx.Client(), service="gw", registry=registry) as client, \
            pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/x")
    assert client_count(registry, f"127.0.0.1:{port}", "__unmatched__", "ConnectError") == 1


def test_trace_context_is_injected_with_a_client_span(base: str, registry: CollectorRegistry, provider: TracerProvider,
                                                      exporter: InMemorySpanExporter) -> None:
    with aiwatch.client.instrument_httpx(httpx.Client(), service="gw", registry=registry,
                                         tracer_provider=provider) as client:
        received = client.get(f"{base}/ok").json()
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.CLIENT
    assert received["traceparent"].split("-")[1:3] == [f"{span.context.trace_id:032x}",
                                                       f"{span.context.span_id:016x}"]


def test_inside_a_server_request_the_server_span_is_propagated(base: str, metrics: Metrics, provider: TracerProvider,
                                                               exporter: InMemorySpanExporter) -> None:
    server = RequestRecorder(metrics, service="gw", tracer_provider=provider)
    tl = server.begin("GET")
    with aiwatch.client.instrument_requests(requests.Session(), service="gw", metrics=metrics) as s:
        received = s.get(f"{base}/ok").json()
    server.finish(tl, "/proxy", "GET", "200")
    (server_span,) = exporter.get_finished_spans()
    assert received["traceparent"].split("-")[1:3] == [f"{server_span.context.trace_id:032x}",
                                                       f"{server_span.context.span_id:016x}"]


def test_instrument_helpers_reject_other_objects() -> None:
    with pytest.raises(TypeError, match=r"httpx\.Client"):
        aiwatch.client.instrument_httpx(object())
    with pytest.raises(TypeError, match=r"requests\.Session"):
        aiwatch.client.instrument_requests(object())  # type: ignore[arg-type]


@pytest.mark.parametrize(("dependency", "module"), [("httpx", "aiwatch.client.httpx_client"),
                                                    ("requests", "aiwatch.client.requests_client")])
def test_missing_dependency_names_the_extra(dependency: str, module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, dependency, None)  # makes `import dependency` fail
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(MissingExtraError, match=r'pip install "aiwatch\[http\]"'):
        importlib.import_module(module)


def test_importing_the_integrations_imports_no_optional_dependency() -> None:
    import subprocess

    from tests.servers import python_env

    code = ("import sys, aiwatch, aiwatch.client, aiwatch.instrument_app, aiwatch.middleware.asgi, "
            "aiwatch.middleware.wsgi, aiwatch.gunicorn, aiwatch.exposition\n"
            "print(sorted(m for m in ('httpx', 'requests', 'flask', 'fastapi', 'starlette', 'werkzeug', "
            "'gunicorn', 'uvicorn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=python_env()).stdout
    assert out.strip() == "[]"


def client_bytes(registry: CollectorRegistry, peer: str, direction: str) -> float | None:
    return registry.get_sample_value("aiwatch_client_bytes_total",
                                     {"service": "gw", "peer": peer, "direction": direction})


def test_bytes_moved_per_peer_requests_and_httpx(base: str) -> None:
    payload = b"p" * 3000
    for kind in ("requests", "httpx"):
        registry = CollectorRegistry()
        if kind == "requests":
            session = aiwatch.client.instrument_requests(requests.Session(), service="gw", registry=registry,
                                                         peer="ranker")
            received = len(session.post(f"{base}/ok", data=payload).content)
        else:
            with aiwatch.client.instrument_httpx(httpx.Client(), service="gw", registry=registry,
                                                 peer="ranker") as client:
                received = len(client.post(f"{base}/ok", content=payload).content)
        assert client_bytes(registry, "ranker", "sent") == 3000, kind
        assert client_bytes(registry, "ranker", "received") == received > 0, kind


@pytest.mark.parametrize("length", [pytest.param("-5", id="-5"), pytest.param("9" * 400, id="400-digits"),
                                    pytest.param(str(2**53 + 1), id="2**53+1"), pytest.param("+7", id="plus"),
                                    pytest.param("1_000", id="underscore")])
def test_a_content_length_that_is_no_count_of_bytes_is_refused_and_the_received_bytes_kept(
        length: str, registry: CollectorRegistry) -> None:
    # before: the app's Content-Length of -5 made the sent counter raise and 400 digits overflow (each a metrics
    # error) and the call's received bytes were lost with it; 2**53 + 1 was counted, and int() read +7 as 7 and
    # 1_000 as 1000. Then each was refused as aiwatch's error; it is no count of bytes, so the bytes sent are
    # unknown, as for a stream of unknown size
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"12345")

    client = aiwatch.client.instrument_httpx(httpx.Client(transport=httpx.MockTransport(answer)), service="gw",
                                             registry=registry, peer="ranker")
    with client:
        client.post("http://ranker/p", content=b"abc", headers={"content-length": length})
        client.post("http://ranker/p", content=b"abc")
    assert client_bytes(registry, "ranker", "sent") == 3
    assert client_bytes(registry, "ranker", "received") == 10
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "client"}) == 0
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "metrics"}) == 0


@pytest.mark.parametrize("bad", [p for p in BAD_SECONDS if p.id not in ("None", "True")])
def test_a_call_whose_end_is_no_time_after_its_start_keeps_its_bytes(registry: CollectorRegistry, bad: Any) -> None:
    # before: a NaN, infinite or negative duration went into the client and network histograms (their _sum NaN or
    # infinite for good) and the request's slow-call split; 10**400, a Decimal or a str raised out of record(),
    # documented never to raise
    recorder = aiwatch.client.ClientRecorder(service="gw", registry=registry, peer="ranker")
    server = RequestRecorder(Metrics(registry), service="gw")
    tl = server.begin()
    recorder.record(0.0, bad, "ranker:80", "/p", "200", "total;dur=100", tl, "inference", "server_timing", sent=3)
    recorder.record(0.0, 0.5, "ranker:80", "/p", "200", "total;dur=100", tl, "inference", "server_timing", sent=3)
    labels = {"service": "gw", "peer": "ranker", "phase": "inference"}
    assert registry.get_sample_value("aiwatch_client_request_duration_seconds_sum",
                                     {**labels, "route": "/p", "status": "200"}) == 0.5
    assert registry.get_sample_value("aiwatch_network_duration_seconds_sum", labels) == 0.4
    assert tl.calls == {("ranker", "inference"): [0.5, 0.4]}
    assert client_bytes(registry, "ranker", "sent") == 6
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "client"}) == 1
    server.finish(tl, "/q", "GET", "200")


class _FailsOnceSlowly(BaseHTTPRequestHandler):
    """Answers its first request 503 after 0.3 s of (reported) server time, then 200 at once."""

    protocol_version = "HTTP/1.1"
    answered = 0

    def do_GET(self) -> None:
        first = type(self).answered == 0
        type(self).answered += 1
        if first:
            time.sleep(0.3)
        self.send_response(503 if first else 200)
        self.send_header("Content-Length", "2")
        self.send_header("Server-Timing", "total;dur=300" if first else "total;dur=0.001")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_call_urllib3_retried_gives_no_network_time(registry: CollectorRegistry) -> None:
    # the call's time holds both attempts (and any backoff) but only the last one's Server-Timing: client minus
    # that counted the first attempt's 0.3 s of server time as network
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(
        max_retries=Retry(total=2, status_forcelist=[503], backoff_factor=0)))
    aiwatch.client.instrument_requests(session, service="gw", registry=registry)
    with peer(_FailsOnceSlowly) as base, session:
        assert session.get(f"{base}/x").status_code == 200
    assert client_count(registry, peer_label(base), "__unmatched__", "200") == 1
    assert network(registry, peer_label(base)) is None


class _NamedFailsOnce(BaseHTTPRequestHandler):
    """An aiwatch-like peer named ``infer`` in its Server-Timing: answers its first request 503, then 200."""

    protocol_version = "HTTP/1.1"
    answered = 0

    def do_GET(self) -> None:
        first = type(self).answered == 0
        type(self).answered += 1
        self.send_response(503 if first else 200)
        self.send_header("Content-Length", "2")
        self.send_header("Server-Timing", 'total;dur=0.001;desc="infer"')
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_call_urllib3_retried_keeps_the_peer_name_the_server_reported(registry: CollectorRegistry) -> None:
    # before: the retried call's Server-Timing was dropped whole, so its client time went under host:port while
    # the peer's other calls were labelled with the name it reports
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(
        max_retries=Retry(total=2, status_forcelist=[503], backoff_factor=0)))
    aiwatch.client.instrument_requests(session, service="gw", registry=registry)
    with peer(_NamedFailsOnce) as base, session:
        assert session.get(f"{base}/x").status_code == 200
        assert session.get(f"{base}/x").status_code == 200
    assert client_count(registry, "infer", "__unmatched__", "200") == 2
    assert client_count(registry, peer_label(base), "__unmatched__", "200") is None
    assert network(registry, "infer") == 1  # the second call was not retried


class _NoBody(BaseHTTPRequestHandler):
    """Answers HEAD with the Content-Length a GET would have, and GET with a 304 that repeats it: no body either way."""

    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5000000")
        self.end_headers()

    def do_GET(self) -> None:
        self.send_response(304)
        self.send_header("Content-Length", "5000000")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("method", ["HEAD", "GET"], ids=["HEAD", "304"])
def test_a_streamed_response_without_a_body_received_no_bytes(registry: CollectorRegistry, method: str) -> None:
    # before: with stream=True the Content-Length was counted as received: 5 MB for each HEAD or 304
    with peer(_NoBody) as base, aiwatch.client.instrument_requests(requests.Session(), service="gw",
                                                                   registry=registry) as session:
        response = session.request(method, f"{base}/file", stream=True)
        assert response.content == b""
    assert client_count(registry, peer_label(base), "__unmatched__", str(response.status_code)) == 1
    assert client_bytes(registry, peer_label(base), "received") is None


class _Sized(BaseHTTPRequestHandler):
    """Answers GET with a body of 1,000,000 bytes and its Content-Length (the server may not get to send it all: the
    client can hang up first)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.close_connection = True  # the client may hang up mid-body: no next request to wait for
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.send_header("Connection", "close")
        self.end_headers()
        with contextlib.suppress(OSError):  # the client closed the response before reading it all
            self.wfile.write(b"x" * 1_000_000)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Chunked(BaseHTTPRequestHandler):
    """Answers GET with the same 1,000,000 bytes in chunks of 128 KiB (``Transfer-Encoding: chunked``: no
    Content-Length, as a streamed answer has)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        body = b"x" * 1_000_000
        with contextlib.suppress(OSError):
            for at in range(0, len(body), 1 << 17):
                chunk = body[at:at + (1 << 17)]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


_BODIES = pytest.mark.parametrize("handler", [_Sized, _Chunked], ids=["content-length", "chunked"])


def _unread(response: requests.Response) -> int:
    response.close()
    return 0


def _first_kilobyte(response: requests.Response) -> int:
    got = len(next(response.iter_content(1000)))
    response.close()
    return got


def _all_unclosed(response: requests.Response) -> int:
    return sum(len(chunk) for chunk in response.iter_content(65536))  # read to its end, never closed


def _all_closed(response: requests.Response) -> int:
    with response:
        return len(response.content)


@_BODIES
@pytest.mark.parametrize("read", [_unread, _first_kilobyte, _all_unclosed, _all_closed],
                         ids=["unread", "1000-bytes", "all-unclosed", "all-closed"])
def test_a_streamed_response_counts_the_bytes_read_not_its_content_length(registry: CollectorRegistry,
                                                                          read: Any, handler: Any) -> None:
    # before: with stream=True the Content-Length was counted as received when the headers came, read or not;
    # and a chunked body (no Content-Length) counted nothing, read or not
    with peer(handler) as base, aiwatch.client.instrument_requests(requests.Session(), service="gw",
                                                                   registry=registry) as session:
        got = read(session.get(f"{base}/file", stream=True))
        assert client_count(registry, peer_label(base), "__unmatched__", "200") == 1
        assert (client_bytes(registry, peer_label(base), "received") or 0) == got


@_BODIES
def test_a_streamed_response_counts_its_bytes_as_they_are_read(registry: CollectorRegistry, handler: Any) -> None:
    """A long download shows on the counter before its end (every 64 KiB), and a response the app drops half read,
    never closed, counts what was read when it is freed; aiwatch's wrappers do not keep it (and its socket) alive."""
    with peer(handler) as base, aiwatch.client.instrument_requests(requests.Session(), service="gw",
                                                                   registry=registry) as session:
        response = session.get(f"{base}/file", stream=True)
        chunks = response.iter_content(65536)
        next(chunks), next(chunks), next(chunks)
        assert client_bytes(registry, peer_label(base), "received") == 3 * 65536
        next(chunks)
        raw = weakref.ref(response.raw)
        gc.disable()  # freed by its reference count, not by a cycle collection
        try:
            del response, chunks
            assert raw() is None
        finally:
            gc.enable()
        assert client_bytes(registry, peer_label(base), "received") == 4 * 65536


class _BadRedirect(BaseHTTPRequestHandler):
    """Answers ``/from`` with a 302 to ``/to`` whose body is labelled gzip but is not (servers do send such redirect
    bodies: requests reads a redirect's body only to free the connection, and ignores a failure to decode it), and
    ``/to`` with ``ok``."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/from":
            body = b"this is not gzip"
            self.send_response(302)
            self.send_header("Location", "/to")
            self.send_header("Content-Encoding", "gzip")
        else:
            body = b"ok"
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_redirect_whose_body_cannot_be_decoded_is_followed_as_requests_follows_it(
        registry: CollectorRegistry) -> None:
    # before: the adapter read every body itself (stream=False), so the 302's undecodable body raised
    # ContentDecodingError out of session.get(), where requests alone follows the redirect
    with peer(_BadRedirect) as base:
        plain = requests.get(f"{base}/from")
        assert (plain.status_code, plain.text) == (200, "ok")
        with aiwatch.client.instrument_requests(requests.Session(), service="gw", registry=registry) as session:
            response = session.get(f"{base}/from")
        assert (response.status_code, response.text, [r.status_code for r in response.history]) == (200, "ok", [302])
    assert client_count(registry, peer_label(base), "__unmatched__", "302") == 1
    assert client_count(registry, peer_label(base), "__unmatched__", "200") == 1
    assert client_bytes(registry, peer_label(base), "received") == len(b"this is not gzip") + len(b"ok")
