"""aiwatch together with opentelemetry-instrumentation-grpc: OpenTelemetry's spans, aiwatch's phase spans as their
children and aiwatch's metrics, in one trace; the instrumentors in either order, restored by uninstrument()."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry import baggage
from opentelemetry.instrumentation.grpc import (
    GrpcInstrumentorClient,
    GrpcInstrumentorServer,
    aio_client_interceptors,
    aio_server_interceptor,
    server_interceptor,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from aiwatch.grpc import (
    AiwatchGrpcInstrumentorClient,
    AiwatchGrpcInstrumentorServer,
    grpc_aio_client_interceptors,
    grpc_aio_server_interceptor,
    grpc_server_interceptor,
)
from aiwatch.metrics import Metrics
from examples.grpc_service.servicer import AioInferenceServicer, InferenceServicer, pb, pb_grpc
from tests.grpc.conftest import (
    CHAT,
    PREDICT,
    PREDICT_STREAM,
    aio_server,
    req,
    serving,
    stub_for,
    sync_server,
    value,
)
from tests.servers import wait_until

pytestmark = pytest.mark.slow


def _assert_one_trace(exporter: InMemorySpanExporter, phases: set[str]) -> Any:
    finished = exporter.get_finished_spans()
    servers = [s for s in finished if s.kind == SpanKind.SERVER]
    assert len(servers) == 1, [s.name for s in finished]  # OpenTelemetry's; aiwatch started none of its own
    server = servers[0]
    assert server.instrumentation_scope.name.startswith("opentelemetry.instrumentation.grpc")
    children = {s.name: s for s in finished if s.name in phases}
    assert set(children) == phases
    for span in children.values():
        assert span.context.trace_id == server.context.trace_id
        assert span.parent is not None and span.parent.span_id == server.context.span_id
        assert span.instrumentation_scope.name == "aiwatch"
    return server


def test_sync_interceptors_compose_into_one_trace(metrics: Metrics, provider: TracerProvider,
                                                  exporter: InMemorySpanExporter) -> None:
    interceptors = [server_interceptor(tracer_provider=provider),
                    grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]
    with sync_server(interceptors) as target, stub_for(target) as stub:
        tracer = provider.get_tracer("client")
        with tracer.start_as_current_span("caller", kind=SpanKind.CLIENT) as caller:
            from opentelemetry.propagate import inject

            carrier: dict[str, str] = {}
            inject(carrier)
            stub.Predict(req(features=[1.0]), metadata=tuple(carrier.items()))
    server = _assert_one_trace(exporter, {"features", "inference"})
    assert server.context.trace_id == caller.get_span_context().trace_id
    assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT,
                 method="grpc", status="OK") == 1
    # the exemplar of the request duration links to OpenTelemetry's trace
    samples = [s for metric in metrics.registry.collect() if metric.name == "aiwatch_request_duration_seconds"
               for s in metric.samples if s.exemplar is not None]
    assert samples and samples[0].exemplar.labels["trace_id"] == format(server.context.trace_id, "032x")


async def test_aio_stream_stream_with_otel_interceptor(metrics: Metrics, provider: TracerProvider,
                                                       exporter: InMemorySpanExporter) -> None:
    """opentelemetry-python-contrib #3066: OpenTelemetry's aio server interceptor crashed on stream-stream calls.
    With the installed version and aiwatch's interceptor after it, a bidi call works end to end."""
    async def requests() -> AsyncIterator[Any]:
        for i in range(3):
            yield req(features=[float(i)])

    async with aio_server([aio_server_interceptor(tracer_provider=provider),
                           grpc_aio_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]) \
            as target, grpc.aio.insecure_channel(target) as channel:
        chat = pb_grpc.InferenceStub(channel).Chat(requests())
        assert [r.index async for r in chat] == [0, 1, 2]
        assert await chat.code() == grpc.StatusCode.OK
    _assert_one_trace(exporter, {"features", "inference"})
    assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=CHAT,
                 method="grpc", status="OK") == 1
    assert value(metrics.registry, "aiwatch_rpc_messages_total", service="infer", route=CHAT,
                 direction="received") == 3


