"""Apps that the end-to-end tests serve with real servers (uvicorn, gunicorn) in a subprocess."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from flask import Flask, Response

import aiwatch

fastapi_app = FastAPI()


@fastapi_app.post("/predict/{model_name}")
async def predict(model_name: str, request: Request) -> dict[str, str | None]:
    aiwatch.set_model(model_name)
    with aiwatch.phase("features"):
        await asyncio.sleep(0.002)
    with aiwatch.phase("inference"):
        await asyncio.sleep(0.005)
    return {"traceparent": request.headers.get("traceparent")}


@fastapi_app.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            await asyncio.sleep(0.03)
            yield f"{i}".encode()

    return StreamingResponse(chunks())


aiwatch.instrument(fastapi_app, service="inference")

flask_app = Flask("e2e")


@flask_app.get("/work/<int:n>")
def work(n: int) -> dict[str, int]:
    with aiwatch.phase("inference"):
        time.sleep(0.02)
    return {"pid": os.getpid(), "n": n}


@flask_app.get("/stream/<int:n>")
def stream_chunks(n: int) -> Response:
    """``n`` chunks, 10 ms apart."""
    def chunks() -> Iterator[bytes]:
        for i in range(n):
            yield b"chunk %d\n" % i
            time.sleep(0.01)

    return Response(chunks(), mimetype="text/plain")


aiwatch.instrument(flask_app, service="flask")
