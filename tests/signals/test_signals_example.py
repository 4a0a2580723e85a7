"""The runnable example of docs/signals.md: FastAPI + MicroBatcher + feature cache, end to end in-process, and the
gunicorn config that runs one GPU poller per host (a real gunicorn)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.servers import REPO, Process, free_port, http_get, python_env, wait_until


async def test_example_app_records_queue_batch_cache_and_phases(registry: CollectorRegistry) -> None:
    from examples.signals.app import build

    app = build(registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        users = ["u1" if i % 2 else f"cold{i}" for i in range(40)]
        responses = await asyncio.gather(*(client.post("/predict", json={"user": u}) for u in users))
    await app.state.ranker.aclose()
    assert [r.status_code for r in responses] == [200] * 40
    assert [r.json()["score"] for r in responses] == [pytest.approx(1.5) if u == "u1" else 0.0 for u in users]
    assert all("queue;dur=" in r.headers["server-timing"] and "inference;dur=" in r.headers["server-timing"]
               for r in responses)
    v = registry.get_sample_value
    assert v("aiwatch_batch_size_sum", {"model": "ranker"}) == 40
    batches = v("aiwatch_batch_size_count", {"model": "ranker"})
    assert batches is not None and batches < 40  # concurrent requests were batched
    assert v("aiwatch_queue_depth", {"queue": "ranker"}) == 0.0
    assert v("aiwatch_requests_in_flight", {"service": "recommender"}) == 0.0
    assert v("aiwatch_feature_cache_requests_total", {"cache": "user_features", "result": "hit"}) == 20
    assert v("aiwatch_feature_cache_requests_total", {"cache": "user_features", "result": "miss"}) == 20
    for phase in ("queue", "inference", "features", "overhead"):
        assert v("aiwatch_phase_duration_seconds_count",
                 {"service": "recommender", "model": "ranker", "model_version": "", "phase": phase}) == 40, phase


@pytest.mark.slow
def test_gunicorn_master_runs_the_only_gpu_poller(tmp_path: Path) -> None:
    gpu_port, app_port = free_port(), free_port()
    env = python_env(AIWATCH_GPU_PORT=str(gpu_port), PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    proc = Process([sys.executable, "-m", "gunicorn", "-c", str(REPO / "examples/signals/gunicorn.conf.py"),
                    "-w", "2", "-b", f"127.0.0.1:{app_port}", "aiwatch.exposition:make_wsgi_app()"],
                   tmp_path / "gunicorn.log", env=env, cwd=REPO)
    try:
        url = f"http://127.0.0.1:{gpu_port}/metrics"
        wait_until(lambda: proc.alive() and b"aiwatch_gpu_nvml_up" in http_get(url)[1], 30, what=url)
        wait_until(lambda: http_get(f"http://127.0.0.1:{app_port}/")[0] == 200, 30, what="gunicorn workers")
        body = http_get(url)[1].decode()
        assert [line for line in body.splitlines() if line.startswith("aiwatch_gpu_nvml_up ")]
        assert "aiwatch_request_duration_seconds" not in body  # the GPU port serves the GPU metrics only
        log = proc.output()
        assert log.count("aiwatch: GPU metrics on") == 1, log  # once, in the master, not per worker
    finally:
        proc.stop()


# Run under PROMETHEUS_MULTIPROC_DIR (prometheus_client picks its multiprocess mode at import): the GPU server of the
# one-poller-per-host setup counts an error as its poller does; what do its own port and the workers' merged view
# (every worker's /metrics reads the directory) show?
_GPU_SERVER_IN_MULTIPROCESS_MODE = """
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
from aiwatch.exposition import serving_registry
from aiwatch.safety import record_error
from aiwatch.signals.gpu import serve_gpu_metrics

gpu = serve_gpu_metrics(0)
record_error("gpu", RuntimeError("a reading the poller could not use"), gpu.collector.metrics)

def gpu_errors(samples):
    return sum(s.value for s in samples if s.name == "aiwatch_instrumentation_errors_total"
               and s.labels.get("component") == "gpu")

body = urllib.request.urlopen(f"http://127.0.0.1:{gpu.port}/metrics", timeout=5).read().decode()
port = gpu_errors(s for family in text_string_to_metric_families(body) for s in family.samples)
merged = gpu_errors(s for family in serving_registry().collect() for s in family.samples)
gpu.close()
json.dump({"gpu_port": port, "workers_view": merged}, sys.stdout)
"""


def test_the_gpu_servers_errors_are_served_once_not_merged_into_the_workers_metrics(tmp_path: Path) -> None:
    # the master's GPU server wrote its error counter into PROMETHEUS_MULTIPROC_DIR like any metric, so every
    # worker's /metrics merged it in: one GPU error was on the GPU port and again on the app's port, twice in any sum
    # over the scrape targets
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _GPU_SERVER_IN_MULTIPROCESS_MODE], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"gpu_port": 1.0, "workers_view": 0}
