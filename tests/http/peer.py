"""A real HTTP peer on loopback (stdlib server in a thread) that answers with a chosen Server-Timing header."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

from tests.servers import handler_server

#: path -> Server-Timing value the peer sends (None: no header)
TIMINGS: dict[str, str | None] = {
    "/ok": "inference;dur=1.5, total;dur=2.000",
    "/malformed": "total;dur=fast",
    "/huge": "total;dur=600000",  # claims 10 minutes of server time: more than any client could observe
    "/none": None,
    "/tiny": "total;dur=0.001",  # 1 µs of server time: every real call takes longer, so none is clamped
    "/named": 'inference;dur=1.5, total;dur=2.000;desc="inference"',  # an aiwatch server reports its service name
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(404 if path == "/missing" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        value = TIMINGS.get(path, TIMINGS["/ok"])
        if value is not None:
            self.send_header("Server-Timing", value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        """Reads the body, then answers as GET does."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def peer(handler: type[BaseHTTPRequestHandler] = _Handler) -> Iterator[str]:
    """Yields the peer's base URL, ``http://127.0.0.1:PORT``; ``handler`` answers its requests (default: the
    Server-Timing peer above)."""
    with handler_server(handler) as url:
        yield url
