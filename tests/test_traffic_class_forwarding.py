"""The traffic class travels down the call graph: aiwatch's HTTP and gRPC clients send the class of the request they
are called in to the next service (``aiwatch-traffic-class``), so that a batch request's downstream calls count as
batch there too. Default-class requests add no header, and a header the app set itself is kept."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import requests
from fastapi import FastAPI
from flask import Flask
from prometheus_client import CollectorRegistry

import aiwatch
import aiwatch.client
from aiwatch.grpc import grpc_client_interceptor, grpc_server_interceptor
from aiwatch.metrics import Metrics
from aiwatch.timing import RequestRecorder
from aiwatch.traffic import HEADER
from examples.grpc_service.servicer import InferenceServicer
from tests.grpc.conftest import PREDICT, req, stub_for, sync_server, value
from tests.http.asgi_driver import call
from tests.http.peer import peer


def _client(client_kind: str, registry: CollectorRegistry) -> Any:
    if client_kind == "httpx":
        return aiwatch.client.instrument_httpx(httpx.Client(), service="gw", registry=registry)
    return aiwatch.client.instrument_requests(requests.Session(), service="gw", registry=registry)


def _gateway(base: str, client_kind: str, registry: CollectorRegistry,
             traffic_classes: aiwatch.TrafficClasses | None = None) -> FastAPI:
    """An instrumented app that calls the peer once per request and returns the headers the peer received."""
    api = FastAPI()
    client = _client(client_kind, registry)

    @api.get("/proxy")
    def proxy(preset: str = "") -> dict[str, str]:
        headers = {HEADER: preset} if preset else {}
        received: dict[str, str] = client.get(f"{base}/ok", headers=headers).json()
        return received

    aiwatch.instrument(api, registry=registry, service="gw", traffic_classes=traffic_classes)
    return api


def received(app: FastAPI, **request: Any) -> dict[str, str]:
    """The headers the peer received while ``app`` served one ``/proxy`` request."""
    response = asyncio.run(call(app, "/proxy", **request))
    assert response.status == 200, response.body
    headers: dict[str, str] = json.loads(response.body)
    return headers


@pytest.mark.parametrize("client_kind", ["httpx", "requests"])
def test_an_http_call_made_in_a_batch_request_carries_the_class(client_kind: str) -> None:
    with peer() as base:
        app = _gateway(base, client_kind, CollectorRegistry())
        batch = received(app, headers=[(HEADER, "batch")])
        realtime = received(app)
        kept = received(app, headers=[(HEADER, "batch")], query="preset=realtime")
    assert batch[HEADER] == "batch"
    assert HEADER not in realtime  # the default class needs no header
    assert kept[HEADER] == "realtime"  # what the app set itself wins


def test_an_http_call_outside_any_request_carries_no_class() -> None:
    with peer() as base, aiwatch.client.instrument_httpx(httpx.Client(), registry=CollectorRegistry()) as client:
        assert HEADER not in client.get(f"{base}/ok").json()


def test_a_grpc_call_made_in_a_batch_request_counts_as_batch_at_the_callee(metrics: Metrics) -> None:
    callee = Metrics(CollectorRegistry())
    gateway = RequestRecorder(metrics, service="gw")
    server = grpc_server_interceptor(service="infer", metrics=callee)
    client = grpc_client_interceptor(service="gw", peer="infer", metrics=metrics)
    with sync_server([server]) as target, stub_for(target, client) as stub:
        for traffic_class in ("batch", "realtime", "batch"):
            tl = gateway.begin("GET")
            tl.traffic_class = traffic_class  # what the gateway's middleware set from its own request's header
            stub.Predict(req())
            gateway.finish(tl, "/recommend", "GET", "200")
    counts = {traffic_class: value(callee.registry, "aiwatch_request_duration_seconds_count", service="infer",
                                   route=PREDICT, method="grpc", status="OK",
                                   traffic_class=traffic_class)
              for traffic_class in ("batch", "realtime")}
    assert counts == {"batch": 2.0, "realtime": 1.0}


# --- a route rule's class travels too ----------------------------------------------------------------------
# A route rule names the class of a request (``/v1/bulk/*=batch``) whatever its header says; it was applied only
# when the request finished, so the calls made while it ran forwarded the header's class (none, or realtime), and a
# batch endpoint's downstream work counted as real-time demand at the next service.

BATCH_PROXY = aiwatch.TrafficClasses(routes={"/proxy": "batch"})


def _batch_requests(registry: CollectorRegistry, route: str) -> float:
    return registry.get_sample_value("aiwatch_request_duration_seconds_count", {
        "service": "gw", "route": route, "method": "GET", "status": "200", "traffic_class": "batch"}) or 0.0


@pytest.mark.parametrize("client_kind", ["httpx", "requests"])
def test_an_http_call_made_in_a_request_a_route_rule_makes_batch_carries_the_class(client_kind: str) -> None:
    registry = CollectorRegistry()
    with peer() as base:
        app = _gateway(base, client_kind, registry, BATCH_PROXY)
        plain = received(app)
        overruled = received(app, headers=[(HEADER, "realtime")])
    assert plain[HEADER] == "batch"
    assert overruled[HEADER] == "batch"  # the rule wins over the header, downstream too
    assert _batch_requests(registry, "/proxy") == 2


@pytest.mark.parametrize("client_kind", ["httpx", "requests"])
def test_a_flask_apps_call_made_in_a_request_a_route_rule_makes_batch_carries_the_class(client_kind: str) -> None:
    registry = CollectorRegistry()
    with peer() as base:
        app = Flask("gw")
        client = _client(client_kind, registry)

        @app.get("/proxy")
        def proxy() -> dict[str, str]:
            got: dict[str, str] = client.get(f"{base}/ok").json()
            return got

        aiwatch.instrument(app, registry=registry, service="gw", traffic_classes=BATCH_PROXY)
        response = app.test_client().get("/proxy", buffered=True)
    assert response.status_code == 200
    assert response.get_json()[HEADER] == "batch"
    assert _batch_requests(registry, "/proxy") == 1


def test_a_call_made_in_a_grpc_method_a_route_rule_makes_batch_carries_the_class(metrics: Metrics) -> None:
    seen: list[str | None] = []
    with peer() as base:
        client = aiwatch.client.instrument_httpx(httpx.Client(), service="infer", metrics=metrics)

        class Calling(InferenceServicer):
            def Predict(self, request: Any, context: Any) -> Any:
                seen.append(client.get(f"{base}/ok").json().get(HEADER))
                return super().Predict(request, context)

        server = grpc_server_interceptor(service="infer", metrics=metrics,
                                         traffic_classes=aiwatch.TrafficClasses(routes={PREDICT: "batch"}))
        with sync_server([server], Calling()) as target, stub_for(target) as stub:
            stub.Predict(req())
    assert seen == ["batch"]
    assert value(metrics.registry, "aiwatch_request_duration_seconds_count", service="infer", route=PREDICT,
                 method="grpc", status="OK", traffic_class="batch") == 1.0
