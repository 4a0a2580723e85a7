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
- ``same-families``: what ``aiwatch`` records (its four histogram families, same labels and buckets, and the
  in-flight gauge), written by hand with prometheus_client's documented API, the route stored by a hook as
  aiwatch's hooks store it: the floor for recording that much;
- ``same-families+span``: the same plus the span ``aiwatch+tracing`` makes (same 9 attributes, parent from the
  environ, made current), by hand with the OpenTelemetry API, and its trace id as the exemplar of the request's
  time and overhead observations, as aiwatch sets them;
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
from bench.counting import HandFamilies, count_variants, discarding_provider, require_same_work, trace_exemplar

settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], SECRET_KEY="bench", ROOT_URLCONF=__name__, MIDDLEWARE=[],
                   INSTALLED_APPS=[], USE_TZ=True, LOGGING_CONFIG=None)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402 - after the settings
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import override_settings  # noqa: E402

#: where the by-hand variants' route hooks leave the route (aiwatch's hooks use their own key)
ROUTE_KEY = "bench.route"
HAND_ROUTE_MIDDLEWARE = f"{__name__}.HandRouteMiddleware"
from django.urls import path  # noqa: E402
from flask import Flask  # noqa: E402


def django_item(request: HttpRequest, item_id: int) -> JsonResponse:
    return JsonResponse({"id": item_id})


urlpatterns = [path("items/<int:item_id>", django_item)]


def flask_app(route_by_hand: bool = False) -> Flask:
    app = Flask(__name__)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    if route_by_hand:
        @app.before_request
        def store_route() -> None:  # what aiwatch's Flask hook does, for the by-hand variants
            from flask import request

            current = request._get_current_object()  # type: ignore[attr-defined]
            if current.url_rule is not None:
                current.environ[ROUTE_KEY] = current.url_rule.rule

    return app


class HandRouteMiddleware:
    """What aiwatch's Django route middleware does, for the by-hand variants: the matched route stored after the
    chain returns."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        response = self.get_response(request)
        match = request.resolver_match
        if match is not None:
            request.META[ROUTE_KEY] = match.route or "/"
        return response


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


def by_hand(inner: Any, registry: CollectorRegistry, provider: Any = None) -> Any:
    """What ``aiwatch`` records per request, written by hand in the fewest lines with prometheus_client's documented
    API: the same four histogram families with the same labels and buckets (request time, the ``overhead`` phase,
    request and response body sizes, observed when the server closes the body) and the in-flight gauge moved up
    and down; the route as the framework's hook stored it. With a tracer provider, also aiwatch's span: the parent
    read from the environ by the global propagator, one SERVER span with the same 9 attributes (7 at the start, the
    route and the status at the end), current while the app runs, and its trace id as the exemplar of the time
    observations (2, as aiwatch sets). No Server-Timing header, no label guard, no checks
    of the numbers, and the span current only in the app's call, not while the body is iterated (aiwatch's is)."""
    from opentelemetry import context, propagate
    from opentelemetry.trace import SpanKind, set_span_in_context

    families = HandFamilies.on(registry)
    tracer = provider.get_tracer("bench") if provider is not None else None

    class Recorded:
        def __init__(self, body: Any, environ: dict[str, Any], start: float, status: list[str], span: Any) -> None:
            self.body, self.environ, self.start, self.status, self.span = body, environ, start, status, span
            self.sent = 0

        def __iter__(self) -> Any:
            for chunk in self.body:
                self.sent += len(chunk)
                yield chunk

        def close(self) -> None:
            try:
                close = getattr(self.body, "close", None)
                if close is not None:
                    close()
            finally:
                elapsed = time.perf_counter() - self.start
                environ = self.environ
                families.in_flight.labels("bench").dec()
                route = environ.get(ROUTE_KEY, "__unmatched__")
                method = environ["REQUEST_METHOD"]
                status = self.status[0] if self.status else "500"
                families.record(elapsed, route, method, status, int(environ.get("CONTENT_LENGTH") or 0), self.sent,
                                None if self.span is None else trace_exemplar(self.span))
                if self.span is not None:
                    self.span.set_attributes({"http.route": route, "http.response.status_code": int(status)})
                    self.span.update_name(f"{method} {route}")
                    self.span.end()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start = time.perf_counter()
        families.in_flight.labels("bench").inc()
        status: list[str] = []

        def recording_start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
            status[:] = [line.split(" ", 1)[0]]
            return start_response(line, headers, exc_info)

        span = token = None
        if tracer is not None:
            span = tracer.start_span(environ["REQUEST_METHOD"], context=propagate.extract(environ),
                                     kind=SpanKind.SERVER, attributes={
                                         "http.request.method": environ["REQUEST_METHOD"],
                                         "url.scheme": environ["wsgi.url_scheme"], "url.path": environ["PATH_INFO"],
                                         "server.address": environ.get("HTTP_HOST", ""),
                                         "network.protocol.version": environ["SERVER_PROTOCOL"].split("/")[1],
                                         "client.address": environ["REMOTE_ADDR"],
                                         "user_agent.original": environ.get("HTTP_USER_AGENT", "")})
            token = context.attach(set_span_in_context(span))
        try:
            return Recorded(inner(environ, recording_start_response), environ, start, status, span)
        finally:
            if token is not None:
                context.detach(token)

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
    "flask-same-families": lambda registry, provider: by_hand(flask_app(True), registry),
    "flask-same-families+span": lambda registry, provider: by_hand(flask_app(True), registry, provider),
    "flask-otel-wsgi": lambda registry, provider: otel_wsgi(flask_app(), provider),
    "django-bare": lambda registry, provider: django_app([]),
    "django-one-histogram": lambda registry, provider: one_histogram(django_app([]), registry),
    "django-aiwatch": lambda registry, provider: django_instrumented(registry),
    "django-aiwatch+tracing": django_instrumented,
    "django-same-families": lambda registry, provider: by_hand(django_app([HAND_ROUTE_MIDDLEWARE]), registry),
    "django-same-families+span": lambda registry, provider: by_hand(django_app([HAND_ROUTE_MIDDLEWARE]), registry,
                                                                    provider),
    "django-otel-wsgi": lambda registry, provider: otel_wsgi(django_app([]), provider),
}

#: (numerator, denominator, target ratio or None, what the pair compares), per framework
PAIRS: list[tuple[str, str, float | None, str]] = [
    ("aiwatch+tracing", "otel-wsgi", 0.5, "tracing, one span each"),
    ("aiwatch", "one-histogram", 2.0, "metrics-only against the one-histogram floor"),
    ("aiwatch", "same-families", None, "metrics-only against its own families written by hand"),
    ("aiwatch+tracing", "same-families+span", None, "tracing against its own families and span written by hand"),
    ("same-families+span", "otel-wsgi", None, "aiwatch's work written by hand against OpenTelemetry's span"),
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
    for framework in ("flask", "django"):
        require_same_work(work, f"{framework}-aiwatch", f"{framework}-same-families")
        require_same_work(work, f"{framework}-aiwatch+tracing", f"{framework}-same-families+span")
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
