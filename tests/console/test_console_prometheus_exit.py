"""A process using a PrometheusSource exits when its script ends, even while a question's queries hang on a
Prometheus that never answers: the interpreter does not wait out the queries' timeout (it joins ThreadPoolExecutor's
workers, which the source's questions of several queries, and the console views' Prefetch, ran on)."""

from __future__ import annotations

from tests.servers import assert_exits_while_a_call_hangs

SCRIPT = """
import sys
import threading
from aiwatch.console import PrometheusSource

src = PrometheusSource(sys.argv[1], timeout=float(sys.argv[2]))
# a question of three queries (p50, p95, p99), asked off the main thread as the console's panels ask theirs
threading.Thread(target=src.latency_quantiles, args=(60.0,), daemon=True).start()
print("started", flush=True)
sys.stdin.readline()  # the test has a query's connection: the question is under way
print("script ends", flush=True)
"""


def test_the_process_exits_while_a_prometheus_query_hangs() -> None:
    assert_exits_while_a_call_hangs(SCRIPT, "", b"/api/v1/query_range")


PANEL_SCRIPT = """
import sys
import threading
from aiwatch.console import PrometheusSource
from aiwatch.console.pool import Prefetch

src = PrometheusSource(sys.argv[1], timeout=float(sys.argv[2]))


def view():  # a view asks its panels' questions on the Prefetch workers (Streamlit's script thread is a daemon)
    with Prefetch() as prefetch:
        prefetch(lambda: src.throughput(60.0))()


threading.Thread(target=view, daemon=True).start()
print("started", flush=True)
sys.stdin.readline()  # the test has the query's connection: a Prefetch worker is blocked in the source call
print("script ends", flush=True)
"""


def test_the_process_exits_while_a_panels_prefetched_question_hangs() -> None:
    assert_exits_while_a_call_hangs(PANEL_SCRIPT, "", b"/api/v1/query_range")
