"""The embedded scraper's history when the wall clock is set back (an NTP step, a VM's resume, a container's clock set
right): its scrapes go on being recorded, and the console shows the endpoint as it is now. The wall clock is stepped
where aiwatch reads it (``aiwatch.clock.wall``); the endpoint is a real one."""

from __future__ import annotations

import socket
import time

import pytest

from aiwatch import clock
from aiwatch.console import ScrapeSource
from aiwatch.metrics import Metrics
from tests.console.endpoints import live_endpoint
from tests.servers import wait_until

STEP = 3600.0
RATE_WINDOW = 30.0
"""The rates' window: it holds every scrape of the test however far apart a loaded machine spaces them (a 2 s one
held one scrape, and no rate, once the scrapes were 2.1 s apart), and none an hour away."""


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def serving(m: Metrics) -> None:
    m.request_duration.labels("svc", "/predict", "POST", "200", "realtime").observe(0.05)


def test_a_wall_clock_set_back_keeps_the_scrapes_and_shows_the_endpoint_down(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with live_endpoint(serving) as (port, down):
        url = f"http://127.0.0.1:{port}/metrics"
        src = ScrapeSource([url], interval=0.5, history=60, timeout=2.0, start=False)
        for _ in range(3):
            src.scrape_once()
            time.sleep(0.3)
        assert src.throughput(RATE_WINDOW), "the endpoint's request rate before the step"

        monkeypatch.setattr(clock, "wall", lambda: time.time() - STEP)
        src.scrape_once()
        time.sleep(0.3)
        after_step = src.throughput(RATE_WINDOW)
        down.set()
        # the endpoint shuts down on a thread of its own (up to its 0.5 s poll later): a scrape right after down.set()
        # was still answered (5 of 10 runs)
        wait_until(lambda: refuses(port), 10, 0.02, what="the endpoint shut down")
        src.scrape_once()
        health = src.health()
        stamps = [s.ts for _, snaps in src._copy() for s in snaps]
        src.close()

    assert len(stamps) == 5, stamps  # each scrape after the step was dropped as older than the last one before it
    assert stamps == sorted(stamps)
    # the history moved back with the clock: its latest scrape is now on the clock as set, the time between the
    # scrapes kept (the last before the step was 0.3 s and a scrape before the first after it, not an hour)
    assert abs(stamps[-1] - (time.time() - STEP)) < STEP / 2
    assert 0.3 <= stamps[2] - stamps[1] < STEP / 2 and 0.3 <= stamps[3] - stamps[2] < STEP / 2
    # the rate over the step is of the scrapes either side of it
    assert after_step and all(p[-1] > 0 for s in after_step for p in s.points[-1:]), after_step
    assert [h.up for h in health] == [False], health  # was shown up (the last scrape before the step) for an hour
