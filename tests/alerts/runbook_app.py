"""An aiwatch-instrumented recommender for tests/alerts/test_runbook_scenario.py (run under uvicorn): ``POST
/predict`` fetches its features from ``GET /features`` (itself, a peer named by the Server-Timing it answers) through
aiwatch's httpx transport, records the lookup as a :class:`~aiwatch.signals.cache.FeatureCache`'s, counts its prompt
tokens, feeds a :class:`~aiwatch.drift.DriftMonitor` (some rows lack the feature or send an unknown one) and scores
through a :class:`~aiwatch.signals.batcher.MicroBatcher`, so that it exports the series the
on-call's queries of the queue, cache, model, network, time-to-first-token, GPU and event loop pages read. It also
asks ``GET /skewed`` (a peer whose Server-Timing claims a minute: a clamped network time), records lookups of a
cache made per request whose name is too long for a label (folded by the cardinality guard), and, given a folder in
``RUNBOOK_PREDICTION_LOG``, logs its predictions there through a :class:`~aiwatch.feedback.ParquetSink` that
recovers the journal a killed writer left in it. aiwatch's :class:`~aiwatch.GpuCollector` polls one GPU (power
capped: a throttle reason) through the pynvml stand-in of tests/signals/fake_pynvml.py (this machine has no GPU: only
the NVML boundary is fake)."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import numpy as np
from fastapi import FastAPI, Request, Response

import aiwatch
from aiwatch.client import AiwatchAsyncTransport
from aiwatch.drift import DriftMonitor, ReferenceProfile
from aiwatch.feedback import ParquetSink, PredictionLog
from aiwatch.genai import record_tokens
from aiwatch.signals.batcher import MicroBatcher
from aiwatch.signals.cache import FeatureCache
from aiwatch.signals.gpu import GpuCollector
from tests.alerts.runbook_names import CACHE, FEATURE, MODEL, QUEUE, SERVICE, SKEWED_PEER
from tests.signals.fake_pynvml import FakeNVML

app = aiwatch.instrument(FastAPI(), service=SERVICE, model=MODEL, exclude_paths=["/healthz", "/skewed"])
cache = FeatureCache(CACHE)
#: past MAX_VALUE_LENGTH: each cache made with it folds its label
LONG_CACHE = "user-features-" + "x" * 1024
log = PredictionLog(ParquetSink(os.environ["RUNBOOK_PREDICTION_LOG"])) if "RUNBOOK_PREDICTION_LOG" in os.environ \
    else None
nvml = FakeNVML.with_gpus(1)
nvml.gpus[0].util_gpu = 97
GpuCollector(nvml=nvml, interval=0.2)


async def score(items: list[int]) -> list[float]:
    await asyncio.sleep(0.005)
    return [0.5 for _ in items]


lookups: list[int] = []
profile = ReferenceProfile.build({FEATURE: np.random.default_rng(1).normal(40, 10, 2000)})
# KS: a test with a p-value (the default for a numerical feature, Wasserstein, has none)
drift = DriftMonitor(profile, model=MODEL, window_size=200, flush_every=16, flush_interval=0.5, method="ks")
drift.start(0.5)
client = httpx.AsyncClient(transport=AiwatchAsyncTransport(service=SERVICE))
batcher = MicroBatcher(score, model=MODEL, queue=QUEUE, max_batch_size=8, max_wait_seconds=0.002)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/skewed")
async def skewed() -> Response:
    return Response("{}", media_type="application/json",
                    headers={"Server-Timing": f'total;dur=60000.000;desc="{SKEWED_PEER}"'})


@app.get("/features")
async def features() -> dict[str, float]:
    return {"age": 31.0}


@app.post("/predict")
async def predict(request: Request) -> dict[str, float]:
    async with aiwatch.phase("features"):
        started = time.perf_counter()
        await client.get(f"{request.base_url}features")  # the feature store: this service itself
        lookups.append(1)
        missed = len(lookups) % 2  # every other lookup misses a key (recorded as a miss), the others find all four
        cache.record(time.perf_counter() - started, hits=4 - missed, misses=missed)
        FeatureCache(LONG_CACHE).record(0.001, hits=1, misses=0)  # a client made per request
        await client.get(f"{request.base_url}skewed")
    record_tokens(input_tokens=120 + len(lookups) % 50)
    # every third request lacks the feature, every fifth sends one the profile does not know
    row: dict[str, float] = {} if len(lookups) % 3 == 0 else {FEATURE: 40.0 + len(lookups) % 20}
    drift.observe(row | ({"agee": 1.0} if len(lookups) % 5 == 0 else {}))
    result = await batcher.submit(1)
    if log is not None:
        log.log(MODEL, row, result)
    return {"score": result}
