"""The ``Server-Timing`` response header is at most ``MAX_LENGTH`` characters behind ASGI and WSGI, as the gRPC
trailer is: proxies refuse a response whose headers pass their buffer (nginx: 502 "upstream sent too big header" past
its 4 KiB ``proxy_buffer_size``), so an app opening many phases, or phases named from its traffic, made aiwatch break
the app's responses. Phase entries past the cap are left out, the ``overhead`` and ``total`` entries kept (the
overhead still the time outside every phase, the left-out ones included), and the cut counted."""

from __future__ import annotations

import asyncio
import http.client
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch.middleware._common import HEADER_COMPONENT
from aiwatch.servertiming import MAX_DESC, MAX_LENGTH, parse
from tests.hostile_timing import PHASES, SERVICES
from tests.http.test_http_wsgi_server import serving
from tests.servers import uvicorn_in_thread, wait_until

MANY = 500
#: what each of the many phases records: 500 of them add up to 50 ms
EACH = 0.0001
#: the app sleeps this long, so that the request's total is at least this and its overhead is no clamped 0
SLEEP = 0.08
FEW = ("features", "inference", "render")


def long_name(i: int) -> str:
    return f"step{i:03d}_" + "x" * 60


def open_phases(path: str) -> None:
    """What both apps do: ``/many`` records 500 phases with long names and sleeps; ``/few`` opens three phases."""
    if path == "/many":
        for i in range(MANY):
            aiwatch.record_phase(long_name(i), EACH)
        time.sleep(SLEEP)
    else:
        for name in FEW:
            with aiwatch.phase(name):
                pass


def cut_count(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": HEADER_COMPONENT}) or 0.0


def check_many(header: str) -> None:
    """At most the cap, parseable, the first phases kept in order, the overhead and total last and right."""
    assert len(header) <= MAX_LENGTH
    timing = parse(header)
    names = [entry.name for entry in timing.entries]
    assert names[-2:] == ["overhead", "total"]
    assert names[:-2] == [long_name(i) for i in range(len(names) - 2)] and len(names) > 2
    total, overhead = timing.total, timing.durations()["overhead"]
    assert total is not None and total >= SLEEP
    # the overhead is the time outside all 500 phases (each entry is rounded to a microsecond)
    assert overhead == pytest.approx(total - MANY * EACH, abs=2e-6)
    assert timing.service == "svc"


def check_few(header: str) -> None:
    timing = parse(header)
    assert [entry.name for entry in timing.entries] == [*FEW, "overhead", "total"]
    assert timing.service == "svc"


def get(conn: http.client.HTTPConnection, path: str) -> str:
    conn.request("GET", path)
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"ok")
    header = response.getheader("server-timing")
    assert header is not None
    return header


