"""aiwatch's client interceptor on a real sync channel: network time from the server's trailing metadata, client
statuses (DEADLINE_EXCEEDED, CANCELLED, UNAVAILABLE), trace-context propagation, and bad server-timing from a peer."""

from __future__ import annotations

import gc
import json
import threading
import time
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

import aiwatch
from aiwatch.grpc import grpc_client_interceptor, grpc_server_interceptor
from aiwatch.grpc.heldcall import HeldCall
from aiwatch.metrics import Metrics
from aiwatch.servertiming import Entry, parse
from examples.grpc_service.servicer import pb, pb_grpc
from tests.grpc.conftest import CHAT, PREDICT, PREDICT_STREAM, UPLOAD, req, stub_for, sync_server, value
from tests.servers import free_port, wait_until

pytestmark = pytest.mark.slow


def _client_count(metrics: Metrics, target: str, route: str, status: str) -> float:
    return value(metrics.registry, "aiwatch_client_request_duration_seconds_count", service="gateway", peer=target,
                 route=route, status=status)


def test_network_time_is_client_time_minus_server_total(metrics: Metrics) -> None:
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target:
        client = grpc_client_interceptor(service="gateway", peer=target, metrics=metrics)
        with stub_for(target, client) as stub:
            stub.Predict(req(delay_ms=10))
            list(stub.PredictStream(req(features=[1.0, 2.0])))
            stub.Upload(iter([req(), req()]))
            list(stub.Chat(iter([req(), req()])))
            future = stub.Predict.future(req())
            assert future.result().model == "ranker"
    for route in (PREDICT_STREAM, UPLOAD, CHAT):
        assert _client_count(metrics, target, route, "OK") == 1
    assert _client_count(metrics, target, PREDICT, "OK") == 2
    reg = metrics.registry
    client_sum = value(reg, "aiwatch_client_request_duration_seconds_sum", service="gateway", peer=target,
                       route=PREDICT, status="OK")
    server_sum = value(reg, "aiwatch_request_duration_seconds_sum", service="infer", route=PREDICT, method="grpc",
                       status="OK")
    assert server_sum >= 0.010
    assert client_sum > server_sum
    assert value(reg, "aiwatch_network_duration_seconds_count", service="gateway", peer=target) == 5
    network_sum = value(reg, "aiwatch_network_duration_seconds_sum", service="gateway", peer=target)
    all_client_sum = sum(value(reg, "aiwatch_client_request_duration_seconds_sum", service="gateway", peer=target,
                               route=route, status="OK") for route in (PREDICT, PREDICT_STREAM, UPLOAD, CHAT))
    assert 0 < network_sum < all_client_sum  # network time is part of each call's client time


