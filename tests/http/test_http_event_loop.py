"""Event loop delay on a real uvicorn server: a handler that blocks the loop shows as a delay, and the sampler ends
with the server's loop (lifespan on, shutdown not held up, no warning); on gunicorn with two uvicorn workers merged
in one /metrics, the worker whose loop is blocked shows in the merged last-sample timestamp."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from aiwatch.exposition import make_asgi_app
from aiwatch.metrics import Metrics
from aiwatch.middleware.asgi import AiwatchMiddleware
from tests.http.test_http_e2e import scrape, value
from tests.servers import free_port, http_get, python_app, python_env, require_module, uvicorn_in_thread, wait_until
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
        wait_until(lambda: count(metrics) >= 1, 30, what="a first sample")  # how soon depends on the machine's load
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


#: How long a /stall request blocks its worker's loop (tests/console/test_console_worst_worker_e2e.py).
STALL_SECONDS = 6.0


async def _blocking_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/block":
        Path(os.environ["AIWATCH_TEST_BLOCKED"]).write_text(str(os.getpid()))
        time.sleep(30)  # the worker's loop blocked for the rest of the test
    elif scope["type"] == "http" and scope["path"] == "/stall":
        await asyncio.sleep(1.0)  # the worker's sampler (started by this request) takes samples first
        Path(os.environ["AIWATCH_TEST_BLOCKED"]).write_text(str(os.getpid()))
        time.sleep(STALL_SECONDS)  # a stall that ends: CPU-bound work on the loop, then the loop runs on
    await app(scope, receive, send)


async def _metrics_or_blocking_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/metrics":
        await _exposition(scope, receive, send)
    else:
        await _blocking_app(scope, receive, send)


_exposition = make_asgi_app()
#: served by gunicorn in the test below: every request on the middleware (a scrape starts its worker's sampler)
merged_app = AiwatchMiddleware(_metrics_or_blocking_app, service="svc")
STAMP = "aiwatch_event_loop_last_sample_timestamp_seconds"


def last_samples(directory: Path) -> dict[int, float]:
    """Each live worker's own last-sample time of service "svc", from its sample file (what the runbook's snippet
    reads to find the stuck worker)."""
    found = {}
    for path in glob.glob(str(directory / "gauge_livemin_*.db")):
        for family in MultiProcessCollector.merge([path]):  # type: ignore[no-untyped-call]
            for sample in family.samples:
                if sample.name == STAMP and sample.labels.get("service") == "svc":
                    found[int(path.rsplit("_", 1)[1].removesuffix(".db"))] = sample.value
    return found


def test_a_gunicorn_worker_whose_loop_is_blocked_shows_in_the_merged_last_sample_timestamp(tmp_path: Path) -> None:
    """Two uvicorn workers, one /metrics merging both: one worker's loop blocked for good. The merged time watched
    keeps growing (the other worker samples on), and the merged last-sample timestamp is the blocked worker's,
    from before it blocked (livemin), while the other worker's own is fresh."""
    require_module("gunicorn")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    multiproc, blocked = tmp_path / "multiproc", tmp_path / "blocked"
    multiproc.mkdir()
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(multiproc), AIWATCH_EVENT_LOOP_INTERVAL="0.05",
                     AIWATCH_TEST_BLOCKED=str(blocked))
    # --timeout: gunicorn kills a worker whose loop misses its heartbeat that long; --graceful-timeout: the blocked
    # one is killed at the end rather than waited for
    with python_app(["-m", "gunicorn", "-w", "2", "-k", "uvicorn.workers.UvicornWorker", "--timeout", "120",
                     "--graceful-timeout", "1", "-b", f"127.0.0.1:{port}", "-c", "python:aiwatch.gunicorn",
                     "tests.http.test_http_event_loop:merged_app"], f"{base}/metrics", env=env):
        def block() -> None:
            with contextlib.suppress(OSError):  # the worker is killed at the end, the request never answered
                http_get(f"{base}/block", 40.0)

        threading.Thread(target=block, daemon=True).start()
        wait_until(blocked.exists, 20, what="the /block request on a worker")
        stuck_pid = int(blocked.read_text())
        since = time.time()  # the blocked worker took its last sample before this
        first = scrape(f"{base}/metrics")  # served by the other worker: its first request starts its sampler too
        wait_until(lambda: (value(scrape(f"{base}/metrics"), "aiwatch_event_loop_sampled_seconds_total",
                                  service="svc") or 0) > (value(first, "aiwatch_event_loop_sampled_seconds_total",
                                                                service="svc") or 0) + 0.5,
                   20, what="the merged time watched growing by the other worker's samples")
        merged = value(scrape(f"{base}/metrics"), STAMP, service="svc")
        own = last_samples(multiproc)
    assert merged is not None and 0 < merged < since  # the stalest: the blocked worker's
    assert own[stuck_pid] == merged
    others = [stamp for pid, stamp in own.items() if pid != stuck_pid]
    assert others and min(others) > since  # the other worker's is fresh


