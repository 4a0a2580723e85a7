"""aiwatch's server interceptor on a real thread-pool grpcio server: the four RPC kinds, statuses, trailing
metadata, phases, message counts, deadlines and cancellation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch import safety
from aiwatch.grpc import grpc_server_interceptor
from aiwatch.grpc.server import (
    DEADLINE_MARGIN_FLOOR_SECONDS,
    DEADLINE_MARGIN_SECONDS,
    MAX_TRAILER,
    TRAILER_COMPONENT,
    _Call,
    _cancel_margin,
    _cancel_status,
    _count_in,
    _ServerCore,
    _status,
)
from aiwatch.grpc.server import _Unserializable as _Held
from aiwatch.metrics import Metrics
from aiwatch.servertiming import Entry, parse, parse_server_timing
from aiwatch.timing import RequestRecorder
from examples.grpc_service.servicer import InferenceServicer, pb, pb_grpc
from tests.grpc.conftest import (
    CHAT,
    PREDICT,
    PREDICT_STREAM,
    SLOW_SERIALIZE,
    UPLOAD,
    req,
    serving,
    slow_serialize_handler,
    stub_for,
    sync_server,
    value,
)
from tests.hostile_timing import PHASES, SERVICES
from tests.servers import wait_until

pytestmark = pytest.mark.slow


def _count(metrics: Metrics, route: str, status: str) -> float:
    return value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=route,
                 method="grpc", status=status)


def _phase_count(metrics: Metrics, phase: str, model: str = "ranker") -> float:
    return value(metrics.registry, "aiwatch_phase_duration_seconds_count", service="infer", model=model, phase=phase)


def test_unary_records_duration_phases_and_reports_server_timing(metrics: Metrics) -> None:
    with sync_server([grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)]) as target, \
            stub_for(target) as stub:
        reply, call = stub.Predict.with_call(req(features=[1.0, 3.0], delay_ms=5))
    assert reply.score == 2.0
    assert _count(metrics, PREDICT, "OK") == 1
    assert _phase_count(metrics, "inference") == 1
    assert _phase_count(metrics, "features") == 1
    assert _phase_count(metrics, "overhead") == 1
    # the model slept 5 ms inside the inference phase: the split puts it there
    assert value(metrics.registry, "aiwatch_phase_duration_seconds_sum", service="infer", model="ranker",
                 phase="inference") >= 0.005
    timing = parse_server_timing(dict(call.trailing_metadata())["server-timing"])
    # the request message's deserialization ran before the handler, and its response's serialization after it
    # returned: both part of the RPC and of its trailer, as is its wait for a worker of the server's pool
    assert set(timing) == {"queue_pool", "deserialize", "features", "inference", "serialize", "overhead", "total"}
    assert timing["total"] >= timing["inference"] >= 0.005
    server_sum = value(metrics.registry, "aiwatch_request_duration_seconds_sum", service="infer", route=PREDICT,
                       method="grpc", status="OK")
    # the reported total and the recorded duration are the same measurement (the header rounds to 1 µs)
    assert timing["total"] == pytest.approx(server_sum, abs=1e-6)
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0


def test_servicer_trailing_metadata_is_kept(metrics: Metrics) -> None:
    class Servicer(pb_grpc.InferenceServicer):
        def Predict(self, request, context):  # type: ignore[no-untyped-def]
            context.set_trailing_metadata((("x-model-version", "7"),))
            return pb.PredictReply(score=1.0)

    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)], Servicer()) as target, \
            stub_for(target) as stub:
        _, call = stub.Predict.with_call(req())
    trailing = dict(call.trailing_metadata())
    assert trailing["x-model-version"] == "7"
    assert "total" in parse_server_timing(trailing["server-timing"])


def test_server_streaming_is_timed_to_the_last_message_and_counts_messages(metrics: Metrics) -> None:
    with sync_server([grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)]) as target, \
            stub_for(target) as stub:
        call = stub.PredictStream(req(features=[1.0, 2.0, 3.0], delay_ms=2))
        replies = list(call)
        trailing = dict(call.trailing_metadata())
    assert [r.index for r in replies] == [0, 1, 2]
    assert _count(metrics, PREDICT_STREAM, "OK") == 1
    sent = value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=PREDICT_STREAM,
                 direction="sent")
    received = value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=PREDICT_STREAM,
                     direction="received")
    assert (sent, received) == (3, 1)
    # three 2 ms inference phases, repeated phases add up into one observation
    assert _phase_count(metrics, "inference") == 1
    assert parse_server_timing(trailing["server-timing"])["total"] >= 0.006


def test_client_streaming_counts_received_messages(metrics: Metrics) -> None:
    with sync_server([grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)]) as target, \
            stub_for(target) as stub:
        reply, call = stub.Upload.with_call(iter([req(features=[float(i)]) for i in range(5)]))
    assert reply.count == 5
    assert _count(metrics, UPLOAD, "OK") == 1
    assert value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=UPLOAD,
                 direction="received") == 5
    assert value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=UPLOAD,
                 direction="sent") == 1
    assert "server-timing" in dict(call.trailing_metadata())


def test_bidi_streaming(metrics: Metrics) -> None:
    with sync_server([grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)]) as target, \
            stub_for(target) as stub:
        call = stub.Chat(iter([req(features=[float(i)]) for i in range(4)]))
        replies = [r.score for r in call]
        trailing = dict(call.trailing_metadata())
    assert replies == [0.0, 1.0, 2.0, 3.0]
    assert _count(metrics, CHAT, "OK") == 1
    for direction in ("sent", "received"):
        assert value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=CHAT,
                     direction=direction) == 4
    assert "server-timing" in trailing
    assert _phase_count(metrics, "inference") == 1


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"])
def test_abort_code_passes_through_and_is_the_status_label(metrics: Metrics, code: str) -> None:
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target) as stub, pytest.raises(grpc.RpcError) as info:
        stub.Predict(req(fail=code))
    assert info.value.code() == grpc.StatusCode[code]
    assert info.value.details() == f"asked to fail with {code}"
    assert _count(metrics, PREDICT, code) == 1
    # the timing still travels on a failed call
    assert "server-timing" in dict(info.value.trailing_metadata())


def test_abort_mid_stream(metrics: Metrics) -> None:
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target) as stub:
        call = stub.PredictStream(req(features=[1.0, 2.0, 3.0], fail="FAILED_PRECONDITION"))
        got = []
        with pytest.raises(grpc.RpcError) as info:
            for reply in call:
                got.append(reply.index)
    assert got == [0]
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _count(metrics, PREDICT_STREAM, "FAILED_PRECONDITION") == 1
    assert value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=PREDICT_STREAM,
                 direction="sent") == 1


def test_servicer_exception_is_unknown_and_unchanged(metrics: Metrics) -> None:
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target) as stub, pytest.raises(grpc.RpcError) as info:
        stub.Predict(req(fail="raise"))
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    # grpcio's own message for an exception from the application, with the servicer's exception in it
    assert "the servicer failed" in (info.value.details() or "")
    assert _count(metrics, PREDICT, "UNKNOWN") == 1
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_server") == 0


def test_deadline_exceeded_on_the_server_side(metrics: Metrics) -> None:
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target) as stub:
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(req(delay_ms=300), timeout=0.05)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # the servicer runs to its end after the deadline; aiwatch sees the RPC is dead and says why
        wait_until(lambda: _count(metrics, PREDICT, "DEADLINE_EXCEEDED") == 1, timeout=10, what="deadline status")
    assert _count(metrics, PREDICT, "OK") == 0


def test_client_cancels_mid_stream(metrics: Metrics) -> None:
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target) as stub:
        call = stub.PredictStream(req(features=[float(i) for i in range(50)], delay_ms=20))
        first = next(call)
        call.cancel()
        assert first.index == 0
        wait_until(lambda: _count(metrics, PREDICT_STREAM, "CANCELLED") == 1, timeout=10, what="cancel status")
        wait_until(lambda: value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0, timeout=10)
    sent = value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=PREDICT_STREAM,
                 direction="sent")
    assert 1 <= sent < 50


def test_concurrent_rpcs_keep_their_own_timelines(metrics: Metrics) -> None:
    errors: list[BaseException] = []
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target) as stub:
        def call(model: str) -> None:
            try:
                for _ in range(5):
                    stub.Predict(req(model=model, features=[1.0]))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=call, args=(f"m{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    for i in range(4):
        assert _phase_count(metrics, "inference", model=f"m{i}") == 5
    assert _count(metrics, PREDICT, "OK") == 20


class _SetCode(pb_grpc.InferenceServicer):
    def Predict(self, request, context):  # type: ignore[no-untyped-def]
        context.set_code(grpc.StatusCode.NOT_FOUND)
        context.set_details("no such model")
        if request.fail == "raise":
            raise LookupError("no such model")
        return pb.PredictReply()


@pytest.mark.parametrize("fail", ["", "raise"])
def test_set_code_is_the_status_label(metrics: Metrics, fail: str) -> None:
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)], _SetCode()) as target, \
            stub_for(target) as stub, pytest.raises(grpc.RpcError) as info:
        stub.Predict(req(fail=fail))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # what grpcio sends, with or without the exception
    assert _count(metrics, PREDICT, "NOT_FOUND") == 1


def test_routes_pass_the_cardinality_guard(metrics: Metrics) -> None:
    from aiwatch.cardinality import OVERFLOW

    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics, max_label_values=1)]) as target, \
            stub_for(target) as stub:
        stub.Predict(req())
        list(stub.PredictStream(req(features=[1.0])))
    assert _count(metrics, PREDICT, "OK") == 1
    assert _count(metrics, OVERFLOW, "OK") == 1
    assert value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=OVERFLOW,
                 direction="sent") == 1


class _ReadsOnAfterTheCallEnded(pb_grpc.InferenceServicer):
    """Reads one request, works until its caller is gone, then reads on: grpcio raises ``RpcError`` from the
    request iterator (the client stream's next message will never come)."""

    def __init__(self) -> None:
        self.reading = threading.Event()

    def Upload(self, request_iterator, context):  # type: ignore[no-untyped-def]
        gone = threading.Event()
        context.add_callback(gone.set)
        next(request_iterator)
        self.reading.set()
        gone.wait(20)
        for _ in request_iterator:
            pass
        return pb.UploadReply()


@pytest.mark.parametrize("ending", ["deadline", "cancel"])
def test_a_request_stream_that_ends_with_its_call_is_the_calls_status(metrics: Metrics, ending: str) -> None:
    stop = threading.Event()

    def requests():  # type: ignore[no-untyped-def]
        yield req(features=[1.0])
        stop.wait(20)

    servicer = _ReadsOnAfterTheCallEnded()
    try:
        with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)],
                         servicer) as target, stub_for(target) as stub:
            if ending == "deadline":
                # a deadline the handler starts well within, however loaded the machine (grpcio may never dispatch a
                # call whose deadline passed first: docs/grpc.md)
                future = stub.Upload.future(requests(), timeout=2.0)
                assert servicer.reading.wait(20)
                with pytest.raises(grpc.RpcError) as info:
                    future.result()
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                expected = "DEADLINE_EXCEEDED"
            else:
                future = stub.Upload.future(requests())
                assert servicer.reading.wait(20)
                future.cancel()
                expected = "CANCELLED"
            wait_until(lambda: value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0
                       and sum(_count(metrics, UPLOAD, s) for s in (expected, "UNKNOWN", "OK")) == 1, timeout=20,
                       what="the RPC recorded")
    finally:
        stop.set()
    assert _count(metrics, UPLOAD, expected) == 1


