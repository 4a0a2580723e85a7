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


def test_a_chunked_request_body_counts_as_the_app_reads_it(registry: CollectorRegistry) -> None:
    """A chunked upload declares no size (no ``CONTENT_LENGTH``; werkzeug's server dechunks it and sets
    ``wsgi.input_terminated``). docs/http.md says such a body is counted as the app reads it; before, the WSGI
    middleware recorded it as 0 bytes."""
    def upload(environ: Any, start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        data = stream.readline() + stream.read(3) + b"".join(stream)
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return [data]

    body = b"first line\n" + b"x" * 5000
    with serving(aiwatch.instrument(upload, registry=registry, service="svc")) as conn:
        conn.request("POST", "/upload", body=iter([body[:7], body[7:]]), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, body)
    wait_until(lambda: size(registry, "request", "POST")[0] == 1, what="the request recorded")
    assert size(registry, "request", "POST") == (1.0, float(len(body)))
