"""aiwatch's interceptors on a real grpc.aio server and channel: the four RPC kinds, abort, exceptions,
deadline, cancellation mid-stream, and the client's view (network time, client statuses)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc
import grpc.aio
import pytest

from aiwatch.grpc import grpc_aio_client_interceptors, grpc_aio_server_interceptor
from aiwatch.metrics import Metrics
from aiwatch.servertiming import parse, parse_server_timing
from examples.grpc_service.servicer import AioInferenceServicer, pb, pb_grpc
from tests.grpc.conftest import (
    CHAT,
    PREDICT,
    PREDICT_STREAM,
    SLOW_SERIALIZE,
    UPLOAD,
    aio_server,
    req,
    slow_serialize_handler,
    stub_for,
    value,
)

pytestmark = pytest.mark.slow


def _served(metrics: Metrics) -> AbstractAsyncContextManager[str]:
    """The example servicer behind aiwatch's interceptor (service "infer", model "ranker") on a grpc.aio server."""
    return aio_server([grpc_aio_server_interceptor(service="infer", model="ranker", metrics=metrics)])


def _count(metrics: Metrics, route: str, status: str) -> float:
    return value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=route,
                 method="grpc", status=status)


def _client_count(metrics: Metrics, target: str, route: str, status: str) -> float:
    return value(metrics.registry, "aiwatch_client_request_duration_seconds_count", service="gateway", peer=target,
                 route=route, status=status)


async def _eventually(check: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def _requests(n: int) -> AsyncIterator[Any]:
    for i in range(n):
        yield req(features=[float(i)])


async def test_all_four_kinds_on_aio(metrics: Metrics) -> None:
    async with _served(metrics) as target, grpc.aio.insecure_channel(target, interceptors=grpc_aio_client_interceptors(
            service="gateway", peer=target, metrics=metrics)) as channel:
        stub = pb_grpc.InferenceStub(channel)
        call = stub.Predict(req(features=[2.0, 4.0], delay_ms=3))
        assert (await call).score == 3.0
        timing = parse_server_timing(dict(await call.trailing_metadata())["server-timing"])
        assert timing["inference"] >= 0.003

        stream = stub.PredictStream(req(features=[1.0, 2.0, 3.0]))
        assert [r.index async for r in stream] == [0, 1, 2]
        assert "server-timing" in dict(await stream.trailing_metadata())

        upload = await stub.Upload(_requests(4))
        assert upload.count == 4

        chat = stub.Chat(_requests(3))
        assert [r.score async for r in chat] == [0.0, 1.0, 2.0]
        assert "server-timing" in dict(await chat.trailing_metadata())
        for route in (PREDICT, PREDICT_STREAM, UPLOAD, CHAT):
            await _eventually(lambda route=route: _client_count(metrics, target, route, "OK") == 1)
    for route in (PREDICT, PREDICT_STREAM, UPLOAD, CHAT):
        assert _count(metrics, route, "OK") == 1, route
    assert value(metrics.registry, "aiwatch_phase_duration_seconds_count", service="infer", model="ranker",
                 phase="inference") == 4
    assert value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=PREDICT_STREAM,
                 direction="sent") == 3
    assert value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=UPLOAD,
                 direction="received") == 4
    assert value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=CHAT,
                 direction="received") == 3
    assert value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=CHAT, direction="sent") == 3
    # the client measured network time for each call that reported its server timing
    assert value(metrics.registry, "aiwatch_network_duration_seconds_count", service="gateway", peer=target) == 4
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_server") == 0
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_client") == 0