@pytest.mark.parametrize("aiwatch_first", [True, False])
def test_instrumentors_in_either_order(metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter,
                                       aiwatch_first: bool) -> None:
    originals = (grpc.server, grpc.aio.server, grpc.insecure_channel, grpc.secure_channel,
                 grpc.aio.insecure_channel, grpc.aio.secure_channel)
    ours_server = AiwatchGrpcInstrumentorServer(service="infer", metrics=metrics, tracer_provider=provider)
    ours_client = AiwatchGrpcInstrumentorClient(service="gateway", metrics=metrics)
    otel_server, otel_client = GrpcInstrumentorServer(), GrpcInstrumentorClient()
    steps = [lambda: (ours_server.instrument(), ours_client.instrument()),
             lambda: (otel_server.instrument(tracer_provider=provider),
                      otel_client.instrument(tracer_provider=provider))]
    if not aiwatch_first:
        steps.reverse()
    try:
        for step in steps:
            step()
        ours_server.instrument()  # idempotent
        ours_client.instrument()
        with serving(grpc.server(futures.ThreadPoolExecutor(max_workers=2))) as target, \
                grpc.insecure_channel(target) as channel, \
                provider.get_tracer("app").start_as_current_span("caller") as caller:
            _, call = pb_grpc.InferenceStub(channel).Predict.with_call(req(features=[1.0]))
    finally:
        # last instrumented, first uninstrumented: OpenTelemetry's unwrap() replaces whatever is on top
        undo = [lambda: (ours_client.uninstrument(), ours_server.uninstrument()),
                lambda: (otel_client.uninstrument(), otel_server.uninstrument())]
        for step in reversed(undo) if aiwatch_first else undo:
            step()
    now = (grpc.server, grpc.aio.server, grpc.insecure_channel, grpc.secure_channel, grpc.aio.insecure_channel,
           grpc.aio.secure_channel)
    assert all(a is b for a, b in zip(now, originals, strict=True))  # identity: wrapt proxies compare equal
    assert "server-timing" in dict(call.trailing_metadata())
    # one trace: the caller's span, OpenTelemetry's server span under it, aiwatch's phases under the server span.
    # (GrpcInstrumentorClient 0.66b2 takes tracer_provider from each channel call's kwargs, not from instrument(),
    # so with no global SDK provider its client span is non-recording and only propagates the caller's context.)
    server_span = _assert_one_trace(exporter, {"features", "inference"})
    assert server_span.parent.span_id == caller.get_span_context().span_id
    reg = metrics.registry
    assert value(reg, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT, method="grpc",
                 status="OK") == 1
    # the peer label is the service name the server reported (aiwatch's server interceptor sent it)
    assert value(reg, "aiwatch_client_request_duration_seconds_count", service="gateway", peer="infer",
                 route=PREDICT, status="OK") == 1
    assert value(reg, "aiwatch_network_duration_seconds_count", service="gateway", peer="infer") == 1


