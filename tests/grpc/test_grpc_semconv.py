"""gRPC spans carry what opentelemetry-instrumentation-grpc emits by default, or the stable RPC set under
OTEL_SEMCONV_STABILITY_OPT_IN: every attribute checked with the SDK's in-memory exporter, on real grpcio servers and
channels (sync and aio), alone and with OpenTelemetry's interceptors in front."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.instrumentation.grpc import (
    aio_client_interceptors,
    aio_server_interceptor,
    client_interceptor,
    grpcext,
    server_interceptor,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from aiwatch.grpc import (
    grpc_aio_client_interceptors,
    grpc_aio_server_interceptor,
    grpc_client_interceptor,
    grpc_server_interceptor,
)
from aiwatch.metrics import Metrics
from examples.grpc_service.servicer import pb_grpc
from tests.grpc.conftest import aio_server, req, sync_server
from tests.labels import with_defaults
from tests.spans import exemplar_trace_ids

pytestmark = pytest.mark.slow

NAME = "aiwatch.example.Inference/Predict"
DEFAULT_SERVER = {"rpc.system": "grpc", "rpc.service": "aiwatch.example.Inference", "rpc.method": "Predict"}


def of_kind(exporter: InMemorySpanExporter, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is kind]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def scope(span: ReadableSpan) -> str:
    return span.instrumentation_scope.name if span.instrumentation_scope else ""


def _sync_calls(target: str, client: list[Any], otel: Any = None, otel_in_front: bool = True) -> None:
    """The four calls of :data:`OUTCOMES` through ``client`` interceptors, and OpenTelemetry's (``otel``, a
    grpcext interceptor) in front of them or behind them."""
    with grpc.insecure_channel(target) as channel:
        wrapped: Any = channel
        if otel is not None and not otel_in_front:
            wrapped = grpcext.intercept_channel(wrapped, otel)
        if client:
            wrapped = grpc.intercept_channel(wrapped, *client)
        if otel is not None and otel_in_front:
            wrapped = grpcext.intercept_channel(wrapped, otel)
        stub = pb_grpc.InferenceStub(wrapped)
        stub.Predict(req(features=[1.0]))
        for fail in ("INVALID_ARGUMENT", "UNAVAILABLE", "raise"):
            with pytest.raises(grpc.RpcError):
                stub.Predict(req(fail=fail))


# the four calls of _sync_calls / _aio_calls: status name, number, error on the server, error on the client
OUTCOMES = [("OK", 0, False, False), ("INVALID_ARGUMENT", 3, False, True), ("UNAVAILABLE", 14, True, True),
            ("UNKNOWN", 2, True, True)]


def check_default(span: ReadableSpan, kind: SpanKind, outcome: tuple[str, int, bool, bool]) -> None:
    _, code, server_error, client_error = outcome
    failed = server_error if kind is SpanKind.SERVER else client_error
    assert span.name == NAME
    found = attributes(span)
    if kind is SpanKind.SERVER:  # the client's socket, as opentelemetry-instrumentation-grpc names it
        assert found.pop("net.peer.ip") == "127.0.0.1"
        assert isinstance(found.pop("net.peer.port"), int)
    assert found == {**DEFAULT_SERVER, "rpc.grpc.status_code": code}
    assert span.status.status_code is (StatusCode.ERROR if failed else StatusCode.UNSET)


def test_sync_server_and_client_spans_by_default(metrics: Metrics, provider: TracerProvider,
                                                 exporter: InMemorySpanExporter) -> None:
    server_side = [grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]
    with sync_server(server_side) as target:
        _sync_calls(target, [grpc_client_interceptor(service="gw", metrics=metrics, tracer_provider=provider)])
    servers, clients = of_kind(exporter, SpanKind.SERVER), of_kind(exporter, SpanKind.CLIENT)
    assert len(servers) == len(clients) == 4
    for server, client, outcome in zip(servers, clients, OUTCOMES, strict=True):
        assert scope(server) == scope(client) == "aiwatch"
        check_default(server, SpanKind.SERVER, outcome)
        check_default(client, SpanKind.CLIENT, outcome)
        assert server.parent is not None and server.parent.span_id == client.context.span_id  # one trace
    assert [e.name for e in servers[3].events] == ["exception"]  # the servicer's own exception


async def _aio_calls(target: str, interceptors: list[Any]) -> None:
    async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
        stub = pb_grpc.InferenceStub(channel)
        await stub.Predict(req(features=[1.0]))
        for fail in ("INVALID_ARGUMENT", "UNAVAILABLE", "raise"):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Predict(req(fail=fail))


async def test_aio_server_and_client_spans_by_default(metrics: Metrics, provider: TracerProvider,
                                                      exporter: InMemorySpanExporter) -> None:
    async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]) \
            as target:
        await _aio_calls(target, grpc_aio_client_interceptors(service="gw", metrics=metrics,
                                                              tracer_provider=provider))
    await _settled(exporter, 8)
    servers, clients = of_kind(exporter, SpanKind.SERVER), of_kind(exporter, SpanKind.CLIENT)
    for server_span, client_span, outcome in zip(servers, clients, OUTCOMES, strict=True):
        check_default(server_span, SpanKind.SERVER, outcome)
        check_default(client_span, SpanKind.CLIENT, outcome)


async def _settled(exporter: InMemorySpanExporter, count: int) -> None:
    """aio client spans end in a task after the call: wait until ``count`` spans have ended (no time bound)."""
    import asyncio

    while len(exporter.get_finished_spans()) < count:
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(("opt_in", "old"), [("rpc", False), ("http,rpc/dup", True)])
def test_stable_rpc_set_under_opt_in(metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter,
                                     monkeypatch: pytest.MonkeyPatch, opt_in: str,
                                     old: bool) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in)
    server_side = [grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]
    with sync_server(server_side) as target:
        port = int(target.rsplit(":", 1)[1])
        client = grpc_client_interceptor(service="gw", metrics=metrics, tracer_provider=provider,
                                         address=f"dns:///localhost:{port}")
        _sync_calls(target, [client])
    servers, clients = of_kind(exporter, SpanKind.SERVER), of_kind(exporter, SpanKind.CLIENT)
    for server, client_span, (status, code, server_error, client_error) in zip(servers, clients, OUTCOMES,
                                                                               strict=True):
        peer_port = attributes(server).get("network.peer.port")
        assert isinstance(peer_port, int) and peer_port > 0
        peer = {"network.peer.address": "127.0.0.1", "network.peer.port": peer_port}
        if old:
            peer.update({"net.peer.ip": "127.0.0.1", "net.peer.port": peer_port})
        for span, failed, extra in ((server, server_error, peer),
                                    (client_span, client_error, {"server.address": "localhost",
                                                                 "server.port": port})):
            expected: dict[str, Any] = {"rpc.system.name": "grpc", "rpc.method": NAME,
                                        "rpc.response.status_code": status, **extra}
            if old:  # rpc/dup: the default set too (its rpc.method is the stable one: the same key)
                expected.update({"rpc.system": "grpc", "rpc.service": "aiwatch.example.Inference",
                                 "rpc.grpc.status_code": code})
            if failed:
                expected["error.type"] = status
            assert span.name == NAME
            assert attributes(span) == expected
            assert span.status.status_code is (StatusCode.ERROR if failed else StatusCode.UNSET)


def test_sync_with_otel_interceptors_in_front_one_server_and_one_client_span(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    server_side = [server_interceptor(tracer_provider=provider),
                   grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]
    with sync_server(server_side) as target:
        _sync_calls(target, [grpc_client_interceptor(service="gw", metrics=metrics, tracer_provider=provider)],
                    client_interceptor(tracer_provider=provider), otel_in_front=True)
    servers, clients = of_kind(exporter, SpanKind.SERVER), of_kind(exporter, SpanKind.CLIENT)
    assert len(servers) == len(clients) == 4
    assert {scope(s) for s in servers + clients} == {"opentelemetry.instrumentation.grpc"}
    assert value_of(metrics, "aiwatch_client_request_duration_seconds_count", service="gw",
                    peer="infer", route="/" + NAME, status="UNAVAILABLE", phase="") == 1


def test_sync_aiwatch_client_in_front_of_otels_makes_the_only_client_span(metrics: Metrics, provider: TracerProvider,
                                                                          exporter: InMemorySpanExporter) -> None:
    """aiwatch's interceptor outermost: its CLIENT span is current and OpenTelemetry's instrumentation suppressed
    while the call is handed on, so OpenTelemetry's interceptor behind it adds no second CLIENT span."""
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]) \
            as target:
        _sync_calls(target, [grpc_client_interceptor(service="gw", metrics=metrics, tracer_provider=provider)],
                    client_interceptor(tracer_provider=provider), otel_in_front=False)
    clients = of_kind(exporter, SpanKind.CLIENT)
    assert [scope(c) for c in clients] == ["aiwatch"] * 4
    for server, client in zip(of_kind(exporter, SpanKind.SERVER), clients, strict=True):
        assert server.parent is not None and server.parent.span_id == client.context.span_id


