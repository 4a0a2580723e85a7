"""The gateway API: ``POST /recommend`` fetches the user's profile from the feature store (through its cache) and
calls the inference service over HTTP.

The call to the inference service is the ``inference_call`` phase; the gateway also records
``aiwatch_network_duration_seconds{peer="inference"}`` = client-observed time minus the server time the inference
service reported in its ``Server-Timing`` header, and ``aiwatch_client_request_duration_seconds``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel, Field

import aiwatch
from aiwatch.demo.features import FeatureCache, FeatureStore, LruCache, RedisCache
from aiwatch.metrics import Metrics, default_metrics
from aiwatch.safety import record_error
from aiwatch.servertiming import HEADER, server_total

PEER = "inference"


class RecommendBody(BaseModel):
    user_id: int = Field(ge=0)
    basket_value: float = Field(ge=0)
    items_in_cart: float = Field(ge=0)
    session_seconds: float = Field(ge=0)


def create_app(inference_url: str, redis_url: str | None = None, cache_capacity: int = 1500) -> Any:
    import httpx
    from fastapi import FastAPI, HTTPException


    metrics = default_metrics()
    cache: FeatureCache = RedisCache(redis_url) if redis_url else LruCache(cache_capacity)
    store = FeatureStore(cache, metrics)
    client = httpx.AsyncClient(base_url=inference_url, timeout=30.0,
                               limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        await client.aclose()
        await cache.close()

    app = FastAPI(title="aiwatch demo gateway", lifespan=lifespan)

    @app.post("/recommend")
    async def recommend(body: RecommendBody) -> dict[str, Any]:
        async with aiwatch.phase("features"):
            profile = await store.user_profile(body.user_id)
        payload = {**body.model_dump(), "profile": profile}
        async with aiwatch.phase("inference_call"):
            start = time.perf_counter()
            try:
                resp = await client.post("/predict", json=payload)
            except httpx.HTTPError as exc:
                _observe_call(metrics, "/predict", "error", time.perf_counter() - start, None)
                raise HTTPException(502, f"inference service unreachable: {exc}") from exc
            _observe_call(metrics, "/predict", str(resp.status_code), time.perf_counter() - start,
                          resp.headers.get(HEADER))
        if resp.status_code != 200:
            raise HTTPException(502, f"inference service answered {resp.status_code}")
        return {"user_id": body.user_id, "items": resp.json()["items"]}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return aiwatch.instrument(app, service="gateway", exclude_paths=["/healthz"])


def _observe_call(metrics: Metrics, route: str, status: str, seconds: float, server_timing: str | None) -> None:
    try:
        metrics.child(metrics.client_request_duration, ("gateway", PEER, route, status)).observe(seconds)
        server = server_total(server_timing) if server_timing else None
        if server is not None:
            metrics.child(metrics.network_duration, ("gateway", PEER)).observe(max(seconds - server, 0.0))
    except Exception as exc:
        record_error("demo_client", exc, metrics)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aiwatch.demo.gateway")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--inference-url", required=True)
    parser.add_argument("--redis", default=None, help="redis://HOST:PORT/DB for the feature cache")
    parser.add_argument("--cache-capacity", type=int, default=1500)
    args = parser.parse_args(argv)
    from aiwatch.demo.serve import serve

    serve(create_app(args.inference_url, args.redis, args.cache_capacity), args.port)


if __name__ == "__main__":
    main()