def test_an_exited_uvicorn_workers_last_sample_timestamp_leaves_the_merged_one(tmp_path: Path) -> None:
    """uvicorn --workers never calls mark_process_dead: a worker that exited (killed here; recycled by
    --limit-max-requests alike) left its last-sample timestamp in the livemin for good, aging as if its loop were
    stuck. /metrics drops the live gauges of workers no longer running before merging: the merged stamp goes fresh."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(multiproc), AIWATCH_EVENT_LOOP_INTERVAL="0.05")

    def stamp_files() -> set[int]:
        return {int(p.name.rsplit("_", 1)[1].removesuffix(".db")) for p in multiproc.glob("gauge_livemin_*.db")}

    with python_app(["-m", "uvicorn", "tests.http.test_http_event_loop:merged_app", "--workers", "2", "--port",
                     str(port), "--log-level", "warning"], f"{base}/metrics", env=env):
        def both_sampling() -> bool:
            http_get(f"{base}/metrics")
            return len(stamp_files()) >= 2

        wait_until(both_sampling, 30, what="both workers sampling")
        victim = min(stamp_files())
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        wait_until(lambda: not _alive(victim), 10, what="the killed worker reaped")
        merged = value(scrape(f"{base}/metrics"), STAMP, service="svc")
        left = stamp_files()
    assert merged is not None and merged > killed  # the dead worker's, from before it was killed, left the min
    assert victim not in left


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_uvicorn_workers_recycled_by_limit_max_requests_are_folded_at_scrape_and_every_request_counted_once(
        tmp_path: Path) -> None:
    """uvicorn --workers has no exit hook: each worker recycled by --limit-max-requests (or crashed and respawned)
    left its counter, histogram and gauge files, and every scrape merged one more set until the next start. A
    scrape folds the files of the pids no longer running into the supervisor's archives: the directory keeps a set
    of files per live worker and one archive per kind, and the merged count stays every request sent."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    recycled = 6

    def served() -> float:
        while True:
            try:
                scraped = scrape(f"{base}/metrics")
            except ConnectionResetError:  # a scrape accepted by a worker at its limit is reset too: scraped again
                continue
            return sum(v for (name, labels), v in scraped.items()
                       if name == "aiwatch_request_duration_seconds_count" and ("service", "svc") in labels)

    with python_app(["-m", "uvicorn", "tests.http.test_http_event_loop:merged_app", "--workers", "2", "--port",
                     str(port), "--limit-max-requests", "5", "--log-level", "info"], f"{base}/metrics",
                    env=env) as proc:
        sent = 0
        while proc.log.read_text().count("] died") < recycled:  # the supervisor's line for each worker it respawns
            # while both workers are being replaced a request waits in the socket's backlog (a client that gave up
            # on it would not know whether it was served): no timeout but a long one. A worker reaching its limit
            # resets the connections it accepted and did not start serving: those are sent again
            try:
                assert http_get(f"{base}/ok", 60.0)[0] == 200
            except ConnectionResetError:
                continue
            sent += 1
            time.sleep(0.02)  # uvicorn checks the limit at its loop's tick: requests in a burst overrun it
        wait_until(lambda: served() == sent, 30, what=f"{sent} requests in the merged /metrics")
        supervisor = proc.proc.pid
        for _ in range(4):  # scrapes recycle workers too; each one sees every request once
            assert served() == sent
        counters = sorted(p.name for p in multiproc.glob("counter_*.db"))
        histograms = sorted(p.name for p in multiproc.glob("histogram_*.db"))
        assert proc.proc.poll() is None
    # 2 live workers' files (a third while one is being replaced) and the supervisor's archive
    assert len(counters) <= 4 and f"counter_archive-{supervisor}.db" in counters, counters
    assert len(histograms) <= 4, histograms
