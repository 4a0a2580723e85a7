"""A process reading a window from Prometheus exits when its script ends, even while the window's queries hang on a
Prometheus that never answers: the interpreter does not wait out the queries' timeout (it joins the workers of a
ThreadPoolExecutor, which the queries once ran on)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.servers import python_env

QUERY_TIMEOUT = 120.0
EXIT_WAIT = 60.0
"""How long the test waits for the exit: half the queries' timeout, so a process that exits only when they time out
fails, and far more than an exit takes."""

SCRIPT = """
import sys
import threading
from aiwatch.diagnose.sources import prometheus_totals
from aiwatch.promapi import PrometheusAPI

api = PrometheusAPI(sys.argv[1], timeout=float(sys.argv[2]))
# a window's queries, read off the main thread as the console's diagnosis panel reads them
threading.Thread(target=prometheus_totals, args=(api, 1000.0, 1300.0), daemon=True).start()
print("started", flush=True)
sys.stdin.readline()  # the test has a query's connection: the window's reading is under way
print("script ends", flush=True)
"""


@pytest.fixture
def silent_prometheus() -> Iterator[socket.socket]:
    """A listening socket that accepts the queries' connections and never answers them."""
    with socket.create_server(("127.0.0.1", 0), backlog=32) as server:
        server.settimeout(30.0)
        yield server


def test_the_process_exits_while_a_window_query_hangs(silent_prometheus: socket.socket) -> None:
    url = f"http://127.0.0.1:{silent_prometheus.getsockname()[1]}"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, url, str(QUERY_TIMEOUT)], env=python_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        conn, _ = silent_prometheus.accept()  # a query is under way, and gets no answer
        with conn:
            conn.settimeout(30.0)
            assert b"/api/v1/query" in conn.recv(4096)
            assert proc.stdin is not None
            proc.stdin.write("end\n")
            proc.stdin.flush()
            try:
                out, _ = proc.communicate(timeout=EXIT_WAIT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the process did not exit within {EXIT_WAIT:g} s of its script's end: it waits for the "
                            f"hung queries ({QUERY_TIMEOUT:g} s timeout)")
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, out
    assert out.splitlines() == ["started", "script ends"], out
