"""Floods of propagator headers with B3 as the global propagator (``OTEL_PROPAGATORS=b3multi``), through real servers:
uvicorn (ASGI), werkzeug (WSGI) and grpcio (the call's metadata).

Two requests: one that repeats ``X-B3-TraceId`` and ``X-B3-SpanId`` 500 times each (the first pair a real context,
the rest other ids), and one that carries a B3 context among 10,000 junk headers (some named like B3's:
``x-b3-junk-N``). For each: the app's response is the one the same app gives without aiwatch, aiwatch counts no
error of its own, the SERVER span's parent is the one OpenTelemetry's B3 propagator picks when called directly on
the request's headers as the app saw them (OpenTelemetry's own instrumentations' carrier: every value of a header,
in order, of which B3 reads the first; behind werkzeug, which joins a repeated header with commas, the joined value,
which B3 reads as no context), and the work aiwatch hands the propagator is bounded: one ``extract`` per request, on
a carrier of B3's headers alone, each value one header's (the server's joined one behind werkzeug), however many
other headers came. Nothing here is timed.

The servers' own limits are raised so that the floods reach aiwatch: uvicorn's h11 refuses a header block over
16 KiB, Python's ``http.client`` (werkzeug's parser) more than 100 headers, grpc-core metadata over 8 KiB.
"""

from __future__ import annotations

import hashlib
import http.client
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat
from opentelemetry.propagators.textmap import CarrierT, Getter, default_getter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch.grpc import grpc_server_interceptor
from aiwatch.metrics import Metrics
from aiwatch.tracing import B3_FIELDS
from examples.grpc_service.servicer import pb, pb_grpc
from tests.grpc.conftest import serving as grpc_serving
from tests.http.test_http_wsgi_server import serving as wsgi_serving
from tests.servers import uvicorn_in_thread, wait_until
from tests.spans import global_textmap

pytestmark = pytest.mark.slow

