"""The inference service: scores one user through aiwatch's micro-batcher and the recommender.

Run by the demo runner as ``python -m aiwatch.demo.inference --port PORT [--grpc-port PORT]``. The HTTP app always
serves ``/metrics``, ``/info`` and ``/healthz``; the prediction itself is ``POST /predict`` over HTTP, or, with
``--grpc-port``, the ``aiwatch.demo.Recommender/Recommend`` RPC of a ``grpc.aio`` server in the same event loop,
instrumented by aiwatch's gRPC server interceptor. Either way ``/metrics`` shows the latency split of every request
(``queue``, ``inference`` = model time, ``overhead``), the queue and batch metrics, and the drift metrics of the
request features.

A model call is the recommender's numpy work (``--model-ms``, calibrated at start-up) plus, optionally, a simulated
accelerator's time (``--device-ms``, a sleep that holds no CPU, as a GPU kernel the host waits for).
``/demo/faults`` switches the model fault of a demo scenario: every call then sleeps ``model_delay_ms`` longer, a
throttled GPU (:mod:`aiwatch.demo.faults`).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel, Field

import aiwatch
from aiwatch.demo import faults as demo_faults
from aiwatch.demo.drift import drift_monitor
from aiwatch.demo.model import Recommender, Request
from aiwatch.demo.names import Names
from aiwatch.metrics import Metrics, default_metrics
from aiwatch.signals.batcher import MicroBatcher

MODEL = Names().model
SERVICE = Names().inference
GRPC_METHOD = "/aiwatch.demo.Recommender/Recommend"


class PredictBody(BaseModel):
    user_id: int = Field(ge=0, le=2**63 - 1)  # as the gRPC transport's int64, so both transports take the same ids
    basket_value: float = Field(ge=0)
    items_in_cart: float = Field(ge=0)
    session_seconds: float = Field(ge=0)
    profile: dict[str, float] = Field(default_factory=dict)


class InferenceCore:
    """What both transports share: the drift hook, then the request through the batcher into the model.

    The model runs on one worker thread (one "accelerator"): one batch at a time."""

    def __init__(self, metrics: Metrics, model_seconds: float = 0.025, max_batch: int = 2,
                 max_wait: float = 0.002, drift_window: float = 10.0, drift_interval: float = 0.5,
                 model: str = MODEL, device_seconds: float = 0.0, faults: demo_faults.Faults | None = None,
                 model_cache: str | None = None, prediction_log: aiwatch.PredictionLog | None = None) -> None:
        self.model = Recommender.cached(model_cache, max_batch=max_batch) if model_cache else Recommender(
            max_batch=max_batch)
        self.per_call = self.model.calibrate(model_seconds)
        self.device_seconds = device_seconds
        self.faults = faults or demo_faults.Faults()
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-model")
        self.batcher: MicroBatcher[Request, list[int]] = MicroBatcher(
            self._call_model, max_batch_size=max_batch, max_wait_seconds=max_wait, model=model, queue=model,
            executor=self._executor, metrics=metrics)
        self.drift = drift_monitor(metrics, drift_window, drift_interval, model=model)
        self.model_label = model
        #: every request's features and answer, when the demo keeps a prediction log (``--prediction-log DIR``)
        self.prediction_log = prediction_log

    def _call_model(self, batch: Sequence[Request]) -> list[list[int]]:
        result = self.model.predict(batch)
        wait = self.device_seconds + self.faults.model_delay
        if wait > 0:
            time.sleep(wait)  # the accelerator's time: the host thread waits, the CPU is free
        return result

    def start(self) -> None:
        self.drift.start()

    async def predict(self, request: Request) -> list[int]:
        features = {"basket_value": request.basket_value, "items_in_cart": request.items_in_cart,
                    "session_seconds": request.session_seconds}
        self.drift.observe(features)
        items = await self.batcher.submit(request)
        if self.prediction_log is not None:
            self.prediction_log.log(self.model_label, {"user_id": request.user_id, **features},
                                    {"top_item": items[0] if items else None, "items": len(items)})
        return items

    def info(self) -> dict[str, Any]:
        seconds = self.per_call + self.device_seconds
        return {"model_seconds": seconds, "cpu_seconds": self.per_call, "device_seconds": self.device_seconds,
                "max_batch": self.max_batch, "candidates": self.model.candidates,
                "capacity_rps": self.max_batch / seconds}

    async def aclose(self) -> None:
        self.drift.stop()
        if self.prediction_log is not None:
            self.prediction_log.close()
        await self.batcher.aclose()
        self._executor.shutdown(wait=True, cancel_futures=True)


def create_app(model_seconds: float = 0.025, max_batch: int = 2, max_wait: float = 0.002,
               grpc_port: int | None = None, drift_window: float = 10.0, service: str = SERVICE,
               model: str = MODEL, device_seconds: float = 0.0, model_cache: str | None = None,
               prediction_log: str | None = None) -> Any:
    """The FastAPI app, with a recommender trained and calibrated to about ``model_seconds`` per call (plus
    ``device_seconds`` of simulated accelerator time); with ``grpc_port`` it also serves the Recommend RPC on
    127.0.0.1:``grpc_port`` while the app runs. ``service`` and ``model`` are its labels in aiwatch's metrics. With
    ``prediction_log`` (a directory) it logs every request's features and answer there as Parquet (user ids
    HMAC-hashed), files rotated every 10 s."""
    from fastapi import FastAPI

    metrics = default_metrics()
    faults = demo_faults.Faults()
    log = None
    if prediction_log is not None:
        log = aiwatch.PredictionLog(aiwatch.ParquetSink(prediction_log, max_file_seconds=10.0), metrics=metrics,
                                    hash_fields={"user_id"}, hash_key=os.urandom(32))
    core = InferenceCore(metrics, model_seconds, max_batch, max_wait, drift_window, model=model,
                         device_seconds=device_seconds, faults=faults, model_cache=model_cache, prediction_log=log)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        core.start()
        server = (await start_grpc(core, grpc_port, metrics, service=service, model=model)
                  if grpc_port is not None else None)
        try:
            yield
        finally:
            if server is not None:
                await server.stop(grace=1.0)
            await core.aclose()

    app = FastAPI(title="aiwatch demo inference", lifespan=lifespan)

    @app.post("/predict")
    async def predict(body: PredictBody) -> dict[str, Any]:
        items = await core.predict(Request(body.user_id, body.basket_value, body.items_in_cart,
                                           body.session_seconds))
        return {"items": items}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {**core.info(), "transport": "grpc" if grpc_port is not None else "http"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    demo_faults.add_routes(app, faults)
    return aiwatch.instrument(app, service=service, model=model,
                              exclude_paths=["/healthz", "/info", demo_faults.PATH])


async def start_grpc(core: InferenceCore, port: int, metrics: Metrics, host: str = "127.0.0.1",
                     service: str = SERVICE, model: str = MODEL) -> Any:
    """Start a ``grpc.aio`` server for the Recommend RPC, instrumented by aiwatch's server interceptor."""
    import grpc

    from aiwatch.demo import recommender_pb2, recommender_pb2_grpc
    from aiwatch.grpc import grpc_aio_server_interceptor

    pb: Any = recommender_pb2
    pb_grpc: Any = recommender_pb2_grpc

    class Servicer(pb_grpc.RecommenderServicer):  # type: ignore[misc]
        async def Recommend(self, request: Any, context: Any) -> Any:
            items = await core.predict(Request(int(request.user_id), request.basket_value, request.items_in_cart,
                                               request.session_seconds))
            return pb.RecommendReply(items=items)

    server = grpc.aio.server(interceptors=[grpc_aio_server_interceptor(service=service, model=model,
                                                                       metrics=metrics)])
    pb_grpc.add_RecommenderServicer_to_server(Servicer(), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port} for gRPC (address already in use?)")
    await server.start()
    return server


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aiwatch.demo.inference")
    parser.add_argument("--port", type=int, required=True, help="HTTP port (/metrics, /info, POST /predict)")
    parser.add_argument("--grpc-port", type=int, default=None, help="also serve the Recommend RPC on this port")
    parser.add_argument("--model-ms", type=float, default=25.0, help="target model time per padded batch")
    parser.add_argument("--max-batch", type=int, default=2)
    parser.add_argument("--drift-window", type=float, default=10.0,
                        help="seconds of requests the drift monitor's PSI evaluation looks at")
    parser.add_argument("--device-ms", type=float, default=0.0,
                        help="simulated accelerator time per model call (a sleep, no CPU)")
    parser.add_argument("--service", default=SERVICE, help="the service label")
    parser.add_argument("--model", default=MODEL, help="the model (and queue) label")
    parser.add_argument("--model-cache", default=None,
                        help="an .npz file with the trained factors: loaded when it exists, written after training")
    parser.add_argument("--prediction-log", metavar="DIR", default=None,
                        help="log every request's features and answer into DIR (Parquet, by model and hour)")
    args = parser.parse_args(argv)
    from aiwatch.demo.serve import serve

    serve(create_app(args.model_ms / 1000.0, args.max_batch, grpc_port=args.grpc_port,
                     drift_window=args.drift_window, service=args.service, model=args.model,
                     device_seconds=args.device_ms / 1000.0, model_cache=args.model_cache,
                     prediction_log=args.prediction_log), args.port,
          loop="asyncio" if args.grpc_port is not None else "auto")


if __name__ == "__main__":
    main()
