"""The AI-traffic signals of the gRPC server interceptors on real grpcio servers: message sizes, (de)serialization
phases from the handlers' own (de)serializers, the traffic class from metadata, server-streaming chunk times."""

from __future__ import annotations

import time
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest

from aiwatch.grpc import grpc_aio_server_interceptor, grpc_server_interceptor
from aiwatch.metrics import Metrics
from aiwatch.servertiming import parse_server_timing
from examples.grpc_service.servicer import AioInferenceServicer, pb, pb_grpc
from tests.grpc.conftest import PREDICT, PREDICT_STREAM, req, stub_for, sync_server, value

pytestmark = pytest.mark.slow

SLOW = 0.03


def phase(metrics: Metrics, name: str, stat: str = "count") -> float:
    return value(metrics.registry, f"aiwatch_phase_duration_seconds_{stat}", service="infer", model="ranker",
                 phase=name)


def size(metrics: Metrics, route: str, direction: str, stat: str = "sum") -> float:
    return value(metrics.registry, f"aiwatch_rpc_message_size_bytes_{stat}", service="infer", route=route,
                 direction=direction)


def test_unary_messages_are_sized_and_their_serialization_is_a_phase(metrics: Metrics) -> None:
    interceptor = grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)
    request = req(features=[0.5] * 1000)
    with sync_server([interceptor]) as target, stub_for(target) as stub:
        reply = stub.Predict(request)
    assert size(metrics, PREDICT, "request") == request.ByteSize()
    assert size(metrics, PREDICT, "response") == reply.ByteSize()
    assert phase(metrics, "deserialize") == 1 and phase(metrics, "serialize") == 1
    assert phase(metrics, "inference") == 1


def _slow_server(metrics: Metrics) -> tuple[grpc.Server, str]:
    """A generic handler whose (de)serializers each take SLOW seconds."""

    def slow_deserialize(data: bytes) -> Any:
        time.sleep(SLOW)
        return pb.PredictRequest.FromString(data)

    def slow_serialize(message: Any) -> bytes:
        time.sleep(SLOW)
        return bytes(message.SerializeToString())

    handler = grpc.unary_unary_rpc_method_handler(
        lambda request, context: pb.PredictReply(score=1.0), request_deserializer=slow_deserialize,
        response_serializer=slow_serialize)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         interceptors=[grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("aiwatch.example.Inference",
                                                                          {"Predict": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_deserialization_is_inside_the_total_and_unary_serialization_after_it(metrics: Metrics) -> None:
    server, target = _slow_server(metrics)
    try:
        with stub_for(target) as stub:
            _, call = stub.Predict.with_call(req(features=[1.0]))
    finally:
        server.stop(None)
    timing = parse_server_timing(dict(call.trailing_metadata())["server-timing"])
    # grpcio deserializes before the handler: the RPC's start moves back to include it
    assert timing["deserialize"] >= SLOW and timing["total"] >= SLOW
    total = value(metrics.registry, "aiwatch_request_duration_seconds_sum", service="infer", route=PREDICT,
                  method="grpc", status="OK")
    assert total >= phase(metrics, "deserialize", "sum") >= SLOW
    # a unary response is serialized after the interceptor ended the RPC: a phase of its own, not in the trailer
    assert "serialize" not in timing
    assert phase(metrics, "serialize", "sum") >= SLOW


def test_the_traffic_class_comes_from_the_metadata(metrics: Metrics) -> None:
    interceptor = grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)
    with sync_server([interceptor]) as target, stub_for(target) as stub:
        stub.Predict(req(), metadata=(("aiwatch-traffic-class", "batch"),))
        stub.Predict(req())
    for traffic_class in ("batch", "realtime"):
        assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT,
                     method="grpc", status="OK", traffic_class=traffic_class) == 1


def test_a_server_stream_records_its_first_message_and_the_gaps(metrics: Metrics) -> None:
    interceptor = grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)
    with sync_server([interceptor]) as target, stub_for(target) as stub:
        replies = list(stub.PredictStream(req(features=[1.0, 2.0, 3.0], delay_ms=10)))
    assert len(replies) == 3
    first = value(metrics.registry, "aiwatch_time_to_first_chunk_seconds_sum", service="infer", route=PREDICT_STREAM)
    assert first >= 0.01
    assert value(metrics.registry, "aiwatch_time_between_chunks_seconds_count", service="infer",
                 route=PREDICT_STREAM) == 2
    assert size(metrics, PREDICT_STREAM, "response", "count") == 3
    assert phase(metrics, "serialize") == 1  # the stream's three serializations, inside its one request


async def test_aio_messages_are_sized_and_timed(metrics: Metrics) -> None:
    server = grpc.aio.server(interceptors=[grpc_aio_server_interceptor(service="infer", model="ranker",
                                                                       metrics=metrics)])
    pb_grpc.add_InferenceServicer_to_server(AioInferenceServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    request = req(features=[0.25] * 100)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await pb_grpc.InferenceStub(channel).Predict(request)
    finally:
        await server.stop(None)
    assert size(metrics, PREDICT, "request") == request.ByteSize()
    assert size(metrics, PREDICT, "response") == reply.ByteSize()
    assert phase(metrics, "deserialize") == 1 and phase(metrics, "serialize") == 1


def test_the_client_records_bytes_moved_per_peer(metrics: Metrics) -> None:
    from aiwatch.grpc import grpc_client_interceptor

    request = req(features=[0.5] * 200)
    client = grpc_client_interceptor(service="gateway", metrics=metrics, peer="infer")
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target, client) as stub:
        reply = stub.Predict(request)
    registry = metrics.registry
    assert registry.get_sample_value("aiwatch_client_bytes_total", {
        "service": "gateway", "peer": "infer", "direction": "sent"}) == request.ByteSize()
    assert registry.get_sample_value("aiwatch_client_bytes_total", {
        "service": "gateway", "peer": "infer", "direction": "received"}) == reply.ByteSize()
