"""Concurrency inside one process, behind werkzeug's threaded server: many threads recording at once, with thread
switches forced every microsecond (``sys.setswitchinterval``) so that a read-add-write left unguarded loses
updates here, where a default interval loses them rarely."""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch.middleware.wsgi import AiwatchWSGIMiddleware
from tests.http.test_http_wsgi_server import serving
from tests.labels import with_defaults
from tests.servers import wait_until


@pytest.fixture
def fast_switches() -> Iterator[None]:
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(switch)


def get_ok(conn: Any, path: str) -> Any:
    """A GET of ``path`` on the server's connection, answered 200 ``ok``: the response."""
    conn.request("GET", path)
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"ok")
    return response


def phase_seconds(registry: CollectorRegistry, phase: str) -> float | None:
    """The seconds recorded for ``phase`` of service ``svc``."""
    name = "aiwatch_phase_duration_seconds_sum"
    return registry.get_sample_value(name, with_defaults(name, {"service": "svc", "model": "", "phase": phase}))


def served(app: Any, requests: int, pool: ThreadPoolExecutor) -> CollectorRegistry:
    """The registry of service ``svc`` after ``requests`` GETs of ``app`` behind werkzeug's threaded server; ``pool``
    (the app's threads) shut down after."""
    registry = CollectorRegistry()
    try:
        with serving(AiwatchWSGIMiddleware(app, service="svc", registry=registry)) as conn:
            for _ in range(requests):
                get_ok(conn, "/predict")
    finally:
        pool.shutdown()
    return registry


def test_phases_of_one_request_ended_in_many_threads_at_once_all_count(fast_switches: None) -> None:
    # a request fanning its work out to a thread pool with its context (contextvars.copy_context().run: the way
    # aiwatch's own warning tells): each thread's phase time is added to the one request's phases; the read-add-write
    # of the phase's entry lost the time of a thread switched out inside it (210 s of 240 s recorded)
    threads, per_thread, seconds = 8, 10_000, 0.001
    pool = ThreadPoolExecutor(threads)

    def part() -> None:
        for _ in range(per_thread):
            aiwatch.record_phase("retrieval", seconds)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with aiwatch.phase("inference"):
            for future in [pool.submit(contextvars.copy_context().run, part) for _ in range(threads)]:
                future.result()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    requests = 3
    recorded = phase_seconds(served(app, requests, pool), "retrieval")
    assert recorded == pytest.approx(requests * threads * per_thread * seconds, rel=1e-9)


def test_phases_the_requests_own_thread_ends_while_other_threads_end_some_too_all_count(fast_switches: None) -> None:
    # the request's own thread adds its phases with no lock until another thread touches the request, which then
    # gives it a lock: the phase the request's thread was adding at that moment, and every one after, must count
    threads, per_thread, seconds = 2, 1_000, 0.001
    pool = ThreadPoolExecutor(threads)

    def part() -> None:
        for _ in range(per_thread):
            aiwatch.record_phase("retrieval", seconds)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        futures = []
        for i in range(per_thread):
            aiwatch.record_phase("retrieval", seconds)
            if i == 10:  # the others start while this thread keeps adding
                futures = [pool.submit(contextvars.copy_context().run, part) for _ in range(threads)]
        for future in futures:
            future.result()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    requests = 40
    recorded = phase_seconds(served(app, requests, pool), "retrieval")
    assert recorded == pytest.approx(requests * (threads + 1) * per_thread * seconds, rel=1e-9)


