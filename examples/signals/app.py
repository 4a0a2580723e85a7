"""A recommendation API with every resource signal: micro-batched model calls, a feature cache, in-flight requests.

    pip install "aiwatch[all]"
    uvicorn examples.signals.app:app --port 8000
    curl -s -XPOST localhost:8000/predict -d '{"user": "u1"}' -H 'content-type: application/json'
    curl -s localhost:8000/metrics | grep -E 'aiwatch_(queue|batch|feature_cache|requests_in_flight)'

``AIWATCH_REDIS_URL=redis://127.0.0.1:6379/0`` reads features from Redis instead of the in-process dict.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry

import aiwatch

registry: CollectorRegistry = REGISTRY


async def rank(batch: list[dict[str, float]]) -> list[float]:
    """The model: one call scores a whole batch (a GPU would run it as one kernel launch)."""
    await asyncio.sleep(0.002)
    return [0.1 * f["clicks"] + 0.01 * f["basket_value"] for f in batch]


def build(registry: CollectorRegistry = REGISTRY, redis_url: str | None = None) -> FastAPI:
    ranker = aiwatch.MicroBatcher(rank, max_batch_size=32, max_wait_seconds=0.005, model="ranker",
                                  registry=registry)
    if redis_url:
        import redis.asyncio

        features: Any = aiwatch.instrument_redis(redis.asyncio.Redis.from_url(redis_url), cache="user_features",
                                                 registry=registry)
    else:
        features = aiwatch.instrument_mapping({"u1": {"clicks": 3.0, "basket_value": 120.0}},
                                              cache="user_features", registry=registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await ranker.aclose()  # answers every request already batched, then stops

    app = FastAPI(lifespan=lifespan)
    aiwatch.instrument(app, service="recommender", model="ranker", registry=registry)

    @app.post("/predict")
    async def predict(body: dict[str, str]) -> dict[str, Any]:
        row = features.get(body["user"])
        if asyncio.iscoroutine(row):
            row = await row
        if row is None:  # a cold user: default features
            row = {"clicks": 0.0, "basket_value": 0.0}
        score = await ranker.submit(row)  # records the request's `queue` and `inference` phases
        return {"user": body["user"], "score": score}

    app.state.ranker = ranker
    return app


app = build(redis_url=os.environ.get("AIWATCH_REDIS_URL"))
