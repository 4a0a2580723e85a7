"""The two services of tests/diagnose/test_loops_e2e.py, each run by uvicorn in a process of its own:

- ``inference``: ``GET /predict`` runs a small model on the loop (no await inside it). After ``POST /starve``, its
  handler starts a job on its loop that blocks it (``time.sleep``, CPU-bound work on the loop) at random times: for
  70-100 ms after gaps of 100 ms on average, or (``/starve?long``) for 0.375-1.125 s after gaps of 3 s on average,
  stalls the sampler sees once each;
- ``gateway``: ``GET /`` calls the inference service (``$INFERENCE_URL``) with aiwatch's httpx client from its
  ``inference_call`` phase.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import httpx

import aiwatch
from aiwatch.middleware.asgi import AiwatchMiddleware

_starve: list[bool] = []  # True: long stalls
_jobs: list[asyncio.Task[None]] = []
_clients: list[httpx.AsyncClient] = []


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            for job in _jobs:
                job.cancel()
            for client in _clients:
                await client.aclose()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


async def _ok(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _hog() -> None:
    # blocks shorter than the loop sampler's 0.1 s interval, after exponential gaps: nothing in step with its clock
    rng = random.Random(7)
    while True:
        await asyncio.sleep(rng.expovariate(10.0))
        time.sleep(rng.uniform(0.07, 0.1))


async def _long_hog() -> None:
    # stalls longer than the loop sampler's interval, sampled once each, after exponential gaps
    rng = random.Random(11)
    while True:
        await asyncio.sleep(rng.expovariate(1 / 3.0))
        time.sleep(rng.uniform(0.375, 1.125))


async def _inference(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    if scope["path"] == "/starve":
        _starve.append(scope.get("query_string", b"") == b"long")
        return await _ok(send)
    if _starve and not _jobs:
        _jobs.append(asyncio.get_running_loop().create_task(_long_hog() if _starve[0] else _hog()))
    with aiwatch.phase("inference"):
        sum(i * i for i in range(20_000))
    return await _ok(send)


async def _gateway(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    if not _clients:  # on the server's loop
        _clients.append(aiwatch.client.instrument_httpx(
            httpx.AsyncClient(base_url=os.environ.get("INFERENCE_URL", ""), timeout=30.0), service="gateway"))
    with aiwatch.phase("inference_call"):
        answered = await _clients[0].get("/predict")
    if answered.status_code != 200:
        raise RuntimeError(f"inference answered {answered.status_code}")
    return await _ok(send)


inference = AiwatchMiddleware(_inference, service="inference", exclude_paths=["/starve"])
gateway = AiwatchMiddleware(_gateway, service="gateway")