class _Ended:
    """A servicer context of a call that ended with ``remaining`` seconds to its deadline."""

    def __init__(self, remaining: object) -> None:
        self.remaining = remaining

    def time_remaining(self) -> object:
        if isinstance(self.remaining, Exception):
            raise self.remaining
        return self.remaining


@pytest.mark.parametrize(("remaining", "expected"), [
    (0.0, "DEADLINE_EXCEEDED"),
    (0.004, "DEADLINE_EXCEEDED"),  # the client's deadline, read as a cancel 4 ms before the server's (seen under load)
    (DEADLINE_MARGIN_SECONDS, "DEADLINE_EXCEEDED"),
    (DEADLINE_MARGIN_SECONDS * 1.5, "CANCELLED"),
    (5.0, "CANCELLED"),  # the client gave up long before its deadline
    (None, "CANCELLED"), (float("nan"), "CANCELLED"), (RuntimeError("gone"), "CANCELLED"),
])
def test_a_call_that_ended_at_its_deadline_is_deadline_exceeded_though_its_cancel_came_first(
        remaining: object, expected: str) -> None:
    assert _cancel_status(_Ended(remaining)) == expected


#: not a PredictRequest: a truncated varint
UNDECODABLE = b"\xff\xff\xff\xff"


def test_an_undecodable_unary_request_is_recorded_internal(metrics: Metrics) -> None:
    """grpcio answers a request message it cannot deserialize with INTERNAL and never runs the handler: aiwatch
    records that RPC (it used to vanish from the metrics)."""
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(PREDICT)(UNDECODABLE)
        assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INTERNAL,
                                                             "Exception deserializing request!")
        with pytest.raises(grpc.RpcError) as info:
            list(channel.unary_stream(PREDICT_STREAM)(UNDECODABLE))
        assert info.value.code() == grpc.StatusCode.INTERNAL
    assert _count(metrics, PREDICT, "INTERNAL") == 1
    assert _count(metrics, PREDICT_STREAM, "INTERNAL") == 1
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_server") == 0


