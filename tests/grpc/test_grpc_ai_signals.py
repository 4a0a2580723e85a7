"""The AI-traffic signals of the gRPC server interceptors on real grpcio servers: message sizes, (de)serialization
phases from the handlers' own (de)serializers, the traffic class from metadata, server-streaming chunk times, and
the bytes the sync and aio clients move per peer for every call kind."""

from __future__ import annotations

import asyncio
import time
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest

import aiwatch
from aiwatch.grpc import grpc_aio_server_interceptor, grpc_server_interceptor
from aiwatch.metrics import Metrics
from aiwatch.servertiming import parse_server_timing
from examples.grpc_service.servicer import pb, pb_grpc
from tests.grpc.conftest import CHAT, PREDICT, PREDICT_STREAM, UPLOAD, aio_server, req, stub_for, sync_server, value
from tests.servers import wait_until

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


def _slow_serializer_handler(handler: Any) -> Any:
    """``handler`` (unary-unary) whose response serializer takes SLOW seconds."""

    def slow_serialize(message: Any) -> bytes:
        time.sleep(SLOW)
        return bytes(message.SerializeToString())

    return grpc.unary_unary_rpc_method_handler(handler, request_deserializer=pb.PredictRequest.FromString,
                                               response_serializer=slow_serialize)


def _assert_unary_serialization_outside_the_total(metrics: Metrics, trailing: Any) -> None:
    """A unary response's serialization is a phase of its own, after the RPC's total: the total is the phases inside
    it plus the overhead, in the histograms and in the trailer alike (docs/grpc.md, "Serialization")."""
    timing = parse_server_timing(dict(trailing)["server-timing"])
    total = value(metrics.registry, "aiwatch_request_duration_seconds_sum", service="infer", route=PREDICT,
                  method="grpc", status="OK")
    inside = phase(metrics, "deserialize", "sum") + phase(metrics, "inference", "sum")
    overhead = phase(metrics, "overhead", "sum")
    assert phase(metrics, "serialize", "sum") >= SLOW  # measured, as a phase of its own
    assert "serialize" not in timing
    # before: the serialization was added to the timeline's phases after the total was taken, so the overhead read
    # low by it (or was clamped at 0) and disagreed with the trailer's
    assert value(metrics.registry, "aiwatch_overhead_clamped_total", service="infer") == 0
    assert inside + overhead == pytest.approx(total, rel=1e-12, abs=1e-12)
    # the trailer's entries are milliseconds to 3 decimals: the same figures to within half a microsecond
    assert timing["total"] == pytest.approx(total, abs=6e-7)
    assert timing["overhead"] == pytest.approx(overhead, abs=6e-7)