async def test_aio_stream_stream_abort_and_exception(metrics: Metrics) -> None:
    async with _served(metrics) as target, grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        chat = stub.Chat(_requests_with_failure("PERMISSION_DENIED"))
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for reply in chat:
                got.append(reply.index)
        assert got == [0]
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == "asked to fail with PERMISSION_DENIED"

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(req(fail="raise"))
        assert info.value.code() == grpc.StatusCode.UNKNOWN

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(req(fail="NOT_FOUND"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # grpc.aio's abort() sends the status itself; aiwatch's context adds the timing before it does
        timing = parse_server_timing(dict(info.value.trailing_metadata())["server-timing"])
        assert timing["total"] > 0
    assert _count(metrics, CHAT, "PERMISSION_DENIED") == 1
    assert _count(metrics, PREDICT, "UNKNOWN") == 1
    assert _count(metrics, PREDICT, "NOT_FOUND") == 1
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_server") == 0


async def test_aio_abort_trailer_escapes_a_service_name_outside_ascii(metrics: Metrics) -> None:
    """abort() builds the trailer itself: its desc is printable ASCII too (grpc-core rejected the Latin-1 letter)."""
    async with aio_server([grpc_aio_server_interceptor(service="café-ranker", metrics=metrics)]) as target, \
            grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        call = stub.Predict(req())
        await call
        assert parse(dict(await call.trailing_metadata())["server-timing"]).service == "caf%C3%A9-ranker"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(req(fail="NOT_FOUND"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert parse(dict(info.value.trailing_metadata())["server-timing"]).service == "caf%C3%A9-ranker"


class _Unserializable(AioInferenceServicer):
    """Predict forgets ``return``; PredictStream's second message is of the wrong type."""

    async def Predict(self, request: Any, context: Any) -> Any:
        await super().Predict(request, context)

    async def PredictStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield pb.PredictReply(score=1.0)
        yield "not a PredictReply"


async def test_aio_a_response_grpcio_cannot_serialize_is_recorded_unknown(metrics: Metrics) -> None:
    """grpc.aio answers a response it cannot serialize with UNKNOWN: aiwatch records that (it recorded OK for the
    unary call, CANCELLED for the stream)."""
    async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=metrics)], _Unserializable()) \
            as target, grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(req())
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for reply in stub.PredictStream(req()):
                got.append(reply.score)
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        assert got == [1.0]
        await _eventually(lambda: _count(metrics, PREDICT_STREAM, "UNKNOWN") + _count(metrics, PREDICT_STREAM,
                                                                                      "CANCELLED") == 1)
    assert _count(metrics, PREDICT, "UNKNOWN") == 1
    assert _count(metrics, PREDICT, "OK") == 0
    assert _count(metrics, PREDICT_STREAM, "UNKNOWN") == 1
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_server") == 0


class _SetCode(AioInferenceServicer):
    """Predict and Upload set a code and return (Predict a reply, or ``None`` when ``request.model == "none"``)."""

    async def Predict(self, request: Any, context: Any) -> Any:
        context.set_code(grpc.StatusCode.NOT_FOUND)
        reply = await super().Predict(request, context)
        return None if request.model == "none" else reply

    async def Upload(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        reply = await super().Upload(request_iterator, context)
        context.set_code(grpc.StatusCode.ALREADY_EXISTS)
        return reply


def _recorded_at_once(metrics: Metrics, target: str) -> list[tuple[str, str, bool]]:
    """Blocking calls from this thread (the server's loop runs on): each one's route, code, and whether it was
    recorded when the call returned."""
    out = []
    with stub_for(target) as stub:
        for _ in range(30):
            for route, model, call in ((PREDICT, "ranker", lambda m: stub.Predict(req(model=m))),
                                       (PREDICT, "none", lambda m: stub.Predict(req(model=m))),
                                       (UPLOAD, "", lambda m: stub.Upload(iter([req(), req()])))):
                before = sum(_count(metrics, route, s) for s in ("NOT_FOUND", "ALREADY_EXISTS"))
                with pytest.raises(grpc.RpcError) as info:
                    call(model)
                after = sum(_count(metrics, route, s) for s in ("NOT_FOUND", "ALREADY_EXISTS"))
                out.append((route, info.value.code().name, after == before + 1))
    return out


async def test_aio_a_code_set_and_returned_is_recorded_before_the_caller_has_it(metrics: Metrics) -> None:
    """grpc.aio serializes a unary response only while the code is OK: a record held for that serialization waited
    for the RPC's done-callback, after the caller already had its answer (about a third of the calls)."""
    async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=metrics)], _SetCode()) as target:
        calls = await asyncio.to_thread(_recorded_at_once, metrics, target)
    assert {(route, code) for route, code, _ in calls} == {(PREDICT, "NOT_FOUND"), (UPLOAD, "ALREADY_EXISTS")}
    assert [c for c in calls if not c[2]] == []
    assert _count(metrics, PREDICT, "NOT_FOUND") == 60
    assert _count(metrics, UPLOAD, "ALREADY_EXISTS") == 30
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_server") == 0


async def _requests_with_failure(code: str) -> AsyncIterator[Any]:
    yield req(features=[1.0], fail=code)
    yield req(features=[2.0])


