"""Route templates of FastAPI and Starlette apps as their routers leave them: FastAPI's included routers with their
prefix (FastAPI keeps an included router as one route of its own, so ``scope["route"]`` holds the router's own
path), its plain Starlette routes (for which it stores no route), mounted sub-apps and static files."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import aiwatch
from aiwatch.middleware._common import UNMATCHED_ROUTE
from aiwatch.middleware.routes import starlette_route


async def plain(request: Request) -> PlainTextResponse:
    return PlainTextResponse("plain")


def versioned_router() -> APIRouter:
    router = APIRouter()

    @router.post("/predict/{model}")
    async def predict(model: str) -> dict[str, str]:
        return {"model": model}

    router.add_route("/raw/{item:int}", plain)
    return router


def routes(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """``aiwatch_request_duration_seconds_count`` by (route, status)."""
    return {(s.labels["route"], s.labels["status"]): s.value for family in registry.collect()
            for s in family.samples if s.name == "aiwatch_request_duration_seconds_count"}


def call(app: Any, requests: list[tuple[str, str]]) -> list[int]:
    async def run() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
            return [(await client.request(method, path)).status_code for method, path in requests]

    return asyncio.run(run())


def test_routes_of_an_included_router_keep_its_prefix(registry: CollectorRegistry, provider: TracerProvider,
                                                      exporter: InMemorySpanExporter) -> None:
    """Before: ``/predict/{model}`` for both versions (FastAPI 0.165 keeps the router's own path on the route), so
    v1 and v2 shared one series and one span name."""
    app = FastAPI()
    app.include_router(versioned_router(), prefix="/v1")
    app.include_router(versioned_router(), prefix="/v2")
    aiwatch.instrument(app, registry=registry, service="svc", tracer_provider=provider)
    assert call(app, [("POST", "/v1/predict/a"), ("POST", "/v2/predict/b"), ("POST", "/v2/predict/c"),
                      ("GET", "/v1/raw/7")]) == [200, 200, 200, 200]
    assert routes(registry) == {("/v1/predict/{model}", "200"): 1, ("/v2/predict/{model}", "200"): 2,
                                ("/v1/raw/{item:int}", "200"): 1}
    names = sorted(s.name for s in exporter.get_finished_spans()
                   if s.kind is SpanKind.SERVER and s.instrumentation_scope is not None
                   and s.instrumentation_scope.name == "aiwatch")
    assert names == ["GET /v1/raw/{item:int}", "POST /v1/predict/{model}", "POST /v2/predict/{model}",
                     "POST /v2/predict/{model}"]
    routes_on_spans = {(s.attributes or {}).get("http.route") for s in exporter.get_finished_spans()
                       if s.kind is SpanKind.SERVER}
    assert routes_on_spans >= {"/v1/predict/{model}", "/v2/predict/{model}", "/v1/raw/{item:int}"}


def test_a_fastapi_apps_own_plain_routes_and_mounts_have_templates(registry: CollectorRegistry,
                                                                    tmp_path: Path) -> None:
    """FastAPI stores no route for a plain Starlette route or a mount at its top (before: ``__unmatched__``)."""
    (tmp_path / "model.json").write_text("{}")
    sub = FastAPI()
    sub.include_router(versioned_router(), prefix="/v9")
    sub.add_route("/ping", plain)
    app = FastAPI()
    app.add_route("/raw/{name}", plain)
    app.mount("/sub", sub)
    app.mount("/static", StaticFiles(directory=tmp_path))
    app.mount("/legacy", Starlette(routes=[Route("/old/{y}", plain)]))
    aiwatch.instrument(app, registry=registry, service="svc")
    statuses = call(app, [("GET", "/raw/a"), ("POST", "/sub/v9/predict/m"), ("GET", "/sub/v9/raw/3"),
                          ("GET", "/sub/ping"), ("GET", "/static/model.json"), ("GET", "/static/missing.json"),
                          ("GET", "/legacy/old/1"), ("GET", "/nowhere"), ("GET", "/sub/v9/nowhere")])
    assert statuses == [200, 200, 200, 200, 200, 404, 200, 404, 404]
    assert routes(registry) == {
        ("/raw/{name}", "200"): 1, ("/sub/v9/predict/{model}", "200"): 1, ("/sub/v9/raw/{item:int}", "200"): 1,
        ("/sub/ping", "200"): 1, ("/static/{path}", "200"): 1, ("/static/{path}", "404"): 1,
        ("/legacy/old/{y}", "200"): 1, (UNMATCHED_ROUTE, "404"): 2}


def test_mounts_in_an_included_router_keep_the_prefix_once(registry: CollectorRegistry, tmp_path: Path) -> None:
    """A mount of an included router: its path and the router's prefix are in root_path already (before:
    ``/v1/files/v1/files``)."""
    (tmp_path / "a.txt").write_text("a")
    router = APIRouter()
    router.mount("/files", StaticFiles(directory=tmp_path))
    router.mount("/legacy", Starlette(routes=[Route("/old/{y}", plain)]))
    app = FastAPI()
    app.include_router(router, prefix="/v1")
    aiwatch.instrument(app, registry=registry, service="svc")
    assert call(app, [("GET", "/v1/files/a.txt"), ("GET", "/v1/legacy/old/3")]) == [200, 200]
    assert routes(registry) == {("/v1/files/{path}", "200"): 1, ("/v1/legacy/old/{y}", "200"): 1}


def test_a_starlette_static_mount_is_the_mount_and_the_rest(registry: CollectorRegistry, tmp_path: Path) -> None:
    """Before: ``/static/static`` (the mount's path twice: once in root_path, once as the route's)."""
    (tmp_path / "a.txt").write_text("a")
    app = Starlette(routes=[Mount("/static", StaticFiles(directory=tmp_path)), Route("/p/{x}", plain)])
    aiwatch.instrument(app, registry=registry, service="svc")
    assert call(app, [("GET", "/static/a.txt"), ("GET", "/p/1")]) == [200, 200]
    assert routes(registry) == {("/static/{path}", "200"): 1, ("/p/{x}", "200"): 1}


def test_a_flood_of_unknown_paths_adds_no_route(registry: CollectorRegistry) -> None:
    app = FastAPI()
    app.include_router(versioned_router(), prefix="/v1")
    app.add_route("/raw/{name}", plain)
    aiwatch.instrument(app, registry=registry, service="svc")
    paths = [("GET", f"/v1/x{i}/{'y' * (i % 50)}") for i in range(300)] + [("POST", f"/scan{i}") for i in range(300)]
    assert set(call(app, paths)) <= {404, 405}
    assert {route for route, _ in routes(registry)} == {UNMATCHED_ROUTE}


@pytest.mark.parametrize("fastapi_scope", [None, "text", {"effective_route_context": object()},
                                           {"effective_route_context": "a string"}, {}])
def test_an_unexpected_fastapi_scope_entry_is_no_route_and_no_error(fastapi_scope: Any) -> None:
    """Another app (or another FastAPI) may put anything under ``scope["fastapi"]``: no template from it, and no
    exception."""
    scope = {"type": "http", "path": "/x", "root_path": "", "method": "GET", "fastapi": fastapi_scope}
    assert starlette_route(scope) is None
    scope["route"] = Route("/x", plain)
    assert starlette_route(scope) == "/x"


def test_a_mount_with_path_parameters_is_labelled_with_its_template(registry: CollectorRegistry) -> None:
    """Starlette's ``Mount`` adds the path it matched to ``root_path`` (``/tenants/acme``), not its template: before,
    each tenant's name went into the route label (``/tenants/acme/items/{id}``), the raw path that never may."""
    sub = FastAPI()

    @sub.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app = FastAPI()
    app.mount("/tenants/{tenant}", Starlette(routes=[Route("/items/{id}", plain),
                                                     Mount("/v/{version:int}", routes=[Route("/p", plain)])]))
    app.mount("/orgs/{org}", sub)
    aiwatch.instrument(app, registry=registry, service="svc")
    statuses = call(app, [("GET", "/tenants/acme/items/1"), ("GET", "/tenants/globex/items/2"),
                          ("GET", "/tenants/acme/v/3/p"), ("GET", "/orgs/initech/items/4"),
                          ("GET", "/orgs/umbrella/items/5"), ("GET", "/tenants/acme/nowhere")])
    assert statuses == [200, 200, 200, 200, 200, 404]
    assert routes(registry) == {
        ("/tenants/{tenant}/items/{id}", "200"): 2, ("/tenants/{tenant}/v/{version:int}/p", "200"): 1,
        ("/orgs/{org}/items/{item_id}", "200"): 2, (UNMATCHED_ROUTE, "404"): 1}


