"""Event loop delay on a real grpc.aio server, on a loop of its own thread as in production: a handler that blocks
the loop shows as a delay, and the sampler ends with the server's loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import grpc.aio
import pytest

from aiwatch.grpc import grpc_aio_server_interceptor
from aiwatch.metrics import Metrics
from examples.grpc_service.servicer import AioInferenceServicer, pb_grpc
from tests.grpc.conftest import req, stub_for
from tests.servers import wait_until
from tests.signals.test_event_loop import count, late

pytestmark = pytest.mark.slow


class BlockingServicer(AioInferenceServicer):
    async def Predict(self, request: Any, context: Any) -> Any:
        if request.model == "block":
            time.sleep(0.3)  # CPU-bound work on the loop's thread
        return await super().Predict(request, context)


@contextmanager
def aio_server_thread(metrics: Metrics) -> Iterator[tuple[str, threading.Thread]]:
    """A grpc.aio server with aiwatch's interceptor (service "svc") on ``asyncio.run`` in a thread of its own."""
    started, stop = threading.Event(), threading.Event()
    target: list[str] = []

    async def serve() -> None:
        server = grpc.aio.server(interceptors=[grpc_aio_server_interceptor(service="svc", metrics=metrics)])
        pb_grpc.add_InferenceServicer_to_server(BlockingServicer(), server)
        target.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        await server.start()
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0.02)
        await server.stop(None)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        yield target[0], thread
    finally:
        stop.set()
        thread.join(30)


def test_a_blocked_grpc_aio_loop_shows_in_the_delay_and_the_sampler_ends_with_the_server(
        metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_EVENT_LOOP_INTERVAL", "0.05")
    with aio_server_thread(metrics) as (target, thread), stub_for(target) as stub:
        stub.Predict(req(features=[1.0]))
        wait_until(lambda: count(metrics) >= 1, 30, what="a first sample")  # how soon depends on the machine's load
        stub.Predict(req(features=[1.0], model="block"))
        # the sample due during the 0.3 s block runs at its end, at least 0.25 s late (the interval is 0.05 s)
        wait_until(lambda: late(metrics, "0.2") >= 1, 30, what="a delay over 0.2 s")
    assert not thread.is_alive()  # asyncio.run ended: the sampler did not keep the loop running
    ended = count(metrics)
    time.sleep(0.3)
    assert count(metrics) == ended  # the loop is closed: its sampler ended


@pytest.mark.parametrize("value", ["0", "-1", "nan", "fast"])
def test_a_hostile_interval_is_refused_by_name_when_the_interceptor_is_made(monkeypatch: pytest.MonkeyPatch,
                                                                            metrics: Metrics, value: str) -> None:
    monkeypatch.setenv("AIWATCH_EVENT_LOOP_INTERVAL", value)
    with pytest.raises(ValueError, match=f"^AIWATCH_EVENT_LOOP_INTERVAL must be a number of seconds .*got '{value}'"):
        grpc_aio_server_interceptor(metrics=metrics)
