"""The real servers the suite depends on start and answer (fails fast with the server's log when one cannot)."""

from __future__ import annotations

import socket

import pytest

from tests.servers import alertmanager, prometheus, redis_server

pytestmark = pytest.mark.slow


def test_prometheus_starts_and_scrapes_itself() -> None:
    with prometheus() as prom:
        target = prom.url.removeprefix("http://")
        assert prom.query("vector(1)")[0]["value"][1] == "1"
        assert target


def test_alertmanager_starts() -> None:
    with alertmanager("route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n") as url:
        assert url.startswith("http://127.0.0.1:")


def test_redis_starts() -> None:
    with redis_server() as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"SET k v\r\nGET k\r\n")
            assert b"v" in s.recv(64)