def test_client_statuses_deadline_cancel_unavailable(metrics: Metrics) -> None:
    with sync_server() as target:
        client = grpc_client_interceptor(service="gateway", peer=target, metrics=metrics)
        with stub_for(target, client) as stub:
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(req(delay_ms=300), timeout=0.05)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            stream = stub.PredictStream(req(features=[float(i) for i in range(50)], delay_ms=20))
            next(stream)
            stream.cancel()
            with pytest.raises(grpc.RpcError) as info:
                list(stream)
            assert info.value.code() == grpc.StatusCode.CANCELLED
            wait_until(lambda: _client_count(metrics, target, PREDICT_STREAM, "CANCELLED") == 1, timeout=10)
    assert _client_count(metrics, target, PREDICT, "DEADLINE_EXCEEDED") == 1
    dead = f"127.0.0.1:{free_port()}"
    client = grpc_client_interceptor(service="gateway", peer=dead, metrics=metrics)
    with stub_for(dead, client) as stub, pytest.raises(grpc.RpcError) as info:
        stub.Predict(req(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _client_count(metrics, dead, PREDICT, "UNAVAILABLE") == 1
    # no server timing came back from these calls: no network time is invented
    assert value(metrics.registry, "aiwatch_network_duration_seconds_count", service="gateway", peer=dead) == 0
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_client") == 0


class _TimingServicer(pb_grpc.InferenceServicer):
    """A peer that sends whatever server-timing it is told to (a bare grpcio server, no aiwatch)."""

    def __init__(self, timing: str) -> None:
        self.timing = timing

    def Predict(self, request: Any, context: Any) -> Any:
        context.set_trailing_metadata((("server-timing", self.timing),))
        return pb.PredictReply(score=1.0)


@pytest.mark.parametrize("timing", ["total;dur=abc", "total;dur=-5", "not a token;dur=1"])
def test_malformed_server_timing_is_counted_and_skipped(metrics: Metrics, timing: str) -> None:
    with sync_server(servicer=_TimingServicer(timing)) as target:
        client = grpc_client_interceptor(service="gateway", peer=target, metrics=metrics)
        with stub_for(target, client) as stub:
            assert stub.Predict(req()).score == 1.0
    assert _client_count(metrics, target, PREDICT, "OK") == 1
    assert value(metrics.registry, "aiwatch_network_duration_seconds_count", service="gateway", peer=target) == 0
    assert value(metrics.registry, "aiwatch_instrumentation_errors_total", component="grpc_server_timing") == 1


def test_server_total_above_client_time_is_clamped_and_counted(metrics: Metrics) -> None:
    with sync_server(servicer=_TimingServicer("total;dur=60000")) as target:
        client = grpc_client_interceptor(service="gateway", peer=target, metrics=metrics)
        with stub_for(target, client) as stub:
            stub.Predict(req())
    reg = metrics.registry
    assert value(reg, "aiwatch_network_duration_seconds_count", service="gateway", peer=target) == 1
    assert value(reg, "aiwatch_network_duration_seconds_sum", service="gateway", peer=target) == 0
    assert value(reg, "aiwatch_network_clamped_total", service="gateway", peer=target) == 1


class _EchoMetadata(pb_grpc.InferenceServicer):
    def Predict(self, request: Any, context: Any) -> Any:
        md = dict(context.invocation_metadata())
        return pb.PredictReply(model=md.get("traceparent", ""))


def test_trace_context_is_propagated_in_metadata(metrics: Metrics, provider: TracerProvider) -> None:
    tracer = provider.get_tracer("test")
    with sync_server(servicer=_EchoMetadata()) as target:
        client = grpc_client_interceptor(service="gateway", peer=target, metrics=metrics)
        with stub_for(target, client) as stub:
            assert stub.Predict(req()).model == ""  # no current span: nothing injected
            with tracer.start_as_current_span("caller") as span:
                traceparent = stub.Predict(req()).model
                # a traceparent the app set itself is left alone
                own = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"
                assert stub.Predict(req(), metadata=(("traceparent", own),)).model == own
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert traceparent.split("-")[1] == trace_id


def test_calls_are_labelled_with_the_callers_phase_and_the_servers_name(metrics: Metrics) -> None:
    from aiwatch.timing import RequestRecorder

    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target:
        gateway = RequestRecorder(metrics, service="gateway")
        client = grpc_client_interceptor(service="gateway", metrics=metrics)  # no peer: the server says who it is
        with stub_for(target, client) as stub:
            tl = gateway.begin("POST")
            with aiwatch.phase("inference_call"):
                stub.Predict(req())
            gateway.finish(tl, "/recommend", "POST", "200")
    assert value(metrics.registry, "aiwatch_client_request_duration_seconds_count", service="gateway", peer="infer",
                 route=PREDICT, status="OK", phase="inference_call") == 1
    assert value(metrics.registry, "aiwatch_network_duration_seconds_count", service="gateway", peer="infer",
                 phase="inference_call") == 1


def test_a_response_stream_the_application_drops_is_cancelled_as_without_aiwatch(metrics: Metrics) -> None:
    """grpcio cancels a call whose response iterator the application dropped unread; aiwatch's done callback holds
    the call, so without the wrapper cancelling it, the server would stream on (and the call go unrecorded) until
    the channel closes."""
    import gc

    endless = req(features=[1.0] * 5000, delay_ms=10)
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target, grpc_client_interceptor(service="gateway", metrics=metrics, peer=target)) as stub:
        replies = stub.PredictStream(endless)
        first = next(replies)
        del replies
        gc.collect()
        wait_until(lambda: value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer",
                                 route=PREDICT_STREAM, method="grpc", status="CANCELLED") == 1,
                   timeout=20, what="the server sees the dropped stream cancelled")
        wait_until(lambda: _client_count(metrics, target, PREDICT_STREAM, "CANCELLED") == 1, timeout=20,
                   what="the client records the dropped stream")
        wait_until(lambda: value(metrics.registry, "aiwatch_client_bytes_total", service="gateway", peer=target,
                                 direction="received") == first.ByteSize(), timeout=20, what="the bytes read")
        assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0


def test_a_dropped_response_stream_with_a_done_callback_runs_on_as_without_aiwatch(metrics: Metrics) -> None:
    """A done callback the application added keeps grpcio's call alive: the call is not cancelled when the
    application drops it, with or without aiwatch."""
    import gc

    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target, grpc_client_interceptor(service="gateway", metrics=metrics, peer=target)) as stub:
        replies = stub.PredictStream(req(features=[1.0, 2.0, 3.0], delay_ms=50))
        replies.add_done_callback(lambda call: None)
        next(replies)
        del replies
        gc.collect()
        wait_until(lambda: value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer",
                                 route=PREDICT_STREAM, method="grpc", status="OK") == 1,
                   timeout=20, what="the server's stream ends")
    assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT_STREAM,
                 method="grpc", status="CANCELLED") == 0


