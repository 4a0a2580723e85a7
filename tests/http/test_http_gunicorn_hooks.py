"""aiwatch's gunicorn hooks (``-c python:aiwatch.gunicorn``) in a real gunicorn."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.http.test_http_e2e import scrape, value
from tests.servers import free_port, http_get, python_app, python_env, wait_until

pytestmark = pytest.mark.slow

APP = """
import aiwatch

def inner(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

app = aiwatch.instrument(inner, service="hooks")
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_several_workers_without_a_multiprocess_directory_are_reported_at_start(tmp_path: Path, workers: int
                                                                                ) -> None:
    """The module is the config for several workers; without PROMETHEUS_MULTIPROC_DIR each worker keeps its own
    metrics and every scrape reads whichever answered (counters jumping between workers, read as resets), and
    gunicorn started without a word. One worker needs no directory."""
    (tmp_path / "hooks_app.py").write_text(APP)
    port = free_port()
    env = python_env()
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("prometheus_multiproc_dir", None)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    with python_app(["-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}", "-c", "python:aiwatch.gunicorn",
                     "hooks_app:app"], f"http://127.0.0.1:{port}/metrics", env=env) as proc:
        log = proc.output()
    reported = [line for line in log.splitlines() if "[ERROR] aiwatch:" in line]
    if workers == 1:
        assert reported == [], log
    else:
        assert len(reported) == 1, log
        assert "gunicorn runs 2 workers but PROMETHEUS_MULTIPROC_DIR is not set" in reported[0]


def test_a_reload_that_lowers_the_slow_threshold_serves_the_new_one(tmp_path: Path) -> None:
    """gunicorn reloads its config on HUP (a USR2 upgrade likewise replaces every worker): the new workers record with
    the new threshold. The merged gauge was the max over every process that ever wrote the directory, the workers
    gone with their old threshold included, so it served the old one until the next cold start (and diagnose read
    it); it is the max over the live ones."""
    (tmp_path / "hooks_app.py").write_text(APP)
    threshold = tmp_path / "threshold"
    threshold.write_text("0.5")
    config = tmp_path / "gunicorn_conf.py"
    config.write_text("from aiwatch.gunicorn import child_exit, on_starting, pre_fork  # noqa: F401\n"
                      f"raw_env = ['AIWATCH_SLOW_THRESHOLD_SECONDS=' + open({str(threshold)!r}).read()]\n")
    multiproc = tmp_path / "multiproc"
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])

    def served() -> float | None:
        return value(scrape(url), "aiwatch_slow_threshold_seconds", service="hooks")

    with python_app(["-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "-c", str(config), "hooks_app:app"],
                    url, env=env) as proc:
        assert served() == 0.5
        threshold.write_text("0.2")
        booted = proc.output().count("Booting worker")
        os.kill(proc.proc.pid, signal.SIGHUP)
        wait_until(lambda: proc.output().count("Booting worker") >= booted + 2, 30, what="two new workers")
        wait_until(lambda: served() == 0.2, 30, what="the new threshold in the merged /metrics")


def test_every_worker_serves_the_merged_metrics_on_a_port_of_their_own(tmp_path: Path) -> None:
    """``aiwatch.start_http_server(port)`` at the app's import runs in every worker: each binds the port (with
    SO_REUSEPORT) and serves the merged view. Bound alone, every worker but the first failed with "Address already in
    use" and gunicorn stopped ("Worker failed to boot")."""
    metrics_port, port = free_port(), free_port()
    # /ready is passed through uncounted: python_app's readiness check gives up on a request after 5 s and asks
    # again, and a worker that took longer to boot still serves (and would count) the requests given up on, one
    # possibly after the count the test starts from
    (tmp_path / "hooks_app.py").write_text(
        APP.replace('service="hooks")', 'service="hooks", metrics_path=None, exclude_paths=["/ready"])')
        + f"aiwatch.start_http_server({metrics_port})\n")
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "multiproc"))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    with python_app(["-m", "gunicorn", "-w", "3", "-b", f"127.0.0.1:{port}", "-c", "python:aiwatch.gunicorn",
                     "hooks_app:app"], f"http://127.0.0.1:{port}/ready", env=env) as proc:
        wait_until(lambda: proc.output().count("Booting worker") >= 3, 30, what="three workers")
        url = f"http://127.0.0.1:{metrics_port}/metrics"

        def served() -> float:
            return sum(v for (name, labels), v in scrape(url).items()
                       if name == "aiwatch_request_duration_seconds_count" and ("service", "hooks") in labels)

        for _ in range(30):
            assert http_get(f"http://127.0.0.1:{port}/") == (200, b"ok")
        assert "Address already in use" not in proc.output()
        # a worker records a request when gunicorn closes its body, which may come after the client has its answer
        wait_until(lambda: served() >= 30, 30, what="the 30 requests recorded")
        for _ in range(10):  # whichever worker the kernel hands a scrape to, it serves every worker's requests
            assert served() == 30
        assert proc.proc.poll() is None


