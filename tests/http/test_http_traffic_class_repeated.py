"""A repeated ``aiwatch-traffic-class`` header names the same class behind ASGI and WSGI: ASGI servers hand the app
each value (uvicorn), WSGI servers join them with commas (werkzeug). Before, ASGI took the last value and WSGI
read the joined ``batch,batch`` as no class at all."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch.traffic import HEADER
from tests.http.test_http_wsgi_server import serving
from tests.servers import get_with_repeated_headers, uvicorn_in_thread, wait_until

# the header's values as sent (one header line each) -> the class the request counts as
CASES = [
    (["batch", "batch"], "batch"),
    (["batch, batch"], "batch"),
    (["batch", " BATCH,"], "batch"),
    (["realtime", "batch"], "realtime"),  # two classes named: the default
    (["batch", "made-up"], "realtime"),
]


@contextmanager
def asgi_server(registry: CollectorRegistry) -> Iterator[int]:
    app = FastAPI()

    @app.get("/items")
    async def items() -> dict[str, str]:
        return {"ok": "yes"}

    with uvicorn_in_thread(aiwatch.instrument(app, registry=registry, service="svc")) as (port, _):
        yield port


@contextmanager
def wsgi_server(registry: CollectorRegistry) -> Iterator[int]:
    app = Flask(__name__)

    @app.get("/items")
    def items() -> dict[str, str]:
        return {"ok": "yes"}

    with serving(aiwatch.instrument(app, registry=registry, service="svc")) as conn:
        yield conn.port


def counted(registry: CollectorRegistry, traffic_class: str) -> float | None:
    return registry.get_sample_value("aiwatch_request_duration_seconds_count", {
        "service": "svc", "route": "/items", "method": "GET", "status": "200", "traffic_class": traffic_class})


@pytest.mark.parametrize("server", [asgi_server, wsgi_server], ids=["asgi-uvicorn", "wsgi-werkzeug"])
@pytest.mark.parametrize(("values", "expected"), CASES)
def test_a_repeated_header_names_a_class_only_when_every_value_names_it(
        registry: CollectorRegistry, server: Any, values: list[str], expected: str) -> None:
    with server(registry) as port:
        assert get_with_repeated_headers(port, [(HEADER, value) for value in values]) == 200
        wait_until(lambda: counted(registry, expected) == 1, what=f"the request counted as {expected}")
    other = "realtime" if expected == "batch" else "batch"
    assert counted(registry, other) is None
