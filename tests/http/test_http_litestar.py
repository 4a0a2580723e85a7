"""Litestar behind aiwatch, under a real uvicorn: ``aiwatch.instrument`` wraps a Litestar app as a bare ASGI app,
and the route label is the template Litestar's router stores in ``scope["path_template"]``. Before, every Litestar
request was ``__unmatched__``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from litestar import Controller, Litestar, Router, asgi, get, post
from litestar.params import FromPath
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch.middleware._common import UNMATCHED_ROUTE
from aiwatch.middleware.routes import litestar_route
from aiwatch.servertiming import parse_server_timing
from tests.servers import uvicorn_in_thread


@get("/")
async def index() -> str:
    return "index"


@get("/items/{item_id:int}")
async def item(item_id: FromPath[int]) -> dict[str, int]:
    with aiwatch.phase("inference", model="ranker"):
        return {"id": item_id}


class Models(Controller):
    path = "/models"

    @post("/{name:str}/predict")
    async def predict(self, name: FromPath[str]) -> dict[str, str]:
        return {"model": name}


@get("/boom")
async def boom() -> None:
    raise RuntimeError("the handler failed")


async def _file(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"file"})


files = asgi("/files", is_mount=True, copy_scope=False)(_file)
assets = asgi("/assets/", is_mount=True, copy_scope=True)(_file)  # under the /v1 router, with a trailing slash
docs = asgi(["/docs", "/help"], is_mount=True, copy_scope=True)(_file)  # one app at two mount paths


def make_app(started: list[bool]) -> Litestar:
    return Litestar([index, item, Router(path="/v1", route_handlers=[Models, assets]), boom, files, docs],
                    on_startup=[lambda: started.append(True)], logging_config=None)


def routes(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    return {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value for family in registry.collect()
            for s in family.samples if s.name == "aiwatch_request_duration_seconds_count"}


def test_each_request_is_labelled_with_litestars_route_template(registry: CollectorRegistry,
                                                                provider: TracerProvider,
                                                                exporter: InMemorySpanExporter) -> None:
    started: list[bool] = []
    app = aiwatch.instrument(make_app(started), registry=registry, service="svc", tracer_provider=provider)
    requests = [("GET", "/items/3"), ("GET", "/items/4"), ("POST", "/v1/models/ranker/predict"), ("GET", "/"),
                ("GET", "/boom"), ("GET", "/files/a/b.css"), ("GET", "/v1/assets/app.js"), ("GET", "/help/x"),
                ("GET", "/docs"), ("GET", "/no/such/page")]
    with uvicorn_in_thread(app, lifespan="on") as (port, _), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        responses = [client.request(method, url) for method, url in requests]
    assert started == [True]  # Litestar's lifespan passes through aiwatch
    assert [r.status_code for r in responses] == [200, 200, 201, 200, 500, 200, 200, 200, 200, 404]
    assert set(parse_server_timing(responses[0].headers["server-timing"])) >= {"inference", "overhead", "total"}
    assert routes(registry) == {
        ("/items/{item_id}", "GET", "200"): 2, ("/v1/models/{name}/predict", "POST", "201"): 1,
        ("/", "GET", "200"): 1, ("/boom", "GET", "500"): 1,
        # mounted apps, whose template Litestar does not store (it stores the root route's, "/" here); before,
        # they were __unmatched__
        ("/files/{path}", "GET", "200"): 1, ("/v1/assets/{path}", "GET", "200"): 1, ("/help/{path}", "GET", "200"): 1,
        ("/docs/{path}", "GET", "200"): 1, (UNMATCHED_ROUTE, "GET", "404"): 1,
    }
    assert registry.get_sample_value("aiwatch_phase_duration_seconds_count", {
        "service": "svc", "model": "ranker", "model_version": "", "phase": "inference"}) == 2
    servers = {span.name: span.attributes for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER}
    assert servers["GET /items/{item_id}"]["http.route"] == "/items/{item_id}"  # type: ignore[index]


def test_a_flood_of_paths_no_route_matches_adds_one_series(registry: CollectorRegistry) -> None:
    """Paths from traffic never become labels, near misses of real routes included (a parameter of the wrong type,
    a longer path, another method)."""
    paths = ["/items/abc", "/items/1.5", "/items/3/extra", "/v1/models/a/predict", "/v1/models", "/boom/x"]
    paths += [f"/scan/{n}/{n * 7919}" for n in range(300 - len(paths))]
    app = aiwatch.instrument(make_app([]), registry=registry, service="svc")
    with uvicorn_in_thread(app) as (port, _), httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        statuses = {client.get(url).status_code for url in paths}
    assert statuses <= {404, 405}
    assert set(routes(registry)) <= {(UNMATCHED_ROUTE, "GET", "404"), (UNMATCHED_ROUTE, "GET", "405")}
    assert sum(routes(registry).values()) == 300


def _mount(paths: Any, *layer_paths: Any) -> Any:
    """A stand-in for a Litestar mount handler: what litestar_route reads of one."""
    layers = [type("Layer", (), {"path": p})() for p in layer_paths]
    handler = type("Mount", (), {"is_mount": True, "paths": paths})()
    handler.ownership_layers = [*layers, handler]
    return handler


def test_a_flood_of_paths_under_a_mount_adds_one_series(registry: CollectorRegistry) -> None:
    app = aiwatch.instrument(make_app([]), registry=registry, service="svc")
    with uvicorn_in_thread(app) as (port, _), httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        statuses = {client.get(f"/files/{n}/{n * 7919}.css").status_code for n in range(200)}
    assert statuses == {200}
    assert routes(registry) == {("/files/{path}", "GET", "200"): 200}


@pytest.mark.parametrize("scope", [
    {}, {"path_template": ""}, {"path_template": 7}, {"path_template": None},
    {"path_template": "/", "route_handler": type("Mount", (), {"is_mount": True})()},  # no paths
    {"path_template": "/", "route_handler": _mount(None, "/")},
    {"path_template": "/", "route_handler": _mount({7, b"/x"}, "/")},  # no path is text
    # two mount paths, and the request's path under neither (or not known)
    {"path_template": "/", "route_handler": _mount({"/a", "/b"}, "/"), "raw_path": b"/c/d"},
    {"path_template": "/", "route_handler": _mount({"/a", "/b"}, "/")},
])
def test_no_template_from_what_litestar_did_not_store(scope: dict[str, Any]) -> None:
    assert litestar_route(scope) is None


@pytest.mark.parametrize(("handler", "raw_path", "template"), [
    (_mount({"/files"}, "/"), b"/files/x", "/files/{path}"),
    (_mount({"files/"}, "/", "api/", None, "/v2"), b"/api/v2/files/x", "/api/v2/files/{path}"),  # no layer path
    (_mount({"/"}, "/", "/static"), b"/static/x", "/static/{path}"),
    (_mount(frozenset({"/a", "/ab"}), "/"), b"/ab/c", "/ab/{path}"),  # the mount the path is under, not a prefix
    (_mount(["/a", "/b"], "/"), b"/a", "/a/{path}"),
    (_mount({"/", "/a"}, "/"), b"/a/x", "/a/{path}"),  # every path is under "/": the longest mount wins
    (_mount({"/", "/a"}, "/"), b"/b", "/{path}"),
])
def test_a_mount_is_labelled_with_its_path_and_its_owners(handler: Any, raw_path: bytes, template: str) -> None:
    assert litestar_route({"path_template": "/", "route_handler": handler, "raw_path": raw_path}) == template
