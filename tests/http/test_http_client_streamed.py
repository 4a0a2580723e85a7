"""A streamed response (chunked: no Content-Length) from an aiwatch server: its Server-Timing, sent with the headers,
covers the server's time up to the headers only, so the caller's network time is counted to the headers too. Before,
every second the server spent producing the stream after its headers (an LLM generating tokens) was recorded as
network time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from prometheus_client import CollectorRegistry

import aiwatch
import aiwatch.client
from aiwatch.metrics import Metrics
from tests.servers import uvicorn_in_thread

TOKENS = 4
PAUSE = 0.1  # the model's time per token, after the headers went out


async def generating(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for _ in range(TOKENS):
        await asyncio.sleep(PAUSE)
        await send({"type": "http.response.body", "body": b"tok ", "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    before = aiwatch.timing._default_recorder
    app = aiwatch.instrument(generating, metrics=Metrics(CollectorRegistry()), service="llm")
    aiwatch.timing.set_default_recorder(before)  # instrument() made it the process's default: not past this module
    with uvicorn_in_thread(app) as (port, _):
        yield f"http://127.0.0.1:{port}"


def sums(registry: CollectorRegistry) -> tuple[float, float]:
    client = registry.get_sample_value("aiwatch_client_request_duration_seconds_sum",
                                       {"service": "gw", "peer": "llm", "route": "__unmatched__", "status": "200",
                                        "phase": ""})
    network = registry.get_sample_value("aiwatch_network_duration_seconds_sum",
                                        {"service": "gw", "peer": "llm", "phase": ""})
    assert client is not None and network is not None
    return client, network


def test_httpx_network_time_of_a_streamed_body_stops_at_the_headers(base: str, registry: CollectorRegistry) -> None:
    with aiwatch.client.instrument_httpx(httpx.Client(), service="gw", registry=registry) as client:
        assert client.get(f"{base}/gen").text == "tok " * TOKENS
    client_time, network = sums(registry)
    # the generation (TOKENS * PAUSE after the headers) is the call's time, not the network's; half of it leaves
    # room for the headers' own delay on a loaded machine
    assert client_time - network >= TOKENS * PAUSE / 2


async def test_async_httpx_network_time_of_a_streamed_body_stops_at_the_headers(
        base: str, registry: CollectorRegistry) -> None:
    client = aiwatch.client.instrument_httpx(httpx.AsyncClient(), service="gw", registry=registry)
    async with client, client.stream("GET", f"{base}/gen") as response:
        assert await response.aread() == b"tok " * TOKENS
    client_time, network = sums(registry)
    assert client_time - network >= TOKENS * PAUSE / 2


def test_requests_network_time_of_a_streamed_body_stops_at_the_headers(base: str, registry: CollectorRegistry) -> None:
    with aiwatch.client.instrument_requests(requests.Session(), service="gw", registry=registry) as session:
        assert session.get(f"{base}/gen").text == "tok " * TOKENS
    client_time, network = sums(registry)
    assert client_time - network >= TOKENS * PAUSE / 2
