"""End to end on real servers: a gateway calling an inference service (two uvicorn processes, aiwatch's ASGI
middleware on both, the gateway calling with aiwatch's httpx client; tests/diagnose/loop_apps.py). In the incident
window the inference handler leaves CPU-bound work on its loop (``time.sleep``): requests wait for that loop before
its app sees them, which the gateway measures as network time. Diagnosed from snapshots of both services'
``/metrics``, the verdict must say that the inference loop, not the wire, moved."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from aiwatch.demo.scrape import scrape_all
from aiwatch.diagnose import Diagnosis, diagnose_windows, format_diagnosis, totals_from_snapshots
from aiwatch.diagnose.loops import EXPLAINS_SHARE, mean_delay
from aiwatch.diagnose.window import WindowTotals
from aiwatch.scrape import Samples
from tests.servers import Process, free_port, http_get, python_app, python_env, require_module

pytestmark = pytest.mark.slow

#: seconds of traffic in each window, and the gateway's requests per second (Poisson arrivals: each request comes
#: at a random time, as the loop delay's mean assumes)
WINDOW, RATE = 8.0, 20.0
#: seconds of the incident with long stalls (about one every 3.75 s)
LONG_WINDOW = 30.0


@contextmanager
def two_services() -> Iterator[tuple[str, str, list[Process]]]:
    """The gateway's and the inference service's base URLs, and their processes (whose logs a failure shows)."""
    require_module("uvicorn")
    require_module("httpx")
    gateway_port, inference_port = free_port(), free_port()
    inference = f"http://127.0.0.1:{inference_port}"
    gateway = f"http://127.0.0.1:{gateway_port}"
    # the loop sampler's default interval (0.1 s), whatever the environment says
    env = python_env(INFERENCE_URL=inference, AIWATCH_EVENT_LOOP_INTERVAL="0.1")
    # uvicorn's default keep-alive (5 s) equals httpx's keepalive_expiry: a request sent on a connection the server
    # is closing fails ("Server disconnected without sending a response", encode/httpx#2487): the likely cause of the
    # one gateway request that answered 500 in a CI run (whose logs were not kept; a failure now shows them). A server
    # that keeps idle connections longer than its clients leaves the closing to them.
    keep_alive = ["--timeout-keep-alive", "75"]
    with ExitStack() as stack:
        processes = []
        for app, port, url in (("inference", inference_port, inference), ("gateway", gateway_port, gateway)):
            processes.append(stack.enter_context(python_app(
                ["-m", "uvicorn", f"tests.diagnose.loop_apps:{app}", "--port", str(port), "--lifespan", "on",
                 "--log-level", "warning", *keep_alive], f"{url}/metrics", env=env)))
        yield gateway, inference, processes


async def _load(url: str, seconds: float, rng: random.Random) -> list[str]:
    """Poisson traffic for ``seconds``; returns the answers that were not 200."""
    httpx = require_module("httpx")
    async with httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=100)) as client:
        sent = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sent.append(asyncio.ensure_future(client.get(url)))
            await asyncio.sleep(rng.expovariate(RATE))
        answers = await asyncio.gather(*sent)
    return [f"{r.status_code} {r.text[:200]!r}" for r in answers if r.status_code != 200]


def _diagnose(starve: str, incident: float) -> tuple[Diagnosis, WindowTotals, WindowTotals]:
    """Diagnose the gateway over a baseline of :data:`WINDOW` seconds and, after ``starve`` on the inference
    service, an incident of ``incident`` seconds; the diagnosis and the two windows."""
    rng = random.Random(3)
    with two_services() as (gateway, inference, processes):
        def snapshot() -> tuple[float, Samples]:
            return time.time(), scrape_all([f"{gateway}/metrics", f"{inference}/metrics"])

        def load(seconds: float) -> None:
            failed = asyncio.run(_load(f"{gateway}/", seconds, rng))
            assert not failed, (failed[:5], [p.output() for p in processes])

        load(1.0)  # warm-up: connections open, both samplers running
        t0, s0 = snapshot()
        load(WINDOW)
        t1, s1 = snapshot()
        assert http_get(f"{inference}{starve}")[0] == 200
        load(incident)
        t2, s2 = snapshot()
    baseline, incident_window = totals_from_snapshots(s0, s1, t0, t1), totals_from_snapshots(s1, s2, t1, t2)
    return diagnose_windows(baseline, incident_window, "gateway"), baseline, incident_window


def test_a_starved_inference_loop_is_named_in_the_verdict_not_the_wire() -> None:
    d, _, _ = _diagnose("/starve", WINDOW)
    report = format_diagnosis(d)
    assert d.cause == "network:gateway->inference", report
    assert "of which the event loop delay of inference rose" in d.verdict, report
    assert "its loop is starved (CPU-bound work on the loop or CPU saturation), not the wire" in d.verdict, report
    loop = d.contributors[0].event_loop
    assert loop is not None and loop.explains and loop.peer_seconds is not None, report
    assert loop.calls_per_request == pytest.approx(1.0)


def test_long_stalls_of_the_inference_loop_are_named_where_the_mean_delay_per_sample_was_too_low() -> None:
    # stalls of 0.375-1.125 s after gaps of 3 s on average: the sampler sees each once, so the mean delay per sample
    # rises by about a third of the wait a request arriving at a random time has (tests/diagnose/loop_stalls.py)
    d, baseline, incident = _diagnose("/starve?long", LONG_WINDOW)
    report = format_diagnosis(d)
    assert d.cause == "network:gateway->inference", report
    assert "of which the event loop delay of inference rose" in d.verdict, report
    loop = d.contributors[0].event_loop
    assert loop is not None and loop.explains and loop.peer_seconds is not None, report
    assert loop.mean_only == (), report
    signals = {s.name for s in d.signals if s.labels.get("service") == "inference"}
    assert "event loop wait (estimated)" in signals and "event loop delay (mean)" not in signals, report

    def mean(w: WindowTotals) -> float:  # the estimate before: the mean delay per sample
        found = mean_delay(w, "inference")
        assert found is not None
        return found

    rise = mean(incident) - mean(baseline)
    assert rise < EXPLAINS_SHARE * d.contributors[0].delta_seconds, (rise, report)
    print(f"mean delay per sample rose {rise * 1000:.1f} ms\n{report}")  # shown with -s
