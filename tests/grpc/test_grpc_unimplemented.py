"""Calls to a method the server does not implement are recorded (status UNIMPLEMENTED), under the route
``__unmatched__`` so that client-chosen method names never become labels. Real grpcio servers, sync and aio."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from aiwatch.grpc import grpc_aio_server_interceptor, grpc_server_interceptor
from aiwatch.metrics import Metrics
from tests.grpc.conftest import PREDICT, aio_server, req, stub_for, sync_server, value

UNKNOWN_METHODS = [f"/aiwatch.example.Inference/Nope{i}" for i in range(3)] + ["/no.such.Service/Call"]


def _unimplemented(metrics: Metrics) -> float:
    return value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer",
                 route="__unmatched__", method="grpc", status="UNIMPLEMENTED")


def test_sync_server_records_unimplemented_calls(metrics: Metrics) -> None:
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            grpc.insecure_channel(target) as channel:
        for method in UNKNOWN_METHODS:
            call = channel.unary_unary(method)
            with pytest.raises(grpc.RpcError) as info:
                call(b"")
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED  # grpcio's answer, unchanged
        with stub_for(target) as stub:
            stub.Predict(req(features=[1.0]))
    assert _unimplemented(metrics) == len(UNKNOWN_METHODS)
    assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT,
                 method="grpc", status="OK") == 1
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0
    routes = {s.labels["route"] for f in metrics.registry.collect() for s in f.samples if "route" in s.labels}
    assert routes == {"__unmatched__", PREDICT}


@pytest.mark.slow
async def test_aio_server_records_unimplemented_calls(metrics: Metrics) -> None:
    async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=metrics)]) as target, \
            grpc.aio.insecure_channel(target) as channel:
        for method in UNKNOWN_METHODS:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary(method)(b"")
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert _unimplemented(metrics) == len(UNKNOWN_METHODS)
