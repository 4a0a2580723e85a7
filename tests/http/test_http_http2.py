"""aiwatch's ASGI middleware under real HTTP/2 servers on loopback: uvicorn's HTTP/2 (``http="zttp", http2=True``)
and Hypercorn (on h2), each in a thread of this process, spoken to over cleartext HTTP/2 with prior knowledge (h2c)
by httpx (``http2=True``) or, where the test needs frames of its own (trailers asked for with ``te: trailers``, a
RST_STREAM in the middle of a response), by h2 driven by hand.

Checked: a request is recorded once with its route, method and status, on a SERVER span whose
``network.protocol.version`` is "2"; concurrent streams multiplexed on one connection are each recorded once and
``aiwatch_requests_in_flight`` goes back to 0; a response that announces trailers (ASGI's ``http.response.trailers``
extension, which both servers offer over HTTP/2) is timed to its trailers; and a stream the client resets while its
response is being streamed is recorded once as 499, the client's doing. Neither server's ``send`` raises after a
RST_STREAM (uvicorn's HTTP/2 says ASGI spec 2.3, Hypercorn 2.1: before 2.4, where a send to a gone client must
raise an OSError): the app hears of it as ``http.disconnect`` from ``receive``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset, TrailersReceived
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch.middleware._common import CLIENT_CLOSED_STATUS
from tests.labels import with_defaults
from tests.servers import hypercorn_in_thread, require_module, uvicorn_in_thread, wait_until

pytestmark = pytest.mark.slow

SERVICE = "h2"
WAIT = 10.0  # seconds: the bound of every wait for the server or for aiwatch's recording (none is a measurement)
TRAILERS_DELAY = 0.2  # seconds between the body's end and the trailers
STREAMS = 5  # concurrent streams on one connection
STREAM_CHUNKS = 3000  # the streamed response's chunks, 10 ms apart (30 s, past WAIT): only a reset cuts it short


@dataclass
class App:
    """A FastAPI app instrumented with aiwatch, and what its endpoints saw (written from the server's thread)."""

    app: FastAPI
    registry: CollectorRegistry
    #: the value of ``aiwatch_requests_in_flight`` each /together request read once all of them were in
    in_flight_seen: list[float | None] = field(default_factory=list)
    #: whether the server offered ASGI's HTTP trailers extension to /trailers
    trailers_offered: list[bool] = field(default_factory=list)
    #: the wall-clock time (ns, as spans have it) at which /trailers sent its trailers
    trailers_sent_ns: list[int] = field(default_factory=list)
    #: set when the /stream response's body generator has ended (run to its end, or closed)
    stream_ended: threading.Event = field(default_factory=threading.Event)
    #: whether it ran to its end: the app never heard that the client left
    stream_ran_out: bool = False


async def pause(seconds: float) -> None:
    """Sleep at least ``seconds`` by aiwatch's clock (``time.perf_counter``): uvicorn runs uvloop where it is
    installed, whose timers may fire a few microseconds before their time."""
    deadline = time.perf_counter() + seconds
    while (left := deadline - time.perf_counter()) > 0:
        await asyncio.sleep(left)


def make_app(registry: CollectorRegistry, provider: TracerProvider) -> App:
    app = FastAPI()
    out = App(app, registry)
    arrived = 0
    all_in = asyncio.Event()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/together/{n}")
    async def together(n: int, request: Request) -> dict[str, int]:
        """Answers only once all :data:`STREAMS` requests are in the app at once (else 500 after :data:`WAIT`)."""
        nonlocal arrived
        arrived += 1
        if arrived == STREAMS:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), WAIT)
        out.in_flight_seen.append(registry.get_sample_value("aiwatch_requests_in_flight", {"service": SERVICE}))
        assert request.client is not None
        return {"n": n, "client_port": request.client.port}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                for _ in range(STREAM_CHUNKS):
                    yield b"x" * 100
                    await asyncio.sleep(0.01)
                out.stream_ran_out = True
            finally:
                out.stream_ended.set()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/short")
    async def short() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"y" * 10

        return StreamingResponse(chunks(), media_type="text/plain")

    class WithTrailers(Response):
        """The body, a pause, then trailers, when the server offers them (a Response sends raw ASGI messages)."""

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            offered = "http.response.trailers" in (scope.get("extensions") or {})
            out.trailers_offered.append(offered)
            await send({"type": "http.response.start", "status": 200, "trailers": offered,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"scored", "more_body": False})
            if offered:
                await pause(TRAILERS_DELAY)  # e.g. a checksum computed after the body
                out.trailers_sent_ns.append(time.time_ns())
                await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")],
                            "more_trailers": False})

    @app.get("/trailers")
    async def trailers() -> Response:
        return WithTrailers()

    aiwatch.instrument(app, registry=registry, service=SERVICE, tracer_provider=provider)
    return out


