"""Phases run in another thread for a request, through a real FastAPI app: ``asyncio.to_thread`` and a sync endpoint
carry the request's context, so the phase is the request's; ``loop.run_in_executor`` and a ``ThreadPoolExecutor``
do not, so it is recorded outside any request, in its own histogram, and the first such phase is logged with the
way out (``contextvars.copy_context().run``), which puts it back in the request."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

import aiwatch
from aiwatch import timing
from aiwatch.metrics import Metrics
from tests.http.asgi_driver import call
from tests.servers import http_get, uvicorn_in_thread, wait_until

POOL = ThreadPoolExecutor(2)


def predict() -> None:
    with aiwatch.phase("inference"):
        time.sleep(0.001)


def make_app(registry: CollectorRegistry) -> FastAPI:
    app = FastAPI()

    @app.get("/executor")
    async def executor() -> dict[str, str]:
        await asyncio.get_running_loop().run_in_executor(None, predict)
        return {}

    @app.get("/pool")
    def pool() -> dict[str, str]:
        POOL.submit(predict).result()
        return {}

    @app.get("/executor-copied")
    async def executor_copied() -> dict[str, str]:
        await asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, predict)
        return {}

    @app.get("/to-thread")
    async def to_thread() -> dict[str, str]:
        await asyncio.to_thread(predict)
        return {}

    @app.get("/sync")
    def sync() -> dict[str, str]:
        predict()
        return {}

    return aiwatch.instrument(app, registry=registry, service="svc")


def where(registry: CollectorRegistry) -> tuple[float, float]:
    """(the requests' inference phases, the background ones) counted so far."""
    request = registry.get_sample_value("aiwatch_phase_duration_seconds_count",
                                        {"service": "svc", "model": "", "model_version": "", "phase": "inference"})
    background = registry.get_sample_value("aiwatch_background_phase_duration_seconds_count",
                                           {"service": "svc", "model": "", "phase": "inference"})
    return request or 0.0, background or 0.0


@pytest.mark.parametrize(("path", "in_request"), [("/to-thread", True), ("/sync", True), ("/executor-copied", True),
                                                  ("/executor", False), ("/pool", False)])
async def test_a_phase_run_in_another_thread_is_the_requests_only_where_its_context_follows(
        registry: CollectorRegistry, path: str, in_request: bool) -> None:
    app = make_app(registry)
    assert (await call(app, path)).status == 200
    assert where(registry) == ((1.0, 0.0) if in_request else (0.0, 1.0))


async def test_the_first_phase_outside_any_request_is_logged_once_with_the_way_out(
        registry: CollectorRegistry, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing, "_told_of_background", False)
    app = make_app(registry)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        await call(app, "/executor")
        await call(app, "/pool")
        aiwatch.record_phase("reindex", 0.5)
    told = [r.getMessage() for r in caplog.records if "outside any request" in r.getMessage()]
    assert told == [told_of("inference")]
    assert where(registry) == (0.0, 2.0)


def told_of(phase: str) -> str:
    return (f"aiwatch: phase {phase!r} was recorded outside any request, into "
            "aiwatch_background_phase_duration_seconds, not into a request's phases. If it ran for a request: code "
            "run by loop.run_in_executor() or a ThreadPoolExecutor does not see the request (context variables do "
            "not follow it); run it with asyncio.to_thread() or loop.run_in_executor(None, "
            "contextvars.copy_context().run, fn). This is said once.")


def test_the_warning_names_at_most_100_characters_of_the_phase(
        registry: CollectorRegistry, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing, "_told_of_background", False)
    make_app(registry)  # its recorder is the default for phases outside requests
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        aiwatch.record_phase("p" * 150, 0.5)
    assert [r.getMessage() for r in caplog.records if "outside any request" in r.getMessage()] == [
        told_of("p" * 100)]


def test_a_phase_a_streamed_sync_generator_holds_across_its_yields_is_the_requests(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """Starlette's StreamingResponse runs each step of a sync generator in a worker thread, in a fresh copy of the
    request's context: a phase the generator holds across its yields (a token stream) is opened in one copy and
    closed in another. Before, its end there found no open phase of its own ("exited out of order"): the phase was
    lost (its time read as overhead) and its span never ended. Over uvicorn."""
    def tokens() -> Iterator[bytes]:
        with aiwatch.phase("generate"):
            for i in range(3):
                time.sleep(0.05)
                yield b"token %d\n" % i

    async def stream(request: Any) -> StreamingResponse:
        return StreamingResponse(tokens())

    app = aiwatch.instrument(Starlette(routes=[Route("/stream", stream)]), metrics=metrics, service="svc",
                             tracer_provider=provider)
    with uvicorn_in_thread(app) as (port, _):
        assert http_get(f"http://127.0.0.1:{port}/stream") == (200, b"token 0\ntoken 1\ntoken 2\n")
        wait_until(lambda: metrics.registry.get_sample_value(
            "aiwatch_request_duration_seconds_count", {"service": "svc", "route": "/stream", "method": "GET",
                                                       "status": "200", "traffic_class": "realtime"}) == 1)
    generate = metrics.registry.get_sample_value("aiwatch_phase_duration_seconds_sum", {
        "service": "svc", "model": "", "model_version": "", "phase": "generate"})
    assert generate is not None and generate >= 0.15
    assert metrics.registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "phase"}) == 0
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert sorted(spans) == ["GET /stream", "generate"]
    assert spans["generate"].parent is not None
    assert spans["generate"].parent.span_id == spans["GET /stream"].context.span_id