async def test_aio_deadline_and_cancel_mid_stream(metrics: Metrics) -> None:
    async with _served(metrics) as target, grpc.aio.insecure_channel(target, interceptors=grpc_aio_client_interceptors(
            service="gateway", peer=target, metrics=metrics)) as channel:
        stub = pb_grpc.InferenceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Predict(req(delay_ms=500), timeout=0.05)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        stream = stub.PredictStream(req(features=[float(i) for i in range(50)], delay_ms=20))
        async for _reply in stream:
            break
        stream.cancel()
        await _eventually(lambda: _count(metrics, PREDICT_STREAM, "CANCELLED") == 1)
        await _eventually(lambda: _count(metrics, PREDICT, "DEADLINE_EXCEEDED") == 1)
        await _eventually(lambda: _client_count(metrics, target, PREDICT_STREAM, "CANCELLED") == 1)
        await _eventually(lambda: _client_count(metrics, target, PREDICT, "DEADLINE_EXCEEDED") == 1)
    sent = value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=PREDICT_STREAM,
                 direction="sent")
    assert 1 <= sent < 50
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0


async def _open_requests(stop: asyncio.Event) -> AsyncIterator[Any]:
    yield req(features=[1.0])
    await stop.wait()


@pytest.mark.parametrize("kind", ["Upload", "Chat"])
async def test_aio_a_request_stream_ended_by_the_deadline_is_recorded_deadline_exceeded(metrics: Metrics,
                                                                                        kind: str) -> None:
    """grpc.aio ends a request stream at the call's deadline as if the client had closed it, and runs the handler
    on: the example servicer's ``async for`` loop ends and it returns normally, never cancelled. Its caller has
    DEADLINE_EXCEEDED; every such call was recorded OK."""
    calls = 3
    stop = asyncio.Event()
    try:
        async with _served(metrics) as target, grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            for _ in range(calls):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    if kind == "Upload":
                        await stub.Upload(_open_requests(stop), timeout=0.2)
                    else:
                        async for _reply in stub.Chat(_open_requests(stop), timeout=0.2):
                            pass
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            route = UPLOAD if kind == "Upload" else CHAT
            await _eventually(lambda: sum(_count(metrics, route, s) for s in ("DEADLINE_EXCEEDED", "CANCELLED", "OK",
                                                                              "UNKNOWN")) == calls)
    finally:
        stop.set()
    assert _count(metrics, route, "OK") == 0
    assert _count(metrics, route, "DEADLINE_EXCEEDED") == calls
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0


