"""Serving the metrics: ``/metrics`` as an ASGI app, a WSGI app, or a standalone HTTP server.

Prometheus text or OpenMetrics is chosen by content negotiation (the ``Accept`` header), as prometheus_client does;
exemplars (trace ids on latency histograms) appear only in OpenMetrics. When ``PROMETHEUS_MULTIPROC_DIR`` is set
(gunicorn with several workers), the apps serve the merged view of every worker process.
"""

from __future__ import annotations

from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as _multiprocess

from aiwatch.env import MULTIPROC_DIR


def multiprocess_enabled() -> bool:
    """Whether prometheus_client multiprocess mode is on (``PROMETHEUS_MULTIPROC_DIR`` is set)."""
    return bool(MULTIPROC_DIR.raw())


def serving_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry to expose: in multiprocess mode a fresh one collecting every worker's files."""
    if multiprocess_enabled():
        merged = CollectorRegistry()
        _multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged
    return registry if registry is not None else prometheus_client.REGISTRY


def make_asgi_app(registry: CollectorRegistry | None = None) -> Any:
    """An ASGI app serving the metrics of ``registry`` (default: the global registry)."""
    return prometheus_client.make_asgi_app(serving_registry(registry))


def make_wsgi_app(registry: CollectorRegistry | None = None) -> Any:
    """A WSGI app serving the metrics of ``registry`` (default: the global registry)."""
    return prometheus_client.make_wsgi_app(serving_registry(registry))


def start_http_server(port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None) -> Any:
    """Serve the metrics on ``addr:port`` from a daemon thread; returns (server, thread)."""
    return prometheus_client.start_http_server(port, addr=addr, registry=serving_registry(registry))
