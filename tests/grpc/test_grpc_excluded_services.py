"""gRPC services left alone (``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES``, ``excluded_services=``): grpcio's own health
service on real servers, next to the example service, with aiwatch's server and client interceptors on both sides."""

from __future__ import annotations

import doctest
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aiwatch.exclusion import ExcludedServices, service_of
from aiwatch.grpc import (
    AiwatchGrpcInstrumentorClient,
    AiwatchGrpcInstrumentorServer,
    grpc_aio_client_interceptors,
    grpc_aio_server_interceptor,
    grpc_client_interceptor,
    grpc_server_interceptor,
)
from aiwatch.metrics import Metrics
from aiwatch.middleware._common import UNMATCHED_ROUTE
from examples.grpc_service.servicer import AioInferenceServicer, pb_grpc
from tests.grpc.conftest import PREDICT, req, serving, value

pytestmark = pytest.mark.slow

HEALTH = "grpc.health.v1.Health"
CHECK = f"/{HEALTH}/Check"
VARIABLE = "OTEL_PYTHON_GRPC_EXCLUDED_SERVICES"


class _SeenMetadata(grpc.ServerInterceptor):  # type: ignore[misc]
    """Notes the metadata keys each RPC arrived with (what a client interceptor added)."""

    def __init__(self) -> None:
        self.keys: dict[str, set[str]] = {}

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        keys = self.keys.setdefault(handler_call_details.method, set())
        keys.update(item[0] for item in handler_call_details.invocation_metadata or ())
        return continuation(handler_call_details)