def test_an_undecodable_message_of_a_request_stream_is_recorded_internal(metrics: Metrics) -> None:
    """The thread-pool server answers a request stream message it cannot deserialize with INTERNAL and ends the
    handler's request stream as if the client had closed it: aiwatch records the status the client got (it recorded
    CANCELLED)."""
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.stream_unary(UPLOAD)(iter([req().SerializeToString(), UNDECODABLE]))
        assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INTERNAL,
                                                             "Exception deserializing request!")
        with pytest.raises(grpc.RpcError) as info:
            list(channel.stream_stream(CHAT)(iter([req().SerializeToString(), UNDECODABLE])))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        wait_until(lambda: sum(_count(metrics, route, status) for route in (UPLOAD, CHAT)
                               for status in ("INTERNAL", "CANCELLED", "OK")) == 2, timeout=20, what="both recorded")
    assert _count(metrics, UPLOAD, "INTERNAL") == 1
    assert _count(metrics, CHAT, "INTERNAL") == 1
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0


@pytest.mark.parametrize(("service", "desc"), [("café-ranker", "caf%C3%A9-ranker"), ("推論", "%E6%8E%A8%E8%AB%96"),
                                               ("tab\there", "tab%09here"), ("ranker", "ranker")])
def test_a_service_name_outside_ascii_travels_escaped_in_the_trailer(metrics: Metrics, service: str,
                                                                        desc: str) -> None:
    """gRPC metadata values are printable ASCII: grpc-core failed every call with INTERNAL "Invalid metadata" when
    the trailer's desc kept a Latin-1 letter (and a name above U+00FF lost its desc)."""
    with sync_server([grpc_server_interceptor(service=service, metrics=metrics)]) as target, \
            stub_for(target) as stub:
        _, call = stub.Predict.with_call(req(features=[1.0]))
    trailer = dict(call.trailing_metadata())["server-timing"]
    assert trailer.isascii()
    assert parse(trailer).service == desc


