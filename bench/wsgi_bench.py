"""Added cost per request of WSGI instrumentation over bare Flask and Django apps, like for like, in one process.

Each framework's variants are the same app (one JSON endpoint with a path parameter, ``/items/<int:item_id>``)
called in-process through a minimal WSGI driver (a fresh environ per request, the body iterated and closed, as a
server does; no network). Rounds interleave the variants, so that each sees the same machine conditions; a variant's
figure is the median over rounds of its mean thread CPU time per request, and its added cost the median over rounds
of its time minus the bare app's in the same round. What each variant records per request (spans, their attributes,
metric families, series, samples) is counted and printed. Tracing variants get an SDK TracerProvider whose
SimpleSpanProcessor hands each span to an exporter that drops it.

Variants, for Flask and for Django's WSGI handler:

- ``bare``: the app alone (Django: no middleware at all);
- ``one-histogram``: the floor of any metrics middleware, a WSGI wrapper observing one histogram when the server
  closes the body;
- ``aiwatch``: ``aiwatch.instrument`` with its defaults (Django: with aiwatch's route middleware, the only entry of
  ``MIDDLEWARE``);
- ``aiwatch+tracing``: the same with its SERVER span (one span);
- ``otel-wsgi``: OpenTelemetry's WSGI middleware (opentelemetry-instrumentation-wsgi) at its defaults: one SERVER
  span; no MeterProvider is set, so its metric calls are no-ops.

Like-for-like pairs: ``aiwatch+tracing`` / ``otel-wsgi`` (one span each; aiwatch also records its metrics, and its
span carries the route, which OpenTelemetry's WSGI middleware cannot see), and ``aiwatch`` / ``one-histogram``.

    python bench/wsgi_bench.py            # full run
    python bench/wsgi_bench.py --quick    # a smaller run
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django
from django.conf import settings
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch.middleware.django import MIDDLEWARE_PATH
from bench.counting import count_variants, discarding_provider

settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], SECRET_KEY="bench", ROOT_URLCONF=__name__, MIDDLEWARE=[],
                   INSTALLED_APPS=[], USE_TZ=True, LOGGING_CONFIG=None)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402 - after the settings
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from flask import Flask  # noqa: E402


def django_item(request: HttpRequest, item_id: int) -> JsonResponse:
    return JsonResponse({"id": item_id})


urlpatterns = [path("items/<int:item_id>", django_item)]


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def django_app(middleware: list[str]) -> Any:
    with override_settings(MIDDLEWARE=middleware):
        return get_wsgi_application()


#: A variant builds its app from a registry (its metrics) and a tracer provider (its spans, when it traces).
Factory = Callable[[CollectorRegistry, Any], Any]


def one_histogram(inner: Any, registry: CollectorRegistry) -> Any:
    """The floor: one hand-written histogram observed when the server closes the body (as aiwatch records)."""
    from prometheus_client import Histogram

    histogram = Histogram("bench_request_seconds", "Request time.", registry=registry)

    class Timed:
        def __init__(self, body: Any, start: float) -> None:
            self.body, self.start = body, start

        def __iter__(self) -> Any:
            return iter(self.body)

        def close(self) -> None:
            try:
                close = getattr(self.body, "close", None)
                if close is not None:
                    close()
            finally:
                histogram.observe(time.perf_counter() - self.start)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start = time.perf_counter()
        return Timed(inner(environ, start_response), start)

    return app


def otel_wsgi(inner: Any, provider: Any) -> Any:
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(inner, tracer_provider=provider)


def flask_instrumented(registry: CollectorRegistry, provider: Any = None) -> Any:
    return aiwatch.instrument(flask_app(), registry=registry, service="bench", tracer_provider=provider)


def django_instrumented(registry: CollectorRegistry, provider: Any = None) -> Any:
    with override_settings(MIDDLEWARE=[MIDDLEWARE_PATH]):
        return aiwatch.instrument(get_wsgi_application(), registry=registry, service="bench",
                                  tracer_provider=provider)


VARIANTS: dict[str, Factory] = {
    "flask-bare": lambda registry, provider: flask_app(),
    "flask-one-histogram": lambda registry, provider: one_histogram(flask_app(), registry),
    "flask-aiwatch": lambda registry, provider: flask_instrumented(registry),
    "flask-aiwatch+tracing": flask_instrumented,
    "flask-otel-wsgi": lambda registry, provider: otel_wsgi(flask_app(), provider),
    "django-bare": lambda registry, provider: django_app([]),
    "django-one-histogram": lambda registry, provider: one_histogram(django_app([]), registry),
    "django-aiwatch": lambda registry, provider: django_instrumented(registry),
    "django-aiwatch+tracing": django_instrumented,
    "django-otel-wsgi": lambda registry, provider: otel_wsgi(django_app([]), provider),
}

#: (numerator, denominator, target ratio or None, what the pair compares), per framework
PAIRS: list[tuple[str, str, float | None, str]] = [
    ("aiwatch+tracing", "otel-wsgi", 0.5, "tracing, one span each"),
    ("aiwatch", "one-histogram", 2.0, "metrics-only against the one-histogram floor"),
]

ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/items/42", "QUERY_STRING": "",
    "SERVER_NAME": "bench", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "50000", "HTTP_HOST": "bench", "HTTP_USER_AGENT": "bench", "HTTP_ACCEPT": "*/*",
    "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": True,
    "wsgi.multiprocess": False, "wsgi.run_once": False,
}

#: CPU time of this thread, not wall time (see bench/http_bench.py)
_cpu = time.thread_time


def run_requests(app: Any, n: int) -> float:
    """Mean CPU seconds per request over ``n`` sequential requests, each body iterated and closed."""
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
        statuses.append(status)
        return lambda data: None

    start = _cpu()
    for _ in range(n):
        environ = dict(ENVIRON)
        environ["wsgi.input"] = io.BytesIO(b"")
        body = app(environ, start_response)
        try:
            for _chunk in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
    elapsed = _cpu() - start
    if len(statuses) != n or any(not s.startswith("200") for s in statuses):
        raise RuntimeError(f"unexpected statuses: {sorted(set(statuses))}")
    return elapsed / n


def bench(rounds: int, n: int, names: list[str]) -> dict[str, list[float]]:
    apps = {name: VARIANTS[name](CollectorRegistry(), discarding_provider()) for name in names}
    for app in apps.values():  # warm up: caches, label children, Django's URL resolver
        run_requests(app, max(n // 10, 200))
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate so no variant always runs first
        for name in order:
            gc.collect()
            results[name].append(run_requests(apps[name], n))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and requests")
    parser.add_argument("--rounds", type=int, help="rounds per variant (default 31, quick 9)")
    parser.add_argument("--requests", type=int, help="requests per round (default 1000, quick 300)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (9 if args.quick else 31)
    n = args.requests or (300 if args.quick else 1000)
    names = list(VARIANTS)
    work = count_variants(VARIANTS, names, lambda app: run_requests(app, 1))
    load_before = os.getloadavg()[0]
    results = bench(rounds, n, names)
    median = {name: statistics.median(v) for name, v in results.items()}
    bare = {name: f"{name.split('-')[0]}-bare" for name in names}
    added = {name: statistics.median(v - b for v, b in zip(results[name], results[bare[name]], strict=True)) * 1e6
             for name in names}
    print(f"python {sys.version.split()[0]}, Django {django.get_version()}, {rounds} rounds x {n} requests per "
          f"variant, in-process WSGI driver, thread CPU time; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    print(f"{'variant':<25}{'µs/request':>11}{'added µs':>10}   per request")
    for name in names:
        print(f"{name:<25}{median[name] * 1e6:>11.1f}{added[name]:>10.1f}   {work[name].describe()}")
    print(f"families recorded by aiwatch: {', '.join(work['flask-aiwatch'].family_names)}")
    for framework in ("flask", "django"):
        for num, den, target, what in PAIRS:
            a, b = added[f"{framework}-{num}"], added[f"{framework}-{den}"]
            ratio = a / b if b > 0 else float("nan")
            verdict = "" if target is None else f" (target <= {target}: {'met' if ratio <= target else 'missed'})"
            print(f"{framework}: {num} / {den} added = {ratio:.2f}{verdict}; {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
