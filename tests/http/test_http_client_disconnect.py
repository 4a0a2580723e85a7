"""A client that goes away: when the server's ``send`` raises, the request is recorded as 499 (the client closed
the request), not as a 500 against the availability SLO, and the exception reaches the app and the server as it
was. The committed rules' error selector does not count 499 (tests/alerts/promtool/disconnect_test.yml proves it
with promtool)."""

from __future__ import annotations

import asyncio
import gc
import http.client
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

import aiwatch
from aiwatch.metrics import Metrics
from aiwatch.middleware._common import CLIENT_CLOSED_STATUS
from aiwatch.rules import RulesConfig
from tests.servers import hypercorn_in_thread, uvicorn_in_thread, wait_until


class ClientGone(OSError):
    pass


def statuses(metrics: Metrics) -> dict[str, float]:
    out = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == "aiwatch_request_duration_seconds_count":
                out[s.labels["status"]] = s.value
    return out


def gone_on(message_index: int) -> Any:
    """A server ``send`` that raises on its ``message_index``-th message, as servers do once the client left."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        if len(sent) == message_index:
            raise ClientGone("connection reset by peer")
        sent.append(message)

    return send


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


SCOPE = {"type": "http", "method": "GET", "path": "/stream", "headers": [], "query_string": b"", "root_path": ""}


async def streaming_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for chunk in (b"a", b"b"):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


@pytest.mark.parametrize("fails_on", [0, 1, 3], ids=["response start", "first chunk", "last chunk"])
async def test_send_raising_is_499_and_the_exception_passes_through(metrics: Metrics, fails_on: int) -> None:
    app = aiwatch.instrument(streaming_app, metrics=metrics, service="svc")
    with pytest.raises(ClientGone, match="connection reset by peer"):
        await app(dict(SCOPE), receive, gone_on(fails_on))
    assert statuses(metrics) == {CLIENT_CLOSED_STATUS: 1.0}
    assert metrics.registry.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}) == 0


async def test_an_app_that_swallows_the_send_failure_is_still_499(metrics: Metrics) -> None:
    async def careful_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await send({"type": "http.response.body", "body": b"x", "more_body": False})
        except OSError:
            return

    app = aiwatch.instrument(careful_app, metrics=metrics, service="svc")
    await app(dict(SCOPE), receive, gone_on(1))
    assert statuses(metrics) == {CLIENT_CLOSED_STATUS: 1.0}


def receive_until(event: asyncio.Event) -> Any:
    """A server's ``receive``: the request, then ``http.disconnect`` once ``event`` is set."""
    request_read = False

    async def receive() -> dict[str, Any]:
        nonlocal request_read
        if not request_read:
            request_read = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await event.wait()
        return {"type": "http.disconnect"}

    return receive


def receive_then_gone() -> Any:
    """A server's ``receive`` that hands over the request, then says the client left (``http.disconnect``)."""
    gone = asyncio.Event()
    gone.set()
    return receive_until(gone)


async def sent_anyway(message: dict[str, Any]) -> None:
    """A server ``send`` that drops what the app sends once the client left, without raising: ASGI specs before 2.4
    allow it, and uvicorn's HTTP/2 (spec 2.3) and Hypercorn (2.1) do so after a RST_STREAM."""


async def test_a_disconnect_received_before_the_response_ended_is_499(metrics: Metrics) -> None:
    """The client left mid-stream and the server's send did not raise: the app heard of it from ``receive`` (as
    Starlette's StreamingResponse listens for it) and ended its response, or went on to send into the void. Either
    way the client did not get the response whole. Before, this was recorded with the status the response began
    with (200)."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "http.request"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        assert (await receive())["type"] == "http.disconnect"
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    await aiwatch.instrument(app, metrics=metrics, service="svc")(dict(SCOPE), receive_then_gone(), sent_anyway)
    assert statuses(metrics) == {CLIENT_CLOSED_STATUS: 1.0}
    assert metrics.registry.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}) == 0


async def test_a_disconnect_received_after_the_response_ended_keeps_its_status(metrics: Metrics) -> None:
    """Servers answer ``receive`` with ``http.disconnect`` once the response is complete too: the response was
    delivered, and keeps its status."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "http.request"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done", "more_body": False})
        assert (await receive())["type"] == "http.disconnect"

    await aiwatch.instrument(app, metrics=metrics, service="svc")(dict(SCOPE), receive_then_gone(), sent_anyway)
    assert statuses(metrics) == {"200": 1.0}


