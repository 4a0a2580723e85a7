"""gunicorn ``--preload``: the app is imported in the master, which makes its prediction log and drift monitor (and
starts their threads) before it forks the workers; the workers, which serve every request, must write the log's rows
and run the monitor's scheduled checks."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

from tests.http.test_http_e2e import scrape, value
from tests.servers import free_port, python_app, python_env, wait_until

pytestmark = pytest.mark.slow


def rows_written(directory: Path) -> int:
    """Rows in the completed Parquet files (a file still open has a hidden temporary name)."""
    return sum(pq.read_metadata(path).num_rows for path in directory.rglob("*.parquet"))


def preload_env(multiproc: Path | None = None, **extra: str) -> dict[str, str]:
    """The app's environment: multiprocess mode in ``multiproc`` (made here), or none at all (the variable unset,
    also under its lower-case name)."""
    env = python_env(**extra)
    if multiproc is not None:
        multiproc.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    return env


def gunicorn_preload(app: str, port: int, *options: str) -> list[str]:
    """gunicorn's command line: ``--preload`` with aiwatch.gunicorn's hooks, on ``port``, and ``options``."""
    return ["-m", "gunicorn", "--preload", *options, "-b", f"127.0.0.1:{port}", "-c", "python:aiwatch.gunicorn",
            app]


def test_preloaded_log_and_monitor_work_in_the_workers(tmp_path: Path) -> None:
    n = 20
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rows = tmp_path / "rows"
    env = preload_env(tmp_path / "multiproc", AIWATCH_TEST_LOG_DIR=str(rows))
    with python_app(gunicorn_preload("tests.http.preload_app:app", port, "-w", "2"), f"{base}/metrics",
                    env=env) as proc:
        def one(i: int) -> int:
            resp = requests.get(f"{base}/predict/{i}", timeout=10)
            assert resp.status_code == 200
            return int(json.loads(resp.text)["pid"])

        with ThreadPoolExecutor(4) as pool:
            pids = set(pool.map(one, range(n)))
        assert proc.proc.pid not in pids  # served by the workers, not by the master that made the log and monitor
        wait_until(lambda: rows_written(rows) == n, 20, what=f"{n} rows in the Parquet files")
        # the drift gauges are "mostrecent" across processes: a worker's evaluation shows its own window's rows
        wait_until(lambda: (value(scrape(f"{base}/metrics"), "aiwatch_drift_window_samples", model="preloaded",
                                  feature="x") or 0) >= 1, 20, what="a worker's drift evaluation in /metrics")


def test_the_master_hands_its_monitors_schedule_to_the_workers(tmp_path: Path) -> None:
    # aiwatch.gunicorn's pre_fork stops the master's evaluations: its window gets no rows, and its evaluation of it
    # (0 rows, NaN scores) took turns with the worker's in the "mostrecent" drift gauges. The worker's window holds
    # its own n rows, not the master's 7 warm-up rows too
    n = 5
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = preload_env(tmp_path / "multiproc", AIWATCH_TEST_LOG_DIR=str(tmp_path / "rows"))
    with python_app(gunicorn_preload("tests.http.preload_app:app", port, "-w", "1"), f"{base}/metrics", env=env):
        for i in range(n):
            assert requests.get(f"{base}/predict/{i}", timeout=10).status_code == 200

        def window() -> float | None:
            return value(scrape(f"{base}/metrics"), "aiwatch_drift_window_samples", model="preloaded", feature="x")

        wait_until(lambda: window() == n, 20, what="the worker's drift evaluation in /metrics")
        seen = []
        for _ in range(20):  # the app's monitor evaluates every 0.2 s: 10 of the master's evaluations, if it ran them
            seen.append(window())
            time.sleep(0.1)
    assert seen == [n] * len(seen)


def test_a_gpu_collector_polling_in_the_master_polls_in_the_worker_without_multiprocess_mode() -> None:
    # one worker, no PROMETHEUS_MULTIPROC_DIR: the worker serves its own registry, where its copy of the master's
    # collector served the snapshot of the fork for ever
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = preload_env()
    with python_app(gunicorn_preload("tests.http.preload_gpu_app:app", port, "-w", "1"), f"{base}/metrics", env=env):
        first = scrape(f"{base}/metrics")
        assert value(first, "aiwatch_gpu_nvml_up") == 1
        polled = value(first, "aiwatch_gpu_last_poll_timestamp_seconds") or 0.0
        wait_until(lambda: (value(scrape(f"{base}/metrics"), "aiwatch_gpu_last_poll_timestamp_seconds") or 0.0)
                   > polled, 20, what="a poll in the worker after its first scrape")


def test_a_metrics_port_started_in_the_master_is_served_by_the_worker_without_multiprocess_mode() -> None:
    # one worker, no PROMETHEUS_MULTIPROC_DIR: the master's thread served the master's registry, which no request
    # reaches (0 requests for ever), and the worker that served them served no scrape
    port, metrics_port = free_port(), free_port()
    base, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    env = preload_env(AIWATCH_TEST_METRICS_PORT=str(metrics_port))
    with python_app(gunicorn_preload("tests.http.preload_metrics_port_app:app", port, "-w", "1"), f"{base}/ready",
                    env=env) as proc:  # ready at the app's 404 for /ready: a check given up on may still be served
        pids = {int(json.loads(requests.get(f"{base}/predict", timeout=10).text)["pid"]) for _ in range(4)}
        assert proc.proc.pid not in pids
        for _ in range(5):  # each scrape, whichever thread of which process accepts it
            assert value(scrape(metrics), "aiwatch_request_duration_seconds_count", service="preload-port",
                         route="/predict", method="GET", status="200") == 4


def test_the_rows_of_a_worker_killed_mid_file_are_recovered_by_the_worker_forked_in_its_place(tmp_path: Path
                                                                                               ) -> None:
    # the workers start no sink (they have the master's): the killed worker's journal waited for the next deployment
    # (its rows were not even recovered at a graceful stop), where a worker that imports the app recovers it at start
    n = 10
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rows = tmp_path / "rows"
    env = preload_env(AIWATCH_TEST_LOG_DIR=str(rows), AIWATCH_TEST_MAX_FILE_SECONDS="3600")

    def served_by() -> int:
        return int(json.loads(requests.get(f"{base}/predict/0", timeout=10).text)["pid"])

    with python_app(gunicorn_preload("tests.http.preload_app:app", port, "-w", "1"), f"{base}/metrics", env=env):
        killed = served_by()
        for _ in range(1, n):
            assert served_by() == killed, "one worker"
        wait_until(lambda: value(scrape(f"{base}/metrics"), "aiwatch_prediction_log_records_total",
                                 log="predictions", result="written") == n, 20, what=f"{n} rows in the open file")
        assert rows_written(rows) == 0  # in the worker's open file and its journal
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: served_by() != killed, 30, what="a worker forked in place of the killed one")
        wait_until(lambda: rows_written(rows) == n, 20, what=f"the killed worker's {n} rows in a completed file")


def test_the_rows_a_worker_observed_are_in_the_bin_counts_after_max_requests_recycles_it(tmp_path: Path) -> None:
    # the monitor counts its rows every flush_every rows or flush_interval seconds: a worker that exited first left
    # them out of the fleet's aiwatch_feature_bin_total for good (1 of 30 counted, with a worker per 10 requests)
    n = 30
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = preload_env(tmp_path / "multiproc", AIWATCH_TEST_LOG_DIR=str(tmp_path / "rows"),
                      AIWATCH_TEST_FLUSH_EVERY="1000")
    with python_app(gunicorn_preload("tests.http.preload_app:app", port, "-w", "1", "--max-requests", "10"),
                    f"{base}/metrics", env=env):
        for i in range(n):  # a worker per 10 requests, the third recycled at the last
            assert requests.get(f"{base}/predict/{i}", timeout=10).status_code == 200

        def bins() -> float:
            return sum(v for (name, labels), v in scrape(f"{base}/metrics").items()
                       if name == "aiwatch_feature_bin_total" and ("model", "preloaded") in labels)

        # and the master's 7 warm-up rows, counted when it handed its monitor over
        wait_until(lambda: bins() == n + 7, 20, what="every row observed in the bin counts")