@contextmanager
def _health_and_example(interceptors: list[Any]) -> Iterator[tuple[str, health.HealthServicer]]:
    """A real thread-pool server with grpcio's health service and the example service; yields its target."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors)
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    with serving(server) as target:
        yield target, servicer


def _server_count(metrics: Metrics, route: str, status: str = "OK") -> float:
    return value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=route,
                 method="grpc", status=status)


def _client_count(metrics: Metrics, route: str) -> float:
    """The calls to ``route`` recorded by the client side, whatever their peer label."""
    return sum(sample.value for family in metrics.registry.collect()
               if family.name == "aiwatch_client_request_duration_seconds" for sample in family.samples
               if sample.name.endswith("_count") and sample.labels["route"] == route)


def _calls(target: str, client: Any) -> tuple[Any, Any]:
    """Three health checks and one prediction through ``client``; the trailing metadata of a check and of the
    prediction."""
    with grpc.insecure_channel(target) as channel:
        wrapped = grpc.intercept_channel(channel, client)
        checker = health_pb2_grpc.HealthStub(wrapped)
        for _ in range(3):
            reply, check = checker.Check.with_call(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        _, predict = pb_grpc.InferenceStub(wrapped).Predict.with_call(req(features=[1.0]))
    return check.trailing_metadata(), predict.trailing_metadata()


def test_health_checks_excluded_by_the_variable_are_neither_timed_nor_traced(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, f" {HEALTH} , grpc.reflection.v1.ServerReflection")
    seen = _SeenMetadata()
    server_side = grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)
    client = grpc_client_interceptor(service="gw", metrics=metrics, tracer_provider=provider)
    with _health_and_example([seen, server_side]) as (target, _):
        check_trailer, predict_trailer = _calls(target, client)
    assert _server_count(metrics, CHECK) == _client_count(metrics, CHECK) == 0
    assert _server_count(metrics, PREDICT) == _client_count(metrics, PREDICT) == 1
    assert "server-timing" not in dict(check_trailer or ())
    assert "server-timing" in dict(predict_trailer)
    names = sorted(span.name for span in exporter.get_finished_spans())
    # the prediction's SERVER and CLIENT spans and its two phase spans; none for the checks
    assert names == ["aiwatch.example.Inference/Predict"] * 2 + ["features", "inference"]
    # the excluded call is handed on as the app made it: no trace context added
    assert "traceparent" not in seen.keys[CHECK]
    assert "traceparent" in seen.keys[PREDICT]
    assert value(metrics.registry, "aiwatch_requests_in_flight", service="infer") == 0


def test_without_the_exclusion_health_checks_are_recorded(metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    """The contrast: the default excludes nothing, so a check is an RPC like any other."""
    monkeypatch.delenv(VARIABLE, raising=False)
    server_side = grpc_server_interceptor(service="infer", metrics=metrics)
    with _health_and_example([server_side]) as (target, _):
        check_trailer, _ = _calls(target, grpc_client_interceptor(service="gw", metrics=metrics))
    assert _server_count(metrics, CHECK) == _client_count(metrics, CHECK) == 3
    assert "server-timing" in dict(check_trailer)


@pytest.mark.parametrize("excluded", [True, False])
def test_an_open_watch_stream_is_in_flight_only_when_its_service_is_not_excluded(metrics: Metrics,
                                                                                  excluded: bool) -> None:
    """Health/Watch stays open for as long as its caller watches (a load balancer's health checking): counted, it
    would hold ``aiwatch_requests_in_flight`` up for hours, and end as one RPC of that length."""
    server_side = grpc_server_interceptor(service="infer", metrics=metrics,
                                          excluded_services=[HEALTH] if excluded else [])
    with _health_and_example([server_side]) as (target, servicer), grpc.insecure_channel(target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING  # the stream is open and served
        in_flight = value(metrics.registry, "aiwatch_requests_in_flight", service="infer")
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
    assert in_flight == (0 if excluded else 1)


def test_a_method_an_excluded_service_does_not_have_is_not_recorded_unimplemented(metrics: Metrics) -> None:
    server_side = grpc_server_interceptor(service="infer", metrics=metrics, excluded_services=[HEALTH])
    with _health_and_example([server_side]) as (target, _), grpc.insecure_channel(target) as channel:
        for method in (f"/{HEALTH}/List2", "/other.Service/Call"):
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary(method)(b"")
            assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert _server_count(metrics, UNMATCHED_ROUTE, "UNIMPLEMENTED") == 1  # the other service's call only


def test_the_argument_replaces_the_variable(metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, HEALTH)
    server_side = grpc_server_interceptor(service="infer", metrics=metrics,
                                          excluded_services=("aiwatch.example.Inference",))
    client = grpc_client_interceptor(service="gw", metrics=metrics, excluded_services=())
    with _health_and_example([server_side]) as (target, _):
        _calls(target, client)
    assert _server_count(metrics, CHECK) == 3
    assert _server_count(metrics, PREDICT) == 0
    assert _client_count(metrics, CHECK) == 3 and _client_count(metrics, PREDICT) == 1


async def test_aio_server_and_channel_leave_excluded_services_alone(metrics: Metrics,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, HEALTH)
    server = grpc.aio.server(interceptors=[grpc_aio_server_interceptor(service="infer", metrics=metrics)])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    pb_grpc.add_InferenceServicer_to_server(AioInferenceServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=grpc_aio_client_interceptors(
                service="gw", metrics=metrics)) as channel:
            for _ in range(2):
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            await pb_grpc.InferenceStub(channel).Predict(req(features=[1.0]))
    finally:
        await server.stop(None)
    assert _server_count(metrics, CHECK) == _client_count(metrics, CHECK) == 0
    assert _server_count(metrics, PREDICT) == _client_count(metrics, PREDICT) == 1


def test_the_instrumentors_take_excluded_services(metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    server_side = AiwatchGrpcInstrumentorServer(service="infer", metrics=metrics, excluded_services=[HEALTH])
    client_side = AiwatchGrpcInstrumentorClient(service="gw", metrics=metrics, excluded_services=[HEALTH])
    server_side.instrument()
    client_side.instrument()
    try:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        with serving(server) as target, grpc.insecure_channel(target) as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            pb_grpc.InferenceStub(channel).Predict(req(features=[1.0]))
    finally:
        client_side.uninstrument()
        server_side.uninstrument()
    assert _server_count(metrics, CHECK) == _client_count(metrics, CHECK) == 0
    assert _server_count(metrics, PREDICT) == _client_count(metrics, PREDICT) == 1


@pytest.mark.parametrize(("listed", "error"), [
    (f"/{HEALTH}", ValueError), (f"{HEALTH}/Check", ValueError), (CHECK, ValueError), ("", ValueError),
    (HEALTH, TypeError),  # a single str: not the set of its characters
])
def test_a_name_no_rpc_can_have_is_refused_at_construction(listed: str, error: type[Exception]) -> None:
    given_as: Any = listed if error is TypeError else [listed]
    for make in (grpc_server_interceptor, grpc_aio_server_interceptor, grpc_client_interceptor,
                 grpc_aio_client_interceptors):
        with pytest.raises(error, match="excluded_services"):
            make(service="infer", metrics=Metrics(), excluded_services=given_as)


def test_a_bad_name_in_the_variable_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, f"{HEALTH},/grpc.reflection.v1.ServerReflection")
    for make in (grpc_server_interceptor, grpc_client_interceptor):
        with pytest.raises(ValueError, match=f"{VARIABLE}: '/grpc.reflection.v1.ServerReflection'"):
            make(service="infer", metrics=Metrics())
    with pytest.raises(ValueError, match=VARIABLE):
        AiwatchGrpcInstrumentorServer(service="infer", metrics=Metrics()).instrument()


_NAME = st.text(st.characters(blacklist_characters="/,", blacklist_categories=("Cs",)), min_size=1).map(
    str.strip).filter(bool)


@given(services=st.frozensets(_NAME, max_size=4), service=_NAME, method=st.text(st.characters(
    blacklist_characters="/", blacklist_categories=("Cs",))))
def test_a_full_method_is_excluded_exactly_when_its_service_is_listed(services: frozenset[str], service: str,
                                                                       method: str) -> None:
    rule = ExcludedServices.parse(",".join(services))
    assert rule.services == services
    assert rule.excludes(f"/{service}/{method}") is (service in services)
    assert service_of(f"/{service}/{method}") == service


@given(st.text())
def test_any_method_text_is_decided_without_raising(method: str) -> None:
    assert ExcludedServices([HEALTH]).excludes(method) in (True, False)


def test_the_exclusion_modules_examples_hold() -> None:
    import aiwatch.exclusion

    found = doctest.testmod(aiwatch.exclusion)
    assert found.attempted >= 3 and found.failed == 0