#: a request to /stream from a server of ASGI spec 2.1 (Hypercorn's): Starlette's StreamingResponse listens for
#: ``http.disconnect`` while it streams
STREAM_SCOPE = {**SCOPE, "path": "/stream", "raw_path": b"/stream", "asgi": {"version": "3.0", "spec_version": "2.1"}}


def starlette_streaming_app(metrics: Metrics, pause: bool) -> Any:
    """A Starlette app streaming three chunks from /stream (``pause``: yielding to the loop after each)."""
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"y"
            if pause:
                await asyncio.sleep(0)

    async def endpoint(request: Any) -> StreamingResponse:
        return StreamingResponse(chunks())

    return aiwatch.instrument(Starlette(routes=[Route("/stream", endpoint)]), metrics=metrics, service="svc")


async def test_a_last_send_cancelled_once_the_server_said_the_response_ended_keeps_its_status(
        metrics: Metrics) -> None:
    """Starlette's StreamingResponse, on a server of ASGI spec < 2.4, listens for ``http.disconnect`` while it
    streams and cancels its sending when it hears one. Hypercorn says it from inside the send of the last body,
    once the response is complete, and awaits more of its own work before that send returns; so the send is
    cancelled with the response delivered: before, recorded as a 499 for every such response whose listener ran
    first (half of them over Hypercorn's HTTP/2)."""
    complete = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            complete.set()
            for _ in range(3):  # the stream closed, the connection told, the access log written
                await asyncio.sleep(0)

    await starlette_streaming_app(metrics, pause=False)(dict(STREAM_SCOPE), receive_until(complete), send)
    assert statuses(metrics) == {"200": 1.0}
    assert metrics.registry.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}) == 0


async def test_a_disconnect_heard_before_the_last_send_is_still_499(metrics: Metrics) -> None:
    """The counterpart: the client left mid-stream, heard before the app sent its last body (which the server
    then dropped without raising)."""
    gone = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message.get("more_body"):
            gone.set()  # the client reset the stream after the first chunk
            await asyncio.sleep(0)

    await starlette_streaming_app(metrics, pause=True)(dict(STREAM_SCOPE), receive_until(gone), send)
    assert statuses(metrics) == {CLIENT_CLOSED_STATUS: 1.0}


CHUNKED_SCOPE = {**SCOPE, "method": "POST", "headers": [(b"transfer-encoding", b"chunked")]}


@pytest.mark.parametrize("scope", [SCOPE, CHUNKED_SCOPE], ids=["sized", "chunked"])
async def test_a_receive_message_that_is_no_mapping_reaches_the_app_and_is_counted(metrics: Metrics,
                                                                                    scope: dict[str, Any]) -> None:
    """A broken server's ``receive`` returning something that is no message: aiwatch's look at it fails, is counted
    under ``metrics``, and the app gets the object as it came (its to handle); the request is recorded. With a
    chunked body (counted as the app reads it), the AttributeError of the count reached the app before."""
    odd = ["not", "a", "message"]
    seen: list[Any] = []

    async def receive() -> Any:
        return odd

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})

    async def send(message: dict[str, Any]) -> None:
        pass

    await aiwatch.instrument(app, metrics=metrics, service="svc")(dict(scope), receive, send)
    assert seen == [odd] and seen[0] is odd
    assert statuses(metrics) == {"200": 1.0}
    assert metrics.registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "metrics"}) == 1


