"""Fault injection: when aiwatch's own parts fail (a metric that raises, tracing that raises), every RPC still has
exactly the outcome it has without aiwatch, and the failures are counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

import aiwatch.grpc.client
import aiwatch.grpc.server as grpc_server_module
import aiwatch.tracing
from aiwatch.grpc import (
    grpc_aio_client_interceptors,
    grpc_aio_server_interceptor,
    grpc_client_interceptor,
    grpc_server_interceptor,
)
from aiwatch.metrics import Metrics
from examples.grpc_service.servicer import pb_grpc
from tests.grpc.conftest import aio_server, req, stub_for, sync_server, value

pytestmark = pytest.mark.slow


class _Exploding:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("metric backend down")


class BrokenMetrics(Metrics):
    """Every metric raises when used; only the error counter works, so the test can see the failures counted."""

    def child(self, metric: Any, labels: Any) -> Any:
        if metric is self.instrumentation_errors:
            return super().child(metric, labels)
        return _Exploding()


def _errors(metrics: Metrics) -> float:
    return sum(s.value for m in metrics.registry.collect() if m.name == "aiwatch_instrumentation_errors"
               for s in m.samples if s.name.endswith("_total"))


def _exercise_sync(stub: Any) -> list[Any]:
    """Every RPC kind, a success and the failures; returns what the caller saw."""
    seen: list[Any] = [stub.Predict(req(features=[1.0, 3.0])).score,
                       [r.index for r in stub.PredictStream(req(features=[1.0, 2.0]))],
                       stub.Upload(iter([req(features=[1.0]), req(features=[3.0])])).mean,
                       [r.score for r in stub.Chat(iter([req(features=[5.0])]))]]
    for bad in (req(fail="INVALID_ARGUMENT"), req(fail="raise")):
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(bad)
        seen.append((info.value.code(), info.value.details()))
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Chat(iter([req(features=[1.0], fail="ABORTED"), req()])))
    seen.append((info.value.code(), info.value.details()))
    return seen


def test_sync_outcomes_unchanged_when_metrics_raise() -> None:
    with sync_server() as target, stub_for(target) as stub:
        expected = _exercise_sync(stub)
    broken = BrokenMetrics(CollectorRegistry())
    with sync_server([grpc_server_interceptor(service="infer", metrics=broken)]) as target, \
            stub_for(target, grpc_client_interceptor(service="gw", peer=target, metrics=broken)) as stub:
        assert _exercise_sync(stub) == expected
        # the timing still travels: it does not depend on the metrics
        _, call = stub.Predict.with_call(req())
        assert "server-timing" in dict(call.trailing_metadata())
    assert _errors(broken) >= 8


def test_sync_outcomes_unchanged_when_aiwatch_itself_raises(monkeypatch: pytest.MonkeyPatch,
                                                             metrics: Metrics) -> None:
    def broken_tracing(kind: Any) -> Any:
        raise RuntimeError("tracing is broken")

    with sync_server() as target, stub_for(target) as stub:
        expected = _exercise_sync(stub)
    monkeypatch.setattr(grpc_server_module, "span_in_progress", broken_tracing)
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target) as stub:
        assert _exercise_sync(stub) == expected
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_server") == 7


def test_a_peer_that_cannot_be_read_is_counted_and_the_rpc_still_recorded_and_traced(
        monkeypatch: pytest.MonkeyPatch, metrics: Metrics, provider: TracerProvider, exporter: Any) -> None:
    def broken_peer(peer: str, conventions: Any) -> Any:
        raise RuntimeError("peer is broken")

    with sync_server() as target, stub_for(target) as stub:
        expected = _exercise_sync(stub)
    monkeypatch.setattr(grpc_server_module, "grpc_peer_attributes", broken_peer)
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]) \
            as target, stub_for(target) as stub:
        assert _exercise_sync(stub) == expected
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="tracing") == 7
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_server") == 0
    servers = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER]
    assert len(servers) == 7 and not any("peer" in key for span in servers for key in (span.attributes or {}))
    assert sum(s.value for m in metrics.registry.collect() for s in m.samples
               if s.name == "aiwatch_request_duration_seconds_count") == 7


def test_sync_client_outcomes_unchanged_when_its_span_cannot_be_made_current(
        monkeypatch: pytest.MonkeyPatch, metrics: Metrics) -> None:
    def broken_context(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("context is broken")

    with sync_server() as target, stub_for(target) as stub:
        expected = _exercise_sync(stub)
    monkeypatch.setattr(aiwatch.tracing, "activate", broken_context)
    client = grpc_client_interceptor(service="gw", peer="infer", metrics=metrics, tracer_provider=TracerProvider())
    with sync_server() as target, stub_for(target, client) as stub:
        assert _exercise_sync(stub) == expected
    # one per call: the four RPC kinds, the two failing unary calls and the failing stream
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="tracing") == 7


async def _exercise_aio(stub: Any) -> list[Any]:
    async def two() -> AsyncIterator[Any]:
        yield req(features=[1.0])
        yield req(features=[3.0])

    seen: list[Any] = [(await stub.Predict(req(features=[1.0, 3.0]))).score,
                       [r.index async for r in stub.PredictStream(req(features=[1.0, 2.0]))],
                       (await stub.Upload(two())).mean,
                       [r.score async for r in stub.Chat(two())]]
    for bad in (req(fail="INVALID_ARGUMENT"), req(fail="raise")):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(bad)
        seen.append((info.value.code(), info.value.details()))
    return seen


async def _aio_run(server_interceptors: list[Any], client_metrics: Metrics | None) -> list[Any]:
    async with aio_server(server_interceptors) as target:
        interceptors = grpc_aio_client_interceptors(service="gw", peer=target, metrics=client_metrics) \
            if client_metrics is not None else None
        async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
            return await _exercise_aio(pb_grpc.InferenceStub(channel))


async def test_aio_outcomes_unchanged_when_metrics_raise() -> None:
    expected = await _aio_run([], None)
    broken = BrokenMetrics(CollectorRegistry())
    got = await _aio_run([grpc_aio_server_interceptor(service="infer", metrics=broken)], broken)
    assert got == expected
    assert _errors(broken) >= 6


def test_sync_client_outcomes_unchanged_when_its_byte_counter_cannot_be_made(
        monkeypatch: pytest.MonkeyPatch, metrics: Metrics) -> None:
    """A streaming call whose byte counter could not be made (aiwatch's own failure) is handed back as grpcio's
    call, which the application iterates; it was wrapped in a HeldCall, which cannot be iterated (TypeError)."""
    def broken_counter(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("byte counter is broken")

    with sync_server() as target, stub_for(target) as stub:
        expected = _exercise_sync(stub)
    monkeypatch.setattr(aiwatch.grpc.client, "StreamBytes", broken_counter)
    client = grpc_client_interceptor(service="gw", peer="infer", metrics=metrics)
    with sync_server() as target, stub_for(target, client) as stub:
        assert _exercise_sync(stub) == expected
    # one per streaming call: PredictStream, Upload, Chat and the failing Chat
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_client") == 4