class _Unserializable(InferenceServicer):
    """A servicer that forgets ``return`` in Predict and yields a wrong type as PredictStream's second message."""

    def Predict(self, request: Any, context: Any) -> Any:
        if request.model == "missing":  # grpcio sends the code the servicer set
            context.set_code(grpc.StatusCode.NOT_FOUND)
        super().Predict(request, context)

    def Upload(self, request_iterator: Iterator[Any], context: Any) -> Any:
        super().Upload(request_iterator, context)

    def PredictStream(self, request: Any, context: Any) -> Iterator[Any]:
        yield pb.PredictReply(score=1.0)
        yield "not a PredictReply"


def test_a_response_grpcio_cannot_serialize_is_recorded_internal(metrics: Metrics) -> None:
    """grpcio answers a response it cannot serialize with INTERNAL: aiwatch records that (it recorded OK for the
    unary call, CANCELLED for the stream) and does not count the message that never went out."""
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)], _Unserializable()) as target, \
            stub_for(target) as stub:
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(req())
        assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INTERNAL, "Failed to serialize response!")
        assert _count(metrics, PREDICT, "INTERNAL") == 1  # recorded before grpcio answered: no waiting
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(req(model="missing"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert _count(metrics, PREDICT, "NOT_FOUND") == 1
        with pytest.raises(grpc.RpcError) as info:
            stub.Upload(iter([req(), req()]))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert _count(metrics, UPLOAD, "INTERNAL") == 1
        got = []
        with pytest.raises(grpc.RpcError) as info:
            got.extend(reply.score for reply in stub.PredictStream(req(features=[1.0, 2.0])))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert got == [1.0]
        wait_until(lambda: _count(metrics, PREDICT_STREAM, "INTERNAL") + _count(metrics, PREDICT_STREAM, "CANCELLED")
                   == 1, timeout=10, what="stream recorded")
    assert _count(metrics, PREDICT, "INTERNAL") == 1
    assert _count(metrics, PREDICT, "NOT_FOUND") == 1
    assert _count(metrics, PREDICT, "OK") == 0
    assert _count(metrics, UPLOAD, "INTERNAL") == 1
    assert value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=UPLOAD, direction="sent") == 0
    assert _count(metrics, PREDICT_STREAM, "INTERNAL") == 1
    assert value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=PREDICT_STREAM,
                 direction="sent") == 1
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_server") == 0


class _OutlivesItsCaller(InferenceServicer):
    """Predict tells when it started, waits for its caller's cancel, then runs past the call's deadline."""

    def __init__(self) -> None:
        self.started = threading.Event()

    def Predict(self, request: Any, context: Any) -> Any:
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        self.started.set()
        cancelled.wait(30)
        # what is measured: the handler returns after the deadline the caller never reached
        time.sleep(max(context.time_remaining() or 0.0, 0.0) + 0.05)
        return pb.PredictReply()


def test_a_cancel_long_before_the_deadline_is_cancelled_though_the_handler_returns_after_it(
        metrics: Metrics) -> None:
    """The status is decided when the call ended (grpcio's callback), not when the handler returned: aiwatch read the
    time left to the deadline at the handler's return and recorded DEADLINE_EXCEEDED."""
    servicer = _OutlivesItsCaller()
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)], servicer) as target, \
            stub_for(target) as stub:
        future = stub.Predict.future(req(), timeout=1.0)
        assert servicer.started.wait(30)
        future.cancel()
        wait_until(lambda: sum(_count(metrics, PREDICT, status) for status in ("CANCELLED", "DEADLINE_EXCEEDED"))
                   == 1, timeout=30, what="the cancelled call recorded")
    assert _count(metrics, PREDICT, "CANCELLED") == 1


@pytest.mark.parametrize(("remaining", "margin"), [
    (None, DEADLINE_MARGIN_SECONDS), (float("nan"), DEADLINE_MARGIN_SECONDS),
    (30.0, DEADLINE_MARGIN_SECONDS), (1.0, DEADLINE_MARGIN_SECONDS),
    (0.5, 0.05), (0.08, DEADLINE_MARGIN_FLOOR_SECONDS), (0.0, DEADLINE_MARGIN_FLOOR_SECONDS),
])
def test_the_deadline_margin_scales_with_the_calls_deadline(remaining: object, margin: float) -> None:
    """A call with an 80 ms deadline cancelled 10 ms in is CANCELLED: a flat 0.1 s margin took it for its deadline."""
    assert _cancel_margin(remaining) == pytest.approx(margin)
    assert _cancel_status(_Ended(0.07), _cancel_margin(0.08)) == "CANCELLED"
    assert _cancel_status(_Ended(0.004), _cancel_margin(0.08)) == "DEADLINE_EXCEEDED"