def test_a_thread_the_request_left_recording_phases_loses_none_of_its_signals(fast_switches: None) -> None:
    # a thread still recording the request's phases while the request is recorded (one asyncio.to_thread or a pool's
    # work left running past a timeout): a phase added while finish() read the request's phases raised "dictionary
    # changed size during iteration" there, and the overhead, payload sizes, tokens and fallbacks after it were lost
    # (198 of 200 requests); the Server-Timing header's reading of them failed the same way (180 of 200)
    left: list[tuple[threading.Event, threading.Thread]] = []
    recorded: list[str] = []

    def keep_recording(stop: threading.Event) -> None:
        i = 0
        while not stop.is_set():
            aiwatch.record_phase(f"p{i}", 0.001)
            i += 1

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        stop = threading.Event()
        thread = threading.Thread(target=contextvars.copy_context().run, args=(keep_recording, stop))
        thread.start()
        left.append((stop, thread))
        with aiwatch.phase("inference"):
            stop.wait(0.002)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    registry = CollectorRegistry()
    requests = 50
    middleware = AiwatchWSGIMiddleware(app, service="svc", registry=registry, max_label_values=20,
                                       on_request_end=lambda environ, tl, status: recorded.append(status))
    with serving(middleware) as conn:
        for _ in range(requests):
            assert get_ok(conn, "/predict").getheader("Server-Timing")
            stop, thread = left.pop()  # left running while the server records the request (after the response)
            wait_until(lambda: bool(recorded), what="the request recorded")
            recorded.clear()
            stop.set()
            thread.join(10)
    name = "aiwatch_phase_duration_seconds_count"
    assert registry.get_sample_value(name, with_defaults(name, {"service": "svc", "model": "", "phase": "overhead"})) \
        == requests
    name = "aiwatch_response_size_bytes_count"
    assert registry.get_sample_value(name, {"service": "svc", "route": "__unmatched__", "method": "GET"}) == requests
    for component in ("metrics", "server_timing"):
        assert not registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": component})


def _counter_total(registry: CollectorRegistry, family: str, suffix: str = "_total", **match: str) -> float:
    return sum(sample.value for metric in registry.collect() if metric.name == family for sample in metric.samples
               if sample.name == family + suffix and all(sample.labels.get(k) == v for k, v in match.items()))


def test_tokens_of_one_request_counted_in_many_threads_at_once_all_count(fast_switches: None) -> None:
    # a request fanning its generation out to a thread pool (copy_context().run), each thread counting tokens for
    # models new to the request: the per-model counts made lazily in two threads at once kept one of them (3 to 33
    # of 64 000 tokens lost)
    threads, models, requests = 4, 800, 40
    pool = ThreadPoolExecutor(threads)

    def part(request: int) -> None:
        for model in range(models):
            aiwatch.record_tokens(input_tokens=1, model=f"m{request}-{model}")

    done = iter(range(requests))

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        request = next(done)
        for future in [pool.submit(contextvars.copy_context().run, part, request) for _ in range(threads)]:
            future.result()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    registry = CollectorRegistry()
    recorded: list[str] = []
    middleware = AiwatchWSGIMiddleware(app, service="svc", registry=registry, max_label_values=1_000_000,
                                       on_request_end=lambda environ, tl, status: recorded.append(status))
    try:
        with serving(middleware) as conn:
            for _ in range(requests):
                get_ok(conn, "/generate")
            # (recorded after the response is sent)
            wait_until(lambda: len(recorded) == requests, what="the requests recorded")
    finally:
        pool.shutdown()
    assert _counter_total(registry, "aiwatch_gen_ai_token_usage_tokens", "_sum", token_type="input") \
        == requests * threads * models
    assert not _counter_total(registry, "aiwatch_instrumentation_errors")


def test_a_thread_the_request_left_counting_tokens_loses_none_of_its_signals(fast_switches: None) -> None:
    # a thread still counting the request's tokens (for models new to it) while the request is recorded: finish()'s
    # reading of the per-model counts raised "dictionary changed size during iteration", and the request's fallback
    # after it was lost (24 of 40 requests)
    left: list[tuple[threading.Event, threading.Thread]] = []
    recorded: list[str] = []
    requests = 40

    def keep_counting(stop: threading.Event, request: int) -> None:
        i = 0
        while not stop.is_set():
            aiwatch.record_tokens(input_tokens=1, model=f"m{request}-{i}")
            i += 1

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        aiwatch.degraded("cached_prediction")
        stop = threading.Event()
        thread = threading.Thread(target=contextvars.copy_context().run, args=(keep_counting, stop, len(left)))
        thread.start()
        left.append((stop, thread))
        stop.wait(0.002)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    registry = CollectorRegistry()
    middleware = AiwatchWSGIMiddleware(app, service="svc", registry=registry, max_label_values=1_000_000,
                                       on_request_end=lambda environ, tl, status: recorded.append(status))
    with serving(middleware) as conn:
        for _ in range(requests):
            get_ok(conn, "/generate")
            stop, thread = left[-1]  # left running while the server records the request (after the response)
            wait_until(lambda: bool(recorded), what="the request recorded")
            recorded.clear()
            stop.set()
            thread.join(10)
    assert _counter_total(registry, "aiwatch_degraded_responses", reason="cached_prediction") == requests
    assert not _counter_total(registry, "aiwatch_instrumentation_errors")