async def test_aio_client_records_unavailable(metrics: Metrics) -> None:
    from tests.servers import free_port

    target = f"127.0.0.1:{free_port()}"  # nothing listens there
    async with grpc.aio.insecure_channel(target, interceptors=grpc_aio_client_interceptors(
            service="gateway", peer=target, metrics=metrics)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.InferenceStub(channel).Predict(req(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        await _eventually(lambda: _client_count(metrics, target, PREDICT, "UNAVAILABLE") == 1)
    assert value(metrics.registry, "aiwatch_network_duration_seconds_count", service="gateway", peer=target) == 0


class _EchoTraceparent(pb_grpc.InferenceServicer):
    async def Predict(self, request: Any, context: Any) -> Any:
        from examples.grpc_service.servicer import pb

        return pb.PredictReply(model=dict(context.invocation_metadata()).get("traceparent", ""))


async def test_aio_instrumentors_and_trace_propagation(metrics: Metrics) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from aiwatch.grpc import AiwatchGrpcInstrumentorClient, AiwatchGrpcInstrumentorServer

    server_side = AiwatchGrpcInstrumentorServer(service="infer", metrics=metrics)
    client_side = AiwatchGrpcInstrumentorClient(service="gateway", metrics=metrics)
    server_side.instrument()
    client_side.instrument()
    try:
        server = grpc.aio.server()
        pb_grpc.add_InferenceServicer_to_server(_EchoTraceparent(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        target = f"127.0.0.1:{port}"
        channel = grpc.aio.insecure_channel(target)
    finally:
        server_side.uninstrument()
        client_side.uninstrument()
    await server.start()
    try:
        async with channel:
            stub = pb_grpc.InferenceStub(channel)
            with TracerProvider().get_tracer("app").start_as_current_span("caller") as span:
                reply = await stub.Predict(req())
            await _eventually(lambda: _client_count(metrics, "infer", PREDICT, "OK") == 1)
    finally:
        await server.stop(None)
    assert reply.model.split("-")[1] == format(span.get_span_context().trace_id, "032x")
    assert _count(metrics, PREDICT, "OK") == 1
    # no peer given: the label is the service name the server reported in its server-timing trailer
    assert value(metrics.registry, "aiwatch_network_duration_seconds_count", service="gateway", peer="infer") == 1


async def test_aio_undecodable_unary_request_is_recorded_with_its_status(metrics: Metrics) -> None:
    """grpc.aio answers a request it cannot deserialize with UNKNOWN (the thread-pool server: INTERNAL) and never
    runs the handler: aiwatch records that RPC."""
    async with _served(metrics) as target, grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(PREDICT)(b"\xff\xff\xff\xff")
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        assert "DecodeError" in (info.value.details() or "")
    assert _count(metrics, PREDICT, "UNKNOWN") == 1
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0


_RETRY_CONFIG = json.dumps({"methodConfig": [{"name": [{"service": "aiwatch.example.Inference"}], "retryPolicy": {
    "maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "0.1s", "backoffMultiplier": 1,
    "retryableStatusCodes": ["UNAVAILABLE"]}}]})


class _FailsFirstAttempt(pb_grpc.InferenceServicer):
    """The first attempt of each call fails slowly with UNAVAILABLE; a retried one answers at once: OK, or aborts
    with INVALID_ARGUMENT for the model ``bad``."""

    async def Predict(self, request: Any, context: Any) -> Any:
        if not any(key == "grpc-previous-rpc-attempts" for key, _ in context.invocation_metadata()):
            await asyncio.sleep(0.2)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        if request.model == "bad":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad model")
        return pb.PredictReply(model="ranker")


async def test_aio_a_retried_call_records_its_client_time_but_no_network_time(metrics: Metrics) -> None:
    async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=metrics)], _FailsFirstAttempt()) \
            as target, grpc.aio.insecure_channel(
                target, options=[("grpc.service_config", _RETRY_CONFIG)],
                interceptors=grpc_aio_client_interceptors(service="gateway", metrics=metrics)) as channel:
        stub = pb_grpc.InferenceStub(channel)
        call = stub.Predict(req())
        assert (await call).model == "ranker"
        failed = stub.Predict(req(model="bad"))  # the retried attempt aborts: abort() sends the trailer
        with pytest.raises(grpc.aio.AioRpcError):
            await failed
        trailers = [dict(await c.trailing_metadata())["server-timing"] for c in (call, failed)]
        for status in ("OK", "INVALID_ARGUMENT"):
            await _eventually(lambda status=status: value(
                metrics.registry, "aiwatch_client_request_duration_seconds_count", service="gateway",
                peer="infer", route=PREDICT, status=status) == 1)
    assert _count(metrics, PREDICT, "UNAVAILABLE") == 2
    for status in ("OK", "INVALID_ARGUMENT"):
        assert _count(metrics, PREDICT, status) == 1
        assert value(metrics.registry, "aiwatch_client_request_duration_seconds_sum", service="gateway",
                     peer="infer", route=PREDICT, status=status) >= 0.2
    assert value(metrics.registry, "aiwatch_network_duration_seconds_count", service="gateway", peer="infer") == 0
    assert [parse(trailer).retried for trailer in trailers] == [True, True]


class _OutlivesItsCall(pb_grpc.InferenceServicer):
    async def Predict(self, request, context):  # type: ignore[no-untyped-def]
        if request.model == "blocking":
            time.sleep(request.delay_ms / 1000)  # a model call that never awaits: grpc.aio cannot cancel it
        else:
            with contextlib.suppress(asyncio.CancelledError):  # swallowed: the handler runs on
                await asyncio.sleep(request.delay_ms / 1000)
        if request.fail:
            context.set_code(grpc.StatusCode[request.fail])
        return pb.PredictReply()


@pytest.mark.parametrize(("model", "fail", "ending"), [
    ("blocking", "", "DEADLINE_EXCEEDED"),
    ("swallowing", "", "DEADLINE_EXCEEDED"),
    ("swallowing", "OK", "DEADLINE_EXCEEDED"),
    ("swallowing", "NOT_FOUND", "CANCELLED"),
])
async def test_aio_a_handler_that_returns_after_its_call_ended_is_recorded_with_the_callers_status(
        metrics: Metrics, model: str, fail: str, ending: str) -> None:
    """grpc.aio cannot cancel a handler that never awaits (a blocking model call) and does not stop one that caught
    the ``CancelledError``: when either returns, its call is over. They were recorded ``OK`` (or the code they set)
    while the caller saw ``DEADLINE_EXCEEDED`` or ``CANCELLED``."""
    async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=metrics)], _OutlivesItsCall()) \
            as target, grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.InferenceStub(channel).Predict(req(model=model, fail=fail, delay_ms=300),
                                                      timeout=0.05 if ending == "DEADLINE_EXCEEDED" else None)
        if ending == "CANCELLED":
            await asyncio.sleep(0.05)
            call.cancel()
        with pytest.raises((grpc.aio.AioRpcError, asyncio.CancelledError)):
            await call
        assert (await call.code()).name == ending
        await _eventually(lambda: _count(metrics, PREDICT, ending) == 1)
    assert _count(metrics, PREDICT, fail or "OK") == 0
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0


