"""A process using a ScrapeSource exits when its script ends, even while a scrape of an endpoint that never answers
is under way: the interpreter does not wait out the scrape's timeout (it joins ThreadPoolExecutor's workers)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from aiwatch.console.scrape import DaemonPool
from tests.servers import python_env

SCRAPE_TIMEOUT = 120.0
EXIT_WAIT = 60.0
"""How long the test waits for the exit: half the scrape's timeout, so a process that exits only when the scrape times
out fails, and far more than an exit takes."""

SCRIPT = """
import sys
from aiwatch.console import ScrapeSource

src = ScrapeSource([sys.argv[1]], interval=1.0, timeout=float(sys.argv[2]))
print("started", flush=True)
sys.stdin.readline()  # the test has the scrape's connection: a scrape is under way
if sys.argv[3] == "close":
    src.close()
print("script ends", flush=True)
"""


@pytest.fixture
def silent_endpoint() -> Iterator[socket.socket]:
    """A listening socket that accepts the scrape's connection and never answers it."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(30.0)
        yield server


@pytest.mark.parametrize("ending", ["close", "no close"])
def test_the_process_exits_while_a_scrape_hangs(silent_endpoint: socket.socket, ending: str) -> None:
    url = f"http://127.0.0.1:{silent_endpoint.getsockname()[1]}/metrics"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, url, str(SCRAPE_TIMEOUT), ending], env=python_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        conn, _ = silent_endpoint.accept()  # the scrape is under way, and gets no answer
        with conn:
            conn.settimeout(30.0)
            assert conn.recv(4096).startswith(b"GET /metrics")
            assert proc.stdin is not None
            proc.stdin.write("end\n")
            proc.stdin.flush()
            try:
                out, _ = proc.communicate(timeout=EXIT_WAIT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the process did not exit within {EXIT_WAIT:g} s of its script's end: it waits for the "
                            f"hung scrape ({SCRAPE_TIMEOUT:g} s timeout)")
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, out
    assert out.splitlines() == ["started", "script ends"], out


def test_the_daemon_pool_runs_calls_on_daemon_threads_and_reports_their_errors() -> None:
    pool = DaemonPool(2, "test-pool")
    seen: list[threading.Thread] = []
    done = pool.submit(lambda: seen.append(threading.current_thread()))

    def fail() -> None:
        raise ValueError("boom")

    failed = pool.submit(fail)
    assert done.result(timeout=30) is None
    assert seen[0].daemon and seen[0].name.startswith("test-pool_")
    assert isinstance(failed.exception(timeout=30), ValueError)
    pool.shutdown()


def test_shutdown_cancels_the_calls_not_started_and_refuses_new_ones() -> None:
    pool = DaemonPool(1, "test-pool")
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(30)

    running = pool.submit(hold)
    waiting = pool.submit(lambda: None)
    assert started.wait(30)
    pool.shutdown()
    assert waiting.cancelled()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)
    release.set()
    assert running.result(timeout=30) is None  # a call under way runs to its end