def test_workers_recycled_by_max_requests_are_folded_and_every_request_counted_once(tmp_path: Path) -> None:
    """gunicorn replaces a worker after max_requests; each one left its counter and histogram files, and every
    scrape merged one more set until the next start (1317 files after 3000 requests with max_requests 5). child_exit
    folds them into the master's archives: the files stay a set per live worker and one archive, and a scrape while
    workers are folded reads every request once (never more than were sent, never fewer than before)."""
    (tmp_path / "hooks_app.py").write_text(APP)
    multiproc = tmp_path / "multiproc"
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    sent = 300

    def served() -> float:
        return sum(v for (name, labels), v in scrape(url).items()
                   if name == "aiwatch_request_duration_seconds_count" and ("service", "hooks") in labels)

    readings: list[float] = []
    failed: list[int] = []
    done = threading.Event()

    def scraping() -> None:
        while not done.is_set():
            try:
                status, _ = http_get(url)
                if status != 200:
                    failed.append(status)
                    continue
                readings.append(served())
            except (OSError, AssertionError):  # a connection to a worker recycled meanwhile (gunicorn's)
                continue

    with python_app(["-m", "gunicorn", "-w", "2", "--max-requests", "5", "-b", f"127.0.0.1:{port}", "-c",
                     "python:aiwatch.gunicorn", "hooks_app:app"], url, env=env) as proc:
        scraper = threading.Thread(target=scraping)
        scraper.start()
        try:
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda _: http_get(f"http://127.0.0.1:{port}/"), range(sent)))
        finally:
            done.set()
            scraper.join()
        assert answers == [(200, b"ok")] * sent
        wait_until(lambda: served() == sent, 30, what=f"{sent} requests in the merged /metrics")
        assert proc.log.read_text().count("Autorestarting worker") >= 40, proc.output()
        counters = sorted(p.name for p in multiproc.glob("counter_*.db"))
        assert len(counters) <= 3 and sum("archive" in name for name in counters) == 1, counters  # 2 workers'
        assert len(list(multiproc.glob("histogram_*.db"))) <= 3
        assert failed == []
        assert len(readings) > 10 and readings == sorted(readings) and readings[-1] <= sent
        assert value(scrape(url), "aiwatch_instrumentation_errors_total", component="multiprocess") == 0


DRIFT_APP = """
import os
import numpy as np
import aiwatch
from aiwatch.drift import DriftMonitor, ReferenceProfile

rng = np.random.default_rng(5)
monitor = DriftMonitor(ReferenceProfile.build({"x": rng.normal(size=2000)}), model="m")

def inner(environ, start_response):
    shift = environ["PATH_INFO"].rsplit("/", 1)[-1]
    monitor.observe_batch({"x": rng.normal(float(shift), 1, 1000)})
    monitor.evaluate()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]

app = aiwatch.instrument(inner, service="hooks", metrics_path="/metrics")
"""


def test_a_killed_workers_drift_gauges_are_folded_and_stay_the_latest_evaluation(tmp_path: Path) -> None:
    """A worker SIGKILLed after its evaluation found drift: its mostrecent drift gauges leave its file for the
    master's archive, keeping their timestamp. The merged value stays its evaluation (the fleet's latest: dropping
    it would go back to an older one, and clear the alert when the drifted traffic killed the worker) until another
    worker evaluates, which then wins over the archive."""
    (tmp_path / "drift_app.py").write_text(DRIFT_APP)
    multiproc = tmp_path / "multiproc"
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])

    def detected() -> list[float]:
        return [v for (name, labels), v in scrape(url).items()
                if name == "aiwatch_drift_detected" and ("model", "m") in labels]

    with python_app(["-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "-c", "python:aiwatch.gunicorn",
                     "drift_app:app"], url, env=env):
        status, body = http_get(f"http://127.0.0.1:{port}/shift/4")
        assert status == 200
        killed = int(body)
        assert detected() == [1.0]
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: not (multiproc / f"gauge_mostrecent_{killed}.db").exists(), 30,
                   what="the killed worker's drift gauges folded")
        assert len(list(multiproc.glob("gauge_mostrecent_archive-*.db"))) == 1
        assert detected() == [1.0]
        status, body = http_get(f"http://127.0.0.1:{port}/shift/0")
        assert status == 200 and int(body) != killed
        assert detected() == [0.0]
