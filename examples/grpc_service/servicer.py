"""The example inference service's servicers (sync and asyncio), with aiwatch phases.

Request knobs make the example useful for demos and tests: ``delay_ms`` makes the "model" slower (per message on
streams) and ``fail`` makes the call fail: a status code name (``"INVALID_ARGUMENT"``) aborts with that code,
``"raise"`` raises an exception from the servicer. Streams fail after their first message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

import aiwatch

try:
    from . import inference_pb2 as pb
    from . import inference_pb2_grpc as pb_grpc
except ImportError:  # run as a script from this folder
    import inference_pb2 as pb  # type: ignore[no-redef]
    import inference_pb2_grpc as pb_grpc  # type: ignore[no-redef]

__all__ = ["AioInferenceServicer", "InferenceServicer", "pb", "pb_grpc"]


class ServicerError(RuntimeError):
    """What ``fail="raise"`` raises."""


def _score(request: Any) -> float:
    with aiwatch.phase("features"):
        features = list(request.features) or [0.0]
    with aiwatch.phase("inference", model=request.model or "ranker"):
        if request.delay_ms:
            time.sleep(request.delay_ms / 1000.0)
        return sum(features) / len(features)


def _fail(request: Any, context: Any) -> None:
    if request.fail == "raise":
        raise ServicerError("the servicer failed")
    if request.fail:
        context.abort(grpc.StatusCode[request.fail], f"asked to fail with {request.fail}")


class InferenceServicer(pb_grpc.InferenceServicer):
    """Thread-pool servicer."""

    def Predict(self, request: Any, context: Any) -> Any:
        _fail(request, context)
        return pb.PredictReply(score=_score(request), model=request.model or "ranker")

    def PredictStream(self, request: Any, context: Any) -> Iterator[Any]:
        for i, value in enumerate(request.features or [0.0]):
            with aiwatch.phase("inference", model=request.model or "ranker"):
                if request.delay_ms:
                    time.sleep(request.delay_ms / 1000.0)
            yield pb.PredictReply(score=value, model=request.model or "ranker", index=i)
            if i == 0:
                _fail(request, context)

    def Upload(self, request_iterator: Iterator[Any], context: Any) -> Any:
        total, count = 0.0, 0
        for request in request_iterator:
            _fail(request, context)
            total += _score(request)
            count += 1
        return pb.UploadReply(count=count, mean=total / count if count else 0.0)

    def Chat(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        for i, request in enumerate(request_iterator):
            yield pb.PredictReply(score=_score(request), model=request.model or "ranker", index=i)
            if i == 0:
                _fail(request, context)


async def _ascore(request: Any) -> float:
    async with aiwatch.phase("features"):
        features = list(request.features) or [0.0]
    async with aiwatch.phase("inference", model=request.model or "ranker"):
        if request.delay_ms:
            await asyncio.sleep(request.delay_ms / 1000.0)
        return sum(features) / len(features)


async def _afail(request: Any, context: Any) -> None:
    if request.fail == "raise":
        raise ServicerError("the servicer failed")
    if request.fail:
        await context.abort(grpc.StatusCode[request.fail], f"asked to fail with {request.fail}")


class AioInferenceServicer(pb_grpc.InferenceServicer):
    """grpc.aio servicer."""

    async def Predict(self, request: Any, context: Any) -> Any:
        await _afail(request, context)
        return pb.PredictReply(score=await _ascore(request), model=request.model or "ranker")

    async def PredictStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        for i, value in enumerate(request.features or [0.0]):
            async with aiwatch.phase("inference", model=request.model or "ranker"):
                if request.delay_ms:
                    await asyncio.sleep(request.delay_ms / 1000.0)
            yield pb.PredictReply(score=value, model=request.model or "ranker", index=i)
            if i == 0:
                await _afail(request, context)

    async def Upload(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        total, count = 0.0, 0
        async for request in request_iterator:
            await _afail(request, context)
            total += await _ascore(request)
            count += 1
        return pb.UploadReply(count=count, mean=total / count if count else 0.0)

    async def Chat(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        i = 0
        async for request in request_iterator:
            yield pb.PredictReply(score=await _ascore(request), model=request.model or "ranker", index=i)
            if i == 0:
                await _afail(request, context)
            i += 1
