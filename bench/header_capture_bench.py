"""What capturing headers on spans costs a traced HTTP request (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*).

aiwatch's ASGI middleware with tracing around the FastAPI app of ``http_bench.py``, driven by its in-process raw ASGI
driver (thread CPU time, rounds interleaved), each request carrying 8 headers:

- ``no-capture``: the defaults (nothing captured);
- ``capture``: 3 request patterns that take 2 of the 8 headers (one of them listed again as a wildcard), 1 response
  pattern that takes 1 of 3 response headers, 1 sanitized name;
- ``otel-asgi-capture`` / ``otel-asgi-server``: OpenTelemetry's ASGI middleware (``exclude_spans=["send",
  "receive"]``) with and without the same variables, for its own cost of the same work.

Each variant's span attributes per request are counted and printed. Run: ``PYTHONPATH=. python
bench/header_capture_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry

from bench import http_bench
from bench.counting import count_work, discarding_provider, recording_provider

CAPTURE = {
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-tenant,x-request-.*,traceparent",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "content-type",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": "authorization",
}
HEADERS = [(b"host", b"bench"), (b"user-agent", b"bench"), (b"accept", b"*/*"), (b"content-type", b"application/json"),
           (b"x-tenant", b"acme"), (b"x-request-id", b"r-1"), (b"accept-encoding", b"gzip"),
           (b"authorization", b"Bearer x")]


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """The variables set while the app (and its middleware, which reads them when it is made) is built."""
    saved = {name: os.environ.get(name) for name in CAPTURE}
    for name in CAPTURE:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build(name: str, registry: CollectorRegistry, provider: Any) -> Any:
    from aiwatch.middleware.asgi import AiwatchMiddleware

    with environment(CAPTURE if name in ("capture", "otel-asgi-capture") else {}):
        if name.startswith("otel"):
            from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

            app = OpenTelemetryMiddleware(http_bench.make_app(False), tracer_provider=provider,
                                          exclude_spans=["send", "receive"])
        else:
            app = AiwatchMiddleware(http_bench.make_app(False), registry=registry, tracer_provider=provider,
                                    service="bench")
        asyncio.run(http_bench.run_requests(app, 1))  # the middleware stack is built while the variables are set
    return app


NAMES = ["no-capture", "capture", "otel-asgi-server", "otel-asgi-capture"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and requests")
    args = parser.parse_args(argv)
    rounds, n = (7, 300) if args.quick else (21, 500)
    http_bench.SCOPE["headers"] = HEADERS
    work = {}
    for name in NAMES:
        registry = CollectorRegistry()
        provider, exporter = recording_provider()
        app = build(name, registry, provider)
        work[name] = count_work(lambda app=app: asyncio.run(http_bench.run_requests(app, 1)), registry, exporter)
    apps = {name: build(name, CollectorRegistry(), discarding_provider()) for name in NAMES}

    async def run() -> dict[str, list[float]]:
        for app in apps.values():
            await http_bench.run_requests(app, n // 2)
        results: dict[str, list[float]] = {name: [] for name in NAMES}
        for r in range(rounds):
            for name in NAMES[r % len(NAMES):] + NAMES[:r % len(NAMES)]:
                results[name].append(await http_bench.run_requests(apps[name], n))
        return results

    results = asyncio.run(run())
    print(f"python {sys.version.split()[0]}, {rounds} rounds x {n} requests, 8 request headers, thread CPU time")
    print(f"{'variant':<20}{'µs/request':>11}   per request")
    for name in NAMES:
        print(f"{name:<20}{statistics.median(results[name]) * 1e6:>11.1f}   {work[name].describe()}")
    for on, off in (("capture", "no-capture"), ("otel-asgi-capture", "otel-asgi-server")):
        added = statistics.median((a - b) * 1e6 for a, b in zip(results[on], results[off], strict=True))
        print(f"{on} - {off}, median of the rounds' differences: {added:+.2f} µs/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
