"""The gateway API: ``POST /recommend`` fetches the user's profile from the feature store (through its cache) and
calls the inference service, over gRPC (``--inference-grpc HOST:PORT``) or HTTP (``--inference-url URL``).

The call to the inference service is the ``inference_call`` phase. The client side is aiwatch's own: the gRPC
client interceptors (:func:`aiwatch.grpc.grpc_aio_client_interceptors`) or the httpx integration
(:func:`aiwatch.client.instrument_httpx`) record ``aiwatch_client_request_duration_seconds`` and
``aiwatch_network_duration_seconds{peer="inference", phase="inference_call"}`` = client-observed time minus the
server time the inference service reported (``Server-Timing`` header, or ``server-timing`` trailing metadata over
gRPC). The ``peer`` label needs no configuration: it is the service name the inference service reports with its
time.

A request's traffic class (the ``aiwatch-traffic-class`` header, :mod:`aiwatch.traffic`) goes on to the inference
service with the call, so that a batch request is batch on both services. With ``--deadline-ms`` a real-time request
has a time budget: when less of it is left than the inference call would take, the gateway answers from its recent
answers and marks the response degraded (:mod:`aiwatch.demo.fallback`, :func:`aiwatch.degraded`).

``/demo/faults`` switches the feature-store fault of a demo scenario (:mod:`aiwatch.demo.faults`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel, Field

import aiwatch
from aiwatch.client import ROUTE_EXTENSION
from aiwatch.demo import faults as demo_faults
from aiwatch.demo.fallback import CallEstimate, Deadline, RecentAnswers
from aiwatch.demo.features import CACHE, FeatureCache, FeatureStore, LruCache, RedisCache
from aiwatch.demo.names import Names
from aiwatch.metrics import Metrics, default_metrics
from aiwatch.traffic import HEADER as TRAFFIC_CLASS_HEADER
from aiwatch.traffic import TrafficClasses

SERVICE = Names().gateway


class RecommendBody(BaseModel):
    # the gRPC hop's user_id is an int64: a larger id was protobuf's ValueError, a 500
    user_id: int = Field(ge=0, le=2**63 - 1)
    basket_value: float = Field(ge=0)
    items_in_cart: float = Field(ge=0)
    session_seconds: float = Field(ge=0)


class InferenceUnavailable(Exception):
    """The inference service could not be reached or answered with an error."""


#: ``predict(payload, traffic_class)``: the class is forwarded to the inference service unless it is the default.
Predict = Callable[[dict[str, Any], str | None], Awaitable[list[int]]]


def http_client(inference_url: str, metrics: Metrics,
                service: str = SERVICE) -> tuple[Predict, Callable[[], Awaitable[None]]]:
    """``POST /predict`` with an httpx client instrumented by :func:`aiwatch.client.instrument_httpx`."""
    import httpx

    from aiwatch.client import instrument_httpx

    client = instrument_httpx(
        httpx.AsyncClient(base_url=inference_url, timeout=30.0,
                          limits=httpx.Limits(max_connections=256, max_keepalive_connections=256)),
        service=service, metrics=metrics)

    async def predict(payload: dict[str, Any], traffic_class: str | None = None) -> list[int]:
        headers = {TRAFFIC_CLASS_HEADER: traffic_class} if traffic_class else None
        try:
            resp = await client.post("/predict", json=payload, headers=headers,
                                     extensions={ROUTE_EXTENSION: "/predict"})
        except httpx.HTTPError as exc:
            raise InferenceUnavailable(f"inference service unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise InferenceUnavailable(f"inference service answered {resp.status_code}")
        return list(resp.json()["items"])

    return predict, client.aclose


def grpc_client(target: str, metrics: Metrics,
                service: str = SERVICE) -> tuple[Predict, Callable[[], Awaitable[None]]]:
    """The Recommend RPC on a ``grpc.aio`` channel with aiwatch's client interceptors."""
    import grpc

    from aiwatch.demo import recommender_pb2, recommender_pb2_grpc
    from aiwatch.grpc import grpc_aio_client_interceptors

    pb: Any = recommender_pb2
    interceptors = grpc_aio_client_interceptors(service=service, metrics=metrics)
    # A grpc.aio channel belongs to the event loop it is created in: the server's, on the first call.
    opened: list[Any] = []

    async def predict(payload: dict[str, Any], traffic_class: str | None = None) -> list[int]:
        if not opened:
            channel = grpc.aio.insecure_channel(target, interceptors=interceptors)
            opened[:] = [channel, recommender_pb2_grpc.RecommenderStub(channel)]
        request = pb.RecommendRequest(user_id=payload["user_id"], basket_value=payload["basket_value"],
                                      items_in_cart=payload["items_in_cart"],
                                      session_seconds=payload["session_seconds"], profile=payload["profile"])
        try:
            reply = await opened[1].Recommend(
                request, timeout=30.0, metadata=((TRAFFIC_CLASS_HEADER, traffic_class),) if traffic_class else None)
        except grpc.aio.AioRpcError as exc:
            raise InferenceUnavailable(f"inference service answered {exc.code().name}: {exc.details()}") from exc
        return list(reply.items)

    async def close() -> None:
        if opened:
            await opened[0].close()

    return predict, close


