"""The ASGI middleware on FastAPI/Starlette apps, driven in-process with a fresh registry per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

import aiwatch
from aiwatch.middleware.asgi import AiwatchMiddleware
from aiwatch.servertiming import parse_server_timing
from tests.http.asgi_driver import call


def count(registry: CollectorRegistry, route: str, status: str = "200", method: str = "GET",
          service: str = "svc") -> float | None:
    return registry.get_sample_value("aiwatch_request_duration_seconds_count", {
        "service": service, "route": route, "method": method, "status": status, "traffic_class": "realtime"})


def phase_sum(registry: CollectorRegistry, phase: str, model: str = "", service: str = "svc") -> float | None:
    return registry.get_sample_value("aiwatch_phase_duration_seconds_sum",
                                     {"model_version": "", "service": service, "model": model, "phase": phase})


def make_app(registry: CollectorRegistry, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        with aiwatch.phase("features"):
            await asyncio.sleep(0.002)
        with aiwatch.phase("inference", model="ranker"):
            await asyncio.sleep(0.004)
        return {"id": item_id}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"ok": "yes"}

    return aiwatch.instrument(app, registry=registry, service="svc", **options)


async def test_route_template_status_phases_and_server_timing(registry: CollectorRegistry) -> None:
    app = make_app(registry)
    resp = await call(app, "/items/42")
    assert resp.status == 200 and resp.body == b'{"id":42}'
    assert count(registry, "/items/{item_id}") == 1
    timing = parse_server_timing(resp.headers["server-timing"])
    assert set(timing) == {"features", "inference", "overhead", "total"}
    assert timing["inference"] >= 0.004 and timing["features"] >= 0.002
    assert timing["total"] >= timing["inference"] + timing["features"]
    # the phases carry their own model label; overhead has the request's default model ("")
    assert phase_sum(registry, "inference", model="ranker") == pytest.approx(timing["inference"], abs=1e-3)
    assert phase_sum(registry, "features") is not None and phase_sum(registry, "overhead") is not None
    total = registry.get_sample_value("aiwatch_request_duration_seconds_sum", {"traffic_class": "realtime",
        "service": "svc", "route": "/items/{item_id}", "method": "GET", "status": "200"})
    parts = sum(phase_sum(registry, p, m) or 0.0 for p, m in
                (("features", ""), ("inference", "ranker"), ("overhead", "")))
    assert total == pytest.approx(parts, abs=1e-9)


async def test_unmatched_path_never_becomes_a_label(registry: CollectorRegistry) -> None:
    app = make_app(registry)
    for i in range(3):
        assert (await call(app, f"/no/such/{i}")).status == 404
    assert count(registry, "__unmatched__", "404") == 3
    assert b"/no/such" not in generate_latest(registry)


async def test_mounted_app_keeps_the_mount_prefix(registry: CollectorRegistry) -> None:
    async def user(request: Any) -> PlainTextResponse:
        return PlainTextResponse("u")

    inner = Starlette(routes=[Route("/users/{uid}", user)])
    app = Starlette(routes=[Mount("/v1", app=inner)])
    aiwatch.instrument(app, registry=registry, service="svc")
    assert (await call(app, "/v1/users/7")).status == 200
    assert count(registry, "/v1/users/{uid}") == 1


async def test_streaming_response_is_timed_to_the_last_chunk(registry: CollectorRegistry) -> None:
    app = FastAPI()
    observed: list[float | None] = []

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            observed.append(count(registry, "/stream"))
            await asyncio.sleep(0.02)
            yield f"chunk{i}".encode()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(chunks())

    aiwatch.instrument(app, registry=registry, service="svc")
    resp = await call(app, "/stream")
    assert resp.body == b"chunk0chunk1chunk2"
    assert observed == [None, None, None]  # not recorded while chunks were still being produced
    assert count(registry, "/stream") == 1
    duration = registry.get_sample_value("aiwatch_request_duration_seconds_sum", {"traffic_class": "realtime",
        "service": "svc", "route": "/stream", "method": "GET", "status": "200"})
    assert duration is not None and duration >= 0.06  # includes every chunk's production time


async def test_background_task_is_excluded(registry: CollectorRegistry) -> None:
    app = FastAPI()
    seen_in_task: list[float | None] = []

    def background() -> None:
        seen_in_task.append(count(registry, "/bg"))

    @app.get("/bg")
    async def bg() -> JSONResponse:
        return JSONResponse({"ok": True}, background=BackgroundTask(background))

    aiwatch.instrument(app, registry=registry, service="svc")
    await call(app, "/bg")
    assert seen_in_task == [1.0]  # the request was already recorded when the background task ran


async def test_in_flight_gauge_counts_running_requests_and_returns_to_zero(registry: CollectorRegistry) -> None:
    app = FastAPI()
    inside: list[float | None] = []
    gate = asyncio.Event()

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        await gate.wait()
        inside.append(registry.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}))
        return {"ok": True}

    aiwatch.instrument(app, registry=registry, service="svc")
    tasks = [asyncio.create_task(call(app, "/slow")) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert registry.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}) == 3
    gate.set()
    await asyncio.gather(*tasks)
    assert inside[0] == 3
    assert registry.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}) == 0


async def test_route_label_overflow_folds_and_counts(registry: CollectorRegistry) -> None:
    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route(f"/r{i}", ok) for i in range(4)])
    aiwatch.instrument(app, registry=registry, service="svc", max_label_values=2)
    for i in range(4):
        await call(app, f"/r{i}")
    assert count(registry, "/r0") == 1 and count(registry, "/r1") == 1
    assert count(registry, "/r2") is None
    assert count(registry, "__overflow__") == 2
    assert registry.get_sample_value("aiwatch_label_overflow_total", {"label": "route"}) == 2


async def test_server_timing_can_be_turned_off(registry: CollectorRegistry) -> None:
    app = make_app(registry, server_timing=False)
    resp = await call(app, "/items/1")
    assert resp.status == 200 and "server-timing" not in resp.headers
    assert count(registry, "/items/{item_id}") == 1


async def test_app_exception_passes_through_untouched_and_counts_as_500(registry: CollectorRegistry) -> None:
    error = LookupError("the app's own")

    async def boom(scope: Any, receive: Any, send: Any) -> None:
        raise error

    wrapped = aiwatch.instrument(boom, registry=registry, service="svc", route_resolver=lambda scope: "/boom")
    with pytest.raises(LookupError) as raised:
        await call(wrapped, "/boom")
    assert raised.value is error
    assert count(registry, "/boom", "500") == 1
    assert registry.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}) == 0


async def test_exception_after_response_start_is_recorded_as_500(registry: CollectorRegistry) -> None:
    async def half(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-stream")

    wrapped = aiwatch.instrument(half, registry=registry, service="svc", route_resolver=lambda scope: "/half")
    with pytest.raises(RuntimeError, match="mid-stream"):
        await call(wrapped, "/half")
    assert count(registry, "/half", "500") == 1


async def test_excluded_paths_and_metrics_path(registry: CollectorRegistry) -> None:
    app = make_app(registry, exclude_paths=["/health"])
    assert (await call(app, "/health")).status == 200
    assert count(registry, "/health") is None
    await call(app, "/items/3")
    metrics = await call(app, "/metrics")
    assert metrics.status == 200
    assert b'aiwatch_request_duration_seconds_count{method="GET",route="/items/{item_id}"' in metrics.body
    assert count(registry, "/metrics") is None  # scrapes are not requests of the app


@pytest.mark.parametrize("root_path", ["/api", "/api/v1"])
async def test_metrics_path_and_exclude_paths_under_a_root_path(registry: CollectorRegistry, root_path: str) -> None:
    # ASGI puts root_path in path (uvicorn --root-path, hypercorn --root-path, a Starlette Mount): /metrics and the
    # excluded paths are the app's own paths, after the root path, as Starlette routes them
    app = make_app(registry, exclude_paths=["/health"])
    assert (await call(app, f"{root_path}/items/3", root_path=root_path)).status == 200
    assert (await call(app, f"{root_path}/health", root_path=root_path)).status == 200
    assert count(registry, "/health") is None and count(registry, "/items/{item_id}") == 1
    metrics = await call(app, f"{root_path}/metrics", root_path=root_path)
    assert metrics.status == 200
    assert b'aiwatch_request_duration_seconds_count{method="GET",route="/items/{item_id}"' in metrics.body
    assert count(registry, "/metrics") is None and count(registry, "__unmatched__", "404") is None
    # a server of an older spec, whose path leaves the root path out, is still served
    assert (await call(app, "/metrics", root_path=root_path)).status == 200
    # a path that only starts with the root path's characters is not under it
    assert (await call(app, f"{root_path}x/metrics", root_path=root_path)).status == 404


async def test_metrics_path_of_an_instrumented_app_mounted_in_another(registry: CollectorRegistry) -> None:
    outer = Starlette(routes=[Mount("/model", app=make_app(registry, exclude_paths=["/health"]))])
    metrics = await call(outer, "/model/metrics")
    assert metrics.status == 200 and b"aiwatch_requests_in_flight" in metrics.body
    assert (await call(outer, "/model/health")).status == 200
    assert count(registry, "/health") is None and count(registry, "__unmatched__", "404") is None


@pytest.mark.parametrize("paths", ["/health", b"/health", ["/health", b"/x"]])
def test_exclude_paths_that_are_no_collection_of_str_paths_are_refused(registry: CollectorRegistry,
                                                                       paths: Any) -> None:
    # a str is an Iterable[str] of its characters: exclude_paths="/health" excluded no health check but every
    # request to "/" (one of its characters), silently
    with pytest.raises(TypeError, match="exclude_paths"):
        make_app(registry, exclude_paths=paths)
    with pytest.raises(TypeError, match="exclude_paths"):
        AiwatchMiddleware(make_app(CollectorRegistry()), registry=registry, exclude_paths=paths)


@pytest.mark.parametrize(("option", "given"), [("exclude_paths", ["/ready", "health"]),
                                                ("metrics_path", "metrics")])
def test_a_path_without_its_leading_slash_is_refused(registry: CollectorRegistry, option: str, given: Any) -> None:
    """exclude_paths=["health"] matched no request (a request's path starts with "/"): every health check was timed
    into the latency metrics; metrics_path="metrics" left /metrics to the app's 404. Both were taken silently."""
    refused = rf"^{option}: '(health|metrics)' matches no request: a request path starts with '/' \(write '/\1'\)$"
    with pytest.raises(ValueError, match=refused):
        aiwatch.instrument(Starlette(), registry=registry, **{option: given})
    with pytest.raises(ValueError, match=refused):
        AiwatchMiddleware(Starlette(), registry=registry, **{option: given})


async def test_bare_asgi_callable_is_wrapped_and_returned(registry: CollectorRegistry) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = aiwatch.instrument(raw, registry=registry, service="svc")
    assert isinstance(wrapped, AiwatchMiddleware) and wrapped.app is raw
    resp = await call(wrapped, "/anything")
    assert resp.status == 204 and "server-timing" in resp.headers
    assert count(registry, "__unmatched__", "204") == 1


async def test_instrumenting_an_instrumented_asgi_callable_again_is_a_no_op(registry: CollectorRegistry) -> None:
    # the returned middleware is itself an ASGI callable: instrumenting it again wrapped it again, and every request
    # was timed and counted twice
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = aiwatch.instrument(raw, registry=registry, service="svc")
    assert aiwatch.instrument(wrapped, registry=registry, service="svc") is wrapped
    await call(wrapped, "/anything")
    assert count(registry, "__unmatched__", "204") == 1


async def test_instrument_twice_is_a_no_op_and_phases_outside_requests_share_the_recorder(
        registry: CollectorRegistry) -> None:
    app = make_app(registry)
    aiwatch.instrument(app, registry=registry, service="svc")
    assert sum(1 for m in app.user_middleware if m.cls is AiwatchMiddleware) == 1
    await call(app, "/items/1")
    assert count(registry, "/items/{item_id}") == 1
    aiwatch.record_phase("batch_job", 0.5)  # outside any request: goes to instrument()'s registry and service
    assert registry.get_sample_value("aiwatch_background_phase_duration_seconds_sum",
                                     {"service": "svc", "model": "", "phase": "batch_job"}) == 0.5
    assert phase_sum(registry, "batch_job") is None  # not request time


def test_recorder_and_recorder_options_conflict(registry: CollectorRegistry) -> None:
    from aiwatch.recording import make_recorder

    with pytest.raises(TypeError, match="service"):
        AiwatchMiddleware(lambda *a: None, recorder=make_recorder(registry=registry), service="x")  # type: ignore


def test_unknown_app_type_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="does not know how to instrument 'int'"):
        aiwatch.instrument(3)


