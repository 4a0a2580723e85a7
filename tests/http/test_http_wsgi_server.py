"""The WSGI middleware behind a real server (werkzeug's threaded server on loopback): what PEP 3333 lets an app do
that a test client does not show."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry
from werkzeug.serving import make_server

import aiwatch
from tests.servers import wait_until


@contextmanager
def serving(app: Any) -> Iterator[http.client.HTTPConnection]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        yield conn
    finally:
        conn.close()
        server.shutdown()
        thread.join(10)


def size(registry: CollectorRegistry, direction: str, method: str = "GET") -> tuple[float | None, float | None]:
    labels = {"service": "svc", "route": "__unmatched__", "method": method}
    return (registry.get_sample_value(f"aiwatch_{direction}_size_bytes_count", labels),
            registry.get_sample_value(f"aiwatch_{direction}_size_bytes_sum", labels))


def test_bytes_written_through_write_count_as_the_response(registry: CollectorRegistry) -> None:
    """PEP 3333's ``write()`` callable sends body bytes outside the iterable; before, a response written that way
    was recorded as 0 bytes."""
    def legacy(environ: Any, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Length", "13")])
        write(b"hello ")
        write(b"world")
        return [b"!!"]

    with serving(aiwatch.instrument(legacy, registry=registry, service="svc")) as conn:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"hello world!!")
    wait_until(lambda: size(registry, "response")[0] == 1, what="the request recorded")  # at close(), after the body
    assert size(registry, "response") == (1.0, 13.0)
