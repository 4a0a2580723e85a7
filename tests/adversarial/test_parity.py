"""Parity: with and without aiwatch, an app answers every request identically (status, headers except
Server-Timing, body, and the exception it raises), for Hypothesis-generated requests and app behaviours: methods,
paths, headers, bodies, app exceptions before, during and after the response, streaming, empty bodies.

The apps are raw ASGI / WSGI callables driven by a generated plan (what to send, when to raise) and real FastAPI /
Flask apps; both echo what they received, so a request altered on its way in shows up in the body too.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from flask import Flask, Response, abort, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

import aiwatch

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PURGE",
                           "M-SEARCH", "get", "X" * 40])
PATH_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#")
PATHS = st.text(PATH_CHARS, max_size=60).map(lambda p: "/" + p).filter(lambda p: p != "/metrics")
HEADER_NAMES = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-"), min_size=1, max_size=20)
HEADER_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)
HEADERS = st.lists(st.tuples(st.one_of(HEADER_NAMES, st.sampled_from(
    ["traceparent", "tracestate", "baggage", "server-timing", "content-type", "x-forwarded-for"])), HEADER_VALUES),
    max_size=12)
BODIES = st.one_of(st.just(b""), st.binary(max_size=2048))


class AppError(Exception):
    pass


class AppBaseError(BaseException):
    pass


@dataclass(frozen=True)
class Plan:
    """What the generated app does: its status, headers and body chunks, and where it raises (if at all)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    chunks: tuple[bytes, ...]
    raise_at: int | None  # None: no exception; 0: before the response; k: after the k-th message
    error: type[BaseException]
    use_phase: bool


PLANS = st.builds(
    Plan, status=st.sampled_from([200, 201, 204, 301, 304, 400, 404, 418, 422, 499, 500, 503, 599]),
    headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6).map(tuple),
    chunks=st.lists(st.binary(max_size=300), max_size=5).map(tuple),
    raise_at=st.one_of(st.none(), st.integers(0, 6)), error=st.sampled_from([AppError, ValueError, AppBaseError]),
    use_phase=st.booleans())


def echo(method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """What the app saw of the request, as bytes: a request altered on its way in changes the response."""
    seen = repr((method, path, sorted(headers), hashlib.sha256(body).hexdigest()))
    return seen.encode()


def outcome(exc: BaseException | None) -> Any:
    return None if exc is None else (type(exc), exc.args)


# --- ASGI ---------------------------------------------------------------------------------------------------------
def plan_asgi_app(plan: Plan) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        messages: list[dict[str, Any]] = [{"type": "http.response.start", "status": plan.status,
                                           "headers": [(k.encode(), v.encode()) for k, v in plan.headers]}]
        chunks = [echo(scope["method"], scope["path"], headers, body), *plan.chunks]
        messages += [{"type": "http.response.body", "body": c, "more_body": i < len(chunks) - 1}
                     for i, c in enumerate(chunks)]
        for i, message in enumerate(messages):
            if plan.raise_at == i:
                raise plan.error(f"planned failure at message {i}")
            if plan.use_phase:
                with aiwatch.phase("inference"):
                    await send(message)
            else:
                await send(message)
        if plan.raise_at is not None and plan.raise_at >= len(messages):
            raise plan.error("planned failure after the response")

    return app


async def run_asgi(app: Any, method: str, path: str, headers: list[tuple[str, str]], body: bytes,
                   split: int) -> tuple[list[dict[str, Any]], Any]:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
             "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80)}
    parts = [body[:split], body[split:]] if 0 < split < len(body) else [body]
    incoming = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [(k, v) for k, v in message.get("headers", [])
                                              if k.lower() != b"server-timing"]}
        sent.append(dict(message))

    try:
        await app(scope, receive, send)
    except BaseException as exc:
        return sent, outcome(exc)
    return sent, None


@SETTINGS
@given(plan=PLANS, method=METHODS, path=PATHS, headers=HEADERS, body=BODIES, split=st.integers(0, 2048))
def test_raw_asgi_app_answers_identically(plan: Plan, method: str, path: str, headers: list[tuple[str, str]],
                                          body: bytes, split: int) -> None:
    bare = asyncio.run(run_asgi(plan_asgi_app(plan), method, path, headers, body, split))
    wrapped_app = aiwatch.instrument(plan_asgi_app(plan), registry=CollectorRegistry(), service="parity")
    wrapped = asyncio.run(run_asgi(wrapped_app, method, path, headers, body, split))
    assert wrapped == bare