class _ManyPhases(InferenceServicer):
    """Predict runs 40 phases with long names (a 2 KiB trailer uncut); ``request.model == "big"``: it also sets
    8000 bytes of trailing metadata of its own."""

    def Predict(self, request: Any, context: Any) -> Any:
        for i in range(40):
            with aiwatch.phase(f"step{i:02d}_" + "x" * 40):
                pass
        if request.model == "big":
            context.set_trailing_metadata((("debug-info", "d" * 8000),))
        return pb.PredictReply()


def test_the_trailer_is_cut_to_its_cap_and_left_out_when_the_metadata_would_be_too_big(
        metrics: Metrics, caplog: pytest.LogCaptureFixture) -> None:
    """Phase entries are left out past 1 KiB (overhead and total kept), and the trailer is left out when the
    servicer's own trailing metadata and it would pass 8 KiB: either pushed the call over the client's metadata limit
    (RESOURCE_EXHAUSTED) while the server recorded OK. Each trailer is counted once."""
    safety.set_burst_seconds(0)  # both logged (this test's burst log is its own: conftest)
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)], _ManyPhases()) as target, \
            stub_for(target) as stub:
        _, call = stub.Predict.with_call(req())
        trailer = dict(call.trailing_metadata())["server-timing"]
        assert len(trailer) <= MAX_TRAILER
        timing = parse_server_timing(trailer)
        assert {"overhead", "total", "step00_" + "x" * 40} <= set(timing)
        assert "step39_" + "x" * 40 not in timing
        assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component=TRAILER_COMPONENT) == 1
        logged = [r.getMessage() for r in caplog.records if "grpc_server_trailer" in r.getMessage()]
        # a cut is the cap at work: logged as what was left out, not as a failure
        assert len(logged) == 1
        assert logged[0].startswith("aiwatch: grpc_server_trailer capped: server-timing trailer over "), logged
        assert logged[0].endswith("phase entries left out (the rest was sent)"), logged

        _, call = stub.Predict.with_call(req(model="big"))
        trailing = dict(call.trailing_metadata())
        assert "server-timing" not in trailing
        assert len(trailing["debug-info"]) == 8000
    logged = [r.getMessage() for r in caplog.records if "grpc_server_trailer" in r.getMessage()]
    assert len(logged) == 2 and logged[1].startswith(
        "aiwatch: grpc_server_trailer capped: server-timing trailer left out: the trailing metadata would be "), logged
    assert logged[1].endswith("(the servicer's own trailing metadata was sent)"), logged
    # once per trailer: the second one was cut and then left out, counted once (it counted twice)
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component=TRAILER_COMPONENT) == 2
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_server") == 0


@settings(max_examples=100, deadline=None)
@given(PHASES, SERVICES, st.none() | st.integers(1, 9_999_999_999))
def test_any_trailer_is_within_its_cap_in_printable_ascii_and_parses(phases: list[tuple[str, float]], service: str,
                                                                     attempt: int | None) -> None:
    """The trailer is cut by the code that cuts the HTTP header (aiwatch.servertiming.fit): the same bound, with the
    retried attempt's number on the total counted in, and gRPC's desc in printable ASCII."""
    core = _ServerCore(RequestRecorder(Metrics(CollectorRegistry()), service=service), server_timing=True)
    tl = core.recorder.begin("grpc")
    for name, seconds in phases:
        tl.phases[(name, "")] = seconds
    call = _Call(tl, streaming=False)
    call.attempt = attempt
    trailer, cut = call.server_timing(core.tail, tl.start + 0.05)
    core.recorder.finish(tl, PREDICT, "grpc", "OK")
    assert len(trailer) <= MAX_TRAILER and trailer.isascii() and trailer.isprintable()
    timing = parse(trailer)
    assert [entry.name for entry in timing.entries][-2:] == ["overhead", "total"]
    assert timing.get("total") == Entry("total", pytest.approx(0.05, abs=1e-6), timing.service, attempt)
    assert (cut is not None) == (len(timing.entries) - 2 < len(phases))