@contextmanager
def asgi_server(registry: CollectorRegistry) -> Iterator[http.client.HTTPConnection]:
    app = FastAPI()

    @app.get("/{which}")
    def endpoint(which: str) -> Any:
        from fastapi.responses import PlainTextResponse

        open_phases(f"/{which}")
        return PlainTextResponse("ok")

    with uvicorn_in_thread(aiwatch.instrument(app, registry=registry, service="svc")) as (port, _):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            yield conn
        finally:
            conn.close()


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    open_phases(environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


@contextmanager
def wsgi_server(registry: CollectorRegistry) -> Iterator[http.client.HTTPConnection]:
    with serving(aiwatch.instrument(wsgi_app, registry=registry, service="svc")) as conn:
        yield conn


@pytest.mark.parametrize("server", [asgi_server, wsgi_server], ids=["asgi-uvicorn", "wsgi-werkzeug"])
def test_a_header_of_500_long_phases_is_cut_to_the_cap_and_a_short_one_is_unchanged(
        registry: CollectorRegistry, server: Any) -> None:
    """Before, the 500 phases made a 37 KB header: past nginx's buffer, Node's and h11's 16 KiB limits."""
    with server(registry) as conn:
        check_few(get(conn, "/few"))
        check_many(get(conn, "/many"))
        check_few(get(conn, "/few"))
    wait_until(lambda: registry.get_sample_value(
        "aiwatch_request_duration_seconds_count",
        {"service": "svc", "route": "__unmatched__" if server is wsgi_server else "/{which}", "method": "GET",
         "status": "200", "traffic_class": "realtime"}) == 3, what="the three requests recorded")
    assert cut_count(registry) == 1  # the long one only, once


def test_a_cut_header_is_logged(registry: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="aiwatch"), wsgi_server(registry) as conn:
        get(conn, "/many")
    logged = [r.getMessage() for r in caplog.records if "server_timing_header" in r.getMessage()]
    # a cut is the cap at work: logged as what was left out, not as a failure ("failed and was skipped")
    assert len(logged) == 1 and logged[0].startswith(
        "aiwatch: server_timing_header capped: Server-Timing header over 1024 characters: "), logged
    assert logged[0].endswith("phase entries left out (the rest was sent)"), logged


async def header_of(app: Any) -> bytes:
    """The ``server-timing`` header ``app`` answers a GET with, as the server would send it."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "", "headers": [],
             "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80)}
    found: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            found.extend(value for name, value in message["headers"] if name == b"server-timing")

    await app(scope, receive, send)
    assert len(found) == 1
    return found[0]


@settings(max_examples=150, deadline=None)
@given(PHASES, SERVICES)
def test_any_phases_and_service_name_give_a_header_within_the_cap_that_parses(
        phases: list[tuple[str, float]], service: str) -> None:
    registry = CollectorRegistry()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for name, seconds in phases:
            aiwatch.record_phase(name, seconds)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    raw = asyncio.run(header_of(aiwatch.instrument(app, registry=registry, service=service)))
    assert len(raw) <= MAX_LENGTH  # in bytes, as proxies count
    header = raw.decode("latin-1")
    timing = parse(header)
    assert [entry.name for entry in timing.entries][-2:] == ["overhead", "total"]
    kept = "".join(c for c in service if c == "\t" or " " <= c <= "~" or "\x80" <= c <= "\xff")[:MAX_DESC]
    assert timing.service == (kept or None)
    sent = {entry.name: entry.seconds for entry in timing.entries[:-2]}
    assert set(sent) <= {name for name, _ in phases}
    for name, seconds in phases:
        if name in sent:
            assert sent[name] == pytest.approx(seconds, abs=1e-6, rel=1e-9)
        else:  # left out only when it would not fit
            assert len(header) + len(f"{name};dur={seconds * 1000.0:.3f}, ") > MAX_LENGTH
    assert cut_count(registry) == (1 if len(sent) < len(phases) else 0)


def test_a_second_start_response_with_exc_info_counts_the_cut_once(registry: CollectorRegistry) -> None:
    """PEP 3333 lets an app call ``start_response`` again with ``exc_info`` before the body is sent, to answer an
    error instead: the header is built again for the new headers, but it is one response, its cut counted once
    (before: twice)."""
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        open_phases("/many")
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("render failed after start_response")
        except RuntimeError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain"), ("Content-Length", "5")],
                           sys.exc_info())
        return [b"error"]

    with serving(aiwatch.instrument(app, registry=registry, service="svc")) as conn:
        conn.request("GET", "/many")
        response = conn.getresponse()
        assert (response.status, response.read()) == (500, b"error")
        header = response.getheader("server-timing")
    assert header is not None
    check_many(header)
    wait_until(lambda: registry.get_sample_value(
        "aiwatch_request_duration_seconds_count",
        {"service": "svc", "route": "__unmatched__", "method": "GET", "status": "500",
         "traffic_class": "realtime"}) == 1, what="the request recorded")
    assert cut_count(registry) == 1
