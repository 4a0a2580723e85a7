"""aiwatch's gRPC server interceptors (thread pool and grpc.aio) continue the caller's trace through OpenTelemetry's
global propagator (``OTEL_PROPAGATORS``) when the call's metadata has a field it reads (its ``fields``): a B3 caller's
trace is continued with ``b3multi``, ``b3`` or ``b3multi,tracecontext``. Before, the metadata was read only when it
had a ``traceparent``, and every B3 call started a new trace. The client interceptors inject the current context
with that propagator unless the app's metadata already has a key it writes (before: unless it had a ``traceparent``,
so a B3 app's call carried two trace contexts)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc.aio
import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.jaeger import JaegerPropagator
from opentelemetry.propagators.ot_trace import OTTracePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aiwatch.grpc import (
    grpc_aio_client_interceptors,
    grpc_aio_server_interceptor,
    grpc_client_interceptor,
    grpc_server_interceptor,
)
from aiwatch.metrics import Metrics
from examples.grpc_service.servicer import pb, pb_grpc
from tests.grpc.conftest import aio_server, req, stub_for, sync_server
from tests.servers import wait_until
from tests.spans import global_textmap

pytestmark = pytest.mark.slow

TRACE, SPAN = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
OTHER_TRACE, OTHER_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
B3_MULTI = (("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("x-b3-sampled", "1"))
B3_SINGLE = (("b3", f"{TRACE}-{SPAN}-1"),)
W3C = (("traceparent", f"00-{OTHER_TRACE}-{OTHER_SPAN}-01"),)

CASES = pytest.mark.parametrize(("propagator", "calls", "expected"), [
    (B3MultiFormat(), [B3_MULTI], [(TRACE, SPAN)]),
    (B3SingleFormat(), [B3_SINGLE], [(TRACE, SPAN)]),
    (CompositePropagator([B3MultiFormat(), TraceContextTextMapPropagator(), W3CBaggagePropagator()]),
     [B3_MULTI, W3C, ()], [(TRACE, SPAN), (OTHER_TRACE, OTHER_SPAN), None]),
    # fields are what a propagator injects: b3 names only the single header but reads the multi-header form too
    (B3SingleFormat(), [B3_MULTI], [(TRACE, SPAN)]),
], ids=["b3multi", "b3", "b3multi,tracecontext,baggage", "b3-reads-multi"])


def _ended(exporter: InMemorySpanExporter) -> bool:
    return any(s.kind is SpanKind.SERVER for s in exporter.get_finished_spans())


def _parent(exporter: InMemorySpanExporter) -> Any:
    """The one finished SERVER span's parent (trace id, span id) in hex, or ``None`` (a new trace); clears."""
    [span] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    exporter.clear()
    parent = span.parent
    return None if parent is None else (f"{parent.trace_id:032x}", f"{parent.span_id:016x}")


@CASES
def test_a_b3_callers_trace_is_continued_on_the_sync_server(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter, propagator: TextMapPropagator,
        calls: list[tuple[tuple[str, str], ...]], expected: list[Any]) -> None:
    parents = []
    with global_textmap(propagator), sync_server([grpc_server_interceptor(
            service="infer", metrics=metrics, tracer_provider=provider)]) as target, stub_for(target) as stub:
        for metadata in calls:
            stub.Predict(req(features=[1.0]), metadata=metadata)
            wait_until(lambda: _ended(exporter), what="the call's SERVER span ended")
            parents.append(_parent(exporter))
    assert parents == expected


@CASES
async def test_a_b3_callers_trace_is_continued_on_the_aio_server(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter, propagator: TextMapPropagator,
        calls: list[tuple[tuple[str, str], ...]], expected: list[Any]) -> None:
    parents = []
    with global_textmap(propagator):
        async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=metrics,
                                                           tracer_provider=provider)]) as target, \
                grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            for metadata in calls:
                await stub.Predict(req(features=[1.0]), metadata=metadata)
                for _ in range(1000):  # the server runs in this loop: polled without blocking it
                    if _ended(exporter):
                        break
                    await asyncio.sleep(0.01)
                parents.append(_parent(exporter))
    assert parents == expected


class _EchoMetadata(pb_grpc.InferenceServicer):
    """Replies with the call's metadata (the keys a propagator may write, in the order received) as JSON."""

    def Predict(self, request: Any, context: Any) -> Any:
        pairs = [(k, v) for k, v in context.invocation_metadata() if k.startswith(_SENT_KEYS)]
        return pb.PredictReply(model=json.dumps(pairs))


