"""A process reading a window from Prometheus exits when its script ends, even while the window's queries hang on a
Prometheus that never answers: the interpreter does not wait out the queries' timeout (it joins the workers of a
ThreadPoolExecutor, which the queries once ran on)."""

from __future__ import annotations

from tests.servers import assert_exits_while_a_call_hangs

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


def test_the_process_exits_while_a_window_query_hangs() -> None:
    assert_exits_while_a_call_hangs(SCRIPT, "", b"/api/v1/query")
