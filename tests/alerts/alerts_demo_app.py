"""An aiwatch-instrumented inference service for the alerting and autoscaling tests (run under uvicorn).

``POST /predict`` runs a ``features`` phase (sleeps for the injected delay) and an ``inference`` phase (a constant
~5 ms). ``GET /control?features_delay=0.2&queue_depth=3&gpu_utilization=0.5`` changes the injected values.

With ``AIWATCH_TEST_FAKE_GPU=1`` a collector exports the contract's GPU gauges with values set through ``/control``:
this machine has no GPU, so this stands in for the NVML boundary only (the alert rules and queries under test read
the same metric names and labels).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

import aiwatch
from aiwatch.metrics import GPU_LABELS, SPECS, get_metrics

INFERENCE_SECONDS = 0.005
state: dict[str, float] = {"features_delay": 0.0, "gpu_utilization": 0.5}

app = aiwatch.instrument(FastAPI(), service="demo", model="ranker", exclude_paths=["/healthz", "/control"])
metrics = get_metrics(None)
queue = metrics.queue_depth.labels("predict")
queue.set(3)


class FakeGpuCollector:
    """The contract's GPU gauges for one fake GPU (NVML boundary stand-in; see the module docstring)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["0", "GPU-00000000-test", "Test GPU", "", ""]
        assert len(labels) == len(GPU_LABELS)
        values = {"aiwatch_gpu_up": 1.0, "aiwatch_gpu_utilization_ratio": state["gpu_utilization"],
                  "aiwatch_gpu_memory_used_bytes": 30e9, "aiwatch_gpu_memory_total_bytes": 80e9}
        for name, value in values.items():
            family = GaugeMetricFamily(name, SPECS[name].help, labels=list(GPU_LABELS))
            family.add_metric(labels, value)
            yield family
        yield GaugeMetricFamily("aiwatch_gpu_nvml_up", SPECS["aiwatch_gpu_nvml_up"].help, value=1.0)


if os.environ.get("AIWATCH_TEST_FAKE_GPU") == "1":
    REGISTRY.register(FakeGpuCollector())  # type: ignore[arg-type]


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/control")
async def control(features_delay: float | None = None, queue_depth: float | None = None,
                  gpu_utilization: float | None = None) -> dict[str, Any]:
    if features_delay is not None:
        state["features_delay"] = features_delay
    if gpu_utilization is not None:
        state["gpu_utilization"] = gpu_utilization
    if queue_depth is not None:
        queue.set(queue_depth)
    return dict(state)


@app.post("/predict")
async def predict() -> dict[str, float]:
    async with aiwatch.phase("features"):
        delay = state["features_delay"]
        if delay > 0:
            await asyncio.sleep(delay)
    async with aiwatch.phase("inference", model="ranker"):
        await asyncio.sleep(INFERENCE_SECONDS)
    return {"score": 0.5}