def test_unary_serialization_leaves_the_overhead_and_the_trailer_consistent(metrics: Metrics) -> None:
    def predict(request: Any, context: Any) -> Any:
        with aiwatch.phase("inference"):
            pass
        time.sleep(3 * SLOW)  # outside every phase: overhead, more than the serialization takes
        return pb.PredictReply(score=1.0)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         interceptors=[grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "aiwatch.example.Inference", {"Predict": _slow_serializer_handler(predict)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with stub_for(f"127.0.0.1:{port}") as stub:
            _, call = stub.Predict.with_call(req(features=[1.0]))
    finally:
        server.stop(None)
    _assert_unary_serialization_outside_the_total(metrics, call.trailing_metadata())


async def test_aio_unary_serialization_leaves_the_overhead_and_the_trailer_consistent(metrics: Metrics) -> None:
    async def predict(request: Any, context: Any) -> Any:
        with aiwatch.phase("inference"):
            pass
        await asyncio.sleep(3 * SLOW)  # outside every phase: overhead, more than the serialization takes
        return pb.PredictReply(score=1.0)

    server = grpc.aio.server(interceptors=[grpc_aio_server_interceptor(service="infer", model="ranker",
                                                                       metrics=metrics)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "aiwatch.example.Inference", {"Predict": _slow_serializer_handler(predict)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = pb_grpc.InferenceStub(channel).Predict(req(features=[1.0]))
            await call
            trailing = await call.trailing_metadata()
    finally:
        await server.stop(None)
    _assert_unary_serialization_outside_the_total(metrics, trailing)


def _phase_sums(metrics: Metrics) -> dict[str, float]:
    return {sample.labels["phase"]: sample.value for family in metrics.registry.collect()
            if family.name == "aiwatch_phase_duration_seconds" for sample in family.samples
            if sample.name.endswith("_sum") and sample.labels["service"] == "infer"}


def _assert_partitioned(metrics: Metrics, route: str, response_inside: bool) -> None:
    """The RPC's phases inside its total (``serialize`` among them only when ``response_inside``) and its overhead
    add up to its total."""
    sums = _phase_sums(metrics)
    assert sums.get("serialize", 0.0) > 0.0 and sums.get("deserialize", 0.0) > 0.0
    total = value(metrics.registry, "aiwatch_request_duration_seconds_sum", service="infer", route=route,
                  method="grpc", status="OK")
    inside = sum(seconds for name, seconds in sums.items() if response_inside or name != "serialize")
    assert inside == pytest.approx(total, rel=1e-12, abs=1e-12)


def test_a_request_streams_response_is_serialized_outside_its_total(metrics: Metrics) -> None:
    # a request stream with a unary response (stream-unary): grpcio serializes its response after the handler, too
    interceptor = grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)
    with sync_server([interceptor]) as target, stub_for(target) as stub:
        stub.Upload(iter([req(features=[1.0]), req(features=[2.0])]))
    _assert_partitioned(metrics, UPLOAD, response_inside=False)


async def test_aio_a_request_streams_response_is_serialized_outside_its_total(metrics: Metrics) -> None:
    async def requests() -> Any:
        for features in ([1.0], [2.0]):
            yield req(features=features)

    async with aio_server([grpc_aio_server_interceptor(service="infer", model="ranker", metrics=metrics)]) as target, \
            grpc.aio.insecure_channel(target) as channel:
        await pb_grpc.InferenceStub(channel).Upload(requests())
    _assert_partitioned(metrics, UPLOAD, response_inside=False)


def test_the_traffic_class_comes_from_the_metadata(metrics: Metrics) -> None:
    interceptor = grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)
    with sync_server([interceptor]) as target, stub_for(target) as stub:
        stub.Predict(req(), metadata=(("aiwatch-traffic-class", "batch"),))
        stub.Predict(req())
    for traffic_class in ("batch", "realtime"):
        assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT,
                     method="grpc", status="OK", traffic_class=traffic_class) == 1


def test_a_repeated_traffic_class_key_names_a_class_only_when_every_value_names_it(metrics: Metrics) -> None:
    # as for HTTP (tests/http/test_http_traffic_class_repeated.py); before, the last value won
    interceptor = grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)
    with sync_server([interceptor]) as target, stub_for(target) as stub:
        stub.Predict(req(), metadata=(("aiwatch-traffic-class", "batch"), ("aiwatch-traffic-class", "batch")))
        stub.Predict(req(), metadata=(("aiwatch-traffic-class", "realtime"), ("aiwatch-traffic-class", "batch")))
        stub.Predict(req(), metadata=(("aiwatch-traffic-class", "batch, made-up"),))
    for traffic_class, calls in (("batch", 1), ("realtime", 2)):
        assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT,
                     method="grpc", status="OK", traffic_class=traffic_class) == calls


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
    request = req(features=[0.25] * 100)
    async with aio_server([grpc_aio_server_interceptor(service="infer", model="ranker", metrics=metrics)]) as target, \
            grpc.aio.insecure_channel(target) as channel:
        reply = await pb_grpc.InferenceStub(channel).Predict(request)
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


def client_bytes(metrics: Metrics, direction: str) -> float:
    return metrics.registry.get_sample_value("aiwatch_client_bytes_total", {
        "service": "gateway", "peer": "infer", "direction": direction}) or 0.0


def wait_for_bytes(metrics: Metrics, sent: int, received: int) -> None:
    """The client's counters reach ``sent`` / ``received`` (a call is recorded by grpcio's done callback, on its
    own thread or task, just after the application saw the call end)."""
    wait_until(lambda: (client_bytes(metrics, "sent"), client_bytes(metrics, "received")) == (sent, received), 10,
               what=f"sent {sent} and received {received} bytes, have {client_bytes(metrics, 'sent')} and "
                    f"{client_bytes(metrics, 'received')}")


