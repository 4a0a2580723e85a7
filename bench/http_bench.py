"""Added cost per request of HTTP instrumentation over a bare FastAPI app, measured in one process.

Every variant is the same FastAPI app (one async JSON endpoint with a path parameter) called in-process through a
minimal raw ASGI driver (no network, no client library). Many short rounds run with the variants interleaved, so
each sees the same machine conditions; many thousand requests in all. A variant's figure is the median over rounds
of its mean time per request; its added cost is the median over rounds of its time minus the bare app's time in the
same round (the best round of each is printed too). Time is this thread's CPU time, so other load on the machine
does not count directly.
Variants:

- ``one-histogram``: calibration, a raw ASGI wrapper observing one histogram per request;
- ``aiwatch``: ``aiwatch.instrument`` with metrics only; the endpoint runs inside ``aiwatch.phase("inference")`` and
  the Server-Timing header is on;
- ``aiwatch-all-slow``: the same with ``slow_threshold`` below every request: each request is also counted in the
  slow-request counters (the tail ``aiwatch diagnose`` splits), their worst case;
- ``aiwatch-plain``: ``aiwatch.instrument`` doing what the instrumentator does (no phase in the endpoint, no
  Server-Timing header): the like-for-like comparison;
- ``aiwatch+tracing``: the same with an SDK TracerProvider whose SimpleSpanProcessor feeds an exporter that drops;
- ``instrumentator``: prometheus-fastapi-instrumentator's default instrumentation;
- ``otel-asgi``: OpenTelemetry's ASGI middleware (``OpenTelemetryMiddleware``) with the same kind of provider.

    python bench/http_bench.py            # full run
    python bench/http_bench.py --quick    # a smaller run (about 20 s)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

import aiwatch


class DropExporter(SpanExporter):
    """Accepts spans and throws them away: measures span work, not export I/O."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def discarding_provider() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(DropExporter()))
    return provider


def make_app(with_phase: bool) -> FastAPI:
    app = FastAPI()
    if with_phase:
        @app.get("/items/{item_id}")
        async def item_phase(item_id: int) -> dict[str, int]:
            with aiwatch.phase("inference"):
                return {"id": item_id}
    else:
        @app.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, int]:
            return {"id": item_id}
    return app


def bare() -> Any:
    return make_app(False)


def with_aiwatch() -> Any:
    return aiwatch.instrument(make_app(True), registry=CollectorRegistry(), service="bench")


def with_aiwatch_all_slow() -> Any:
    """``aiwatch`` with a slow threshold below every request's time: each request also adds its phases to the
    slow-request counters (the tail diagnose splits), the worst case of their cost. With the default threshold
    (0.3 s, as in ``aiwatch``) a request below it costs one comparison."""
    return aiwatch.instrument(make_app(True), registry=CollectorRegistry(), service="bench", slow_threshold=1e-9)


def with_aiwatch_plain() -> Any:
    """aiwatch doing what the instrumentator does: the request histogram (plus overhead phase and in-flight gauge),
    no phase in the endpoint, no Server-Timing header."""
    return aiwatch.instrument(make_app(False), registry=CollectorRegistry(), service="bench", server_timing=False)


def with_aiwatch_tracing() -> Any:
    return aiwatch.instrument(make_app(True), registry=CollectorRegistry(), service="bench",
                              tracer_provider=discarding_provider())


def with_instrumentator() -> Any:
    from prometheus_fastapi_instrumentator import Instrumentator

    app = make_app(False)
    Instrumentator(registry=CollectorRegistry()).instrument(app)
    return app


def with_otel_asgi() -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app = make_app(False)
    app.add_middleware(OpenTelemetryMiddleware, tracer_provider=discarding_provider())
    return app


def with_one_histogram() -> Any:
    """Calibration: the least a metrics middleware can do, one hand-written histogram observation per request
    (issue 2's reference machine: +5 µs/request)."""
    from prometheus_client import Histogram

    histogram = Histogram("bench_request_seconds", "Request time.", registry=CollectorRegistry())
    inner = make_app(False)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        start = time.perf_counter()
        await inner(scope, receive, send)
        histogram.observe(time.perf_counter() - start)

    return app