def sync_steps() -> Iterator[bytes]:
    with aiwatch.phase("generate"):
        for i in range(4):
            with aiwatch.phase("decode"):
                time.sleep(0.05)
            yield b"token %d\n" % i


async def async_steps() -> AsyncIterator[bytes]:
    with aiwatch.phase("generate"):
        for i in range(4):
            with aiwatch.phase("decode"):
                await asyncio.sleep(0.05)
            yield b"token %d\n" % i


@pytest.mark.parametrize("steps", [sync_steps, async_steps], ids=["sync", "async"])
def test_a_phase_opened_in_a_later_step_of_a_streamed_generator_is_nested_under_the_one_it_holds(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter, steps: Any) -> None:
    """A sync generator's later steps run in fresh copies of the request's context (Starlette's StreamingResponse),
    where the phase it holds across its yields is not open: a phase opened inside it there was not nested under it.
    Its time counted in both (generate read 0.160 s exclusive of 4 x 50 ms decodes in a 0.276 s request, the overhead
    clamped at 0) and its span was the request's child. Over uvicorn; an async generator steps in the request's own
    context and was right."""
    async def stream(request: Any) -> StreamingResponse:
        return StreamingResponse(steps())

    app = aiwatch.instrument(Starlette(routes=[Route("/stream", stream)]), metrics=metrics, service="svc",
                             tracer_provider=provider)
    labels = {"service": "svc", "route": "/stream", "method": "GET", "status": "200", "traffic_class": "realtime"}
    with uvicorn_in_thread(app) as (port, _):
        assert http_get(f"http://127.0.0.1:{port}/stream") == (200, b"token 0\ntoken 1\ntoken 2\ntoken 3\n")
        wait_until(lambda: metrics.registry.get_sample_value("aiwatch_request_duration_seconds_count", labels) == 1)

    def phase_sum(name: str) -> float:
        value = metrics.registry.get_sample_value("aiwatch_phase_duration_seconds_sum", {
            "service": "svc", "model": "", "model_version": "", "phase": name})
        assert value is not None
        return value

    total = metrics.registry.get_sample_value("aiwatch_request_duration_seconds_sum", labels)
    # four 50 ms sleeps: asyncio's timers may fire a little before their time on aiwatch's clock (0.19989 s seen)
    assert total is not None and phase_sum("decode") >= 0.19
    # each decode is inside generate: generate's own time is what is left of it, and the phases add up to the request
    assert phase_sum("decode") + phase_sum("generate") + phase_sum("overhead") == pytest.approx(total)
    assert metrics.registry.get_sample_value("aiwatch_overhead_clamped_total", {"service": "svc"}) in (None, 0.0)
    spans = exporter.get_finished_spans()
    [generate] = [span for span in spans if span.name == "generate"]
    decodes = [span for span in spans if span.name == "decode"]
    assert len(decodes) == 4
    assert all(span.parent is not None and span.parent.span_id == generate.context.span_id for span in decodes)
