"""An aiwatch-instrumented inference service for the alerting and autoscaling tests (run under uvicorn).

``POST /predict`` runs a ``features`` phase (sleeps for the injected delay) and an ``inference`` phase (a constant
~5 ms). ``GET /control?features_delay=0.2&queue_depth=3&gpu_utilization=0.5`` changes the injected values.

With ``AIWATCH_TEST_FAKE_GPU=1`` aiwatch's own :class:`~aiwatch.GpuCollector` polls one GPU through the pynvml
stand-in of tests/signals/fake_pynvml.py, whose utilization ``/control`` sets: this machine has no GPU, so only the
NVML boundary is fake; the collector, its families and labels are the real ones the rules and queries read.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import FastAPI

import aiwatch
from aiwatch.metrics import get_metrics

INFERENCE_SECONDS = 0.005
state: dict[str, float] = {"features_delay": 0.0, "gpu_utilization": 0.5}

app = aiwatch.instrument(FastAPI(), service="demo", model="ranker", exclude_paths=["/healthz", "/control"])
metrics = get_metrics(None)
queue = metrics.queue_depth.labels("predict")
queue.set(3)


nvml = None
if os.environ.get("AIWATCH_TEST_FAKE_GPU") == "1":
    from aiwatch.signals.gpu import GpuCollector
    from tests.signals.fake_pynvml import FakeNVML

    nvml = FakeNVML.with_gpus(1)
    nvml.gpus[0].util_gpu = round(100 * state["gpu_utilization"])
    GpuCollector(nvml=nvml, interval=0.2)


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
        if nvml is not None:
            nvml.gpus[0].util_gpu = round(100 * gpu_utilization)
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
