"""Event loop delay on a real uvicorn server: a handler that blocks the loop shows as a delay, and the sampler ends
with the server's loop (lifespan on, shutdown not held up, no warning)."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from aiwatch.metrics import Metrics
from aiwatch.middleware.asgi import AiwatchMiddleware
from tests.servers import http_get, python_env, require_module, uvicorn_in_thread, wait_until
from tests.signals.test_event_loop import count, late

pytestmark = pytest.mark.slow


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["path"] == "/block":
        time.sleep(0.3)  # CPU-bound work on the loop's thread
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_blocked_uvicorn_loop_shows_in_the_delay_and_the_sampler_ends_with_the_server(
        metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_EVENT_LOOP_INTERVAL", "0.05")
    with uvicorn_in_thread(AiwatchMiddleware(app, metrics=metrics, service="svc"), lifespan="on") as (port, thread):
        assert http_get(f"http://127.0.0.1:{port}/")[0] == 200
        time.sleep(0.5)
        assert count(metrics) >= 1  # sampled (how promptly depends on the machine's load)
        assert http_get(f"http://127.0.0.1:{port}/block")[0] == 200
        wait_until(lambda: late(metrics, "0.2") >= 1, what="a delay over 0.2 s")
    assert not thread.is_alive()  # the server's shutdown was not held up
    ended = count(metrics)
    time.sleep(0.3)
    assert count(metrics) == ended  # the loop is closed: its sampler ended


def test_uvicorn_exits_cleanly_with_the_sampler_running() -> None:
    # a uvicorn process (on uvloop when installed, as in production) shut down as its signal handler does: it
    # ends, and -X dev -W error turn any warning about a pending task or callback, or an unclosed loop, into a failure
    require_module("uvicorn")
    code = """
import threading, urllib.request, uvicorn
from aiwatch.middleware.asgi import AiwatchMiddleware
from tests.http.test_http_event_loop import app
config = uvicorn.Config(AiwatchMiddleware(app, service="svc"), host="127.0.0.1", port=0, lifespan="on",
                        log_level="warning")
server = uvicorn.Server(config)
def stop_later():
    while not server.started:
        threading.Event().wait(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    urllib.request.urlopen(f"http://127.0.0.1:{port}/").read()
    threading.Event().wait(0.3)
    server.should_exit = True
threading.Thread(target=stop_later, daemon=True).start()
server.run()
from prometheus_client import REGISTRY
print("exited", REGISTRY.get_sample_value("aiwatch_event_loop_delay_seconds_count", {"service": "svc"}) >= 2)
"""
    done = subprocess.run([sys.executable, "-X", "dev", "-W", "error", "-c", code], capture_output=True, text=True,
                          timeout=60, env=python_env(AIWATCH_EVENT_LOOP_INTERVAL="0.05"))
    assert (done.returncode, done.stdout.strip()) == (0, "exited True"), done.stderr
    assert "Warning" not in done.stderr and "Task was destroyed" not in done.stderr, done.stderr
