"""Client-side integrations: time outgoing HTTP calls and measure the network time to each peer.

- httpx: :func:`instrument_httpx` (``httpx.Client`` / ``httpx.AsyncClient``), or the transports
  :class:`AiwatchTransport` / :class:`AiwatchAsyncTransport`;
- requests: :func:`instrument_requests` (a ``requests.Session``), or the adapter :class:`AiwatchHTTPAdapter`.

They record ``aiwatch_client_request_duration_seconds{service,peer,route,status}`` and
``aiwatch_network_duration_seconds{service,peer}`` = client time - the ``total`` the peer reported in its
``Server-Timing`` header, and inject W3C trace context. httpx and requests are imported only when their
integration is used (``pip install "aiwatch[http]"``).
"""

from __future__ import annotations

from typing import Any

from aiwatch._optional import lazy_attribute
from aiwatch.client._core import ROUTE_EXTENSION, UNMATCHED_ROUTE, ClientRecorder, ReportedNames, route

_LAZY = {
    "AiwatchTransport": "aiwatch.client.httpx_client",
    "AiwatchAsyncTransport": "aiwatch.client.httpx_client",
    "instrument_httpx": "aiwatch.client.httpx_client",
    "AiwatchHTTPAdapter": "aiwatch.client.requests_client",
    "instrument_requests": "aiwatch.client.requests_client",
}

__all__ = ["ROUTE_EXTENSION", "UNMATCHED_ROUTE", "AiwatchAsyncTransport", "AiwatchHTTPAdapter", "AiwatchTransport",
           "ClientRecorder", "ReportedNames", "instrument_httpx", "instrument_requests", "route"]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, globals(), _LAZY, name)