#: the keys the client may have written: B3's, W3C's, Jaeger's and OT Trace's
_SENT_KEYS = ("b3", "x-b3-", "traceparent", "tracestate", "baggage", "uber-trace-id", "uberctx-", "ot-")

APP_W3C = (("traceparent", f"00-{OTHER_TRACE}-{OTHER_SPAN}-01"), ("tracestate", "congo=t61rcWkgMzE"))

CLIENT_CASES = pytest.mark.parametrize(("propagator", "metadata"), [
    (B3MultiFormat(), B3_MULTI),
    (B3SingleFormat(), B3_SINGLE),
    # b3 names only the single header; the app's multi-header context is its trace context all the same
    (B3SingleFormat(), B3_MULTI),
    (B3MultiFormat(), B3_SINGLE),
    (CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]), APP_W3C),
    (CompositePropagator([B3MultiFormat(), TraceContextTextMapPropagator()]), B3_MULTI),
    (JaegerPropagator(), (("uber-trace-id", f"{TRACE}:{SPAN}:0:1"),)),
    # with its baggage: aiwatch's uberctx-user would be sent twice
    (JaegerPropagator(), (("uber-trace-id", f"{TRACE}:{SPAN}:0:1"), ("uberctx-user", "alice"))),
], ids=["b3multi", "b3", "b3-app-multi", "b3multi-app-single", "tracecontext,baggage", "b3multi,tracecontext",
        "jaeger", "jaeger-with-baggage"])

W3C_AND_BAGGAGE = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])

#: (propagator, the app's companions of a trace context alone, the keys aiwatch's context is sent under, the baggage
#: "user" the server's propagator reads from the whole call: the app's where it wrote it in a form that propagator
#: reads, else aiwatch's "bob")
BAGGAGE_ONLY_CASES = pytest.mark.parametrize(("propagator", "metadata", "added", "user"), [
    (W3C_AND_BAGGAGE, (("baggage", "user=alice"),), ("traceparent",), "alice"),
    (JaegerPropagator(), (("uberctx-user", "alice"),), ("uber-trace-id",), "alice"),
    # a tracestate alone is no trace context (W3C: ignored without a traceparent)
    (W3C_AND_BAGGAGE, (("tracestate", "congo=t61rcWkgMzE"),), ("traceparent", "baggage"), "bob"),
    # the app's baggage in a form the global propagator does not write leaves aiwatch's baggage to be sent
    (W3C_AND_BAGGAGE, (("uberctx-user", "alice"),), ("traceparent", "baggage"), "bob"),
    (JaegerPropagator(), (("baggage", "user=alice"),), ("uber-trace-id", "uberctx-user"), "bob"),
    (OTTracePropagator(), (("ot-baggage-user", "alice"),), ("ot-tracer-sampled", "ot-tracer-spanid",
                                                             "ot-tracer-traceid"), "alice"),
    # the server's composite merges both forms of baggage: aiwatch's in the other form would override the app's
    (CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), JaegerPropagator()]),
     (("baggage", "user=alice"),), ("traceparent", "uber-trace-id"), "alice"),
    (CompositePropagator([JaegerPropagator(), OTTracePropagator()]), (("uberctx-user", "alice"),),
     ("uber-trace-id", "ot-tracer-sampled", "ot-tracer-spanid", "ot-tracer-traceid"), "alice"),
], ids=["tracecontext,baggage", "jaeger", "tracestate-alone", "uberctx-under-w3c", "baggage-under-jaeger", "ottrace",
        "tracecontext,baggage,jaeger", "jaeger,ottrace"])


@contextmanager
def _current(ctx: Context) -> Iterator[None]:
    """``ctx`` (the current one with baggage of the caller's own: what the propagator injects too) current."""
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


@CLIENT_CASES
def test_the_sync_client_leaves_the_apps_own_trace_context_alone(
        metrics: Metrics, provider: TracerProvider, propagator: TextMapPropagator,
        metadata: tuple[tuple[str, str], ...]) -> None:
    """The app set its own trace context in the call's metadata: the client interceptor injects nothing, so the
    server gets the app's keys once each and no other trace-context key. Before, only a ``traceparent`` stopped it:
    a B3 caller's call carried its own ``x-b3-*`` and aiwatch's."""
    client = grpc_client_interceptor(service="gateway", metrics=metrics, tracer_provider=provider)
    with global_textmap(propagator), sync_server(servicer=_EchoMetadata()) as target, \
            stub_for(target, client) as stub, provider.get_tracer("app").start_as_current_span("caller"), \
            _current(baggage.set_baggage("user", "bob")):
        injected = json.loads(stub.Predict(req()).model)
        received = json.loads(stub.Predict(req(), metadata=metadata).model)
    assert injected  # with nothing of the app's, the current context is injected
    assert [tuple(pair) for pair in received] == list(metadata)