@pytest.fixture(params=["uvicorn", "hypercorn"])
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def serving(server: str, app: Any) -> Iterator[int]:
    """``app`` served over HTTP/2 (and HTTP/1.1) by ``server`` on a loopback port; yields the port."""
    if server == "uvicorn":
        uvicorn = require_module("uvicorn")
        if "http2" not in inspect.signature(uvicorn.Config).parameters:  # the demo extra's floor is older
            pytest.skip(f"{server_version('uvicorn')} does not serve HTTP/2 (0.55 does, with zttp)")
        require_module("zttp")  # uvicorn's HTTP/2 is its zttp protocol
        with uvicorn_in_thread(app, http="zttp", http2=True) as (port, _):
            yield port
    else:
        with hypercorn_in_thread(app) as port:
            yield port


def server_version(server: str) -> str:
    return f"{server} {importlib.metadata.version(server)}"


def counts(registry: CollectorRegistry, route: str) -> dict[str, float]:
    """``aiwatch_request_duration_seconds_count`` of ``route`` by status, every method."""
    return {s.labels["status"]: s.value for family in registry.collect() for s in family.samples
            if s.name == "aiwatch_request_duration_seconds_count" and s.labels["route"] == route}


def duration(registry: CollectorRegistry, route: str, status: str = "200") -> tuple[float | None, float | None]:
    labels = with_defaults("aiwatch_request_duration_seconds",
                           {"service": SERVICE, "route": route, "method": "GET", "status": status})
    return (registry.get_sample_value("aiwatch_request_duration_seconds_count", labels),
            registry.get_sample_value("aiwatch_request_duration_seconds_sum", labels))


def in_flight(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("aiwatch_requests_in_flight", {"service": SERVICE})


def server_spans(exporter: InMemorySpanExporter, route: str) -> list[ReadableSpan]:
    """aiwatch's SERVER spans of ``route`` (FastAPI's own telemetry traces too when a global provider is set)."""
    return [s for s in exporter.get_finished_spans()
            if s.kind is SpanKind.SERVER and s.instrumentation_scope is not None
            and s.instrumentation_scope.name == "aiwatch" and s.name == f"GET {route}"]


@dataclass
class Stream:
    status: int | None = None
    data: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] | None = None
    ended: bool = False


