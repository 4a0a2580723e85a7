"""The AI-traffic signals of the gRPC server interceptors on real grpcio servers: message sizes, (de)serialization
phases from the handlers' own (de)serializers, the traffic class from metadata, server-streaming chunk times, and
the bytes the sync and aio clients move per peer for every call kind."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace import TracerProvider

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


def test_a_unary_rpcs_deserialization_and_serialization_are_inside_its_total_and_its_trailer(
        metrics: Metrics) -> None:
    server, target = _slow_server(metrics)
    try:
        with stub_for(target) as stub:
            _, call = stub.Predict.with_call(req(features=[1.0]))
    finally:
        server.stop(None)
    timing = parse_server_timing(dict(call.trailing_metadata())["server-timing"])
    # grpcio deserializes before the handler: the RPC's start moves back to include it; it serializes the response
    # after the handler returned, before it sends the trailer: the trailer waits for it
    assert timing["deserialize"] >= SLOW and timing["serialize"] >= SLOW
    assert timing["total"] >= timing["deserialize"] + timing["serialize"]
    total = value(metrics.registry, "aiwatch_request_duration_seconds_sum", service="infer", route=PREDICT,
                  method="grpc", status="OK")
    assert total >= phase(metrics, "deserialize", "sum") + phase(metrics, "serialize", "sum") >= 2 * SLOW
    assert timing["total"] == pytest.approx(total, abs=6e-7)


def _slow_serializer_handler(handler: Any) -> Any:
    """``handler`` (unary-unary) whose response serializer takes SLOW seconds."""

    def slow_serialize(message: Any) -> bytes:
        time.sleep(SLOW)
        return bytes(message.SerializeToString())

    return grpc.unary_unary_rpc_method_handler(handler, request_deserializer=pb.PredictRequest.FromString,
                                               response_serializer=slow_serialize)


def _assert_unary_serialization_inside_the_total(metrics: Metrics, trailing: Any) -> None:
    """A unary response's serialization is a phase of its RPC: the total is its phases plus the overhead, in the
    histograms and in the trailer alike (docs/grpc.md, "Serialization")."""
    timing = parse_server_timing(dict(trailing)["server-timing"])
    total = value(metrics.registry, "aiwatch_request_duration_seconds_sum", service="infer", route=PREDICT,
                  method="grpc", status="OK")
    serialize = phase(metrics, "serialize", "sum")
    # the thread-pool server's wait for a worker is a phase too (none on grpc.aio)
    inside = (phase(metrics, "queue_pool", "sum") + phase(metrics, "deserialize", "sum")
              + phase(metrics, "inference", "sum") + serialize)
    overhead = phase(metrics, "overhead", "sum")
    assert serialize >= SLOW
    assert value(metrics.registry, "aiwatch_overhead_clamped_total", service="infer") == 0
    # before: the serialization was recorded after the total was taken, so the phases added up to more than it
    assert inside + overhead == pytest.approx(total, rel=1e-12, abs=1e-12)
    # the trailer's entries are milliseconds to 3 decimals: the same figures to within half a microsecond
    assert timing["total"] == pytest.approx(total, abs=6e-7)
    assert timing["serialize"] == pytest.approx(serialize, abs=6e-7)
    assert timing["overhead"] == pytest.approx(overhead, abs=6e-7)


def _serve_sync(metrics: Metrics, predict: Any) -> tuple[grpc.Server, str]:
    """A thread-pool server whose Predict is ``predict``, its response serializer taking SLOW seconds."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         interceptors=[grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "aiwatch.example.Inference", {"Predict": _slow_serializer_handler(predict)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_unary_serialization_leaves_the_overhead_and_the_trailer_consistent(metrics: Metrics) -> None:
    def predict(request: Any, context: Any) -> Any:
        with aiwatch.phase("inference"):
            pass
        time.sleep(3 * SLOW)  # outside every phase: overhead, more than the serialization takes
        return pb.PredictReply(score=1.0)

    server, target = _serve_sync(metrics, predict)
    try:
        with stub_for(target) as stub:
            _, call = stub.Predict.with_call(req(features=[1.0]))
    finally:
        server.stop(None)
    _assert_unary_serialization_inside_the_total(metrics, call.trailing_metadata())


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
    _assert_unary_serialization_inside_the_total(metrics, trailing)


def test_a_response_returned_with_an_error_code_is_serialized_inside_its_total(metrics: Metrics) -> None:
    # the thread-pool server serializes a returned response whatever code the servicer set, and sends it with it
    def predict(request: Any, context: Any) -> Any:
        context.set_code(grpc.StatusCode.NOT_FOUND)
        return pb.PredictReply(score=1.0)

    server, target = _serve_sync(metrics, predict)
    try:
        with stub_for(target) as stub, pytest.raises(grpc.RpcError) as info:
            stub.Predict(req(features=[1.0]))
    finally:
        server.stop(None)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    timing = parse_server_timing(dict(info.value.trailing_metadata())["server-timing"])
    total = value(metrics.registry, "aiwatch_request_duration_seconds_sum", service="infer", route=PREDICT,
                  method="grpc", status="NOT_FOUND")
    assert timing["serialize"] == pytest.approx(phase(metrics, "serialize", "sum"), abs=6e-7)
    assert timing["serialize"] >= SLOW
    assert timing["total"] == pytest.approx(total, abs=6e-7)
    assert sum(_phase_sums(metrics).values()) == pytest.approx(total, rel=1e-12, abs=1e-12)