TRACE, SPAN = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
REPEATS = 500
JUNK = 10_000
#: the servers' limits, raised past the floods (the junk request's header block is about 250 KB)
MAX_HEADER_BLOCK = 8 << 20


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def repeated_b3() -> list[tuple[str, str]]:
    """500 ``X-B3-TraceId`` and 500 ``X-B3-SpanId`` headers, the first pair (TRACE, SPAN), the others random."""
    rng = random.Random(13)
    out = [("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN), ("X-B3-Sampled", "1")]
    for _ in range(REPEATS - 1):
        out += [("X-B3-TraceId", _hex(rng, 32)), ("X-B3-SpanId", _hex(rng, 16))]
    return out


def junk_around_b3() -> list[tuple[str, str]]:
    """A B3 context in the middle of 10,000 junk headers, a tenth of them named like B3's (``x-b3-junk-N``)."""
    rng = random.Random(17)
    junk = [(f"x-b3-junk-{i}" if i % 10 == 0 else f"x-junk-{i}", _hex(rng, 8)) for i in range(JUNK)]
    middle = JUNK // 2
    return [*junk[:middle], ("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN), ("X-B3-Sampled", "1"), *junk[middle:]]


FLOODS = pytest.mark.parametrize("flood", [repeated_b3, junk_around_b3], ids=["b3-repeated-500", "junk-10000"])


class RecordingB3(B3MultiFormat):
    """OpenTelemetry's b3multi propagator, keeping a copy of every carrier aiwatch hands its ``extract``."""

    def __init__(self) -> None:
        self.carriers: list[dict[str, Any]] = []

    def extract(self, carrier: CarrierT, context: Context | None = None,
                getter: Getter[CarrierT] = default_getter) -> Context:
        self.carriers.append(dict(carrier))  # type: ignore[call-overload]
        return super().extract(carrier, context, getter)


def _digest(lines: Sequence[tuple[str, str]]) -> bytes:
    """What the apps reply: the count and a hash of the headers they saw, so a header lost or changed shows (but
    ``Host``, which names the server's port: the bare and the instrumented app are served on two)."""
    lines = [(k, v) for k, v in lines if k.lower() not in ("host", "http_host")]
    text = "\n".join(f"{k}: {v}" for k, v in lines)
    return f"{len(lines)} {hashlib.sha256(text.encode('latin-1')).hexdigest()}".encode()


# --- one server per integration: each yields a function that sends one request (the flood's headers) and returns
# the reply (status, body); ``seen`` gets the request's headers as the app saw them, as OpenTelemetry's own
# instrumentation of that kind of server would hand them to the propagator (name -> every value, in order)
Serve = Callable[[list[tuple[str, str]]], tuple[int, bytes]]


def _http_get(port: int, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("GET", "/predict")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextmanager
def asgi_server(instrumented: bool, metrics: Metrics, provider: TracerProvider,
                seen: list[dict[str, list[str]]], monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        lines = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        carrier: dict[str, list[str]] = {}
        for name, value in lines:
            carrier.setdefault(name, []).append(value)
        seen.append(carrier)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": _digest(lines)})

    served = aiwatch.instrument(app, metrics=metrics, service="svc", tracer_provider=provider) if instrumented \
        else app
    with uvicorn_in_thread(served, h11_max_incomplete_event_size=MAX_HEADER_BLOCK) as (port, _):
        yield lambda headers: _http_get(port, headers)


@contextmanager
def wsgi_server(instrumented: bool, metrics: Metrics, provider: TracerProvider,
                seen: list[dict[str, list[str]]], monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    # werkzeug's request handler parses headers with http.client, which refuses more than _MAXHEADERS (100)
    monkeypatch.setattr(http.client, "_MAXHEADERS", 4 * JUNK)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        lines = sorted((k, v) for k, v in environ.items() if k.startswith("HTTP_"))
        # OpenTelemetry's WSGI getter: the environ's one (joined) value of HTTP_<NAME>
        seen.append({k[5:].lower().replace("_", "-"): [v] for k, v in lines})
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [_digest(lines)]

    served = aiwatch.instrument(app, metrics=metrics, service="svc", tracer_provider=provider) if instrumented \
        else app
    with wsgi_serving(served) as conn:
        yield lambda headers: _http_get(conn.port, headers)


class _Echo(pb_grpc.InferenceServicer):
    def __init__(self, seen: list[dict[str, list[str]]]) -> None:
        self.seen = seen

    def Predict(self, request: Any, context: Any) -> Any:
        lines = [(k, v) for k, v in context.invocation_metadata() if isinstance(v, str)]
        carrier: dict[str, list[str]] = {}
        for name, value in lines:
            carrier.setdefault(name, []).append(value)
        self.seen.append(carrier)
        return pb.PredictReply(model=_digest(lines).decode())


_GRPC_OPTIONS = [("grpc.max_metadata_size", MAX_HEADER_BLOCK), ("grpc.absolute_max_metadata_size", MAX_HEADER_BLOCK)]


@contextmanager
def grpc_server(instrumented: bool, metrics: Metrics, provider: TracerProvider,
                seen: list[dict[str, list[str]]], monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    interceptors = [grpc_server_interceptor(service="svc", metrics=metrics, tracer_provider=provider)] \
        if instrumented else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors,
                         options=_GRPC_OPTIONS)
    with grpc_serving(server, _Echo(seen)) as target, grpc.insecure_channel(target, options=_GRPC_OPTIONS) as channel:
        stub = pb_grpc.InferenceStub(channel)

        def call(headers: list[tuple[str, str]]) -> tuple[int, bytes]:
            metadata = [(name.lower(), value) for name, value in headers]  # gRPC keys are lowercase
            try:
                reply = stub.Predict(pb.PredictRequest(features=[1.0]), metadata=metadata, timeout=30)
            except grpc.RpcError as exc:
                return exc.code().value[0], (exc.details() or "").encode()
            return 0, reply.model.encode()

        yield call


SERVERS = pytest.mark.parametrize("server", [asgi_server, wsgi_server, grpc_server],
                                  ids=["asgi-uvicorn", "wsgi-werkzeug", "grpcio"])


def _server_spans(exporter: InMemorySpanExporter) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER
            and s.instrumentation_scope is not None and s.instrumentation_scope.name == "aiwatch"]


def _ids(span_context: Any) -> tuple[str, str] | None:
    if span_context is None or not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


def _without_host(carrier: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: v for k, v in carrier.items() if k != "host"}


def _errors(registry: CollectorRegistry) -> float:
    return sum(s.value for family in registry.collect() if family.name == "aiwatch_instrumentation_errors"
               for s in family.samples if s.name.endswith("_total"))


@SERVERS
@FLOODS
def test_a_flood_of_propagator_headers_changes_nothing_and_hands_the_propagator_a_bounded_carrier(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter, server: Any,
        flood: Callable[[], list[tuple[str, str]]], monkeypatch: pytest.MonkeyPatch) -> None:
    headers = flood()
    propagator = RecordingB3()
    bare_seen: list[dict[str, list[str]]] = []
    seen: list[dict[str, list[str]]] = []
    with global_textmap(propagator):
        with server(False, metrics, provider, bare_seen, monkeypatch) as send:
            bare = send(headers)
        with server(True, metrics, provider, seen, monkeypatch) as send:
            reply = send(headers)
            wait_until(lambda: len(_server_spans(exporter)) == 1, what="the request's SERVER span ended")
    # the flood reached the app (the servers' limits were raised past it), and its reply is the bare app's
    assert bare[0] in (0, 200), bare
    assert reply == bare
    assert [_without_host(c) for c in seen] == [_without_host(c) for c in bare_seen]
    assert _errors(metrics.registry) == 0
    # the parent is the one OpenTelemetry's propagator picks from the request's headers as the app saw them
    [carrier] = seen
    expected = _ids(trace.get_current_span(B3MultiFormat().extract(carrier)).get_span_context())
    [span] = _server_spans(exporter)
    assert _ids(span.parent) == expected
    if flood is junk_around_b3:
        assert expected == (TRACE, SPAN)  # the junk hides nothing
    # bounded: one extract, of B3's headers alone, each one value: the first sent (behind werkzeug: its joined one)
    [handed] = propagator.carriers
    assert set(handed) <= set(B3_FIELDS)
    assert set(handed) == {name for name in carrier if name in B3_FIELDS}
    for name, value in handed.items():
        assert value == carrier[name][0]