@CLIENT_CASES
async def test_the_aio_client_leaves_the_apps_own_trace_context_alone(
        metrics: Metrics, provider: TracerProvider, propagator: TextMapPropagator,
        metadata: tuple[tuple[str, str], ...]) -> None:
    clients = grpc_aio_client_interceptors(service="gateway", metrics=metrics, tracer_provider=provider)
    with global_textmap(propagator), sync_server(servicer=_EchoMetadata()) as target:
        async with grpc.aio.insecure_channel(target, interceptors=clients) as channel:
            stub = pb_grpc.InferenceStub(channel)
            with provider.get_tracer("app").start_as_current_span("caller"), \
                    _current(baggage.set_baggage("user", "bob")):
                injected = json.loads((await stub.Predict(req())).model)
                received = json.loads((await stub.Predict(req(), metadata=metadata)).model)
    assert injected
    assert [tuple(pair) for pair in received] == list(metadata)


@BAGGAGE_ONLY_CASES
def test_the_apps_own_baggage_or_tracestate_alone_is_sent_once_with_the_callers_trace_context(
        metrics: Metrics, provider: TracerProvider, propagator: TextMapPropagator,
        metadata: tuple[tuple[str, str], ...], added: tuple[str, ...], user: str) -> None:
    """The app set baggage (or a tracestate) of its own but no trace context: what it set goes out once, as it set
    it (aiwatch's own under the same key is not sent besides), and the trace context of aiwatch's CLIENT span is
    still sent (with aiwatch's baggage under the keys the app left alone), so the server continues the caller's
    trace."""
    client = grpc_client_interceptor(service="gateway", metrics=metrics, tracer_provider=provider)
    with global_textmap(propagator), sync_server(servicer=_EchoMetadata()) as target, \
            stub_for(target, client) as stub, provider.get_tracer("app").start_as_current_span("caller") as caller, \
            _current(baggage.set_baggage("user", "bob")):
        received = [tuple(pair) for pair in json.loads(stub.Predict(req(), metadata=metadata).model)]
    apps = [pair for pair in received if pair in metadata]
    aiwatchs = [pair for pair in received if pair not in metadata]
    assert sorted(apps) == sorted(metadata)  # each once (grpc-core gives traceparent a slot of its own: not in order)
    assert sorted(k for k, _ in aiwatchs) == sorted(added)
    extracted = trace.get_current_span(propagator.extract(dict(aiwatchs))).get_span_context()
    low64 = (1 << 64) - 1  # OT Trace sends a trace id's lower 64 bits
    assert extracted.trace_id & low64 == caller.get_span_context().trace_id & low64
    assert baggage.get_all(propagator.extract(dict(received)))["user"] == user


@pytest.mark.parametrize("propagator", [JaegerPropagator(), OTTracePropagator()], ids=["jaeger", "ottrace"])
def test_baggage_keys_are_sent_in_lowercase_and_one_no_grpc_key_is_left_out(
        metrics: Metrics, provider: TracerProvider, propagator: TextMapPropagator,
        caplog: pytest.LogCaptureFixture) -> None:
    """Jaeger and OT Trace write a baggage key as the app spelled it (``uberctx-userId``), which grpc-core refuses:
    the call failed ("Illegal header key"). The keys go out in lowercase, as OpenTelemetry's gRPC client
    instrumentation writes them, and one grpc-core takes in no case (``a!``) is left out and logged; the call
    succeeds."""
    client = grpc_client_interceptor(service="gateway", metrics=metrics, tracer_provider=provider)
    ctx = baggage.set_baggage("userId", "bob", baggage.set_baggage("a!", "x"))
    with global_textmap(propagator), sync_server(servicer=_EchoMetadata()) as target, \
            stub_for(target, client) as stub, provider.get_tracer("app").start_as_current_span("caller"), \
            _current(ctx), caplog.at_level("WARNING", logger="aiwatch"):
        received = dict(tuple(pair) for pair in json.loads(stub.Predict(req()).model))
    prefix = "uberctx-" if isinstance(propagator, JaegerPropagator) else "ot-baggage-"
    assert received[f"{prefix}userid"] == "bob"
    assert not [k for k in received if k.startswith(prefix) and k != f"{prefix}userid"]
    assert any(f"'{prefix}a!'" in r.getMessage() for r in caplog.records)