#: gRFC A6: the channel retries a call that fails with UNAVAILABLE
_RETRY_CONFIG = json.dumps({"methodConfig": [{"name": [{"service": "aiwatch.example.Inference"}], "retryPolicy": {
    "maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "0.1s", "backoffMultiplier": 1,
    "retryableStatusCodes": ["UNAVAILABLE"]}}]})


class _FailsFirstAttempt(pb_grpc.InferenceServicer):
    """The first attempt of each call fails slowly with UNAVAILABLE; a retried attempt succeeds at once."""

    def Predict(self, request: Any, context: Any) -> Any:
        if not any(key == "grpc-previous-rpc-attempts" for key, _ in context.invocation_metadata()):
            time.sleep(0.2)
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return pb.PredictReply(model="ranker")


def test_a_retried_call_records_its_client_time_but_no_network_time(metrics: Metrics) -> None:
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)], _FailsFirstAttempt()) as target:
        client = grpc_client_interceptor(service="gateway", metrics=metrics)
        with grpc.insecure_channel(target, options=[("grpc.service_config", _RETRY_CONFIG)]) as channel:
            stub = pb_grpc.InferenceStub(grpc.intercept_channel(channel, client))
            reply, call = stub.Predict.with_call(req())
    assert reply.model == "ranker"
    reg = metrics.registry
    for status in ("UNAVAILABLE", "OK"):  # the server saw both attempts
        assert value(reg, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT, method="grpc",
                     status=status) == 1
    # one call, labelled with the server's name from the trailer, whose time holds both attempts and the backoff
    assert value(reg, "aiwatch_client_request_duration_seconds_count", service="gateway", peer="infer",
                 route=PREDICT, status="OK") == 1
    assert value(reg, "aiwatch_client_request_duration_seconds_sum", service="gateway", peer="infer",
                 route=PREDICT, status="OK") >= 0.2
    assert value(reg, "aiwatch_network_duration_seconds_count", service="gateway", peer="infer") == 0
    timing = parse(dict(call.trailing_metadata())["server-timing"])
    assert timing.get("total") == Entry("total", timing.total, "infer", attempt=2)


def test_a_call_without_retry_on_a_retrying_channel_records_its_network_time(metrics: Metrics) -> None:
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target:
        client = grpc_client_interceptor(service="gateway", metrics=metrics)
        with grpc.insecure_channel(target, options=[("grpc.service_config", _RETRY_CONFIG)]) as channel:
            stub = pb_grpc.InferenceStub(grpc.intercept_channel(channel, client))
            stub.Predict(req())
    assert value(metrics.registry, "aiwatch_network_duration_seconds_count", service="gateway", peer="infer") == 1


class _WaitsForItsCaller(pb_grpc.InferenceServicer):
    """Each call works until its caller is gone (grpcio runs the callbacks added with ``context.add_callback`` when
    the call ends), then answers; ``gone`` is set when the server has seen that."""

    def __init__(self) -> None:
        self.working = threading.Event()
        self.gone = threading.Event()

    def _watch(self, context: Any) -> None:
        if not context.add_callback(self.gone.set):  # False: the call has already ended
            self.gone.set()

    def _wait(self) -> None:
        self.working.set()
        self.gone.wait(30)

    def Predict(self, request: Any, context: Any) -> Any:
        self._watch(context)
        self._wait()
        return pb.PredictReply(model="ranker")

    def Upload(self, request_iterator: Any, context: Any) -> Any:
        self._watch(context)
        next(request_iterator)
        self._wait()
        return pb.UploadReply()

    def PredictStream(self, request: Any, context: Any) -> Any:
        self._watch(context)
        yield pb.PredictReply(model="ranker", index=0)
        self._wait()
        yield pb.PredictReply(model="ranker", index=1)


def _start(stub: Any, kind: str) -> Any:
    if kind == "unary":
        return stub.Predict.future(req())
    return stub.Upload.future(iter([req(), req()]))