def test_response_streams_under_opentelemetrys_client_instrumentor_are_recorded(metrics: Metrics) -> None:
    """OpenTelemetry's client instrumentor first, aiwatch's after it (so aiwatch's interceptor is in front), and no
    tracer provider (aiwatch traces nothing, so OpenTelemetry's interceptor is not told to stay out): OpenTelemetry's
    interceptor hands a unary-stream call back as a generator, not grpcio's call. aiwatch needed the call's done
    callback: every such call went unrecorded, counted as aiwatch's failure (AttributeError: 'generator' object has
    no attribute 'add_done_callback')."""
    otel, ours = GrpcInstrumentorClient(), AiwatchGrpcInstrumentorClient(service="gateway", metrics=metrics)
    otel.instrument()
    ours.instrument()
    reg = metrics.registry

    def client(status: str) -> float:
        return value(reg, "aiwatch_client_request_duration_seconds_count", service="gateway", peer="infer",
                     route=PREDICT_STREAM, status=status)

    try:
        with sync_server([grpc_server_interceptor(service="infer", metrics=metrics)]) as target, \
                grpc.insecure_channel(target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            replies = list(stub.PredictStream(req(features=[1.0, 2.0])))
            read: list[Any] = []
            with pytest.raises(grpc.RpcError) as failed:
                read.extend(stub.PredictStream(req(features=[1.0, 2.0], fail="NOT_FOUND")))
            assert failed.value.code() == grpc.StatusCode.NOT_FOUND
            # the stream grpcio read from the server's trailer is labelled with the name the server reported
            assert client("OK") == 1 and client("NOT_FOUND") == 1
            assert value(reg, "aiwatch_network_duration_seconds_count", service="gateway", peer="infer") == 2
            # dropped half read: cancelled as without aiwatch, and recorded so, once
            dropped = stub.PredictStream(req(features=[1.0] * 500, delay_ms=10))
            first = next(dropped)
            del dropped
            gc.collect()
            wait_until(lambda: value(reg, "aiwatch_request_duration_seconds_count", service="infer",
                                     route=PREDICT_STREAM, method="grpc", status="CANCELLED") == 1,
                       timeout=20, what="the server sees the dropped stream cancelled")
            wait_until(lambda: client("CANCELLED") == 1, timeout=20, what="the client records the dropped stream")
    finally:
        ours.uninstrument()
        otel.uninstrument()
    assert [r.index for r in replies] == [0, 1]
    assert value(reg, "aiwatch_client_bytes_total", service="gateway", peer="infer", direction="received") == \
        sum(r.ByteSize() for r in [*replies, *read, first])
    assert value(reg, "aiwatch_instrumentation_errors_total", component="grpc_client") == 0


async def test_aio_a_call_cancelled_while_opentelemetrys_interceptor_awaits_it_is_recorded_cancelled(
        metrics: Metrics) -> None:
    """OpenTelemetry's aio interceptor behind aiwatch's awaits a unary call's status before it hands the call on;
    with no tracer provider it is not told to stay out. A caller cancelled meanwhile (asyncio.wait_for) raised
    CancelledError through aiwatch's interceptor before aiwatch had the call: the call went unrecorded, so the calls
    a caller gave up on, its slowest, were missing from its latency."""
    reg = metrics.registry
    async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=metrics)]) as target:
        interceptors = [*grpc_aio_client_interceptors(service="gateway", metrics=metrics, peer="infer"),
                        *aio_client_interceptors()]
        async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
            stub = pb_grpc.InferenceStub(channel)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(stub.Predict(req(delay_ms=500)), 0.1)
            # the server works on (OpenTelemetry's interceptor does not cancel the call): its end, then the client's
            for _ in range(200):
                if value(reg, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT,
                         method="grpc", status="OK") == 1:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.1)
    assert value(reg, "aiwatch_client_request_duration_seconds_count", service="gateway", peer="infer",
                 route=PREDICT, status="CANCELLED") == 1
    assert value(reg, "aiwatch_client_request_duration_seconds_count", service="gateway", peer="infer",
                 route=PREDICT, status="OK") == 0
    assert value(reg, "aiwatch_client_request_duration_seconds_sum", service="gateway", peer="infer",
                 route=PREDICT, status="CANCELLED") >= 0.1


def test_uninstrument_restores_and_instrument_is_idempotent(metrics: Metrics) -> None:
    original = grpc.server
    instrumentor = AiwatchGrpcInstrumentorServer(service="infer", metrics=metrics)
    instrumentor.instrument()
    patched = grpc.server
    instrumentor.instrument()
    assert grpc.server is patched is not original
    assert instrumentor.is_instrumented
    instrumentor.uninstrument()
    instrumentor.uninstrument()
    assert grpc.server is original and not instrumentor.is_instrumented
    # a server made after uninstrument() records nothing
    with sync_server() as target, stub_for(target) as stub:
        stub.Predict(req())
    assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT,
                 method="grpc", status="OK") == 0


def test_uninstrument_under_another_wrapper_becomes_a_pass_through(metrics: Metrics) -> None:
    original = grpc.server
    instrumentor = AiwatchGrpcInstrumentorServer(service="infer", metrics=metrics)
    instrumentor.instrument()
    ours = grpc.server

    def other(*args: Any, **kwargs: Any) -> Any:  # someone wrapped grpc.server after aiwatch
        return ours(*args, **kwargs)

    grpc.server = other
    try:
        instrumentor.uninstrument()
        assert grpc.server is other
        with serving(grpc.server(futures.ThreadPoolExecutor(max_workers=1))) as target, stub_for(target) as stub:
            stub.Predict(req())
    finally:
        grpc.server = original
    assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT,
                 method="grpc", status="OK") == 0


