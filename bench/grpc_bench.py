"""Microseconds added per unary gRPC call by aiwatch's and OpenTelemetry's server interceptors.

    python bench/grpc_bench.py            # full: 15 rounds x 1000 calls per variant
    python bench/grpc_bench.py --quick    # 5 rounds x 200 calls

One process runs one real grpcio thread-pool server per variant on 127.0.0.1 and a sync client; the variants
take turns call by call, so machine load drifts hit all of them alike. Per round and variant the median call latency
is taken, then the median over rounds; "added" is that minus the bare server's. The servicer does no work (no
phases), so the figures are the interceptors' own cost.

Variants: bare grpcio; a no-op server interceptor (grpcio's interceptor machinery by itself); aiwatch metrics
only (no tracer provider); OpenTelemetry's server interceptor with an SDK TracerProvider (spans created and ended,
no exporter); aiwatch with the same provider (its own SERVER span); both (OpenTelemetry's span, aiwatch's metrics);
a no-op client interceptor and aiwatch's client interceptor, on a bare server.
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
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from aiwatch.grpc import grpc_client_interceptor, grpc_server_interceptor
from aiwatch.metrics import Metrics
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
    """Just enough of a servicer context for the interceptors' own code (the CPU-only figures)."""

    def __init__(self) -> None:
        self.trailing: Any = None

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


def cpu_only(interceptors: dict[str, list[Any]], calls: int, rounds: int) -> dict[str, float]:
    """µs of CPU each interceptor chain adds per call, calling the wrapped handler in-process (no network, no
    grpcio threads): less sensitive to a loaded machine than the loopback figures."""
    base = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    behaviors = {}
    for name, chain in interceptors.items():
        handler = base
        for interceptor in reversed(chain):
            handler = interceptor.intercept_service(lambda details, h=handler: h, _Details())
        behaviors[name] = handler.unary_unary
    medians: dict[str, list[float]] = {name: [] for name in behaviors}
    clock = time.perf_counter
    for _ in range(rounds):
        for name, behavior in behaviors.items():
            start = clock()
            for _ in range(calls):
                behavior(1, _StubContext())
            medians[name].append((clock() - start) / calls)
    return {name: statistics.median(values) * 1e6 for name, values in medians.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 rounds x 200 calls (smoke run)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--calls", type=int)
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 15)
    calls = args.calls or (200 if args.quick else 1000)

    provider = TracerProvider()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    variants: dict[str, tuple[list[Any], list[Any]]] = {
        "bare grpcio": ([], []),
        "no-op server interceptor": ([NoopServerInterceptor()], []),
        "aiwatch (metrics only)": ([grpc_server_interceptor(service="bench", metrics=metrics)], []),
        "OpenTelemetry interceptor": ([otel_server_interceptor(tracer_provider=provider)], []),
        "aiwatch (metrics + own span)": ([grpc_server_interceptor(service="bench", metrics=metrics,
                                                                  tracer_provider=provider)], []),
        "OpenTelemetry + aiwatch": ([otel_server_interceptor(tracer_provider=provider),
                                     grpc_server_interceptor(service="bench", metrics=metrics,
                                                             tracer_provider=provider)], []),
        "no-op client interceptor": ([], [NoopClientInterceptor()]),
        "aiwatch client interceptor": ([], [grpc_client_interceptor(service="client", metrics=metrics)]),
    }
    servers, channels, predicts = [], [], {}
    for name, (server_side, client_side) in variants.items():
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

    medians = {name: statistics.median(values) * 1e6 for name, values in results.items()}
    bare = medians["bare grpcio"]
    print(f"gRPC unary call, sync server + client on loopback; {rounds} rounds x {calls} calls, "
          f"median of per-round medians (python {sys.version.split()[0]}, grpcio {grpc.__version__})")
    print(f"{'variant':32} {'us/call':>9} {'added us':>9}")
    for name, us in medians.items():
        print(f"{name:32} {us:9.1f} {us - bare:9.1f}")
    otel = medians["OpenTelemetry interceptor"] - bare
    for name in ("aiwatch (metrics only)", "aiwatch (metrics + own span)"):
        added = medians[name] - bare
        ratio = added / otel if otel > 0 else float("nan")
        print(f"{name} adds {ratio:.2f}x what OpenTelemetry's interceptor adds (target <= 0.5)")

    chains = {name: server_side for name, (server_side, _) in variants.items() if not variants[name][1]}
    cpu = cpu_only(chains, calls=calls * 5, rounds=rounds)
    print(f"\nCPU only (wrapped handler called in-process with a stub context, {rounds} rounds x {calls * 5} calls)")
    print(f"{'variant':32} {'us/call':>9} {'added us':>9}")
    for name, us in cpu.items():
        print(f"{name:32} {us:9.2f} {us - cpu['bare grpcio']:9.2f}")
    otel_cpu = cpu["OpenTelemetry interceptor"] - cpu["bare grpcio"]
    for name in ("aiwatch (metrics only)", "aiwatch (metrics + own span)"):
        ratio = (cpu[name] - cpu["bare grpcio"]) / otel_cpu if otel_cpu > 0 else float("nan")
        print(f"{name} adds {ratio:.2f}x what OpenTelemetry's interceptor adds (CPU only)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
