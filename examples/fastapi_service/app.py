"""A FastAPI model service instrumented by aiwatch in one line.

    pip install "aiwatch[all]"
    python examples/fastapi_service/app.py --port 8000
    curl -si localhost:8000/predict -H 'content-type: application/json' -d '{"user_id": 3, "basket_value": 42}'
    curl -s localhost:8000/metrics | grep aiwatch_phase_duration_seconds_count

Every response carries ``Server-Timing: features;dur=..., inference;dur=..., overhead;dur=..., total;dur=...`` and
/metrics splits the request time into the model's own time and everything else.
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field

import aiwatch

rng = np.random.default_rng(0)
ITEM_FACTORS = rng.normal(size=(2000, 16)).astype(np.float32)
USER_FACTORS = rng.normal(size=(500, 16)).astype(np.float32)

app = aiwatch.instrument(FastAPI(title="recommender"), service="recommender", model="mf",
                         exclude_paths=["/healthz"])


class PredictBody(BaseModel):
    user_id: int = Field(ge=0)
    basket_value: float = Field(ge=0)


async def fetch_features(user_id: int) -> np.ndarray:
    await asyncio.sleep(0.002)  # a feature-store round trip
    return USER_FACTORS[user_id % len(USER_FACTORS)]


@app.post("/predict")
async def predict(body: PredictBody) -> dict[str, list[int]]:
    async with aiwatch.phase("features"):
        user = await fetch_features(body.user_id)
    with aiwatch.phase("inference"):
        scores = ITEM_FACTORS @ user + 0.01 * np.log1p(body.basket_value)
        top = np.argsort(-scores)[:10]
    return {"items": top.tolist()}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port, log_level="warning")
