"""The embedded scraper of ``aiwatch console`` (no Prometheus) starts with the console, not at the first page view:
Streamlit runs the app's script only when a browser opens it, and the scrape source was made there, so the history
the console drew began when someone first looked, at the moment of an incident the minutes before it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest

from tests.servers import free_port, python_app, python_env, wait_until

EXPOSITION = b'aiwatch_requests_in_flight{service="api"} 1\n'


@contextmanager
def counted_metrics() -> Iterator[tuple[str, list[float]]]:
    """A ``/metrics`` endpoint that notes when it was scraped; yields its URL and those times."""
    scraped: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            scraped.append(time.time())
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(EXPOSITION)))
            self.end_headers()
            self.wfile.write(EXPOSITION)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics", scraped
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_the_console_scrapes_from_its_start_before_any_page_is_viewed() -> None:
    port = free_port()
    with counted_metrics() as (url, scraped), python_app(
            ["-m", "aiwatch", "console", "--scrape", url, "--port", str(port), "--interval", "0.5"],
            f"http://127.0.0.1:{port}/_stcore/health", timeout=60, env=python_env()):
        # no browser opens the console: before, nothing scraped the endpoint until one did
        wait_until(lambda: len(scraped) >= 3, 30, what="scrapes of the endpoint before any page view")


def test_every_session_gets_the_one_source_its_configuration_names() -> None:
    from aiwatch.console.config import ConsoleConfig, shared_source

    env = {"AIWATCH_CONSOLE_PROMETHEUS": "http://127.0.0.1:9"}
    first = shared_source(ConsoleConfig.from_env(env))
    assert shared_source(ConsoleConfig.from_env(dict(env))) is first
    assert shared_source(ConsoleConfig.from_env({**env, "AIWATCH_CONSOLE_WINDOW": "30"})) is not first


def test_a_string_start_is_refused_not_read_as_true() -> None:
    from aiwatch.console import ScrapeSource

    with pytest.raises(TypeError, match=r"^start must be True or False, got 'false' of type str$"):
        ScrapeSource(["http://127.0.0.1:9/metrics"], start="false")  # type: ignore[arg-type]