async def test_aio_with_otel_interceptors_in_front(metrics: Metrics, provider: TracerProvider,
                                                   exporter: InMemorySpanExporter) -> None:
    async with aio_server([aio_server_interceptor(tracer_provider=provider),
                           grpc_aio_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]) \
            as target:
        await _aio_calls(target, [*aio_client_interceptors(tracer_provider=provider),
                                  *grpc_aio_client_interceptors(service="gw", metrics=metrics,
                                                                tracer_provider=provider)])
    await _settled(exporter, 8)
    servers, clients = of_kind(exporter, SpanKind.SERVER), of_kind(exporter, SpanKind.CLIENT)
    assert len(servers) == len(clients) == 4
    assert {scope(s) for s in servers + clients} == {"opentelemetry.instrumentation.grpc"}


def value_of(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, with_defaults(name, labels)) or 0.0


def test_each_connection_is_its_own_peer(metrics: Metrics, provider: TracerProvider,
                                         exporter: InMemorySpanExporter) -> None:
    """Two channels, two connections from two ports: each server span names its own (the last peer read is
    remembered, never given to another connection's RPC)."""
    server_side = [grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]
    with sync_server(server_side) as target:
        for _ in range(2):
            # a channel of its own subchannel pool: its own connection (channels share one by default)
            with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                stub = pb_grpc.InferenceStub(channel)
                stub.Predict(req(features=[1.0]))
                stub.Predict(req(features=[2.0]))
    ports = [attributes(s)["net.peer.port"] for s in of_kind(exporter, SpanKind.SERVER)]
    assert len(ports) == 4 and ports[0] == ports[1] and ports[2] == ports[3] and ports[0] != ports[2]


