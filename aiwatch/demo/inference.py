"""The inference service: ``POST /predict`` scores one user through the micro-batcher and the recommender.

Run by the demo runner as ``python -m aiwatch.demo.inference --port PORT``. Its ``/metrics`` shows the latency split
of every request (``queue``, ``inference`` = model time, ``overhead``), the queue and batch metrics, and the drift
sketch of the request features.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel, Field

import aiwatch
from aiwatch.demo import data
from aiwatch.demo.batcher import MicroBatcher
from aiwatch.demo.drift import BinSketch
from aiwatch.demo.model import Recommender, Request
from aiwatch.metrics import default_metrics

MODEL = "recommender"


class PredictBody(BaseModel):
    user_id: int = Field(ge=0)
    basket_value: float = Field(ge=0)
    items_in_cart: float = Field(ge=0)
    session_seconds: float = Field(ge=0)
    profile: dict[str, float] = Field(default_factory=dict)


def create_app(model_seconds: float = 0.025, max_batch: int = 2, max_wait: float = 0.002) -> Any:
    """The FastAPI app, with a recommender trained and calibrated to about ``model_seconds`` per call."""
    from fastapi import FastAPI


    metrics = default_metrics()
    model = Recommender(max_batch=max_batch)
    per_call = model.calibrate(model_seconds)
    batcher: MicroBatcher[Request, list[int]] = MicroBatcher(model.predict, metrics=metrics, model=MODEL,
                                                             queue=MODEL, max_batch=max_batch, max_wait=max_wait)
    drift = BinSketch(data.reference_features(), metrics, model=MODEL)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="aiwatch demo inference", lifespan=lifespan)

    @app.post("/predict")
    async def predict(body: PredictBody) -> dict[str, Any]:
        drift.observe({"basket_value": body.basket_value, "items_in_cart": body.items_in_cart,
                       "session_seconds": body.session_seconds})
        items = await batcher.submit(Request(body.user_id, body.basket_value, body.items_in_cart,
                                             body.session_seconds))
        return {"items": items}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {"model_seconds": per_call, "max_batch": max_batch, "candidates": model.candidates,
                "capacity_rps": max_batch / per_call}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return aiwatch.instrument(app, service="inference", model=MODEL, exclude_paths=["/healthz", "/info"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aiwatch.demo.inference")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-ms", type=float, default=25.0, help="target model time per padded batch")
    parser.add_argument("--max-batch", type=int, default=2)
    args = parser.parse_args(argv)
    from aiwatch.demo.serve import serve

    serve(create_app(args.model_ms / 1000.0, args.max_batch), args.port)


if __name__ == "__main__":
    main()