VARIANTS: dict[str, Callable[[], Any]] = {
    "bare": bare,
    "one-histogram": with_one_histogram,
    "aiwatch": with_aiwatch,
    "aiwatch-all-slow": with_aiwatch_all_slow,
    "aiwatch-plain": with_aiwatch_plain,
    "aiwatch+tracing": with_aiwatch_tracing,
    "instrumentator": with_instrumentator,
    "otel-asgi": with_otel_asgi,
}

SCOPE: dict[str, Any] = {
    "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": "GET",
    "scheme": "http", "path": "/items/42", "raw_path": b"/items/42", "query_string": b"", "root_path": "",
    "headers": [(b"host", b"bench"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
}
REQUEST = {"type": "http.request", "body": b"", "more_body": False}

#: CPU time of this thread, not wall time: on a machine shared with other work, time spent waiting for a CPU would
#: otherwise land on whichever variant happened to be running.
_cpu = time.thread_time


async def run_requests(app: Any, n: int) -> float:
    """Mean CPU seconds per request over ``n`` sequential requests."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return REQUEST

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    start = _cpu()
    for _ in range(n):
        await app(dict(SCOPE), receive, send)
    elapsed = _cpu() - start
    if len(statuses) != n or any(s != 200 for s in statuses):
        raise RuntimeError(f"unexpected statuses: {sorted(set(statuses))}")
    return elapsed / n


async def bench(rounds: int, n: int, names: list[str]) -> dict[str, list[float]]:
    apps = {name: VARIANTS[name]() for name in names}
    for app in apps.values():  # warm up: lazy middleware stacks, caches, label children
        await run_requests(app, max(n // 10, 200))
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate so no variant always runs first
        for name in order:
            gc.collect()
            results[name].append(await run_requests(apps[name], n))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and requests")
    parser.add_argument("--rounds", type=int, help="rounds per variant (default 41, quick 15)")
    parser.add_argument("--requests", type=int, help="requests per round (default 1000, quick 500)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (15 if args.quick else 41)
    n = args.requests or (500 if args.quick else 1000)
    names = list(VARIANTS)
    results = asyncio.run(bench(rounds, n, names))
    median = {name: statistics.median(v) for name, v in results.items()}
    # added cost: the median over rounds of (variant - bare) within the same round, which cancels slow drifts in
    # machine load better than the difference of the two medians
    added = {name: statistics.median(v - b for v, b in zip(results[name], results["bare"], strict=True)) * 1e6
             for name in names}
    print(f"python {sys.version.split()[0]}, {rounds} rounds x {n} requests per variant, in-process raw ASGI driver, "
          "thread CPU time")
    best = {name: min(v) for name, v in results.items()}
    best_added = {name: (best[name] - best["bare"]) * 1e6 for name in names}
    print(f"{'variant':<18}{'µs/request':>12}{'added µs':>11}{'best round':>12}{'best added':>12}")
    for name in names:
        print(f"{name:<18}{median[name] * 1e6:>12.1f}{added[name]:>11.1f}{best[name] * 1e6:>12.1f}"
              f"{best_added[name]:>12.1f}")
    for label, figures in (("median", added), ("best round", best_added)):
        metrics_ratio = figures["aiwatch"] / figures["instrumentator"]
        plain_ratio = figures["aiwatch-plain"] / figures["instrumentator"]
        tracing_ratio = figures["aiwatch+tracing"] / figures["otel-asgi"]
        print(f"{label}: aiwatch / instrumentator added = {metrics_ratio:.2f} (target <= 0.33); "
              f"aiwatch-plain / instrumentator = {plain_ratio:.2f}; "
              f"aiwatch+tracing / otel-asgi added = {tracing_ratio:.2f} (target <= 0.50)")
    tail = statistics.median(a - b for a, b in zip(results["aiwatch-all-slow"], results["aiwatch"], strict=True))
    print(f"slow-request counters, every request slow (aiwatch-all-slow - aiwatch, median of the rounds' "
          f"differences): {tail * 1e6:+.1f} µs/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