class _EndsFirst:
    """A servicer context whose RPC ends (grpcio runs the callbacks) before the handler returns, while the status
    read afterwards is still OK: the race between a client's cancel and the handler's end."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def invocation_metadata(self) -> tuple[Any, ...]:
        return ()

    def time_remaining(self) -> None:
        return None

    def add_callback(self, callback: Any) -> bool:
        self.callbacks.append(callback)
        return True

    def is_active(self) -> bool:
        return True

    def code(self) -> None:
        return None

    def trailing_metadata(self) -> tuple[Any, ...]:
        return ()

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass


def test_a_unary_rpc_that_ended_before_its_handler_returned_is_recorded(metrics: Metrics) -> None:
    """grpcio's end-of-RPC callback ran first and found no held record; the handler's end then held one for a
    serialization that never came (another interceptor failed the call): the RPC was never recorded and the in-flight
    gauge stayed at 1."""
    core = grpc_server_interceptor(service="infer", metrics=metrics)._core
    context = _EndsFirst()
    call = core.start(PREDICT, context, False)
    assert call is not None
    call.unserializable = _Held()
    core.watch(call, context)
    for callback in context.callbacks:  # the RPC ends
        callback()
    core.end(call, PREDICT, context, None, unary_response=True)
    assert _count(metrics, PREDICT, "OK") == 1
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0


class _StreamEndedByItsDeadline:
    """A servicer context of a call whose deadline has passed while grpcio still reads it as active: grpc-core ended
    the request stream at the deadline (no message), before grpcio processed the call's end."""

    def time_remaining(self) -> float:
        return 0.0

    def is_active(self) -> bool:
        return True

    def code(self) -> None:
        return None


def test_a_request_stream_its_deadline_ended_is_deadline_exceeded_though_the_call_reads_active() -> None:
    """The handler read its request stream to the end and returned normally; the end was the deadline's, so its
    caller has DEADLINE_EXCEEDED: never recorded OK (deterministic form of the race below)."""
    context = _StreamEndedByItsDeadline()
    tl = RequestRecorder(Metrics(CollectorRegistry()), service="infer").begin("grpc")
    call = _Call(tl, streaming=True)
    assert list(_count_in(iter([req(), req()]), call, context)) == [req(), req()]
    assert call.received == 2
    assert _status(context, None, False, remaining=call.remaining) == ("DEADLINE_EXCEEDED", False)
    # a stream its client closed in time leaves the call as it was: OK
    call = _Call(tl, streaming=True)
    live = _StreamEndedByItsDeadline()
    live.time_remaining = lambda: 5.0  # type: ignore[method-assign]
    assert list(_count_in(iter([req()]), call, live)) == [req()]
    assert _status(live, None, False, remaining=call.remaining) == ("OK", False)
    # the client's expiry, which reached the server as the stream's end 5 ms before the server's own deadline (seen
    # on a loaded 2-core machine, grpc.aio's test of this race recorded OK): within the call's margin, the deadline's
    call = _Call(tl, streaming=True)
    early = _StreamEndedByItsDeadline()
    early.time_remaining = lambda: 0.005  # type: ignore[method-assign]
    assert list(_count_in(iter([req()]), call, early)) == [req()]
    assert _status(early, None, False, remaining=call.remaining) == ("DEADLINE_EXCEEDED", False)
    tl.recorder.finish(tl, UPLOAD, "grpc", "OK")  # leaves this thread's context as it found it


def _open_stream(stop: threading.Event) -> Iterator[Any]:
    yield req(features=[1.0])
    stop.wait(20)


@pytest.mark.parametrize("kind", ["Upload", "Chat"])
def test_a_plain_request_stream_loop_ended_by_the_deadline_is_recorded_deadline_exceeded(metrics: Metrics,
                                                                                        kind: str) -> None:
    """The example servicer reads its request stream with a plain ``for`` loop: at the deadline grpc-core ends the
    stream without a message, the loop ends as if the client had closed it, and the handler returns normally, often
    while grpcio still reads the call as active. Every such call is DEADLINE_EXCEEDED at its caller; it was recorded
    OK in about a third of the calls."""
    calls = 6
    stop = threading.Event()
    try:
        with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
                stub_for(target) as stub:
            for _ in range(calls):
                with pytest.raises(grpc.RpcError) as info:
                    if kind == "Upload":
                        stub.Upload(_open_stream(stop), timeout=0.3)
                    else:
                        list(stub.Chat(_open_stream(stop), timeout=0.3))
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            route = UPLOAD if kind == "Upload" else CHAT
            wait_until(lambda: sum(_count(metrics, route, s) for s in ("DEADLINE_EXCEEDED", "CANCELLED", "OK",
                                                                       "UNKNOWN")) == calls,
                       timeout=20, what="every RPC recorded")
    finally:
        stop.set()
    assert _count(metrics, route, "OK") == 0
    assert _count(metrics, route, "DEADLINE_EXCEEDED") == calls


