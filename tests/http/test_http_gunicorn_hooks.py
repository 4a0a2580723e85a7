"""aiwatch's gunicorn hooks (``-c python:aiwatch.gunicorn``) in a real gunicorn."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.servers import free_port, python_app, python_env

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
