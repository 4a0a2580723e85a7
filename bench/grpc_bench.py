"""Microseconds added per unary gRPC call by server interceptors, like for like: aiwatch's, OpenTelemetry's, and a
hand-written one-histogram interceptor (the floor of any metrics interceptor).

    python bench/grpc_bench.py            # full: 15 rounds x 1000 calls per variant
    python bench/grpc_bench.py --quick    # 5 rounds x 200 calls

Two measurements, each with the variants interleaved so that machine load hits all of them alike:

* **CPU** (the headline on a shared machine): each interceptor chain's wrapped handler called in-process with a stub
  servicer context, this thread's CPU time per call minus the bare handler's (no network, no grpcio threads);
* **loopback**: one real grpcio thread-pool server per variant on 127.0.0.1 and a sync client, the variants taking
  turns call by call; the median call latency per round, then the median over rounds, minus the bare server's.

What each variant records per call is counted and printed: spans (an in-memory span exporter behind the same kind of
provider), metric families, series and exposition samples changed by one call (its own registry scraped before and
after). Tracing variants get an SDK TracerProvider whose SimpleSpanProcessor hands each span to an exporter that
drops it. The servicer does no work and opens no phase.

Variants: bare grpcio; a no-op interceptor (grpcio's interceptor machinery by itself); ``one-histogram`` (observes
one histogram per call); ``one-span`` (starts and ends one span per call: the floor of any tracing interceptor);
aiwatch metrics only (its defaults: request histogram, the ``overhead`` phase, the in-flight gauge, the
``server-timing`` trailer); OpenTelemetry's interceptor (one span, no metrics: no MeterProvider is set); aiwatch
with its own SERVER span (metrics + one span); both (OpenTelemetry's span, aiwatch's metrics); and on the client
side a no-op and aiwatch's client interceptor, on a bare server (loopback only).

Like-for-like pairs: aiwatch metrics + span / OpenTelemetry's span (target <= 0.5); aiwatch metrics-only /
one-histogram (target <= 2).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from opentelemetry.instrumentation.grpc import server_interceptor as otel_server_interceptor
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Histogram

from aiwatch.grpc import grpc_client_interceptor, grpc_server_interceptor
from bench.counting import (
    Work,
    count_work,
    discarding_provider,
    recording_provider,
    require_same_work,
    trace_exemplar,
)
from examples.grpc_service.servicer import pb, pb_grpc


class Bare(pb_grpc.InferenceServicer):
    def Predict(self, request: Any, context: Any) -> Any:
        return pb.PredictReply(score=1.0)


class NoopServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Wraps the handler like the real interceptors do, and does nothing: grpcio's own interceptor cost."""

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        behavior = handler.unary_unary

        def unary(request: Any, context: Any) -> Any:
            return behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)


class OneHistogramInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """The floor of a metrics interceptor: one histogram observation of each call's time, nothing else."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.histogram = Histogram("bench_rpc_seconds", "RPC time.", registry=registry)

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        behavior, observe, clock = handler.unary_unary, self.histogram.observe, time.perf_counter

        def unary(request: Any, context: Any) -> Any:
            start = clock()
            try:
                return behavior(request, context)
            finally:
                observe(clock() - start)

        return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)


class OneSpanInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """The floor of a tracing interceptor: one SERVER span started and ended per call through the provider, named
    after the method, with no attributes and nothing else."""

    def __init__(self, provider: Any) -> None:
        self.tracer = provider.get_tracer("bench")

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        behavior, tracer, name = handler.unary_unary, self.tracer, details.method

        def unary(request: Any, context: Any) -> Any:
            span = tracer.start_span(name, kind=SpanKind.SERVER)
            try:
                return behavior(request, context)
            finally:
                span.end()

        return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)


class SameFamiliesInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """What aiwatch's metrics-only interceptor records per call, written by hand in the fewest lines with
    prometheus_client's documented API: the same three histogram families with the same labels and buckets (call
    time from the call's arrival; the ``queue_pool`` (the wait for a worker of the server's pool, from the moment
    grpcio asks for the handler), ``overhead``, ``deserialize`` and ``serialize`` phases; request and response message
    sizes) and the
    in-flight gauge moved up and down.
    With a tracer provider, also the span aiwatch makes: the parent read from the call's metadata by the global
    propagator, one SERVER span with the same 6 attributes (5 at the start, the status code at the end), made
    current while the handler runs, and its trace id as the exemplar of the call's time and phases (5 exemplars, as
    aiwatch sets). No ``server-timing`` trailer, no label guard, and the call's time taken before its response is
    serialized (aiwatch's includes it): what is left between this and aiwatch is aiwatch's own work beyond
    recording the same samples, exemplars and span."""

    def __init__(self, registry: CollectorRegistry, provider: Any = None) -> None:
        from prometheus_client import Gauge

        from aiwatch.metrics import BYTES_BUCKETS, LATENCY_BUCKETS

        self.duration = Histogram("hand_request_duration_seconds", "Call time.",
                                  ("service", "route", "method", "status", "traffic_class"), buckets=LATENCY_BUCKETS,
                                  registry=registry)
        self.phase = Histogram("hand_phase_duration_seconds", "Phase time.",
                               ("service", "model", "model_version", "phase"), buckets=LATENCY_BUCKETS,
                               registry=registry)
        self.sizes = Histogram("hand_rpc_message_size_bytes", "Message size.", ("service", "route", "direction"),
                               buckets=BYTES_BUCKETS, registry=registry)
        self.in_flight = Gauge("hand_requests_in_flight", "Calls in flight.", ("service",), registry=registry)
        self.tracer = provider.get_tracer("bench") if provider is not None else None

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        from opentelemetry import context as otel_context
        from opentelemetry import propagate
        from opentelemetry.trace import set_span_in_context

        arrived = time.perf_counter()  # grpcio asks for the handler when the call arrives, before it waits for a worker
        handler = continuation(details)
        behavior, route, tracer = handler.unary_unary, details.method, self.tracer
        deserialize, serialize = handler.request_deserializer, handler.response_serializer
        request_size = self.sizes.labels("bench", route, "request")
        response_size = self.sizes.labels("bench", route, "response")
        clock = time.perf_counter
        # this call's deserialization time and exemplar: grpcio asks for the handler per call, so these are the
        # call's own (its phases carry the exemplar, as aiwatch's do, so they are observed once the span exists)
        deserialized = 0.0
        exemplar: dict[str, str] | None = None

        def deserializer(data: bytes) -> Any:
            nonlocal deserialized
            start = clock()
            message = deserialize(data) if deserialize is not None else data
            deserialized = clock() - start
            request_size.observe(len(data))
            return message

        def serializer(message: Any) -> bytes:
            start = clock()
            data = serialize(message) if serialize is not None else message
            self.phase.labels("bench", "", "", "serialize").observe(clock() - start, exemplar)
            response_size.observe(len(data))
            return data

        def unary(request: Any, context: Any) -> Any:
            nonlocal exemplar
            start = time.perf_counter()
            gauge = self.in_flight.labels("bench")
            gauge.inc()
            span = token = None
            status = "OK"
            if tracer is not None:
                service, _, method = route[1:].rpartition("/")
                host, _, port = context.peer().split(":", 1)[1].rpartition(":")
                span = tracer.start_span(
                    route[1:], context=propagate.extract(dict(context.invocation_metadata())), kind=SpanKind.SERVER,
                    attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method,
                                "net.peer.ip": host, "net.peer.port": int(port)})
                token = otel_context.attach(set_span_in_context(span))
                exemplar = trace_exemplar(span)
            self.phase.labels("bench", "", "", "queue_pool").observe(start - arrived, exemplar)
            self.phase.labels("bench", "", "", "deserialize").observe(deserialized, exemplar)
            try:
                return behavior(request, context)
            except Exception:
                status = "UNKNOWN"
                raise
            finally:
                elapsed = time.perf_counter() - arrived
                gauge.dec()
                self.duration.labels("bench", route, "grpc", status, "realtime").observe(elapsed, exemplar)
                self.phase.labels("bench", "", "", "overhead").observe(elapsed, exemplar)
                if span is not None:
                    otel_context.detach(token)
                    span.set_attribute("rpc.grpc.status_code", 0 if status == "OK" else 2)
                    span.end()

        return grpc.unary_unary_rpc_method_handler(unary, deserializer, serializer)


class NoopClientInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(details, request)


def _server(interceptors: list[Any]) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=interceptors)
    pb_grpc.add_InferenceServicer_to_server(Bare(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def _round(predicts: dict[str, Callable[..., Any]], calls: int) -> dict[str, float]:
    """``calls`` calls per variant, the variants taking turns call by call; the median latency of each."""
    request = pb.PredictRequest(features=[1.0])
    samples: dict[str, list[float]] = {name: [] for name in predicts}
    clock = time.perf_counter
    items = list(predicts.items())
    for _ in range(calls):
        for name, predict in items:
            start = clock()
            predict(request)
            samples[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


class _StubContext:
    """Just enough of a servicer context for the interceptors' own code (the CPU-only figures). Like grpcio's, it
    keeps the callbacks given to ``add_callback`` and runs them when the RPC ends (:func:`_rpc`)."""

    def __init__(self) -> None:
        self.trailing: Any = None
        self.callbacks: list[Callable[[], Any]] = []

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        self.callbacks.append(callback)
        return True

    def code(self) -> Any:
        return None

    def details(self) -> Any:
        return None

    def is_active(self) -> bool:
        return True

    def time_remaining(self) -> Any:
        return None

    def trailing_metadata(self) -> Any:
        return self.trailing

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailing = metadata

    def invocation_metadata(self) -> Any:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50051"


class _Details:
    method = "/aiwatch.example.Inference/Predict"
    invocation_metadata = ()


def _wrapped(chain: list[Any]) -> Callable[[Any], Any]:
    """One RPC as grpcio's thread-pool server runs it for ``chain`` around a bare unary handler: the handler asked
    for (per RPC, as grpcio asks), the request's bytes deserialized, its behavior called, its response serialized,
    and the context's end-of-RPC callbacks run."""
    def rpc(request: Any) -> Any:
        handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
        for interceptor in reversed(chain):
            handler = interceptor.intercept_service(lambda details, h=handler: h, _Details())
        context = _StubContext()
        if handler.request_deserializer is not None:
            request = handler.request_deserializer(request)
        response = handler.unary_unary(request, context)
        if handler.response_serializer is not None:
            response = handler.response_serializer(response)
        for callback in context.callbacks:
            callback()
        return response

    return rpc


def cpu_only(chains: dict[str, list[Any]], calls: int, rounds: int) -> dict[str, float]:
    """µs of this thread's CPU per call of each chain's wrapped handler, in-process (no network, no grpcio
    threads): the median over rounds, the chains interleaved round by round."""
    behaviors = {name: _wrapped(chain) for name, chain in chains.items()}
    per_call: dict[str, list[float]] = {name: [] for name in behaviors}
    clock = time.thread_time
    for r in range(rounds):
        names = list(behaviors)
        names = names[r % len(names):] + names[:r % len(names)]
        for name in names:
            behavior = behaviors[name]
            start = clock()
            for _ in range(calls):
                behavior(b"1")
            per_call[name].append((clock() - start) / calls)
    return {name: statistics.median(values) * 1e6 for name, values in per_call.items()}


#: name -> (server interceptors, client interceptors), built on a registry and a tracer provider
Factory = Callable[[CollectorRegistry, Any], tuple[list[Any], list[Any]]]
VARIANTS: dict[str, Factory] = {
    "bare grpcio": lambda reg, prov: ([], []),
    "no-op interceptor": lambda reg, prov: ([NoopServerInterceptor()], []),
    "one-histogram": lambda reg, prov: ([OneHistogramInterceptor(reg)], []),
    "aiwatch (metrics only)": lambda reg, prov: ([grpc_server_interceptor(service="bench", registry=reg)], []),
    "same families by hand": lambda reg, prov: ([SameFamiliesInterceptor(reg)], []),
    "one-span": lambda reg, prov: ([OneSpanInterceptor(prov)], []),
    "OpenTelemetry (span)": lambda reg, prov: ([otel_server_interceptor(tracer_provider=prov)], []),
    "aiwatch (metrics + span)": lambda reg, prov: (
        [grpc_server_interceptor(service="bench", registry=reg, tracer_provider=prov)], []),
    "same families + span by hand": lambda reg, prov: ([SameFamiliesInterceptor(reg, prov)], []),
    "OpenTelemetry + aiwatch": lambda reg, prov: (
        [otel_server_interceptor(tracer_provider=prov), grpc_server_interceptor(service="bench", registry=reg,
                                                                                tracer_provider=prov)], []),
    "no-op client interceptor": lambda reg, prov: ([], [NoopClientInterceptor()]),
    "aiwatch client interceptor": lambda reg, prov: ([], [grpc_client_interceptor(service="client",
                                                                                    registry=reg)]),
}
SERVER_SIDE = [name for name in VARIANTS if "client" not in name]
#: (numerator, denominator, target ratio, what the pair compares)
PAIRS: list[tuple[str, str, float | None, str]] = [
    ("aiwatch (metrics + span)", "OpenTelemetry (span)", 0.5, "tracing: one span each, aiwatch's metrics too"),
    ("aiwatch (metrics only)", "one-histogram", 2.0, "metrics-only against the one-histogram floor"),
    ("aiwatch (metrics only)", "same families by hand", None, "metrics-only against its own families by hand"),
    ("aiwatch (metrics + span)", "same families + span by hand", None,
     "tracing against its own families and span by hand"),
    ("same families + span by hand", "OpenTelemetry (span)", None,
     "aiwatch's work written by hand against OpenTelemetry's span")]


def count(names: list[str]) -> dict[str, Work]:
    """What one call of each server-side chain records, through the in-process wrapped handler."""
    out = {}
    for name in names:
        registry = CollectorRegistry()
        provider, exporter = recording_provider()
        behavior = _wrapped(VARIANTS[name](registry, provider)[0])
        out[name] = count_work(lambda b=behavior: b(b"1"), registry, exporter)
    return out


def loopback(rounds: int, calls: int) -> dict[str, float]:
    servers, channels, predicts = [], [], {}
    for name, factory in VARIANTS.items():
        server_side, client_side = factory(CollectorRegistry(), discarding_provider())
        server, target = _server(server_side)
        channel = grpc.insecure_channel(target)
        intercepted = grpc.intercept_channel(channel, *client_side) if client_side else channel
        servers.append(server)
        channels.append(channel)
        predicts[name] = pb_grpc.InferenceStub(intercepted).Predict
    try:
        _round(predicts, max(calls // 5, 50))  # warm up connections and code paths
        results: dict[str, list[float]] = {name: [] for name in predicts}
        for _ in range(rounds):
            for name, median in _round(predicts, calls).items():
                results[name].append(median)
    finally:
        for channel in channels:
            channel.close()
        for server in servers:
            server.stop(None)
    return {name: statistics.median(values) * 1e6 for name, values in results.items()}


def _ratios(label: str, added: dict[str, float]) -> None:
    for num, den, target, what in PAIRS:
        ratio = added[num] / added[den] if added[den] > 0 else float("nan")
        verdict = "" if target is None else f" (target <= {target}: {'met' if ratio <= target else 'missed'})"
        print(f"{label}: {num} / {den} added = {ratio:.2f}{verdict}; {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 rounds x 200 calls (smoke run)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--calls", type=int)
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 15)
    calls = args.calls or (200 if args.quick else 1000)

    work = count(SERVER_SIDE)
    require_same_work(work, "aiwatch (metrics only)", "same families by hand")
    require_same_work(work, "aiwatch (metrics + span)", "same families + span by hand")
    load_before = os.getloadavg()[0]
    chains = {name: VARIANTS[name](CollectorRegistry(), discarding_provider())[0] for name in SERVER_SIDE}
    cpu = cpu_only(chains, calls=calls * 5, rounds=rounds)
    cpu_added = {name: us - cpu["bare grpcio"] for name, us in cpu.items()}
    print(f"gRPC unary call (python {sys.version.split()[0]}, grpcio {grpc.__version__}); load average "
          f"{load_before:.2f} at the start")
    print(f"\nCPU: wrapped handler called in-process with a stub context, {rounds} rounds x {calls * 5} calls, "
          "median of rounds, thread CPU time")
    print(f"{'variant':28} {'us/call':>9} {'added us':>9}   per call")
    for name, us in cpu.items():
        print(f"{name:28} {us:9.2f} {cpu_added[name]:9.2f}   {work[name].describe()}")
    print(f"families recorded by aiwatch: {', '.join(work['aiwatch (metrics only)'].family_names)}")
    print("(a gauge moved up and back within the call, aiwatch_requests_in_flight, shows no change in a scrape)")
    _ratios("CPU", cpu_added)

    medians = loopback(rounds, calls)
    bare = medians["bare grpcio"]
    print(f"\nloopback: sync server + client on 127.0.0.1, {rounds} rounds x {calls} calls, median of per-round "
          f"medians (wall time, so the machine's load is in it)")
    print(f"{'variant':28} {'us/call':>9} {'added us':>9}")
    for name, us in medians.items():
        print(f"{name:28} {us:9.1f} {us - bare:9.1f}")
    _ratios("loopback", {name: us - bare for name, us in medians.items()})
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
