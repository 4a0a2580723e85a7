"""Request metadata on gRPC spans (``OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_{SERVER,CLIENT}_REQUEST``), on real
grpcio servers and channels, sync and aio: the keys listed and nothing else, redaction, binary keys, the stable
names under the opt-in, another instrumentation's span left alone, and a failing capture that costs the RPC
nothing."""

from __future__ import annotations

import asyncio
import doctest
from typing import Any

import grpc
import grpc.aio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.instrumentation.grpc import server_interceptor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from aiwatch.grpc import (
    grpc_aio_client_interceptors,
    grpc_aio_server_interceptor,
    grpc_client_interceptor,
    grpc_server_interceptor,
)
from aiwatch.metadatacapture import MetadataCapture
from aiwatch.metrics import Metrics
from aiwatch.semconv import RpcConventions
from examples.grpc_service.servicer import pb_grpc
from tests.grpc.conftest import PREDICT, aio_server, req, sync_server, value

SERVER_VARIABLE = "OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_SERVER_REQUEST"
CLIENT_VARIABLE = "OTEL_INSTRUMENTATION_GRPC_CAPTURE_METADATA_CLIENT_REQUEST"
SANITIZE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
SENT = [("x-tenant", "a"), ("x-api-key", "s3cr3t"), ("trace-bin", b"\x00\x01\xff"), ("x-tenant", "b"),
        ("x-other", "not listed")]
CAPTURED = {"x-tenant": ("a", "b"), "x-api-key": ("[REDACTED]",), "trace-bin": ("AAH/",)}


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERVER_VARIABLE, "x-tenant, x-api-key, .*-bin")
    monkeypatch.setenv(CLIENT_VARIABLE, "x-tenant, x-api-key, .*-bin")
    monkeypatch.setenv(SANITIZE, "api-key")


def metadata_attributes(span: ReadableSpan) -> dict[str, Any]:
    return {key: value for key, value in (span.attributes or {}).items() if ".metadata." in key}


def named(prefix: str) -> dict[str, tuple[str, ...]]:
    return {f"{prefix}.{key}": values for key, values in CAPTURED.items()}


def rpc_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The SERVER and CLIENT spans (not the servicer's phase spans)."""
    return [span for span in exporter.get_finished_spans() if span.kind in (SpanKind.SERVER, SpanKind.CLIENT)]


def one_of(exporter: InMemorySpanExporter, kind: SpanKind) -> ReadableSpan:
    spans = [span for span in exporter.get_finished_spans() if span.kind is kind]
    assert len(spans) == 1
    return spans[0]


def sync_predict(metrics: Metrics, provider: TracerProvider) -> Any:
    """One Predict call with :data:`SENT` as its metadata, through aiwatch's sync client and server interceptors;
    its reply."""
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]) as target:
        client = grpc_client_interceptor(service="gw", metrics=metrics, tracer_provider=provider)
        with grpc.insecure_channel(target) as channel:
            return pb_grpc.InferenceStub(grpc.intercept_channel(channel, client)).Predict(req(), metadata=SENT)


def test_a_wide_pattern_without_a_sanitize_list_captures_no_credential(
        monkeypatch: pytest.MonkeyPatch, metrics: Metrics, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    """``authorization`` (gRPC's bearer tokens: grpcio's access-token call credentials send it) and the API keys
    were captured as sent under a wide pattern with no sanitize list."""
    monkeypatch.setenv(SERVER_VARIABLE, ".*")
    monkeypatch.setenv(CLIENT_VARIABLE, ".*")
    monkeypatch.delenv(SANITIZE, raising=False)
    sent = [("authorization", "Bearer s3cr3t-token"), ("x-api-key", "s3cr3t-key"), ("x-tenant", "a")]
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]) as target:
        client = grpc_client_interceptor(service="gw", metrics=metrics, tracer_provider=provider)
        with grpc.insecure_channel(target) as channel:
            pb_grpc.InferenceStub(grpc.intercept_channel(channel, client)).Predict(req(), metadata=sent)
    for kind in (SpanKind.SERVER, SpanKind.CLIENT):
        attributes = metadata_attributes(one_of(exporter, kind))
        assert "s3cr3t" not in repr(attributes)
        assert attributes["rpc.grpc.request.metadata.authorization"] == ("[REDACTED]",)
        assert attributes["rpc.grpc.request.metadata.x-api-key"] == ("[REDACTED]",)
        assert attributes["rpc.grpc.request.metadata.x-tenant"] == ("a",)


@pytest.mark.usefixtures("configured")
def test_sync_spans_carry_the_listed_keys(metrics: Metrics, provider: TracerProvider,
                                          exporter: InMemorySpanExporter) -> None:
    sync_predict(metrics, provider)
    expected = named("rpc.grpc.request.metadata")
    assert metadata_attributes(one_of(exporter, SpanKind.SERVER)) == expected
    assert metadata_attributes(one_of(exporter, SpanKind.CLIENT)) == expected