class H2Client:
    """One cleartext HTTP/2 connection with prior knowledge, driven frame by frame with h2."""

    def __init__(self, port: int) -> None:
        self.authority = f"127.0.0.1:{port}"
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.streams: dict[int, Stream] = {}
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def get(self, path: str, headers: Sequence[tuple[str, str]] = ()) -> int:
        """Send a GET for ``path``; returns its stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, [(":method", "GET"), (":scheme", "http"), (":authority", self.authority),
                                           (":path", path), *headers], end_stream=True)
        self.streams[stream_id] = Stream()
        self._flush()
        return stream_id

    def reset(self, stream_id: int) -> None:
        """RST_STREAM with CANCEL, as a client that stops reading a response does."""
        self.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        self._flush()

    def read_until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {WAIT}s waiting for {what}")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"the server closed the connection while waiting for {what}")
            for event in self.conn.receive_data(data):
                stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
                if stream is None:
                    continue
                if isinstance(event, ResponseReceived):
                    stream.status = int(dict(event.headers)[b":status"])
                elif isinstance(event, DataReceived):
                    stream.data += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, TrailersReceived):
                    stream.trailers = list(event.headers)
                elif isinstance(event, StreamEnded):
                    stream.ended = True
                elif isinstance(event, StreamReset):  # not ours: h2 reports only the peer's
                    raise AssertionError(f"the server reset stream {event.stream_id} ({event.error_code!r})")
            self._flush()

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self._flush()
        except OSError:
            pass
        finally:
            self.sock.close()


@contextmanager
def h2_client(port: int) -> Iterator[H2Client]:
    client = H2Client(port)
    try:
        yield client
    finally:
        client.close()


def test_a_request_over_http2_is_recorded_once_on_a_span_of_protocol_version_2(
        server: str, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    served = make_app(registry, provider)
    with serving(server, served.app) as port, httpx.Client(http1=False, http2=True, timeout=WAIT) as client:
        response = client.get(f"http://127.0.0.1:{port}/items/7")
        assert (response.http_version, response.status_code, response.json()) == ("HTTP/2", 200, {"id": 7})
        assert "server-timing" in response.headers  # aiwatch's header made it through HTTP/2's header rules
        wait_until(lambda: bool(counts(registry, "/items/{item_id}")), WAIT, 0.01, "the request recorded")
        wait_until(lambda: bool(server_spans(exporter, "/items/{item_id}")), WAIT, 0.01, "aiwatch's span ended")
        assert counts(registry, "/items/{item_id}") == {"200": 1.0}
        assert duration(registry, "/items/{item_id}")[0] == 1.0  # method GET, service, traffic class
        (span,) = server_spans(exporter, "/items/{item_id}")
        assert span.attributes is not None
        assert span.attributes["network.protocol.version"] == "2"
        assert span.attributes["http.route"] == "/items/{item_id}"
        assert span.attributes["http.request.method"] == "GET"
        assert span.attributes["http.response.status_code"] == 200
        wait_until(lambda: in_flight(registry) == 0, WAIT, 0.01, "no request in flight")


async def test_concurrent_streams_on_one_connection_are_each_recorded_once(
        server: str, registry: CollectorRegistry, provider: TracerProvider) -> None:
    served = make_app(registry, provider)
    with serving(server, served.app) as port:
        limits = httpx.Limits(max_connections=1)  # every stream on one connection: HTTP/2 multiplexes them
        async with httpx.AsyncClient(http1=False, http2=True, limits=limits, timeout=WAIT) as client:
            responses = await asyncio.gather(*(client.get(f"http://127.0.0.1:{port}/together/{n}")
                                               for n in range(STREAMS)))
        assert [(r.http_version, r.status_code) for r in responses] == [("HTTP/2", 200)] * STREAMS
        assert sorted(r.json()["n"] for r in responses) == list(range(STREAMS))
        assert len({r.json()["client_port"] for r in responses}) == 1  # one connection, as the server saw it
        # the last to arrive read the gauge before any of them could answer: all of them were in flight then
        assert max(v or 0 for v in served.in_flight_seen) == STREAMS
        wait_until(lambda: counts(registry, "/together/{n}").get("200") == STREAMS, WAIT, 0.01,
                   f"{STREAMS} requests recorded")
        wait_until(lambda: in_flight(registry) == 0, WAIT, 0.01, "no request in flight")
        assert counts(registry, "/together/{n}") == {"200": STREAMS}  # each once, nothing else


def test_a_response_with_trailers_is_timed_to_its_trailers(
        server: str, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    served = make_app(registry, provider)
    with serving(server, served.app) as port, h2_client(port) as client:
        # both servers send trailers only to a client that says it takes them (RFC 9110's TE: trailers)
        stream_id = client.get("/trailers", [("te", "trailers")])
        stream = client.streams[stream_id]
        client.read_until(lambda: stream.ended, "the response's end")
        if not served.trailers_offered[0]:
            pytest.skip(f"{server_version(server)} does not offer ASGI's http.response.trailers over HTTP/2")
        assert (stream.status, bytes(stream.data)) == (200, b"scored")
        assert stream.trailers == [(b"x-checksum", b"abc")]
        wait_until(lambda: bool(counts(registry, "/trailers")), WAIT, 0.01, "the request recorded")
        wait_until(lambda: bool(server_spans(exporter, "/trailers")), WAIT, 0.01, "aiwatch's span ended")
        count, total = duration(registry, "/trailers")
        assert count == 1 and total is not None and total >= TRAILERS_DELAY  # the wait for the trailers is in it
        assert counts(registry, "/trailers") == {"200": 1.0}
        (span,) = server_spans(exporter, "/trailers")
        assert span.end_time is not None and span.end_time >= served.trailers_sent_ns[0]  # ended at the trailers


def test_a_stream_reset_by_the_client_mid_response_is_recorded_once_as_499(
        server: str, registry: CollectorRegistry, provider: TracerProvider) -> None:
    served = make_app(registry, provider)
    with serving(server, served.app) as port, h2_client(port) as client:
        stream_id = client.get("/stream")
        stream = client.streams[stream_id]
        client.read_until(lambda: len(stream.data) > 0, "the streamed response's first chunk")
        assert stream.status == 200
        client.reset(stream_id)
        assert served.stream_ended.wait(WAIT) and not served.stream_ran_out, "the app never heard of the reset"
        wait_until(lambda: bool(counts(registry, "/stream")), WAIT, 0.01, "the reset request recorded")
        wait_until(lambda: in_flight(registry) == 0, WAIT, 0.01, "no request in flight")
        assert counts(registry, "/stream") == {CLIENT_CLOSED_STATUS: 1.0}  # once, and not as the 200 it began as
        # the connection is still there for the next stream, recorded on its own
        next_id = client.get("/items/1")
        client.read_until(lambda: client.streams[next_id].ended, "the next stream's response")
        assert client.streams[next_id].status == 200
        wait_until(lambda: bool(counts(registry, "/items/{item_id}")), WAIT, 0.01, "the next request recorded")
        assert counts(registry, "/items/{item_id}") == {"200": 1.0}
        assert counts(registry, "/stream") == {CLIENT_CLOSED_STATUS: 1.0}
        wait_until(lambda: in_flight(registry) == 0, WAIT, 0.01, "no request in flight")


WHOLE = 40  # streamed responses delivered whole, per protocol


@pytest.mark.parametrize("http2", [True, False], ids=["http2", "http1.1"])
async def test_a_streamed_response_delivered_whole_keeps_its_status(
        server: str, http2: bool, registry: CollectorRegistry, provider: TracerProvider) -> None:
    """Servers of ASGI spec < 2.4 make Starlette's StreamingResponse listen for ``http.disconnect`` while it streams,
    and they answer it once the response is complete, from inside the send of the last body (Hypercorn) or right
    after: that is no client gone, and the request is no 499."""
    served = make_app(registry, provider)
    with serving(server, served.app) as port:
        async with httpx.AsyncClient(http1=not http2, http2=http2, timeout=WAIT) as client:
            for _ in range(WHOLE):
                response = await client.get(f"http://127.0.0.1:{port}/short")
                assert (response.status_code, response.content) == (200, b"y" * 30)
                assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        wait_until(lambda: sum(counts(registry, "/short").values()) == WHOLE, WAIT, 0.01, "every request recorded")
        assert counts(registry, "/short") == {"200": WHOLE}


@pytest.mark.parametrize("http2", [True, False], ids=["http2", "http1.1"])
async def test_an_app_behind_fastapis_http_middleware_keeps_its_statuses(
        server: str, http2: bool, registry: CollectorRegistry, provider: TracerProvider) -> None:
    """``@app.middleware("http")`` (Starlette's BaseHTTPMiddleware; added after ``aiwatch.instrument``, so around
    aiwatch's middleware) reads ``receive`` in a task of its own to hear a disconnect while the endpoint runs, and
    streams the response on: no whole response through it is a 499. A guard for the disconnect handling of this
    stop; it passes on the code before it too."""
    served = make_app(registry, provider)

    @served.app.middleware("http")
    async def tag(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["x-tagged"] = "1"
        return response

    with serving(server, served.app) as port:
        async with httpx.AsyncClient(http1=not http2, http2=http2, timeout=WAIT) as client:
            for _ in range(WHOLE // 2):
                for path in ("/short", "/items/3"):
                    response = await client.get(f"http://127.0.0.1:{port}{path}")
                    assert (response.status_code, response.headers.get("x-tagged")) == (200, "1")
        wait_until(lambda: sum(counts(registry, "/short").values()) == WHOLE // 2
                   and sum(counts(registry, "/items/{item_id}").values()) == WHOLE // 2, WAIT, 0.01,
                   "every request recorded")
        assert counts(registry, "/short") == counts(registry, "/items/{item_id}") == {"200": WHOLE // 2}