async def test_unknown_methods_fold_into_other(registry: CollectorRegistry) -> None:
    app = make_app(registry)
    for i in range(3):
        await call(app, "/items/1", method=f"BREW{i}")
    assert count(registry, "/items/{item_id}", "405", method="_OTHER") == 3
    assert b"BREW" not in generate_latest(registry)


async def test_phase_models_named_in_code_are_bounded_too(registry: CollectorRegistry) -> None:
    app = FastAPI()

    @app.get("/m/{name}")
    async def by_model(name: str) -> dict[str, str]:
        with aiwatch.phase("inference", model=name):
            return {"model": name}

    aiwatch.instrument(app, registry=registry, service="svc", max_label_values=2)
    for name in ("a", "b", "c", "d"):
        await call(app, f"/m/{name}")
    assert phase_sum(registry, "inference", model="a") is not None
    assert registry.get_sample_value("aiwatch_phase_duration_seconds_count",
                                     {"model_version": "",
                                      "service": "svc", "model": "__overflow__", "phase": "inference"}) == 2
    assert b'model="c"' not in generate_latest(registry)


@pytest.mark.parametrize("app_headers", [[(b"content-type", b"text/plain")], [], None])
async def test_server_timing_leaves_the_apps_message_untouched(registry: CollectorRegistry,
                                                               app_headers: list[tuple[bytes, bytes]] | None) -> None:
    sent: list[dict[str, Any]] = []
    start: dict[str, Any] = {"type": "http.response.start", "status": 200}
    if app_headers is not None:
        start["headers"] = app_headers
    original = {**start, "headers": list(app_headers)} if app_headers is not None else dict(start)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    mw = AiwatchMiddleware(app, registry=registry, service="svc")
    await mw({"type": "http", "method": "GET", "path": "/x", "root_path": "", "headers": []}, receive, send)
    assert start == original  # neither the message nor its header list was changed in place
    headers = sent[0]["headers"]
    assert headers[:-1] == (app_headers or [])
    name, value = headers[-1]
    assert name == b"server-timing" and set(parse_server_timing(value.decode())) == {"overhead", "total"}
