"""A Content-Length that HTTP does not allow (``+7``, ``1_000``: int() reads both) is no size, at each place aiwatch
reads one: the ASGI and WSGI middlewares' request size and the HTTP clients' bytes moved. It is the client's fault,
not aiwatch's: no aiwatch error is counted for it."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
import requests
from fastapi import FastAPI, Request
from flask import Flask
from prometheus_client import CollectorRegistry

import aiwatch
import aiwatch.client
from tests.http.asgi_driver import call
from tests.http.peer import peer

HOSTILE = [pytest.param("+7", id="plus"), pytest.param("1_000", id="underscore")]


def request_size(registry: CollectorRegistry, route: str, suffix: str) -> float | None:
    return registry.get_sample_value(f"aiwatch_request_size_bytes_{suffix}",
                                     {"service": "svc", "route": route, "method": "POST"})


def errors(registry: CollectorRegistry) -> float:
    return sum(sample.value for metric in registry.collect() for sample in metric.samples
               if sample.name == "aiwatch_instrumentation_errors_total")


def client_bytes(registry: CollectorRegistry, direction: str) -> float | None:
    return registry.get_sample_value("aiwatch_client_bytes_total",
                                     {"service": "gw", "peer": "ranker", "direction": direction})


@pytest.mark.parametrize("length", HOSTILE)
async def test_asgi_counts_the_bytes_received_when_the_content_length_is_no_count(
        registry: CollectorRegistry, length: str) -> None:
    # before: int() read +7 as 7 and 1_000 as 1000, recorded as the request's size; the app read 3 bytes
    app = FastAPI()

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    aiwatch.instrument(app, registry=registry, service="svc")
    resp = await call(app, "/upload", method="POST", body=b"abc", headers=[("content-length", length)])
    assert resp.body == b'{"bytes":3}'
    assert request_size(registry, "/upload", "sum") == 3  # "Content-Length, else the bytes received"
    assert request_size(registry, "/upload", "count") == 1
    assert errors(registry) == 0


async def test_asgi_takes_a_content_length_with_whitespace_around_it(registry: CollectorRegistry) -> None:
    # uvicorn with httptools hands the app the trailing whitespace the client sent
    app = FastAPI()

    @app.post("/upload")
    async def upload() -> dict[str, int]:
        return {}  # the body is never read: the size recorded is the declared one

    aiwatch.instrument(app, registry=registry, service="svc")
    await call(app, "/upload", method="POST", body=b"abcde", headers=[("content-length", "5 ")])
    assert request_size(registry, "/upload", "sum") == 5


@pytest.mark.parametrize("length", HOSTILE)
def test_wsgi_records_no_body_when_the_content_length_is_no_count(registry: CollectorRegistry, length: str) -> None:
    # before: int() read +7 as 7 and 1_000 as 1000, recorded as the request's size; werkzeug reads such a value as
    # no body (0), and so does aiwatch now
    app = Flask("content_length")

    @app.post("/echo")
    def echo() -> bytes:
        from flask import request
        return request.get_data()

    aiwatch.instrument(app, registry=registry, service="svc")
    resp = app.test_client().post("/echo", data=b"abc", environ_overrides={"CONTENT_LENGTH": length}, buffered=True)
    assert resp.data == b""
    assert request_size(registry, "/echo", "sum") == 0
    assert request_size(registry, "/echo", "count") == 1
    assert errors(registry) == 0


class _HostilePeer(BaseHTTPRequestHandler):
    """Answers with 3 bytes under the Content-Length its path names (``/+7``), then closes the connection."""

    def do_GET(self) -> None:
        self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: " + self.path[1:].encode() + b"\r\n\r\nabc")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hostile_peer() -> Iterator[str]:
    with peer(_HostilePeer) as url:
        yield url


@pytest.mark.parametrize("length", [pytest.param("+7", id="plus"), pytest.param("1_000", id="underscore")])
def test_requests_counts_no_received_bytes_for_a_peers_content_length_that_is_no_count(
        registry: CollectorRegistry, hostile_peer: str, length: str) -> None:
    # before: a streamed response's size is its Content-Length, and int() read the peer's +7 and 1_000 as 7 and
    # 1000 bytes received (it sent 3)
    session = aiwatch.client.instrument_requests(requests.Session(), service="gw", registry=registry,
                                                 peer="ranker")
    with session.get(f"{hostile_peer}/{length}", stream=True) as resp:
        assert resp.status_code == 200
    assert client_bytes(registry, "received") is None
    assert errors(registry) == 0