@pytest.mark.parametrize("returned", [[], [pb.PredictReply()], None], ids=["empty-list", "list", "none"])
@pytest.mark.parametrize("traced", [False, True])
def test_a_stream_handler_returning_no_iterator_fails_as_it_does_without_aiwatch(returned: Any, traced: bool) -> None:
    # grpcio takes each response with next(): a list fails there ("'list' object is not an iterator"); aiwatch's
    # wrapper iterated it with `for`, so a servicer that fails bare worked only while instrumented
    class ReturnsNoIterator(InferenceServicer):
        def PredictStream(self, request: Any, context: Any) -> Any:
            return returned

    def outcome(interceptors: list[Any]) -> tuple[Any, str]:
        with (sync_server(interceptors, ReturnsNoIterator()) as target, stub_for(target) as stub,
              pytest.raises(grpc.RpcError) as info):
            list(stub.PredictStream(req(), timeout=10))
        return info.value.code(), info.value.details()

    registry = CollectorRegistry()
    provider = None
    if traced:
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider()
    bare = outcome([])
    assert bare[0] is grpc.StatusCode.UNKNOWN
    assert outcome([grpc_server_interceptor(service="infer", registry=registry, tracer_provider=provider)]) == bare
    assert value(registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT_STREAM,
                 method="grpc", status="UNKNOWN") == 1


def test_a_proxys_route_rules_remember_no_method_name_longer_than_a_label_value() -> None:
    """A gRPC proxy (a catch-all generic handler) with traffic-class route rules: the rule found for each method
    name a client sent was remembered, up to 10 000 names of any length (7 kB names: 14 M characters after 2000
    calls, 70 MB at the bound, for the server's life). A name longer than a label value is matched each time."""
    from aiwatch.cardinality import MAX_VALUE_LENGTH
    from aiwatch.traffic import TrafficClasses

    class CatchAll(grpc.GenericRpcHandler):
        def service(self, details: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(lambda request, context: b"ok")

    registry = CollectorRegistry()
    classes = TrafficClasses(routes={"/bulk.*": "batch"})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[
        grpc_server_interceptor(service="proxy", registry=registry, traffic_classes=classes)])
    server.add_generic_rpc_handlers((CatchAll(),))
    with serving(server) as target, grpc.insecure_channel(target) as channel:
        for i in range(300):
            assert channel.unary_unary(f"/any.Svc/{i}-" + "x" * 7000)(b"", timeout=10) == b"ok"
        assert channel.unary_unary("/bulk.Embed/Run")(b"", timeout=10) == b"ok"
    assert max(map(len, classes._routes)) <= MAX_VALUE_LENGTH
    assert "/bulk.Embed/Run" in classes._routes
    assert value(registry, "aiwatch_request_duration_seconds_count", service="proxy", route="/bulk.Embed/Run",
                 method="grpc", status="OK", traffic_class="batch") == 1


def test_the_methods_whose_timers_are_kept_are_bounded() -> None:
    # a catch-all generic handler takes any method name a client sends: each had its timers kept, up to 10 000
    from aiwatch.grpc.server import MAX_CACHED_METHODS

    core = _ServerCore(RequestRecorder(Metrics(CollectorRegistry()), service="s"), server_timing=True)
    for i in range(MAX_CACHED_METHODS + 50):
        method = f"/any.Service/{'x' * 4000}{i}"
        timer = core.messages(method)
        core.unary_deserializer(method, timer, bytes)
    assert len(core._messages) == len(core._deserializers) == MAX_CACHED_METHODS
    assert core.messages("/any.Service/late") is not core.messages("/any.Service/late")  # made per RPC past it


class _SetsACodeAndOutlivesItsCall(pb_grpc.InferenceServicer):
    def Predict(self, request, context):  # type: ignore[no-untyped-def]
        if request.fail != "raise":
            context.set_code(grpc.StatusCode[request.fail])
        time.sleep(request.delay_ms / 1000)
        if request.fail == "raise":
            raise LookupError("the model went away")
        return pb.PredictReply()


@pytest.mark.parametrize("code", ["OK", "NOT_FOUND"])
@pytest.mark.parametrize("ending", ["DEADLINE_EXCEEDED", "CANCELLED"])
def test_a_code_set_by_a_handler_whose_call_ended_first_is_not_its_status(metrics: Metrics, code: str,
                                                                          ending: str) -> None:
    """grpcio sends nothing to a caller that left: the code the servicer set (an explicit ``OK`` too) never reaches
    it. It was the status label (``OK`` for calls the caller saw fail)."""
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)],
                     _SetsACodeAndOutlivesItsCall()) as target, stub_for(target) as stub:
        if ending == "DEADLINE_EXCEEDED":
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(req(fail=code, delay_ms=300), timeout=0.05)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        else:
            future = stub.Predict.future(req(fail=code, delay_ms=300))
            time.sleep(0.05)
            assert future.cancel()
        wait_until(lambda: _count(metrics, PREDICT, ending) == 1, timeout=10, what=ending)
    assert _count(metrics, PREDICT, code) == 0
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0


@pytest.mark.parametrize("fail", ["raise", "NOT_FOUND"])
def test_a_client_stream_whose_handler_failed_sent_no_message(metrics: Metrics, fail: str) -> None:
    """A request-streaming RPC's one response is counted sent only when it went out: not when the handler raised or
    aborted (it counted 1)."""
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target) as stub, pytest.raises(grpc.RpcError):
        stub.Upload(iter([req(features=[1.0], fail=fail), req(features=[2.0])]))
    assert _count(metrics, UPLOAD, "UNKNOWN" if fail == "raise" else fail) == 1
    assert value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=UPLOAD,
                 direction="sent") == 0