def test_a_mount_with_path_parameters_added_after_the_first_request_is_labelled_with_its_template(
        registry: CollectorRegistry) -> None:
    # whether an app's mounts have parameters is looked up once per router, and again when its routes change
    app = Starlette(routes=[Mount("/v1", routes=[Route("/p/{id}", plain)])])
    aiwatch.instrument(app, registry=registry, service="svc")
    assert call(app, [("GET", "/v1/p/1")]) == [200]
    app.router.routes.append(Mount("/tenants/{tenant}", routes=[Route("/p/{id}", plain)]))
    assert call(app, [("GET", "/tenants/acme/p/2"), ("GET", "/v1/p/3")]) == [200, 200]
    assert routes(registry) == {("/v1/p/{id}", "200"): 2, ("/tenants/{tenant}/p/{id}", "200"): 1}


def test_a_mount_with_path_parameters_inside_a_mount_at_the_root_is_labelled_with_its_template(
        registry: CollectorRegistry) -> None:
    # Mount("") adds nothing to the root path: the mounts were not followed past it, and the tenant was the label's
    app = Starlette(routes=[Mount("", routes=[Mount("/t/{tenant}", routes=[Route("/p", plain)])])])
    aiwatch.instrument(app, registry=registry, service="svc")
    assert call(app, [("GET", "/t/acme/p"), ("GET", "/t/globex/p")]) == [200, 200]
    assert routes(registry) == {("/t/{tenant}/p", "200"): 2}