async def test_an_app_exception_without_a_disconnect_is_still_500(metrics: Metrics) -> None:
    async def failing_app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    app = aiwatch.instrument(failing_app, metrics=metrics, service="svc")
    with pytest.raises(RuntimeError, match="boom"):
        await app(dict(SCOPE), receive, gone_on(99))
    assert statuses(metrics) == {"500": 1.0}


def test_the_default_error_selector_does_not_count_499() -> None:
    error_status = RulesConfig().slo.error_status
    assert not re.fullmatch(error_status, CLIENT_CLOSED_STATUS)  # PromQL's =~ is anchored at both ends
    assert re.fullmatch(error_status, "500") and re.fullmatch(error_status, "503")


async def body_before_start(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.body", "body": b"x", "more_body": False})


async def more_than_its_content_length(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"hello", "more_body": False})


@pytest.mark.parametrize("app", [body_before_start, more_than_its_content_length])
def test_a_message_the_server_refuses_is_500_not_499(metrics: Metrics, app: Any) -> None:
    """uvicorn refuses the app's message (RuntimeError, h11's LocalProtocolError) with the client still there: it
    answers 500 or cuts the response short. Before, every exception from ``send`` was recorded as 499, the client's
    doing, so the availability SLO never saw these server failures; the ASGI spec has servers raise an OSError
    when the client is gone, and only that is 499 now."""
    with uvicorn_in_thread(aiwatch.instrument(app, metrics=metrics, service="svc")) as (port, _):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        response = conn.getresponse()
        if app is body_before_start:
            assert (response.status, response.read()) == (500, b"Internal Server Error")
        else:
            with pytest.raises(http.client.IncompleteRead):
                response.read()
        conn.close()
        wait_until(lambda: bool(statuses(metrics)), what="the request recorded")
    assert statuses(metrics) == {"500": 1.0}


async def _generate() -> AsyncIterator[bytes]:
    with aiwatch.phase("generate"):
        for _ in range(100_000):
            yield b"token "


async def _paced_stream(request: Any) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        async for token in _generate():  # left suspended, never closed, when the client leaves (the sleep below)
            await asyncio.sleep(0.01)
            yield token

    return StreamingResponse(body())


def test_a_phase_in_an_async_generator_dropped_when_the_client_left_ends_quietly_and_is_counted(
        metrics: Metrics, provider: Any, exporter: Any, caplog: pytest.LogCaptureFixture) -> None:
    """An LLM-style stream: the response's body iterates a generator that holds the phase "generate"; the client
    leaves, Starlette cancels the body, and the generator, dropped without ``aclose()``, is closed later by asyncio in
    a task of its own, in a copy of a context. Before, the phase's end there failed to detach its span (OpenTelemetry
    logged "Failed to detach context" with a traceback) and its time went into a request already recorded, unseen
    (or, where that copy had no request, into the background histogram with the "run_in_executor?" warning). Now its
    span ends, its time is in no histogram, and aiwatch counts it (component "phase") with what to do."""
    app = Starlette(routes=[Route("/stream", _paced_stream)])
    with uvicorn_in_thread(aiwatch.instrument(app, metrics=metrics, service="svc", tracer_provider=provider)) as (
            port, _):
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(0.1)
        client.close()

        def closed() -> bool:
            gc.collect()
            return metrics.registry.get_sample_value("aiwatch_instrumentation_errors_total",
                                                     {"component": "phase"}) == 1.0

        wait_until(closed, what="the dropped generator closed by asyncio")
    assert statuses(metrics) == {CLIENT_CLOSED_STATUS: 1.0}
    assert "Failed to detach context" not in caplog.text
    assert "ended after its request was recorded" in caplog.text
    assert metrics.registry.get_sample_value("aiwatch_phase_duration_seconds_count", {
        "service": "svc", "model": "", "model_version": "", "phase": "generate"}) is None
    assert metrics.registry.get_sample_value("aiwatch_background_phase_duration_seconds_count", {
        "service": "svc", "model": "", "phase": "generate"}) is None
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"GET /stream", "generate"}
    assert spans["generate"].parent.span_id == spans["GET /stream"].context.span_id