@pytest.mark.parametrize("kind", ["unary", "stream"])
@pytest.mark.parametrize("instrumented", [False, True], ids=["plain", "aiwatch"])
def test_a_call_future_the_application_drops_is_cancelled_as_without_aiwatch(metrics: Metrics, kind: str,
                                                                                instrumented: bool) -> None:
    """grpcio cancels a call future its application dropped unwaited (the call's __del__); aiwatch's done callback
    held the call, so the server worked on to the end (and the application's call stayed held)."""
    servicer = _WaitsForItsCaller()
    client = [grpc_client_interceptor(service="gateway", metrics=metrics, peer="infer")] if instrumented else []
    route = PREDICT if kind == "unary" else UPLOAD
    with sync_server((), servicer) as target, stub_for(target, *client) as stub:
        future = _start(stub, kind)
        assert servicer.working.wait(20), "the server never got the call"
        # what the application holds is what grpcio's call object is
        assert all(isinstance(future, t) for t in (grpc.RpcError, grpc.Call, grpc.Future))
        assert "StatusCode" in repr(future) or "Rendezvous" in repr(future)
        del future
        gc.collect()
        assert servicer.gone.wait(20), "the server never saw the dropped call cancelled"
        if instrumented:
            wait_until(lambda: _client_count(metrics, "infer", route, "CANCELLED") == 1, timeout=20,
                       what="the client records the dropped call as CANCELLED")


def test_a_response_stream_dropped_half_read_is_cancelled_as_the_server_sees_it(metrics: Metrics) -> None:
    servicer = _WaitsForItsCaller()
    client = grpc_client_interceptor(service="gateway", metrics=metrics, peer="infer")
    with sync_server((), servicer) as target, stub_for(target, client) as stub:
        for reply in stub.PredictStream(req()):
            assert reply.index == 0
            break
        gc.collect()
        assert servicer.gone.wait(20), "the server never saw the dropped stream cancelled"
        wait_until(lambda: _client_count(metrics, "infer", PREDICT_STREAM, "CANCELLED") == 1, timeout=20,
                   what="the client records the dropped stream as CANCELLED")
    assert value(metrics.registry, "aiwatch_client_bytes_total", service="gateway", peer="infer",
                 direction="received") == pb.PredictReply(model="ranker", index=0).ByteSize()


def test_a_done_callback_is_given_the_future_the_application_holds(metrics: Metrics) -> None:
    # as grpcio gives its own: it was given grpcio's call, so `finished is future` was false with aiwatch
    client = grpc_client_interceptor(service="gateway", metrics=metrics, peer="infer")
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target, client) as stub:
        future = stub.Predict.future(req(delay_ms=200))
        given: list[Any] = []
        done = threading.Event()
        future.add_done_callback(lambda finished: (given.append(finished), done.set()))
        assert done.wait(20), "the done callback never ran"
        assert given == [future] and given[0] is future
        assert future.result().model == "ranker"


def test_a_dropped_call_future_with_a_done_callback_runs_on_as_without_aiwatch(metrics: Metrics) -> None:
    """A done callback the application added keeps grpcio's call alive: dropped, it is not cancelled."""
    client = grpc_client_interceptor(service="gateway", metrics=metrics, peer="infer")
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target, client) as stub:
        future = stub.Predict.future(req(delay_ms=200))
        future.add_done_callback(lambda call: None)
        del future
        gc.collect()
        wait_until(lambda: _client_count(metrics, "infer", PREDICT, "OK") == 1, timeout=20,
                   what="the call runs to its end")
    assert _client_count(metrics, "infer", PREDICT, "CANCELLED") == 0


class _HandsBackTheEnd(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):  # type: ignore[misc]
    """An interceptor under aiwatch's that hands the call back only once it is done, so aiwatch sees a call future
    that has already ended (a fast answer or failure: what any call future can be by the time aiwatch looks)."""

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = continuation(details, request)
        call.exception()  # waits for the end
        return call

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return self.intercept_unary_unary(continuation, details, request_iterator)


@pytest.mark.parametrize("kind", ["unary", "stream"])
@pytest.mark.parametrize("ended", [False, True], ids=["running", "ended"])
def test_every_call_future_is_handed_back_as_a_held_call(metrics: Metrics, kind: str, ended: bool) -> None:
    # before: a future already done when aiwatch looked came back as grpcio's own object, a running one as a
    # HeldCall: what the application got depended on timing
    client = grpc_client_interceptor(service="gateway", metrics=metrics, peer="infer")
    under = [_HandsBackTheEnd()] if ended else []
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target, client, *under) as stub:
        future = _start(stub, kind)
        assert isinstance(future, HeldCall)
        assert future.exception(20) is None
        assert future.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("ended", [False, True], ids=["plain", "ended-under"])
def test_a_blocking_call_is_handed_back_as_grpcios_own_outcome(metrics: Metrics, ended: bool) -> None:
    client = grpc_client_interceptor(service="gateway", metrics=metrics, peer="infer")
    under = [_HandsBackTheEnd()] if ended else []
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
            stub_for(target, client, *under) as stub:
        for _reply, call in (stub.Predict.with_call(req()), stub.Upload.with_call(iter([req(), req()]))):
            assert not isinstance(call, HeldCall)
            assert call.code() == grpc.StatusCode.OK
    assert _client_count(metrics, "infer", PREDICT, "OK") == 1
