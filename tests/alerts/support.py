"""Helpers of the alerting tests: the demo app under uvicorn, a webhook receiver, a bounded load generator."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.servers import free_port, http_get, python_app, python_env


@contextmanager
def demo_app(fake_gpu: bool = False) -> Iterator[str]:
    """Run tests/alerts/alerts_demo_app.py under uvicorn on loopback; yields ``host:port``."""
    port = free_port()
    env = python_env(AIWATCH_TEST_FAKE_GPU="1" if fake_gpu else "0")
    args = ["-m", "uvicorn", "tests.alerts.alerts_demo_app:app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log"]
    with python_app(args, f"http://127.0.0.1:{port}/healthz", env=env):
        yield f"127.0.0.1:{port}"


def control(target: str, **values: float) -> None:
    query = "&".join(f"{k}={v}" for k, v in values.items())
    status, body = http_get(f"http://{target}/control?{query}")
    assert status == 200, body


class WebhookReceiver:
    """Alertmanager webhook receiver on loopback: keeps every (path, payload) it was sent."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, alertname: str, status: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(path, alert) for every delivered alert named ``alertname`` (with ``status`` firing/resolved)."""
        with self._lock:
            return [(path, alert) for path, payload in self.received for alert in payload["alerts"]
                    if alert["labels"].get("alertname") == alertname and status in (None, alert["status"])]


class Load:
    """``workers`` threads each sending POST /predict back to back over keep-alive until stopped (bounded: at most
    ``workers`` requests in flight, loopback only)."""

    def __init__(self, target: str, workers: int = 4) -> None:
        host, port = target.split(":")
        self.host, self.port = host, int(port)
        self.stop_event = threading.Event()
        self.sent = 0
        self.failed = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        while not self.stop_event.is_set():
            try:
                conn.request("POST", "/predict", body=b"{}", headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                self.sent += 1
                if resp.status != 200:
                    self.failed += 1
            except (OSError, http.client.HTTPException):
                self.failed += 1
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        conn.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=15)