@contextmanager
def served(server: str, app: Any) -> Iterator[int]:
    if server == "hypercorn":
        with hypercorn_in_thread(app) as port:
            yield port
    else:
        with uvicorn_in_thread(app, http=server.partition("-")[2]) as (port, _):
            yield port


@pytest.mark.parametrize("server", ["uvicorn-h11", "uvicorn-httptools", "hypercorn"])
def test_a_client_gone_before_the_response_began_is_recorded_with_the_apps_status(metrics: Metrics,
                                                                                   server: str) -> None:
    """A LIMIT, pinned (docs/http.md, "status"): the client leaves while the app works, before it sends anything (a
    gateway's client timeout), and the app does not read ``receive`` again (a plain endpoint never does). The
    server knows (it says ``http.disconnect`` to whoever asks), but its ``send`` then drops the response without
    raising: uvicorn 0.55 (h11, httptools: ASGI spec 2.3, ``if self.disconnected: return``) and Hypercorn 0.18
    (spec 2.1; its write to the closed socket is swallowed). aiwatch learns nothing, so the request is recorded
    with the app's 200, not 499. If this fails with a 499, the server now raises an ``OSError`` there, as spec 2.4
    asks: the limit is gone for it, and docs/http.md should say so."""
    async def slow(request: Any) -> PlainTextResponse:
        return PlainTextResponse("late")

    instrumented = aiwatch.instrument(Starlette(routes=[Route("/slow", slow)]), metrics=metrics, service="svc")
    send_raised: list[list[BaseException]] = []

    async def request_only() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def after_the_client_left(scope: Any, receive: Any, send: Any) -> None:
        """In front of aiwatch: waits until the server says the client left (so the app's response comes after
        it), then runs the app as one that does not read ``receive``, noting whether the server's send raised."""
        if scope["type"] != "http":
            await instrumented(scope, receive, send)
            return
        while (await receive())["type"] != "http.disconnect":
            pass
        raised: list[BaseException] = []
        send_raised.append(raised)

        async def noting_send(message: Any) -> None:
            try:
                await send(message)
            except BaseException as exc:
                raised.append(exc)
                raise

        await instrumented(scope, request_only, noting_send)

    with served(server, after_the_client_left) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        wait_until(lambda: statuses(metrics) != {}, what="the request recorded")
    assert statuses(metrics) == {"200": 1.0}  # not 499: see the docstring
    assert send_raised == [[]]  # the server dropped the response silently


@pytest.mark.parametrize("server", ["uvicorn-h11", "uvicorn-httptools", "hypercorn"])
def test_an_app_that_asks_whether_its_client_left_has_it_recorded_as_499(metrics: Metrics, server: str) -> None:
    """The way round the limit above that docs/http.md gives: an endpoint that asks Starlette whether its client is
    still there (``await request.is_disconnected()``, after long work and before answering) reads ``receive``, so
    aiwatch hears the server's ``http.disconnect`` too and records the request as 499."""
    client_left = threading.Event()

    async def slow(request: Any) -> PlainTextResponse:
        while not client_left.is_set():  # the work, outlasting the client
            await asyncio.sleep(0.01)
        while not await request.is_disconnected():  # the server may take a moment to see the socket closed
            await asyncio.sleep(0.01)
        return PlainTextResponse("late")

    app = aiwatch.instrument(Starlette(routes=[Route("/slow", slow)]), metrics=metrics, service="svc")
    with served(server, app) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
        client_left.set()
        wait_until(lambda: statuses(metrics) != {}, what="the request recorded")
    assert statuses(metrics) == {CLIENT_CLOSED_STATUS: 1.0}
