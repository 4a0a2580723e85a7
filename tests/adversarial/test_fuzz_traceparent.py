"""Fuzzing trace-context headers: no ``traceparent`` / ``tracestate`` / ``baggage`` (any bytes, repeated, huge,
nearly valid) makes the middleware fail a request, for ASGI and WSGI, with real OpenTelemetry SDK tracing on. A valid
``traceparent`` is continued (the server span joins the caller's trace); an invalid one starts a new trace."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from aiwatch.middleware.asgi import AiwatchMiddleware
from aiwatch.middleware.wsgi import AiwatchWSGIMiddleware
from tests.spans import recording_provider

# W3C Trace Context, level 1: version "00" exactly 55 characters; a higher version may carry more after a "-".
VALID = re.compile(r"^(?!ff)([0-9a-f]{2})-(?!0{32})([0-9a-f]{32})-(?!0{16})([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")

hexes = st.text("0123456789abcdef", min_size=0, max_size=40)
near_valid = st.builds(
    lambda version, trace, parent, flags, tail: f"{version}-{trace}-{parent}-{flags}{tail}",
    st.sampled_from(["00", "01", "ff", "0", "000", "zz", "FF"]),
    st.one_of(st.text("0123456789abcdef", min_size=32, max_size=32), st.just("0" * 32), hexes,
              st.just("4BF92F3577B34DA6A3CE929D0E0E4736")),
    st.one_of(st.text("0123456789abcdef", min_size=16, max_size=16), st.just("0" * 16), hexes),
    st.sampled_from(["01", "00", "ff", "1", "xyz"]),
    st.sampled_from(["", "-", "-extra", " ", "\t", ",00-x"]))
header_bytes = st.one_of(near_valid.map(lambda s: s.encode("latin-1")), st.binary(max_size=300),
                         st.text(max_size=80).map(lambda s: s.encode("utf-8")),
                         st.sampled_from([b"", b"\x00", b"a" * 20_000, b"k=v," * 2000, b"=", b",,,", b"\xff\xfe"]))
headers = st.lists(st.tuples(st.sampled_from([b"traceparent", b"tracestate", b"baggage"]), header_bytes),
                   min_size=1, max_size=4)


def _check_trace(exporter: InMemorySpanExporter, sent: list[tuple[bytes, bytes]]) -> None:
    """The server span joins a valid parent's trace, or starts a new one for an invalid parent; a valid parent that
    was not sampled (its flags' sampled bit 0) makes none: the SDK's default sampler follows the parent's decision.
    Of repeated ``traceparent`` headers the first is the parent, the others ignored (docs/http.md), as OpenTelemetry's
    W3C propagator reads a repeated field."""
    spans = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    parents = [v for k, v in sent if k == b"traceparent"]
    match = VALID.match(parents[0].decode("latin-1").strip()) if parents else None
    # whitespace around the value is not part of it (OpenTelemetry's W3C propagator matches ^\s*...\s*$)
    continued = match is not None and (match.group(1) != "00" or not match.group(5))
    if continued and match is not None and not int(match.group(4), 16) & 1:
        assert spans == [], "a request whose valid parent was not sampled made a span"
        return
    assert len(spans) == 1, spans
    span = spans[0]
    if continued and match is not None:
        assert f"{span.context.trace_id:032x}" == match.group(2)
        assert span.parent is not None and f"{span.parent.span_id:016x}" == match.group(3)
    elif parents and match is None:
        assert span.parent is None or not span.parent.is_valid


async def _asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _asgi_call(app: Any, sent: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "", "headers": sent,
             "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80)}
    status, body = 0, b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            body += message.get("body", b"")

    await app(scope, receive, send)
    return status, body


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sent=headers)
@example(sent=[(b"traceparent", b"00-00000000000000000000000000000001-0000000000000001-00")])  # a parent not sampled
# found on Python 3.13: the first of two is a parent not sampled (the oracle took two headers for no parent)
@example(sent=[(b"traceparent", b"00-00000000000000000000000000000001-0000000000000001-00"), (b"traceparent", b"")])
@example(sent=[(b"traceparent", b"x"), (b"traceparent", b"00-00000000000000000000000000000001-0000000000000001-01")])
def test_asgi_never_fails_a_request_on_trace_headers(sent: list[tuple[bytes, bytes]]) -> None:
    exporter = InMemorySpanExporter()  # a fresh one per example: hypothesis runs many in one test
    provider = recording_provider(exporter)
    app = AiwatchMiddleware(_asgi_app, registry=CollectorRegistry(), service="svc", tracer_provider=provider)
    assert asyncio.run(_asgi_call(app, sent)) == (200, b"ok")
    _check_trace(exporter, sent)


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sent=headers)
@example(sent=[(b"traceparent", b"00-00000000000000000000000000000001-0000000000000001-00")])  # a parent not sampled
@example(sent=[(b"traceparent", b"00-00000000000000000000000000000001-0000000000000001-01,00-x")])  # a comma in one
def test_wsgi_never_fails_a_request_on_trace_headers(sent: list[tuple[bytes, bytes]]) -> None:
    exporter = InMemorySpanExporter()  # a fresh one per example: hypothesis runs many in one test
    provider = recording_provider(exporter)
    app = AiwatchWSGIMiddleware(_wsgi_app, registry=CollectorRegistry(), service="svc", tracer_provider=provider)
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/predict", "SERVER_NAME": "x",
                               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1"}
    for name, value in sent:  # a WSGI server joins repeated headers with ", " and decodes them as latin-1
        key = "HTTP_" + name.decode().upper()
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]}, {text}" if key in environ else text
    status: list[str] = []
    result = app(environ, lambda s, h, exc_info=None: status.append(s))
    try:
        body = b"".join(result)
    finally:
        result.close()  # as a WSGI server does: the request is recorded then
    assert (status, body) == (["200 OK"], b"ok")
    # the traceparent fields as the server joined them: one cannot tell two headers from one holding a comma, and the
    # first traceparent before a comma is the parent (docs/http.md: "the middleware takes the first traceparent")
    joined = environ.get("HTTP_TRACEPARENT")
    _check_trace(exporter, [(b"traceparent", joined.split(",")[0].encode("latin-1"))] if joined else [])