def test_sync_and_aio_client_histograms_carry_the_client_spans_trace_as_exemplar(
        provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """A gRPC call's client and network time (the server reports its time in its trailer) carry its CLIENT span's
    trace id as exemplar in the OpenMetrics exposition, on sync and aio channels alike (the aio call is recorded in a
    task after it ended)."""
    import asyncio

    calls = ("aiwatch_client_request_duration_seconds", "aiwatch_network_duration_seconds")
    server_metrics = Metrics(CollectorRegistry())
    sync_registry, aio_registry = CollectorRegistry(), CollectorRegistry()
    with sync_server([grpc_server_interceptor(service="infer", metrics=server_metrics)]) as target:
        _one_call(target, grpc_client_interceptor(service="gw", registry=sync_registry, tracer_provider=provider))
    [sync_span] = of_kind(exporter, SpanKind.CLIENT)
    assert exemplar_trace_ids(sync_registry) == {key: {f"{sync_span.context.trace_id:032x}"} for key in calls}

    async def aio_call() -> None:
        async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=server_metrics)]) as target:
            interceptors = grpc_aio_client_interceptors(service="gw", registry=aio_registry, tracer_provider=provider)
            async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
                await pb_grpc.InferenceStub(channel).Predict(req(features=[1.0]))
            while not exemplar_trace_ids(aio_registry):  # recorded in a task after the call (no time bound)
                await asyncio.sleep(0.01)

    asyncio.run(aio_call())
    aio_span = of_kind(exporter, SpanKind.CLIENT)[1]
    assert aio_span.context.trace_id != sync_span.context.trace_id
    assert exemplar_trace_ids(aio_registry) == {key: {f"{aio_span.context.trace_id:032x}"} for key in calls}


def _one_call(target: str, interceptor: Any) -> None:
    with grpc.insecure_channel(target) as channel:
        pb_grpc.InferenceStub(grpc.intercept_channel(channel, interceptor)).Predict(req(features=[1.0]))