@pytest.mark.parametrize(("fail", "status"), [("raise", "UNKNOWN"), ("NOT_FOUND", "NOT_FOUND")])
async def test_aio_a_client_stream_whose_handler_failed_sent_no_message(metrics: Metrics, fail: str,
                                                                        status: str) -> None:
    """A request-streaming RPC's one response is counted sent only when it went out (it counted 1 on failures)."""
    async with _served(metrics) as target, grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await pb_grpc.InferenceStub(channel).Upload(iter([req(features=[1.0], fail=fail), req(features=[2.0])]))
        await _eventually(lambda: _count(metrics, UPLOAD, status) == 1)
    assert value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=UPLOAD,
                 direction="sent") == 0


class _PlainPredict(pb_grpc.InferenceServicer):
    def Predict(self, request, context):  # type: ignore[no-untyped-def]
        return pb.PredictReply(score=4.0)


async def test_aio_a_plain_function_handler_is_answered_unrecorded_and_warned_of_once(
        metrics: Metrics, caplog: pytest.LogCaptureFixture) -> None:
    """grpc.aio runs a plain-function handler in its thread pool, which aiwatch passes through: its RPCs were in no
    metric without a word. The first call of each such method now logs a warning naming it."""
    caplog.set_level("WARNING", logger="aiwatch")
    async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=metrics)], _PlainPredict()) \
            as target, grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        assert [(await stub.Predict(req())).score for _ in range(3)] == [4.0, 4.0, 4.0]
    warned = [r.getMessage() for r in caplog.records if "plain function" in r.getMessage()]
    assert len(warned) == 1
    assert PREDICT in warned[0]
    assert _count(metrics, PREDICT, "OK") == 0


async def test_aio_a_unary_response_whose_serialization_outlasted_the_deadline_is_deadline_exceeded(
        metrics: Metrics) -> None:
    """As on the thread-pool server: recorded once serialized, with the status its caller has (it was OK)."""
    async def echo(request: bytes, context: Any) -> bytes:
        return request

    server = grpc.aio.server(interceptors=[grpc_aio_server_interceptor(service="infer", metrics=metrics)])
    server.add_generic_rpc_handlers((slow_serialize_handler(echo),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary(SLOW_SERIALIZE)(b"x", timeout=0.1)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await _eventually(lambda: _count(metrics, SLOW_SERIALIZE, "DEADLINE_EXCEEDED") == 1)
    finally:
        await server.stop(None)
    assert _count(metrics, SLOW_SERIALIZE, "OK") == 0
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0


class _AbortsThenRunsOn(pb_grpc.InferenceServicer):
    async def Predict(self, request, context):  # type: ignore[no-untyped-def]
        with contextlib.suppress(grpc.aio.AbortError):  # the status went out with abort(); the handler runs on
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad features")
        time.sleep(request.delay_ms / 1000)  # past its deadline, without an await: grpc.aio cannot cancel it
        return pb.PredictReply()


@pytest.mark.parametrize("server_timing", [True, False])
async def test_aio_an_abort_the_handler_caught_before_its_deadline_passed_is_the_abort_status(
        metrics: Metrics, server_timing: bool) -> None:
    """abort() sent INVALID_ARGUMENT, and its caller had it, before the deadline passed. Without the server-timing
    trailer the call was recorded DEADLINE_EXCEEDED: the abort was only seen through the context aiwatch hands the
    handler to add the trailer, and that context was left out."""
    async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=metrics,
                                                       server_timing=server_timing)], _AbortsThenRunsOn()) as target, \
            grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.InferenceStub(channel).Predict(req(delay_ms=300), timeout=0.1)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ("server-timing" in dict(info.value.trailing_metadata() or ())) is server_timing
        await _eventually(lambda: _count(metrics, PREDICT, "INVALID_ARGUMENT") == 1)
    assert _count(metrics, PREDICT, "DEADLINE_EXCEEDED") == 0
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0
