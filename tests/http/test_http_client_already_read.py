"""httpx responses that come back already read (``httpx.Response(content=...)``, as ``httpx.MockTransport`` returns
them) are recorded: httpx never reads or closes them again, so aiwatch records them when the transport returns."""

from __future__ import annotations

import httpx
import pytest

from aiwatch.client import instrument_httpx
from aiwatch.metrics import Metrics


def handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(201, content=b'{"ok": true}', headers={"server-timing": "inference;dur=2, total;dur=3"})


def calls(metrics: Metrics, status: str) -> float | None:
    return metrics.registry.get_sample_value("aiwatch_client_request_duration_seconds_count", {
        "service": "gw", "peer": "model:8000", "route": "/p", "status": status, "phase": ""})


def network_count(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("aiwatch_network_duration_seconds_count",
                                             {"service": "gw", "peer": "model:8000", "phase": ""})


def test_sync_mock_transport_calls_are_recorded(metrics: Metrics) -> None:
    client = instrument_httpx(httpx.Client(transport=httpx.MockTransport(handler)), service="gw", metrics=metrics)
    with client:
        for _ in range(3):
            response = client.get("http://model:8000/p", extensions={"aiwatch.route": "/p"})
            assert (response.status_code, response.content) == (201, b'{"ok": true}')
        with client.stream("GET", "http://model:8000/p", extensions={"aiwatch.route": "/p"}) as streamed:
            assert streamed.read() == b'{"ok": true}'
    assert calls(metrics, "201") == 4  # recorded once each, streamed or not
    assert network_count(metrics) == 4


@pytest.mark.asyncio
async def test_async_mock_transport_calls_are_recorded(metrics: Metrics) -> None:
    client = instrument_httpx(httpx.AsyncClient(transport=httpx.MockTransport(handler)), service="gw",
                              metrics=metrics)
    async with client:
        response = await client.get("http://model:8000/p", extensions={"aiwatch.route": "/p"})
        assert response.json() == {"ok": True}
    assert calls(metrics, "201") == 1
    assert network_count(metrics) == 1


def test_a_streamed_response_is_still_timed_to_its_end(metrics: Metrics) -> None:
    def streaming(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b"chunk"))

    client = instrument_httpx(httpx.Client(transport=httpx.MockTransport(streaming)), service="gw", metrics=metrics)
    with client.stream("GET", "http://model:8000/p", extensions={"aiwatch.route": "/p"}) as response:
        assert calls(metrics, "200") is None  # not read yet: not finished
        response.read()
    assert calls(metrics, "200") == 1
