"""requests without ``stream=True``: Session.send sets ``Response.elapsed`` (requests documents it as the time to the
response's headers) and runs the response hooks before it reads the body. aiwatch's adapter read the body inside
``send`` to time the call, so ``elapsed`` held the body's download too and the hooks ran after it. Now requests
reads the body itself and the call is recorded when the body ends: the recorded times are the same as before (the
call to the body's end; its network time to the headers for a streamed body, to the body's end for one of declared
length), ``elapsed`` and the hooks are requests' own again. The peer is a real aiwatch server (uvicorn) that sends
its body slowly after its headers."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

import aiwatch
import aiwatch.client
from aiwatch.metrics import Metrics
from aiwatch.servertiming import parse_server_timing
from tests.servers import handler_server, uvicorn_in_thread

PARTS = 4
PAUSE = 0.1  # between two parts of the body, after the headers went out
MODEL = 0.05  # the server's time before its headers: in its Server-Timing total


class Peer:
    """What the peer saw: whether the client's response hook ran before the peer sent the body."""

    def __init__(self) -> None:
        self.hook_ran = threading.Event()
        self.hook_before_body: list[bool] = []


def slow_body_app(peer: Peer) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(MODEL)
        sized = scope["path"] == "/sized"
        headers = [(b"content-length", str(PARTS * 4).encode())] if sized else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # the client's hook tells the peer it ran (requests runs it once the headers are in); a client that reads the
        # body before its hooks runs them only after this wait gives up
        peer.hook_before_body.append(await asyncio.to_thread(peer.hook_ran.wait, 5))
        for _ in range(PARTS):
            await asyncio.sleep(PAUSE)
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


@pytest.fixture(scope="module")
def peer() -> Peer:
    return Peer()


@pytest.fixture(scope="module")
def base(peer: Peer) -> Iterator[str]:
    before = aiwatch.timing._default_recorder
    app = aiwatch.instrument(slow_body_app(peer), metrics=Metrics(CollectorRegistry()), service="model")
    aiwatch.timing.set_default_recorder(before)  # instrument() made it the process's default: not past this module
    with uvicorn_in_thread(app) as (port, _):
        yield f"http://127.0.0.1:{port}"


def recorded(registry: CollectorRegistry, status: str = "200") -> tuple[float | None, float | None]:
    """The call's client time and network time (their sums)."""
    return (registry.get_sample_value("aiwatch_client_request_duration_seconds_sum", {
                "service": "gw", "peer": "model", "route": "__unmatched__", "status": status, "phase": ""}),
            registry.get_sample_value("aiwatch_network_duration_seconds_sum",
                                      {"service": "gw", "peer": "model", "phase": ""}))


@pytest.mark.parametrize("path", ["/sized", "/chunked"])
def test_elapsed_and_hooks_are_requests_own_and_the_call_ends_with_its_body(
        base: str, peer: Peer, registry: CollectorRegistry, path: str) -> None:
    peer.hook_ran.clear()
    peer.hook_before_body.clear()

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        peer.hook_ran.set()

    with aiwatch.client.instrument_requests(requests.Session(), service="gw", registry=registry) as session:
        response = session.get(f"{base}{path}", hooks={"response": hook})
    assert response.content == b"part" * PARTS
    assert peer.hook_before_body == [True]  # the hook ran before the body was read: before, only after it
    client, network = recorded(registry)
    assert client is not None and network is not None
    # the call is recorded at the body's end, which came PARTS pauses after the headers; Response.elapsed is the
    # time to the headers, as requests documents it (before, it was the call's whole time). Half the pauses leave
    # room for a sleep that ends early
    body_time = PARTS * PAUSE / 2
    assert client >= body_time
    assert client - response.elapsed.total_seconds() >= body_time
    server_total = parse_server_timing(response.headers["Server-Timing"])["total"]
    assert server_total > 0
    if path == "/sized":
        # a body of declared length: its transfer is network time (the server had it whole, as far as the client
        # can tell), so the network time is the call's time less the server's total
        assert network == pytest.approx(client - server_total, abs=1e-6)
        assert network >= body_time
    else:
        # a streamed body: the peer's report covers its time to the headers, the body's time is the peer's
        assert client - network - server_total >= body_time


def test_a_response_its_hook_fails_before_the_body_is_read_is_recorded_as_abandoned(
        base: str, peer: Peer, registry: CollectorRegistry) -> None:
    """A response hook that raises leaves the body unread (requests reads it after the hooks): the application
    dropped the response, recorded by the client's next call as an httpx response dropped unread is: 499."""
    peer.hook_ran.set()  # the peer sends its body without waiting

    def failing(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the hook failed")

    with aiwatch.client.instrument_requests(requests.Session(), service="gw", registry=registry) as session:
        with pytest.raises(RuntimeError, match="the hook failed"):
            session.get(f"{base}/sized", hooks={"response": failing})
        gc.collect()
        session.get(f"{base}/sized")  # its start records the dropped one
    assert recorded(registry, "499")[0] is not None and recorded(registry, "200")[0] is not None


class _CutShort(BaseHTTPRequestHandler):
    """Declares 100 bytes, sends 10 and closes the connection."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.send_header("Server-Timing", 'total;dur=1;desc="model"')
        self.end_headers()
        self.wfile.write(b"x" * 10)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_body_cut_short_is_recorded_with_the_error_requests_raises(registry: CollectorRegistry,
                                                                      exporter: Any, provider: Any) -> None:
    """The read that fails is requests', after the adapter returned: the call is recorded then, with the exception
    requests raises from it (as when the adapter read the body), and its span ends with it. It is labelled with the
    name the peer reported in the headers that did arrive, as httpx's is; before, the adapter dropped them and
    labelled the call with the peer's address."""
    with (handler_server(_CutShort) as base,
          aiwatch.client.instrument_requests(requests.Session(), service="gw", registry=registry,
                                             tracer_provider=provider) as session,
          pytest.raises(requests.exceptions.ChunkedEncodingError)):
        session.get(f"{base}/cut")
    assert recorded(registry, "ChunkedEncodingError")[0] is not None
    [span] = exporter.get_finished_spans()
    assert span.attributes["error.type"] == "ChunkedEncodingError"
