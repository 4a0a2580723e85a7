"""Real servers (uvicorn, werkzeug, grpcio) serving a small app, with or without aiwatch, for the tests of what
reaches OpenTelemetry's global propagator: each app records the request's headers as it saw them and the baggage
current while it ran, and replies with a digest of those headers.

The servers' own limits are raised so that floods of headers reach the app: uvicorn's h11 refuses a header block
over 16 KiB, Python's ``http.client`` (werkzeug's parser) more than 100 headers, grpc-core metadata over 8 KiB.
opentelemetry-sdk is not needed here; grpcio, uvicorn and werkzeug are.
"""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

import grpc
import pytest
from opentelemetry import baggage
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import CarrierT, Getter, TextMapPropagator, default_getter

import aiwatch
from aiwatch.grpc import grpc_server_interceptor
from aiwatch.metrics import Metrics
from examples.grpc_service.servicer import pb, pb_grpc
from tests.grpc.conftest import serving as grpc_serving
from tests.http.test_http_wsgi_server import serving as wsgi_serving
from tests.servers import uvicorn_in_thread

#: the servers' limits, raised past the floods the tests send
MAX_HEADER_BLOCK = 8 << 20
MAX_HEADERS = 40_000


class Seen(NamedTuple):
    """One request as the app saw it: its headers as OpenTelemetry's own instrumentation of that kind of server
    hands them to the propagator (name -> every value, in order; behind werkzeug the one joined value), and the
    baggage current while the app ran."""

    carrier: dict[str, list[str]]
    baggage: dict[str, object]


#: sends one request (its headers) and returns the reply: (HTTP status, body), or (gRPC status code, reply)
Serve = Callable[[list[tuple[str, str]]], tuple[int, bytes]]


def digest(lines: Sequence[tuple[str, str]]) -> bytes:
    """What the apps reply: the count and a hash of the headers they saw, so a header lost or changed shows (but
    ``Host``, which names the server's port: a bare and an instrumented app are served on two)."""
    lines = [(k, v) for k, v in lines if k.lower() not in ("host", "http_host")]
    text = "\n".join(f"{k}: {v}" for k, v in lines)
    return f"{len(lines)} {hashlib.sha256(text.encode('latin-1')).hexdigest()}".encode()


def without_host(carrier: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: v for k, v in carrier.items() if k != "host"}


def _grouped(lines: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    carrier: dict[str, list[str]] = {}
    for name, value in lines:
        carrier.setdefault(name, []).append(value)
    return carrier


def http_get(port: int, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    """GET /predict with ``headers`` sent as given (a name repeated as often as it comes)."""
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
def asgi_server(instrumented: bool, metrics: Metrics, provider: Any, seen: list[Seen],
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        lines = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        seen.append(Seen(_grouped(lines), dict(baggage.get_all())))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": digest(lines)})

    served = aiwatch.instrument(app, metrics=metrics, service="svc", tracer_provider=provider) if instrumented \
        else app
    with uvicorn_in_thread(served, h11_max_incomplete_event_size=MAX_HEADER_BLOCK) as (port, _):
        yield lambda headers: http_get(port, headers)


@contextmanager
def wsgi_server(instrumented: bool, metrics: Metrics, provider: Any, seen: list[Seen],
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    # werkzeug's request handler parses headers with http.client, which refuses more than _MAXHEADERS (100)
    monkeypatch.setattr(http.client, "_MAXHEADERS", MAX_HEADERS)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        lines = sorted((k, v) for k, v in environ.items() if k.startswith("HTTP_"))
        # OpenTelemetry's WSGI getter: the environ's one (joined) value of HTTP_<NAME>, named as its keys() does
        seen.append(Seen({k[5:].lower().replace("_", "-"): [v] for k, v in lines}, dict(baggage.get_all())))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [digest(lines)]

    served = aiwatch.instrument(app, metrics=metrics, service="svc", tracer_provider=provider) if instrumented \
        else app
    with wsgi_serving(served) as conn:
        yield lambda headers: http_get(conn.port, headers)


class _Echo(pb_grpc.InferenceServicer):
    def __init__(self, seen: list[Seen]) -> None:
        self.seen = seen

    def Predict(self, request: Any, context: Any) -> Any:
        lines = [(k, v) for k, v in context.invocation_metadata() if isinstance(v, str)]
        self.seen.append(Seen(_grouped(lines), dict(baggage.get_all())))
        return pb.PredictReply(model=digest(lines).decode())


GRPC_OPTIONS = [("grpc.max_metadata_size", MAX_HEADER_BLOCK), ("grpc.absolute_max_metadata_size", MAX_HEADER_BLOCK)]


@contextmanager
def grpc_server(instrumented: bool, metrics: Metrics, provider: Any, seen: list[Seen],
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    interceptors = [grpc_server_interceptor(service="svc", metrics=metrics, tracer_provider=provider)] \
        if instrumented else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors,
                         options=GRPC_OPTIONS)
    with grpc_serving(server, _Echo(seen)) as target, grpc.insecure_channel(target, options=GRPC_OPTIONS) as channel:
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


def server_spans(exporter: Any) -> list[Any]:
    """The finished SERVER spans aiwatch made."""
    from opentelemetry.trace import SpanKind

    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER
            and s.instrumentation_scope is not None and s.instrumentation_scope.name == "aiwatch"]


def ids(span_context: Any) -> tuple[str, str] | None:
    """A span context's (trace id, span id) in hex, ``None`` for none or an invalid one."""
    if span_context is None or not span_context.is_valid:
        return None
    return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


P = TypeVar("P", bound=TextMapPropagator)


def recording(base: type[P]) -> type[P]:
    """``base``, an OpenTelemetry propagator, keeping a copy of every carrier aiwatch hands its ``extract`` (in
    ``carriers``)."""

    class Recording(base):  # type: ignore[valid-type,misc]
        def __init__(self) -> None:
            super().__init__()
            self.carriers: list[dict[str, Any]] = []

        def extract(self, carrier: CarrierT, context: Context | None = None,
                    getter: Getter[CarrierT] = default_getter) -> Context:
            self.carriers.append(dict(carrier))  # type: ignore[call-overload]
            return super().extract(carrier, context, getter)

    return Recording