def test_positional_interceptors_are_kept(metrics: Metrics) -> None:
    seen: list[str] = []

    class Mine(grpc.ServerInterceptor):  # type: ignore[misc]
        def intercept_service(self, continuation: Any, details: Any) -> Any:
            seen.append(details.method)
            return continuation(details)

    instrumentor = AiwatchGrpcInstrumentorServer(service="infer", metrics=metrics)
    instrumentor.instrument()
    try:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), None, [Mine()])
    finally:
        instrumentor.uninstrument()
    with serving(server) as target, stub_for(target) as stub:
        stub.Predict(req())
    assert seen == [PREDICT]
    assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT,
                 method="grpc", status="OK") == 1


class _ReadWriteChat(pb_grpc.InferenceServicer):
    """A bidi handler in the read()/write() style: a coroutine, not an async generator."""

    async def Chat(self, request_iterator: Any, context: Any) -> None:
        i = 0
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                break
            await context.write(pb.PredictReply(index=i, score=request.features[0]))
            i += 1


@pytest.mark.parametrize("with_otel", [False, True])
async def test_aio_read_write_stream_stream(metrics: Metrics, provider: TracerProvider, with_otel: bool) -> None:
    """opentelemetry-python-contrib #3066 still happens with 0.66b2: OpenTelemetry's aio server interceptor alone
    fails such a call with INTERNAL ('async for' over a coroutine). aiwatch's interceptor turns the handler into an
    async generator, so with aiwatch placed after OpenTelemetry's the call works."""
    interceptors: list[Any] = [aio_server_interceptor(tracer_provider=provider)] if with_otel else []
    interceptors.append(grpc_aio_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider))

    async def requests() -> AsyncIterator[Any]:
        for i in range(3):
            yield req(features=[float(i)])

    async with aio_server(interceptors, _ReadWriteChat()) as target, grpc.aio.insecure_channel(target) as channel:
        chat = pb_grpc.InferenceStub(channel).Chat(requests())
        assert [r.score async for r in chat] == [0.0, 1.0, 2.0]
        assert "server-timing" in dict(await chat.trailing_metadata())
    assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=CHAT,
                 method="grpc", status="OK") == 1


def test_aiwatch_alone_starts_a_server_span_under_the_callers_trace(metrics: Metrics, provider: TracerProvider,
                                                                    exporter: InMemorySpanExporter) -> None:
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)]) \
            as target, stub_for(target) as stub:
        with provider.get_tracer("app").start_as_current_span("caller") as caller:
            from opentelemetry.propagate import inject

            carrier: dict[str, str] = {}
            inject(carrier)
            stub.Predict(req(features=[1.0]), metadata=tuple(carrier.items()))
        stub.Predict(req())  # no trace context: a new trace
    finished = exporter.get_finished_spans()
    servers = [s for s in finished if s.kind == SpanKind.SERVER]
    assert [s.instrumentation_scope.name for s in servers] == ["aiwatch", "aiwatch"]
    first, second = servers
    assert first.parent.span_id == caller.get_span_context().span_id
    assert first.attributes["rpc.system"] == "grpc" and first.attributes["rpc.method"] == "Predict"
    assert second.parent is None
    for phase in (s for s in finished if s.name == "inference"):
        assert phase.parent.span_id in {first.context.span_id, second.context.span_id}


def test_an_old_wrapper_stays_off_after_instrumenting_again(metrics: Metrics) -> None:
    original = grpc.server
    instrumentor = AiwatchGrpcInstrumentorServer(service="infer", metrics=metrics)
    instrumentor.instrument()
    stale = grpc.server  # e.g. captured by another library before uninstrument()
    instrumentor.uninstrument()
    instrumentor.instrument()
    try:
        server = stale(futures.ThreadPoolExecutor(max_workers=1))
    finally:
        instrumentor.uninstrument()
    assert grpc.server is original
    with serving(server) as target, stub_for(target) as stub:
        stub.Predict(req())
    assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT,
                 method="grpc", status="OK") == 0


_CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class _SpanningServicer(InferenceServicer):
    """Starts a span of its own in each handler, and notes the caller's baggage it sees there."""

    def __init__(self, provider: TracerProvider, seen: list[object]) -> None:
        self.tracer = provider.get_tracer("app")
        self.seen = seen

    def Predict(self, request: Any, context: Any) -> Any:
        with self.tracer.start_as_current_span("handler"):
            self.seen.append(baggage.get_baggage("user"))
        return super().Predict(request, context)

    def PredictStream(self, request: Any, context: Any) -> Iterator[Any]:
        for reply in super().PredictStream(request, context):
            with self.tracer.start_as_current_span("handler"):
                self.seen.append(baggage.get_baggage("user"))
            yield reply


class _AioSpanningServicer(AioInferenceServicer):
    def __init__(self, provider: TracerProvider, seen: list[object]) -> None:
        self.tracer = provider.get_tracer("app")
        self.seen = seen

    async def Predict(self, request: Any, context: Any) -> Any:
        with self.tracer.start_as_current_span("handler"):
            self.seen.append(baggage.get_baggage("user"))
        return await super().Predict(request, context)

    async def PredictStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for reply in super().PredictStream(request, context):
            with self.tracer.start_as_current_span("handler"):
                self.seen.append(baggage.get_baggage("user"))
            yield reply


def _assert_handler_spans_in_the_rpcs_trace(exporter: InMemorySpanExporter, seen: list[object]) -> None:
    finished = exporter.get_finished_spans()
    servers = {s.context.span_id for s in finished if s.kind == SpanKind.SERVER}
    assert len(servers) == 2  # one per RPC, aiwatch's
    handlers = [s for s in finished if s.name == "handler"]
    assert len(handlers) == 3  # Predict's, and one per PredictStream reply
    for span in handlers:
        assert span.parent is not None and span.parent.span_id in servers
        assert format(span.context.trace_id, "032x") == _CALLER.split("-")[1]
    assert seen == ["alice"] * 3


def test_spans_a_handler_starts_are_in_the_rpcs_trace(metrics: Metrics, provider: TracerProvider,
                                                      exporter: InMemorySpanExporter) -> None:
    """aiwatch's SERVER span (no OpenTelemetry interceptor in front) is current while the handler runs, and while a
    streaming handler produces each reply, in the caller's context: the handler's spans are its children."""
    seen: list[object] = []
    metadata = (("traceparent", _CALLER), ("baggage", "user=alice"))
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)],
                     _SpanningServicer(provider, seen)) as target, stub_for(target) as stub:
        stub.Predict(req(features=[1.0]), metadata=metadata)
        assert len(list(stub.PredictStream(req(features=[1.0, 2.0]), metadata=metadata))) == 2
    _assert_handler_spans_in_the_rpcs_trace(exporter, seen)


async def test_spans_an_aio_handler_starts_are_in_the_rpcs_trace(metrics: Metrics, provider: TracerProvider,
                                                                 exporter: InMemorySpanExporter) -> None:
    seen: list[object] = []
    metadata = (("traceparent", _CALLER), ("baggage", "user=alice"))
    async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)],
                          _AioSpanningServicer(provider, seen)) as target, grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        await stub.Predict(req(features=[1.0]), metadata=metadata)
        assert len([r async for r in stub.PredictStream(req(features=[1.0, 2.0]), metadata=metadata)]) == 2
    _assert_handler_spans_in_the_rpcs_trace(exporter, seen)


#: two traceparents, two tracestates and two baggage entries in one call's metadata
_SECOND = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
_REPEATED = (("traceparent", _CALLER), ("tracestate", "congo=t61rcWkgMzE"), ("baggage", "user=alice"),
             ("traceparent", _SECOND), ("tracestate", "rojo=00f067aa0ba902b7"), ("baggage", "tenant=acme"))


def _noted(context: Any) -> tuple[list[str], dict[str, object]]:
    """The traceparents of the call's metadata as the handler gets them, and the baggage current in it."""
    return [v for k, v in context.invocation_metadata() if k == "traceparent"], dict(baggage.get_all())


