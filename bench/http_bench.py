"""Added cost per request of HTTP instrumentation over a bare FastAPI app, like for like, measured in one process.

Every variant is the same FastAPI app (one async JSON endpoint with a path parameter) called in-process through a
minimal raw ASGI driver (no network, no client library). Many short rounds run with the variants interleaved, so
each sees the same machine conditions; many thousand requests in all. A variant's figure is the median over rounds
of its mean time per request; its added cost is the median over rounds of its time minus the bare app's time in the
same round (the best round of each is printed too). Time is this thread's CPU time, so other load on the machine
does not count directly.

What each variant does per request is counted, not assumed, and printed: spans (an in-memory span exporter behind
the same kind of provider), metric families, series and exposition samples changed by one request (its registry
scraped before and after). Tracing variants get an SDK TracerProvider whose SimpleSpanProcessor hands each span to
an exporter that drops it.

Variants (the endpoint opens no phase unless the name says so):

- ``one-histogram``: the floor of any metrics middleware, a raw ASGI wrapper observing one histogram;
- ``same-families``: what ``aiwatch`` records (its four histogram families, same labels and buckets, and the
  in-flight gauge) written by hand with prometheus_client's documented API: the floor for recording that much;
- ``same-families+span``: the same plus the span ``aiwatch+tracing`` makes (same 9 attributes, parent from the
  headers, made current), written by hand with the OpenTelemetry API, and its trace id as the exemplar of the
  request's time and overhead observations, as aiwatch sets them;
- ``one-span``: the floor of any tracing middleware, a raw ASGI wrapper starting and ending one span;
- ``aiwatch``: ``aiwatch.instrument`` with its defaults (request histogram, the ``overhead`` phase histogram, the
  in-flight gauge, the Server-Timing header with the service name);
- ``aiwatch+phase``: the same, the endpoint inside ``aiwatch.phase("inference")`` (one more histogram series);
- ``aiwatch-all-slow``: ``aiwatch+phase`` with ``slow_threshold`` below every request: each request is also counted
  in the slow-request counters (the tail ``aiwatch diagnose`` splits), their worst case;
- ``aiwatch+tracing``: the defaults plus its SERVER span (one span);
- ``aiwatch+tracing+phase``: plus the phase's child span (two spans);
- ``instrumentator``: prometheus-fastapi-instrumentator's defaults;
- ``otel-asgi``: OpenTelemetry's ASGI middleware at its defaults (a server span and a span per send / receive);
- ``otel-asgi-server``: the same with ``exclude_spans=["send", "receive"]`` (the server span only).

Like-for-like pairs: ``aiwatch+tracing`` / ``otel-asgi-server`` (one span each; aiwatch also records its metrics,
OpenTelemetry records none: no MeterProvider is set, so its metric calls are no-ops); ``aiwatch`` /
``instrumentator`` (each tool's defaults, with the families each records printed); ``aiwatch`` / ``one-histogram``
(the floor); ``aiwatch`` / ``same-families`` (the same samples, so the rest is aiwatch's own work).

    python bench/http_bench.py            # full run
    python bench/http_bench.py --quick    # a smaller run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

import aiwatch
from bench.counting import HandFamilies, count_variants, discarding_provider, require_same_work, trace_exemplar


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


#: A variant builds its app from a registry (its metrics) and a tracer provider (its spans, when it traces).
Factory = Callable[[CollectorRegistry, Any], Any]


def bare(registry: CollectorRegistry, provider: Any) -> Any:
    return make_app(False)


def with_one_histogram(registry: CollectorRegistry, provider: Any) -> Any:
    """The floor: one hand-written histogram observation per request (issue 2's reference: +5 µs/request)."""
    from prometheus_client import Histogram

    histogram = Histogram("bench_request_seconds", "Request time.", registry=registry)
    inner = make_app(False)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        start = time.perf_counter()
        await inner(scope, receive, send)
        histogram.observe(time.perf_counter() - start)

    return app


def with_same_families(registry: CollectorRegistry, provider: Any) -> Any:
    """What ``aiwatch`` records per request, written by hand in the fewest lines with prometheus_client's documented
    API: the same four histogram families with the same labels and buckets (request time, the ``overhead`` phase,
    request and response body sizes) and the in-flight gauge moved up and down. The route is Starlette's
    ``scope["route"]`` after the app. No Server-Timing header, no label guard, no checks of the numbers: what is
    left between this and ``aiwatch`` is aiwatch's own work beyond recording the same samples."""
    return _by_hand(registry, None)


def with_same_families_span(registry: CollectorRegistry, provider: Any) -> Any:
    """``same-families`` plus the span ``aiwatch+tracing`` makes, by hand with the OpenTelemetry API: the parent
    read from the request's headers by the global propagator, one SERVER span with the same 9 attributes (7 given
    at the start, the route and the status at the end), made current while the app runs, and its trace id as the
    exemplar of the time observations (2, as aiwatch sets)."""
    return _by_hand(registry, provider.get_tracer("bench"))


def _by_hand(registry: CollectorRegistry, tracer: Any) -> Any:
    from opentelemetry import context, propagate
    from opentelemetry.trace import SpanKind, set_span_in_context

    families = HandFamilies.on(registry)
    inner = make_app(False)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        start = time.perf_counter()
        gauge = families.in_flight.labels("bench")
        gauge.inc()
        status, sent = 500, 0
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        span = token = None
        if tracer is not None:
            span = tracer.start_span(scope["method"], context=propagate.extract(headers), kind=SpanKind.SERVER,
                                     attributes={
                                         "http.request.method": scope["method"], "url.scheme": scope["scheme"],
                                         "url.path": scope["path"], "server.address": headers.get("host", ""),
                                         "network.protocol.version": scope["http_version"],
                                         "client.address": scope["client"][0],
                                         "user_agent.original": headers.get("user-agent", "")})
            token = context.attach(set_span_in_context(span))

        async def counting_send(message: Any) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await inner(scope, receive, counting_send)
        finally:
            elapsed = time.perf_counter() - start
            gauge.dec()
            route = getattr(scope.get("route"), "path", "__unmatched__")
            method = scope["method"]
            families.record(elapsed, route, method, str(status), int(headers.get("content-length", 0)), sent,
                            None if span is None else trace_exemplar(span))
            if span is not None:
                context.detach(token)
                span.set_attributes({"http.route": route, "http.response.status_code": status})
                span.update_name(f"{method} {route}")
                span.end()

    return app


def with_one_span(registry: CollectorRegistry, provider: Any) -> Any:
    """The floor of tracing middleware: one SERVER span started and ended per request, nothing else."""
    from opentelemetry.trace import SpanKind

    tracer = provider.get_tracer("bench")
    inner = make_app(False)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        span = tracer.start_span("GET", kind=SpanKind.SERVER)
        try:
            await inner(scope, receive, send)
        finally:
            span.end()

    return app


def with_aiwatch(registry: CollectorRegistry, provider: Any) -> Any:
    return aiwatch.instrument(make_app(False), registry=registry, service="bench")


def with_aiwatch_phase(registry: CollectorRegistry, provider: Any) -> Any:
    return aiwatch.instrument(make_app(True), registry=registry, service="bench")


def with_aiwatch_all_slow(registry: CollectorRegistry, provider: Any) -> Any:
    """``aiwatch+phase`` with a slow threshold below every request's time: each request also adds its phases to the
    slow-request counters, the worst case of their cost. With the default threshold (0.3 s, as in ``aiwatch``) a
    request below it costs one comparison."""
    return aiwatch.instrument(make_app(True), registry=registry, service="bench", slow_threshold=1e-9)


def with_aiwatch_tracing(registry: CollectorRegistry, provider: Any) -> Any:
    return aiwatch.instrument(make_app(False), registry=registry, service="bench", tracer_provider=provider)


def with_aiwatch_tracing_phase(registry: CollectorRegistry, provider: Any) -> Any:
    return aiwatch.instrument(make_app(True), registry=registry, service="bench", tracer_provider=provider)


def with_instrumentator(registry: CollectorRegistry, provider: Any) -> Any:
    from prometheus_fastapi_instrumentator import Instrumentator

    app = make_app(False)
    Instrumentator(registry=registry).instrument(app)
    return app


def with_otel_asgi(registry: CollectorRegistry, provider: Any) -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app = make_app(False)
    app.add_middleware(OpenTelemetryMiddleware, tracer_provider=provider)
    return app


def with_otel_asgi_server(registry: CollectorRegistry, provider: Any) -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app = make_app(False)
    app.add_middleware(OpenTelemetryMiddleware, tracer_provider=provider, exclude_spans=["send", "receive"])
    return app


VARIANTS: dict[str, Factory] = {
    "bare": bare,
    "one-histogram": with_one_histogram,
    "same-families": with_same_families,
    "same-families+span": with_same_families_span,
    "one-span": with_one_span,
    "aiwatch": with_aiwatch,
    "aiwatch+phase": with_aiwatch_phase,
    "aiwatch-all-slow": with_aiwatch_all_slow,
    "aiwatch+tracing": with_aiwatch_tracing,
    "aiwatch+tracing+phase": with_aiwatch_tracing_phase,
    "instrumentator": with_instrumentator,
    "otel-asgi": with_otel_asgi,
    "otel-asgi-server": with_otel_asgi_server,
}

#: (numerator, denominator, target ratio or None, what the pair compares)
PAIRS: list[tuple[str, str, float | None, str]] = [
    ("aiwatch+tracing", "otel-asgi-server", 0.5, "tracing, one span each"),
    ("aiwatch+tracing+phase", "otel-asgi", None, "tracing at each side's defaults"),
    ("aiwatch", "one-histogram", 2.0, "metrics-only against the one-histogram floor"),
    ("aiwatch", "same-families", None, "metrics-only against its own families written by hand"),
    ("aiwatch+tracing", "same-families+span", None, "tracing against its own families and span written by hand"),
    ("same-families+span", "otel-asgi-server", None, "aiwatch's work written by hand against OpenTelemetry's span"),
    ("aiwatch", "instrumentator", None, "each tool's default metrics"),
]


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
    apps = {name: VARIANTS[name](CollectorRegistry(), discarding_provider()) for name in names}
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
    # one event loop for every counted request, as in the timed runs: aiwatch's event-loop sampler stamps a new
    # loop's first request, which a fresh asyncio.run per request counted as a family changed per request
    loop = asyncio.new_event_loop()
    try:
        work = count_variants(VARIANTS, names, lambda app: loop.run_until_complete(run_requests(app, 1)))
    finally:
        loop.close()
    require_same_work(work, "aiwatch", "same-families")
    require_same_work(work, "aiwatch+tracing", "same-families+span")
    load_before = os.getloadavg()[0]
    results = asyncio.run(bench(rounds, n, names))
    median = {name: statistics.median(v) for name, v in results.items()}
    # added cost: the median over rounds of (variant - bare) within the same round, which cancels slow drifts in
    # machine load better than the difference of the two medians
    added = {name: statistics.median(v - b for v, b in zip(results[name], results["bare"], strict=True)) * 1e6
             for name in names}
    print(f"python {sys.version.split()[0]}, {rounds} rounds x {n} requests per variant, in-process raw ASGI driver, "
          f"thread CPU time; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    best = {name: min(v) for name, v in results.items()}
    best_added = {name: (best[name] - best["bare"]) * 1e6 for name in names}
    print(f"{'variant':<23}{'µs/request':>11}{'added µs':>10}{'best round':>11}{'best added':>11}   per request")
    for name in names:
        print(f"{name:<23}{median[name] * 1e6:>11.1f}{added[name]:>10.1f}{best[name] * 1e6:>11.1f}"
              f"{best_added[name]:>11.1f}   {work[name].describe()}")
    for name in ("aiwatch", "instrumentator"):
        print(f"families recorded by {name}: {', '.join(work[name].family_names)}")
    for label, figures in (("median", added), ("best round", best_added)):
        for num, den, target, what in PAIRS:
            ratio = figures[num] / figures[den] if figures[den] > 0 else float("nan")
            verdict = "" if target is None else f" (target <= {target}: {'met' if ratio <= target else 'missed'})"
            print(f"{label}: {num} / {den} added = {ratio:.2f}{verdict}; {what}")
    tail = statistics.median(a - b for a, b in zip(results["aiwatch-all-slow"], results["aiwatch+phase"], strict=True))
    print(f"slow-request counters, every request slow (aiwatch-all-slow - aiwatch+phase, median of the rounds' "
          f"differences): {tail * 1e6:+.1f} µs/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
