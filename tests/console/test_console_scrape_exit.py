"""A process using a ScrapeSource exits when its script ends, even while a scrape of an endpoint that never answers
is under way: the interpreter does not wait out the scrape's timeout (it joins ThreadPoolExecutor's workers)."""

from __future__ import annotations

import threading

import pytest

from aiwatch.console.pool import DaemonPool
from tests.servers import assert_exits_while_a_call_hangs

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


@pytest.mark.parametrize("ending", ["close", "no close"])
def test_the_process_exits_while_a_scrape_hangs(ending: str) -> None:
    assert_exits_while_a_call_hangs(SCRIPT, "/metrics", b"GET /metrics", ending)


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