def test_the_sync_client_counts_the_bytes_of_every_streamed_call_kind(metrics: Metrics) -> None:
    from aiwatch.grpc import grpc_client_interceptor

    requests = [req(features=[float(i)] * (50 * (i + 1))) for i in range(3)]
    client = grpc_client_interceptor(service="gateway", metrics=metrics, peer="infer")
    sent = received = 0
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target, client) as stub:
        # server stream: the request is one message, the replies are counted as the application reads them
        replies = list(stub.PredictStream(requests[2]))
        sent += requests[2].ByteSize()
        received += sum(r.ByteSize() for r in replies)
        wait_for_bytes(metrics, sent, received)
        # client stream: the request iterator's messages as grpcio sends them
        upload = stub.Upload(iter(requests))
        sent += sum(r.ByteSize() for r in requests)
        received += upload.ByteSize()
        wait_for_bytes(metrics, sent, received)
        # both: the call is still the application's (its methods answer), its messages counted both ways
        chat = stub.Chat(iter(requests))
        replies = list(chat)
        assert chat.code() == grpc.StatusCode.OK and len(replies) == 3
        sent += sum(r.ByteSize() for r in requests)
        received += sum(r.ByteSize() for r in replies)
        wait_for_bytes(metrics, sent, received)
    # the server sized the same streamed messages, one observation per message
    assert size(metrics, UPLOAD, "request") == sum(r.ByteSize() for r in requests)
    assert size(metrics, UPLOAD, "request", "count") == 3
    assert size(metrics, CHAT, "request", "count") == size(metrics, CHAT, "response", "count") == 3
    assert size(metrics, CHAT, "response") == sum(r.ByteSize() for r in replies)


async def test_the_aio_client_counts_the_bytes_of_every_call_kind(metrics: Metrics) -> None:
    from aiwatch.grpc import grpc_aio_client_interceptors

    requests = [req(features=[float(i)] * (40 * (i + 1))) for i in range(3)]

    async def stream() -> Any:
        for r in requests:
            yield r

    sent = received = 0
    async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=metrics)]) as target, \
            grpc.aio.insecure_channel(target, interceptors=grpc_aio_client_interceptors(
                service="gateway", metrics=metrics, peer="infer")) as channel:
        stub = pb_grpc.InferenceStub(channel)
        reply = await stub.Predict(requests[0])
        sent, received = sent + requests[0].ByteSize(), received + reply.ByteSize()
        await async_wait_for_bytes(metrics, sent, received)
        replies = [r async for r in stub.PredictStream(requests[1])]
        sent, received = sent + requests[1].ByteSize(), received + sum(r.ByteSize() for r in replies)
        await async_wait_for_bytes(metrics, sent, received)
        upload = await stub.Upload(stream())
        sent, received = sent + sum(r.ByteSize() for r in requests), received + upload.ByteSize()
        await async_wait_for_bytes(metrics, sent, received)
        # the write/read API: grpc.aio hands the interceptor an iterator of the writes
        chat = stub.Chat()
        replies = []
        for r in requests:
            await chat.write(r)
            replies.append(await chat.read())
        await chat.done_writing()
        assert await chat.read() is grpc.aio.EOF and await chat.code() == grpc.StatusCode.OK
        sent, received = sent + sum(r.ByteSize() for r in requests), received + sum(r.ByteSize() for r in replies)
        await async_wait_for_bytes(metrics, sent, received)
    assert size(metrics, UPLOAD, "request") == sum(r.ByteSize() for r in requests)
    assert size(metrics, PREDICT_STREAM, "response", "count") == len(requests[1].features)


async def async_wait_for_bytes(metrics: Metrics, sent: int, received: int) -> None:
    """:func:`wait_for_bytes` without blocking the event loop the record runs on."""
    import asyncio

    for _ in range(200):
        if (client_bytes(metrics, "sent"), client_bytes(metrics, "received")) == (sent, received):
            return
        await asyncio.sleep(0.05)
    assert (client_bytes(metrics, "sent"), client_bytes(metrics, "received")) == (sent, received)