class _BaggageServicer(InferenceServicer):
    def __init__(self, seen: list[object]) -> None:
        self.seen = seen

    def Predict(self, request: Any, context: Any) -> Any:
        self.seen.append(_noted(context))
        return super().Predict(request, context)


class _AioBaggageServicer(AioInferenceServicer):
    def __init__(self, seen: list[object]) -> None:
        self.seen = seen

    async def Predict(self, request: Any, context: Any) -> Any:
        self.seen.append(_noted(context))
        return await super().Predict(request, context)


def _assert_read_as_opentelemetry_reads_it(exporter: InMemorySpanExporter, seen: list[Any]) -> None:
    """The first traceparent the handler gets is the parent; the tracestates are one list in order, and the first
    baggage is the baggage, as OpenTelemetry's W3C baggage propagator reads it (before: the baggage values joined)."""
    [(traceparents, current)] = seen
    # grpc-core keeps one traceparent per call, the last (a key of its own in its metadata map; a raw HTTP/2 request
    # with two gets the same): the interceptor never sees the first
    assert traceparents == [_SECOND]
    servers = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert len(servers) == 1
    parent = servers[0].parent
    assert parent is not None
    assert f"00-{parent.trace_id:032x}-{parent.span_id:016x}-01" == traceparents[0]
    assert list(parent.trace_state.items()) == [("congo", "t61rcWkgMzE"), ("rojo", "00f067aa0ba902b7")]
    assert current == {"user": "alice"}


def test_repeated_trace_context_metadata(metrics: Metrics, provider: TracerProvider,
                                         exporter: InMemorySpanExporter) -> None:
    seen: list[object] = []
    with sync_server([grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)],
                     _BaggageServicer(seen)) as target, stub_for(target) as stub:
        stub.Predict(req(features=[1.0]), metadata=_REPEATED)
    _assert_read_as_opentelemetry_reads_it(exporter, seen)


async def test_aio_repeated_trace_context_metadata(metrics: Metrics, provider: TracerProvider,
                                                   exporter: InMemorySpanExporter) -> None:
    seen: list[object] = []
    async with aio_server([grpc_aio_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)],
                          _AioBaggageServicer(seen)) as target, grpc.aio.insecure_channel(target) as channel:
        await pb_grpc.InferenceStub(channel).Predict(req(features=[1.0]), metadata=_REPEATED)
    _assert_read_as_opentelemetry_reads_it(exporter, seen)


def _order_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "comes after aiwatch's" in r.getMessage()]


@pytest.mark.parametrize("otel_first", [True, False])
def test_opentelemetrys_interceptor_after_aiwatchs_is_warned_of_once(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture,
        otel_first: bool) -> None:
    """OpenTelemetry's interceptor placed after aiwatch's starts its SERVER span from the call's metadata, not inside
    aiwatch's: two SERVER spans per RPC (two traces without a caller's trace context), without a word. The first
    RPC now warns, once, naming the order to use; the right order warns of nothing."""
    caplog.set_level("WARNING", logger="aiwatch")
    otel = server_interceptor(tracer_provider=provider)
    ours = grpc_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider)
    with sync_server([otel, ours] if otel_first else [ours, otel]) as target, stub_for(target) as stub:
        for _ in range(3):
            stub.Predict(req())
    servers = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert len(servers) == (3 if otel_first else 6)  # what the warning is about
    warned = _order_warnings(caplog)
    assert len(warned) == (0 if otel_first else 1)
    if warned:
        assert "interceptors=[otel, aiwatch]" in warned[0]


async def test_aio_opentelemetrys_interceptor_after_aiwatchs_is_warned_of_once(
        metrics: Metrics, provider: TracerProvider, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="aiwatch")
    interceptors = [grpc_aio_server_interceptor(service="infer", metrics=metrics, tracer_provider=provider),
                    aio_server_interceptor(tracer_provider=provider)]
    async with aio_server(interceptors) as target, grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        for _ in range(3):
            await stub.Predict(req())
    assert len(_order_warnings(caplog)) == 1