def fastapi_app() -> FastAPI:
    api = FastAPI()

    @api.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    async def anything(path: str, mode: str = "json") -> Any:
        raise HTTPException(status_code=404) if path.startswith("nf") else HTTPException(status_code=418)

    @api.post("/echo/{item}")
    async def echo_body(item: str, payload: dict[str, Any]) -> dict[str, Any]:
        with aiwatch.phase("inference"):
            return {"item": item, "payload": payload}

    @api.get("/stream/{n}")
    async def stream(n: int) -> StreamingResponse:
        async def chunks() -> Any:
            for i in range(n % 5):
                yield f"chunk {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @api.get("/boom/{kind}")
    async def boom(kind: str) -> None:
        raise AppError(kind)

    return api


FASTAPI_PATHS = st.one_of(PATHS, st.builds(lambda s: f"/echo/{s}", st.text(st.sampled_from("abc123"), min_size=1)),
                          st.builds(lambda n: f"/stream/{n}", st.integers(0, 20)),
                          st.builds(lambda s: f"/boom/{s}", st.text(st.sampled_from("xyz"), min_size=1)))
JSON_BODIES = st.one_of(BODIES, st.dictionaries(st.text(max_size=5), st.integers(), max_size=4).map(
    lambda d: repr(d).replace("'", '"').encode()))


@SETTINGS
@given(method=METHODS, path=FASTAPI_PATHS, headers=HEADERS, body=JSON_BODIES)
def test_fastapi_app_answers_identically(method: str, path: str, headers: list[tuple[str, str]],
                                         body: bytes) -> None:
    bare = asyncio.run(run_asgi(fastapi_app(), method, path, headers, body, 0))
    wrapped_app = aiwatch.instrument(fastapi_app(), registry=CollectorRegistry(), service="parity")
    wrapped = asyncio.run(run_asgi(wrapped_app, method, path, headers, body, 0))
    assert wrapped == bare


# --- WSGI ---------------------------------------------------------------------------------------------------------
def plan_wsgi_app(plan: Plan) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        body = environ["wsgi.input"].read()
        headers = [(k[5:].lower().replace("_", "-"), v) for k, v in environ.items() if k.startswith("HTTP_")]
        chunks = [echo(environ["REQUEST_METHOD"], environ["PATH_INFO"], headers, body), *plan.chunks]
        if plan.raise_at == 0:
            raise plan.error("planned failure before the response")
        with aiwatch.phase("inference") if plan.use_phase else _nothing():
            start_response(f"{plan.status} X", list(plan.headers))

        def stream() -> Any:
            for i, chunk in enumerate(chunks, start=1):
                if plan.raise_at == i:
                    raise plan.error(f"planned failure at chunk {i}")
                yield chunk

        return stream()

    return app


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def run_wsgi(app: Any, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Any:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
                               "SERVER_NAME": "test", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                               "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(),
                               "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.multithread": False,
                               "wsgi.multiprocess": False, "wsgi.run_once": False, "CONTENT_LENGTH": str(len(body))}
    for k, v in headers:
        environ.setdefault("HTTP_" + k.upper().replace("-", "_"), v)
    started: list[Any] = []

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, [(k, v) for k, v in response_headers if k.lower() != "server-timing"]))
        return lambda data: None

    chunks: list[bytes] = []
    error = None
    try:
        result = app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except BaseException as exc:
        error = outcome(exc)
    return started, chunks, error


@SETTINGS
@given(plan=PLANS, method=METHODS, path=PATHS, headers=HEADERS, body=BODIES)
def test_raw_wsgi_app_answers_identically(plan: Plan, method: str, path: str, headers: list[tuple[str, str]],
                                          body: bytes) -> None:
    bare = run_wsgi(plan_wsgi_app(plan), method, path, headers, body)
    wrapped_app = aiwatch.instrument(plan_wsgi_app(plan), registry=CollectorRegistry(), service="parity")
    assert run_wsgi(wrapped_app, method, path, headers, body) == bare


def flask_app() -> Flask:
    app = Flask("parity")

    @app.route("/echo/<item>", methods=["GET", "POST", "PUT"])
    def echo_body(item: str) -> Any:
        with aiwatch.phase("inference"):
            return {"item": item, "length": len(request.get_data()), "method": request.method}

    @app.get("/stream/<int:n>")
    def stream(n: int) -> Response:
        return Response((f"chunk {i}\n" for i in range(n % 5)), mimetype="text/plain")

    @app.get("/boom/<kind>")
    def boom(kind: str) -> None:
        if kind.startswith("a"):
            abort(503)
        raise AppError(kind)

    return app


@SETTINGS
@given(method=METHODS, path=FASTAPI_PATHS, headers=HEADERS, body=BODIES)
def test_flask_app_answers_identically(method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> None:
    bare = run_wsgi(flask_app().wsgi_app, method, path, headers, body)
    instrumented = aiwatch.instrument(flask_app(), registry=CollectorRegistry(), service="parity")
    assert run_wsgi(instrumented.wsgi_app, method, path, headers, body) == bare