def test_a_handler_that_raises_after_its_call_ended_is_the_callers_status_with_its_exception(
        metrics: Metrics, provider: Any, exporter: Any) -> None:
    """The caller saw ``DEADLINE_EXCEEDED``, not the ``UNKNOWN`` the exception would have sent: that is the status;
    the exception is still the span's."""
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)],
                     _SetsACodeAndOutlivesItsCall()) as target, stub_for(target) as stub:
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(req(fail="raise", delay_ms=300), timeout=0.05)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(lambda: _count(metrics, PREDICT, "DEADLINE_EXCEEDED") == 1, timeout=10, what="deadline status")
    assert _count(metrics, PREDICT, "UNKNOWN") == 0
    (span,) = exporter.get_finished_spans()
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert [e.attributes["exception.type"] for e in span.events if e.name == "exception"] == ["LookupError"]


@pytest.mark.parametrize("ending", ["DEADLINE_EXCEEDED", "CANCELLED"])
def test_a_unary_call_that_ended_while_its_response_was_serialized_is_the_callers_status(metrics: Metrics,
                                                                                       ending: str) -> None:
    """The record waits for the response's serialization; a deadline that passed, or a cancel that came, meanwhile
    ended the call: the caller has DEADLINE_EXCEEDED or CANCELLED. It was recorded with the status the handler's
    return had (OK)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         interceptors=[grpc_server_interceptor(service="infer", metrics=metrics)])
    server.add_generic_rpc_handlers((slow_serialize_handler(lambda request, context: request),))
    with serving(server) as target, grpc.insecure_channel(target) as channel:
        if ending == "DEADLINE_EXCEEDED":
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary(SLOW_SERIALIZE)(b"x", timeout=0.1)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        else:
            future = channel.unary_unary(SLOW_SERIALIZE).future(b"x")
            time.sleep(0.1)
            assert future.cancel()
        wait_until(lambda: _count(metrics, SLOW_SERIALIZE, ending) == 1, timeout=10, what=ending)
    assert _count(metrics, SLOW_SERIALIZE, "OK") == 0
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0



def test_the_wait_for_a_worker_of_the_servers_pool_is_a_queue_phase_inside_the_total(metrics: Metrics) -> None:
    """A thread-pool server's call waits for a free worker before its request is read: that wait was outside the
    server's total and trailer (three 200 ms calls on one worker: totals of 0.2 s each while the last caller waited
    0.6 s), so its caller counted it as network time. It is the ``queue_pool`` phase now, inside both."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1),
                         interceptors=[grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)])
    with serving(server) as target, stub_for(target) as stub:
        calls = [stub.Predict.future(req(delay_ms=200)) for _ in range(3)]
        totals = sorted(parse_server_timing(dict(call.trailing_metadata())["server-timing"])["total"]
                        for call in calls)
        queued = sorted(parse_server_timing(dict(call.trailing_metadata())["server-timing"]).get("queue_pool", 0.0)
                        for call in calls)
    # one worker: the calls ran one after the other, each waiting for the ones before it (less the few ms between
    # the calls' arrivals)
    assert totals[2] >= 0.5 and totals[1] >= 0.3
    assert queued[2] >= 0.3 and queued[1] >= 0.1
    assert _phase_count(metrics, "queue_pool") == 3
    assert value(metrics.registry, "aiwatch_phase_duration_seconds_sum", service="infer", model="ranker",
                 phase="queue_pool") == pytest.approx(sum(queued), abs=1e-5)


def test_aiwatchs_span_starts_when_the_call_arrived_so_it_holds_the_wait_for_a_worker(
        metrics: Metrics, provider: Any, exporter: Any) -> None:
    """aiwatch's SERVER span started when a worker took the call, its total and trailer (``queue_pool``) when the
    call arrived: on one worker, the third of three 200 ms calls had a 0.2 s span for a 0.6 s total. The span
    starts at the call's arrival now, as the total does."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), interceptors=[
        grpc_server_interceptor(service="infer", model="ranker", metrics=metrics, tracer_provider=provider)])
    with serving(server) as target, stub_for(target) as stub:
        calls = [stub.Predict.future(req(delay_ms=200)) for _ in range(3)]
        timings = [parse_server_timing(dict(call.trailing_metadata())["server-timing"]) for call in calls]
    spans = sorted((span for span in exporter.get_finished_spans() if span.kind == SpanKind.SERVER),
                   key=lambda span: span.end_time)
    assert len(spans) == 3
    totals = sorted(timing["total"] for timing in timings)
    assert totals[2] >= 0.5  # the last call waited for the two before it
    for span, total in zip(spans, totals, strict=True):  # one worker: the calls ended in the order of their totals
        # the trailer's total runs from the arrival to when the trailer was set, before the span ended
        assert (span.end_time - span.start_time) / 1e9 >= total - 0.002
