"""A prediction log and a drift monitor in an app that a server stops: what the log queued is written, the sink's
files completed, and the rows the monitor observed counted into the bin counters.

uvicorn (its CLI, ``--workers``, gunicorn's ``UvicornWorker``) shuts down gracefully on SIGTERM and then raises the
signal again with the default handler restored: the process is killed, and ``atexit`` (the log's close) never runs.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.servers import free_port, python_app, python_env

pytestmark = pytest.mark.slow

APP = """
import os
import numpy as np
from fastapi import FastAPI
import aiwatch
from aiwatch.drift import DriftMonitor, ReferenceProfile
from aiwatch.feedback import ParquetSink, PredictionLog

# flushed every minute, files rotated every hour: a shutdown is what writes them
log = PredictionLog(ParquetSink(os.environ["AIWATCH_TEST_LOG_DIR"]), flush_seconds=60.0)
# rows counted into the bin counters every 1000 rows or 60 s
monitor = DriftMonitor(ReferenceProfile.build({"x": np.random.default_rng(1).normal(0, 1, 200)}), model="ranker",
                       flush_every=1000, flush_interval=60.0)
app = FastAPI()


@app.get("/ready")
def ready() -> dict[str, bool]:
    return {"ready": True}


@app.get("/predict/{n}")
def predict(n: int) -> dict[str, int]:
    log.log("ranker", {"x": float(n)}, {"y": 1.0})
    monitor.observe({"x": float(n)})
    return {"pid": os.getpid()}


aiwatch.instrument(app, service="ranker")
"""


def files(directory: Path) -> tuple[int, list[str]]:
    """Rows in the completed Parquet files, and the names of the files left open (hidden) or their journals."""
    done = sum(pq.read_metadata(path).num_rows for path in directory.rglob("*.parquet"))
    return done, sorted(path.name for path in directory.rglob(".*") if path.is_file())


@pytest.mark.parametrize("server", ["uvicorn", "uvicorn --workers", "gunicorn UvicornWorker"])
def test_a_server_stopped_by_sigterm_writes_every_logged_row_and_counts_every_observed_one(tmp_path: Path,
                                                                                            server: str) -> None:
    # each took 0 rows into a file: the 30 records stayed queued (in an open file with its journal, for those the
    # writer had taken), to be recovered, if ever, by the next sink that starts on the directory
    (tmp_path / "sigterm_app.py").write_text(APP)
    rows = tmp_path / "rows"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = {
        "uvicorn": ["-m", "uvicorn", "--app-dir", str(tmp_path), "--port", str(port), "sigterm_app:app"],
        "uvicorn --workers": ["-m", "uvicorn", "--app-dir", str(tmp_path), "--port", str(port), "--workers", "2",
                              "sigterm_app:app"],
        "gunicorn UvicornWorker": ["-m", "gunicorn", "--chdir", str(tmp_path), "-w", "2", "-k",
                                   "uvicorn.workers.UvicornWorker", "-b", f"127.0.0.1:{port}", "sigterm_app:app"],
    }[server]
    n = 30
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    env = python_env(AIWATCH_TEST_LOG_DIR=str(rows), PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    # ready once /ready answers, which logs nothing: a readiness check that logged counted twice where the workers
    # took longer to start than its 5 s timeout (the server still answered the request it gave up on: 31 rows)
    with python_app(args, f"{base}/ready", env=env) as proc:
        for i in range(n):
            assert requests.get(f"{base}/predict/{i}", timeout=10).status_code == 200
        proc.proc.send_signal(signal.SIGTERM)
        proc.proc.wait(60)
        output = proc.output()  # its log file is removed with the context
    assert files(rows) == (n, []), output
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=str(multiproc))
    assert sum(s.value for f in merged.collect() for s in f.samples if s.name == "aiwatch_feature_bin_total") == n


def test_an_app_whose_lifespan_ends_in_a_test_client_keeps_its_log_open(tmp_path: Path) -> None:
    # no server will kill the process: the app may start again, and its log must still write then
    (tmp_path / "client_app.py").write_text(APP.replace("flush_seconds=60.0", "flush_seconds=0.1"))
    os.environ["AIWATCH_TEST_LOG_DIR"] = str(tmp_path / "rows")
    try:
        spec = importlib.util.spec_from_file_location("client_app", tmp_path / "client_app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        del os.environ["AIWATCH_TEST_LOG_DIR"]
    for i in range(3):
        with TestClient(module.app) as client:
            assert client.get(f"/predict/{i}").status_code == 200
    module.log.close()
    module.monitor.close()
    assert files(tmp_path / "rows") == (3, [])