@pytest.mark.usefixtures("configured")
async def test_aio_spans_carry_the_listed_keys(metrics: Metrics, provider: TracerProvider,
                                               exporter: InMemorySpanExporter) -> None:
    async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=metrics,
                                                       tracer_provider=provider)]) as target:
        interceptors = grpc_aio_client_interceptors(service="gw", metrics=metrics, tracer_provider=provider)
        async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
            await pb_grpc.InferenceStub(channel).Predict(req(), metadata=grpc.aio.Metadata(*SENT))
    while len(exporter.get_finished_spans()) < 2:  # the aio client span ends in a task after the call
        await asyncio.sleep(0.01)
    expected = named("rpc.grpc.request.metadata")
    assert metadata_attributes(one_of(exporter, SpanKind.SERVER)) == expected
    assert metadata_attributes(one_of(exporter, SpanKind.CLIENT)) == expected


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize(("opt_in", "prefixes"), [
    ("rpc", ["rpc.request.metadata"]), ("rpc/dup", ["rpc.grpc.request.metadata", "rpc.request.metadata"])])
def test_the_stable_names_under_the_opt_in(opt_in: str, prefixes: list[str], metrics: Metrics,
                                           provider: TracerProvider, exporter: InMemorySpanExporter,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in)
    server_side = [grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]
    with sync_server(server_side) as target, grpc.insecure_channel(target) as channel:
        pb_grpc.InferenceStub(channel).Predict(req(), metadata=SENT)
    expected: dict[str, Any] = {}
    for prefix in prefixes:
        expected.update(named(prefix))
    assert metadata_attributes(one_of(exporter, SpanKind.SERVER)) == expected


def test_nothing_is_captured_unless_configured(metrics: Metrics, provider: TracerProvider,
                                               exporter: InMemorySpanExporter) -> None:
    sync_predict(metrics, provider)
    assert [metadata_attributes(span) for span in rpc_spans(exporter)] == [{}, {}]


@pytest.mark.usefixtures("configured")
def test_a_span_opentelemetry_started_is_left_to_it(metrics: Metrics, provider: TracerProvider,
                                                    exporter: InMemorySpanExporter) -> None:
    """OpenTelemetry's server interceptor in front: its SERVER span is the RPC's, and aiwatch adds no metadata to
    it (as for HTTP headers: a span another instrumentation started is that instrumentation's to fill)."""
    interceptors = [server_interceptor(tracer_provider=provider),
                    grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]
    with sync_server(interceptors) as target, grpc.insecure_channel(target) as channel:
        pb_grpc.InferenceStub(channel).Predict(req(), metadata=SENT)
    span = one_of(exporter, SpanKind.SERVER)
    assert span.instrumentation_scope is not None and span.instrumentation_scope.name != "aiwatch"
    assert metadata_attributes(span) == {}


@pytest.mark.usefixtures("configured")
def test_a_capture_that_fails_is_counted_and_costs_the_rpc_nothing(metrics: Metrics, provider: TracerProvider,
                                                                   exporter: InMemorySpanExporter,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: MetadataCapture, metadata: Any) -> dict[str, list[str]]:
        raise RuntimeError("capture failed")

    monkeypatch.setattr(MetadataCapture, "attributes", broken)
    assert sync_predict(metrics, provider) is not None
    spans = rpc_spans(exporter)
    assert sorted(span.kind.name for span in spans) == ["CLIENT", "SERVER"]  # both spans made, without metadata
    assert [metadata_attributes(span) for span in spans] == [{}, {}]
    assert metrics.registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "tracing"}) == 2
    assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT,
                 method="grpc", status="OK") == 1  # the RPC recorded as ever


@pytest.mark.parametrize("variable", [SERVER_VARIABLE, CLIENT_VARIABLE])
def test_a_pattern_that_is_no_regex_is_refused_naming_the_variable(variable: str, metrics: Metrics,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "x-tenant,(unclosed")
    make = grpc_server_interceptor if variable == SERVER_VARIABLE else grpc_client_interceptor
    with pytest.raises(ValueError, match=f"{variable}: '\\(unclosed' is no regular expression"):
        make(service="svc", metrics=metrics)


metadata_items = st.lists(st.tuples(st.text(max_size=20), st.one_of(st.text(max_size=20), st.binary(max_size=20))),
                          max_size=20)


@given(metadata_items)
def test_any_metadata_is_captured_without_raising(items: list[tuple[str, str | bytes]]) -> None:
    """Keys and values come from traffic: whatever they are, the capture holds only listed keys, each value a str."""
    capture = MetadataCapture.server(RpcConventions(), {SERVER_VARIABLE: "x-.*"})
    assert capture is not None
    captured = capture.attributes(items)
    prefix = "rpc.grpc.request.metadata."
    assert all(name.startswith(prefix) and name[len(prefix):].startswith("x-") for name in captured)
    assert all(isinstance(value, str) for values in captured.values() for value in values)
    assert sum(len(values) for values in captured.values()) == sum(1 for key, _ in items
                                                                   if key.lower().startswith("x-")
                                                                   and "\n" not in key)


def test_the_modules_example_holds() -> None:
    import aiwatch.metadatacapture

    found = doctest.testmod(aiwatch.metadatacapture)
    assert found.attempted >= 2 and found.failed == 0