def test_a_response_serialized_after_its_caller_left_is_still_a_phase(metrics: Metrics) -> None:
    """The caller cancels while the handler runs; the handler returns once the RPC has ended. The RPC is recorded
    CANCELLED as it ends, and grpcio still runs the serializer: that phase is recorded on its own, not lost."""
    started = threading.Event()

    def predict(request: Any, context: Any) -> Any:
        over = threading.Event()
        context.add_callback(over.set)  # after aiwatch's own: aiwatch has seen the end when this is set
        started.set()
        over.wait(10)
        return pb.PredictReply(score=1.0)

    server, target = _serve_sync(metrics, predict)
    try:
        with stub_for(target) as stub:
            future = stub.Predict.future(req(features=[1.0]))
            assert started.wait(10)
            future.cancel()
            wait_until(lambda: phase(metrics, "serialize") == 1, 10, what="the serialization recorded")
    finally:
        server.stop(None)
    assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT,
                 method="grpc", status="CANCELLED") == 1
    assert phase(metrics, "serialize", "sum") >= SLOW
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_server") == 0


def _own(handler: Any, details: Any) -> Any:
    """Predict's ``handler`` with a response serializer of its own instead of the one aiwatch wrapped."""
    if handler is None or not details.method.endswith("/Predict"):
        return handler
    return grpc.unary_unary_rpc_method_handler(handler.unary_unary, handler.request_deserializer,
                                               pb.PredictReply.SerializeToString)


class _OwnSerializer(grpc.ServerInterceptor):  # type: ignore[misc]
    """An interceptor in front of aiwatch's that replaces Predict's response serializer: aiwatch's never runs."""

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        return _own(continuation(details), details)


class _AioOwnSerializer(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        return _own(await continuation(details), details)


def _assert_recorded_without_a_serialization(metrics: Metrics, trailing: Any) -> None:
    wait_until(lambda: value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer",
                             route=PREDICT, method="grpc", status="OK") == 1, 10, what="the RPC recorded")
    assert "server-timing" not in dict(trailing)  # it waited for a serialization that never came
    assert phase(metrics, "serialize") == 0 and phase(metrics, "inference") == 1
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_server") == 0


def test_a_unary_rpc_whose_response_aiwatch_never_serializes_is_recorded_when_it_ends(metrics: Metrics) -> None:
    interceptors = [_OwnSerializer(), grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)]
    with sync_server(interceptors) as target, stub_for(target) as stub:
        reply, call = stub.Predict.with_call(req(features=[1.0, 3.0]))
        assert reply.score == 2.0
        _assert_recorded_without_a_serialization(metrics, call.trailing_metadata())


async def test_aio_a_unary_rpc_whose_response_aiwatch_never_serializes_is_recorded_when_it_ends(
        metrics: Metrics) -> None:
    interceptors = [_AioOwnSerializer(), grpc_aio_server_interceptor(service="infer", model="ranker",
                                                                     metrics=metrics)]
    async with aio_server(interceptors) as target, grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.InferenceStub(channel).Predict(req(features=[1.0, 3.0]))
        assert (await call).score == 2.0
        trailing = await call.trailing_metadata()
        for _ in range(200):
            if value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT,
                     method="grpc", status="OK") == 1:
                break
            await asyncio.sleep(0.05)
    _assert_recorded_without_a_serialization(metrics, trailing)


def _phase_sums(metrics: Metrics) -> dict[str, float]:
    return {sample.labels["phase"]: sample.value for family in metrics.registry.collect()
            if family.name == "aiwatch_phase_duration_seconds" for sample in family.samples
            if sample.name.endswith("_sum") and sample.labels["service"] == "infer"}


def _assert_partitioned(metrics: Metrics, route: str) -> None:
    """The RPC's phases, ``serialize`` and ``deserialize`` among them, and its overhead add up to its total."""
    sums = _phase_sums(metrics)
    assert sums.get("serialize", 0.0) > 0.0 and sums.get("deserialize", 0.0) > 0.0
    total = value(metrics.registry, "aiwatch_request_duration_seconds_sum", service="infer", route=route,
                  method="grpc", status="OK")
    assert sum(sums.values()) == pytest.approx(total, rel=1e-12, abs=1e-12)


def test_a_request_streams_response_is_serialized_inside_its_total(metrics: Metrics) -> None:
    # a request stream with a unary response (stream-unary): grpcio serializes its response after the handler, too
    interceptor = grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)
    with sync_server([interceptor]) as target, stub_for(target) as stub:
        stub.Upload(iter([req(features=[1.0]), req(features=[2.0])]))
    _assert_partitioned(metrics, UPLOAD)


async def test_aio_a_request_streams_response_is_serialized_inside_its_total(metrics: Metrics) -> None:
    async def requests() -> Any:
        for features in ([1.0], [2.0]):
            yield req(features=features)

    async with aio_server([grpc_aio_server_interceptor(service="infer", model="ranker", metrics=metrics)]) as target, \
            grpc.aio.insecure_channel(target) as channel:
        await pb_grpc.InferenceStub(channel).Upload(requests())
    _assert_partitioned(metrics, UPLOAD)


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


def test_a_server_streams_chunk_timing_carries_its_sampled_trace_id_as_exemplar(metrics: Metrics,
                                                                              provider: TracerProvider) -> None:
    from tests.spans import exemplar_trace_ids

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    interceptor = grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)
    with sync_server([interceptor]) as target, stub_for(target) as stub:
        assert len(list(stub.PredictStream(req(features=[1.0, 2.0, 3.0]), metadata=(
            ("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),)))) == 3
    found = exemplar_trace_ids(metrics.registry)
    assert (found.get("aiwatch_time_to_first_chunk_seconds"), found.get("aiwatch_time_between_chunks_seconds")) \
        == ({trace_id}, {trace_id})


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
