"""A real ``/metrics`` endpoint whose metrics move while a test reads them, and that a test can shut down."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, start_http_server

from aiwatch.metrics import Metrics


@contextmanager
def live_endpoint(feed: Callable[[Metrics], None]) -> Iterator[tuple[int, threading.Event]]:
    """Serve fresh metrics that ``feed`` moves ten times a second; yields the server's port and an event that stops
    the feed and shuts the server down (its target goes down)."""
    m = Metrics(CollectorRegistry())
    stop = threading.Event()

    def traffic() -> None:
        while not stop.wait(0.1):
            feed(m)

    feeder = threading.Thread(target=traffic, daemon=True)
    feeder.start()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=m.registry)
    down = threading.Event()

    def closer() -> None:
        down.wait()
        stop.set()
        server.shutdown()
        server.server_close()

    closing = threading.Thread(target=closer, daemon=True)
    closing.start()
    try:
        yield server.server_port, down
    finally:
        down.set()
        closing.join(5)
        feeder.join(5)
        thread.join(5)