def create_app(inference_url: str | None = None, redis_url: str | None = None, cache_capacity: int = 1500,
               inference_grpc: str | None = None, service: str = SERVICE, cache_name: str = CACHE,
               deadline_seconds: float | None = None, model: str = Names().model) -> Any:
    """The gateway app; it calls the inference service at ``inference_grpc`` (gRPC target ``host:port``) if given,
    else at ``inference_url`` (HTTP). ``service`` and ``cache_name`` are its labels in aiwatch's metrics.
    ``deadline_seconds``: the time budget of a real-time request (none by default), after which it is answered from
    recent answers, counted as degraded for ``model``."""
    from fastapi import FastAPI, Header, HTTPException

    if not inference_url and not inference_grpc:
        raise ValueError("the gateway needs the inference service's HTTP URL or gRPC target")
    metrics = default_metrics()
    cache: FeatureCache = (RedisCache(redis_url, metrics, cache=cache_name) if redis_url
                           else LruCache(metrics, cache_capacity, cache=cache_name))
    faults = demo_faults.Faults()
    store = FeatureStore(cache, faults)
    traffic = TrafficClasses()
    answers = RecentAnswers()
    calls = CallEstimate()
    predict, close = (grpc_client(inference_grpc, metrics, service) if inference_grpc
                      else http_client(str(inference_url), metrics, service))

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        await close()
        await cache.close()

    app = FastAPI(title="aiwatch demo gateway", lifespan=lifespan)

    @app.post("/recommend")
    async def recommend(body: RecommendBody, traffic_class_header: str | None = Header(
            None, alias=TRAFFIC_CLASS_HEADER)) -> dict[str, Any]:
        traffic_class = traffic.from_header(traffic_class_header)
        deadline = Deadline(deadline_seconds if traffic_class == traffic.default else None)
        async with aiwatch.phase("features"):
            profile = await store.user_profile(body.user_id)
        if deadline.too_near(calls.expected()):
            items, reason = answers.fallback(body.user_id)
            aiwatch.degraded(reason, model=model)
            return {"user_id": body.user_id, "items": items, "degraded": reason}
        forwarded = traffic_class if traffic_class != traffic.default else None
        started, in_flight = time.monotonic(), calls.start()
        took = float("nan")
        try:
            async with aiwatch.phase("inference_call"):
                items = await predict({**body.model_dump(), "profile": profile}, forwarded)
            took = time.monotonic() - started
        except InferenceUnavailable as exc:
            raise HTTPException(502, str(exc)) from exc
        finally:
            calls.finish(in_flight, took)
        answers.remember(body.user_id, items)
        return {"user_id": body.user_id, "items": items}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    demo_faults.add_routes(app, faults)
    return aiwatch.instrument(app, service=service, exclude_paths=["/healthz", demo_faults.PATH])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aiwatch.demo.gateway")
    parser.add_argument("--port", type=int, required=True)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--inference-url", help="the inference service over HTTP: http://HOST:PORT")
    target.add_argument("--inference-grpc", help="the inference service over gRPC: HOST:PORT")
    parser.add_argument("--redis", default=None, help="redis://HOST:PORT/DB for the feature cache")
    parser.add_argument("--cache-capacity", type=int, default=1500)
    parser.add_argument("--service", default=SERVICE, help="the gateway's service label")
    parser.add_argument("--cache-name", default=CACHE, help="the feature cache's cache label")
    parser.add_argument("--deadline-ms", type=float, default=None,
                        help="time budget of a real-time request; past it, answer from recent answers (degraded)")
    parser.add_argument("--model", default=Names().model, help="the model label of degraded responses")
    args = parser.parse_args(argv)
    from aiwatch.demo.serve import serve

    serve(create_app(args.inference_url, args.redis, args.cache_capacity, args.inference_grpc, args.service,
                     args.cache_name, args.deadline_ms / 1000.0 if args.deadline_ms else None, args.model),
          args.port,
          loop="asyncio" if args.inference_grpc else "auto")


if __name__ == "__main__":
    main()
