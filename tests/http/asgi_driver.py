"""A minimal in-process ASGI client for unit tests: no network, every message visible."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    #: the headers of each http.response.trailers message (ASGI's HTTP trailers extension)
    trailers: list[dict[str, str]] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


async def call(app: Any, path: str, method: str = "GET", headers: Sequence[tuple[str, str]] = (),
               body: bytes = b"", root_path: str = "", query: str = "",
               extensions: dict[str, Any] | None = None) -> Response:
    """Run one HTTP request through ``app`` and collect the response. ``extensions``: the scope's, the ASGI
    extensions the server offers (``http.response.pathsend``: the driver sends the file as the body)."""
    response = Response()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
             "root_path": root_path, "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
             "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80)}
    if extensions is not None:
        scope["extensions"] = extensions
    sent = False
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # like a real server: the client stays connected until the response is done
            await done.wait()
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            response.headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            response.chunks.append(message.get("body", b""))
        elif message["type"] == "http.response.trailers":
            response.trailers.append({k.decode().lower(): v.decode() for k, v in message.get("headers", [])})
        elif message["type"] == "http.response.pathsend":
            with open(message["path"], "rb") as file:
                response.chunks.append(file.read())

    try:
        await app(scope, receive, send)
    finally:
        done.set()
    return response
