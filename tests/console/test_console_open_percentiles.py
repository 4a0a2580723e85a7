"""A percentile whose rank lies in a histogram's +Inf bucket (above its largest finite bound) is not known: PromQL's
histogram_quantile, and the scrape source's, answer the largest finite bound. The tiles show it as a lower bound,
"≥ 60 s", never as if it were the percentile; a percentile inside the finite buckets is shown as it is."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest, start_http_server

from aiwatch.console import PrometheusSource, ScrapeSource
from aiwatch.console.source import DataSource, Series, histogram_quantile, quantile_overflows
from aiwatch.console.text import latency_text
from tests.console.conftest import WINDOW, run_view
from tests.servers import prometheus, wait_until

pytestmark = pytest.mark.usefixtures("console_env")

URL = "http://127.0.0.1:9/metrics"
BUCKETS = (0.1, 1.0, 10.0, 60.0)
"""The largest finite bound is aiwatch's own (60 s)."""
SECONDS = {"fast": 0.5, "slow": 120.0}
"""Each service's requests: fast ones inside the buckets, slow ones all above the largest finite bound."""
LONG_WINDOW = 300.0
FAST_TILES = ["550 ms", "955 ms", "991 ms"]
"""The fast service's p50, p95, p99: interpolated inside its bucket, 0.1 s to 1 s."""


class Traffic:
    """Requests of both services, and queue waits of 120 s, observed into a registry of aiwatch's histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram("aiwatch_request_duration_seconds", "requests", ["service", "traffic_class"],
                                  buckets=BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("aiwatch_queue_wait_seconds", "queue wait", ["queue"], buckets=BUCKETS,
                                    registry=self.registry)

    def step(self, n: int = 10) -> None:
        for _ in range(n):
            for service, seconds in SECONDS.items():
                self.requests.labels(service, "realtime").observe(seconds)
            self.queue_wait.labels("predict").observe(120.0)


def latest(series: list[Series], service: str) -> dict[str, tuple[float | None, bool]]:
    """``quantile -> (latest value, at_least)`` of one service's series."""
    return {s.labels["quantile"]: (s.last, s.at_least) for s in series if s.labels.get("service") == service}


def lower_bounds_everywhere(series: list[Series], service: str) -> bool | None:
    """True when every point of ``service``'s series is marked a lower bound, False when none is, None otherwise."""
    mine = [s for s in series if s.labels.get("service") == service]
    marked = [t in s.lower_bounds for s in mine for t, _ in s.points]
    return True if marked and all(marked) else False if not any(marked) else None


def tiles(source: DataSource, view: str) -> list[tuple[str, str]]:
    return [(m.label, m.value) for m in run_view(source, view).metric]


def marks(chart: Any) -> tuple[list[bool], bool]:
    """Each drawn point of a chart: whether it is marked a lower bound (its "at_least" field); and whether the chart
    draws those apart (a point layer of them alone, next to the line)."""
    spec = json.loads(chart.proto.spec)
    rows = pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pylist()
    layers = spec.get("layer", [])
    apart = any(layer["mark"]["type"] == "point" and layer.get("transform") == [{"filter": "datum.at_least"}]
                for layer in layers)
    return [row.get("at_least", False) for row in rows], apart


def check_charts(source: DataSource) -> None:
    """The charts mark the points above the largest finite bound, as the tiles do, and no others."""
    at = run_view(source, "Latency")
    charts = at.get("vega_lite_chart")  # fast's latency, slow's latency, the rest
    fast, slow = marks(charts[0]), marks(charts[1])
    assert fast[0] and not any(fast[0]) and not fast[1]
    # before: drawn as ordinary points of the line, 60000 ms as if it were the percentile
    assert slow[0] and all(slow[0]) and slow[1]
    assert [str(c.value)[:30] for c in at.caption if str(c.value).startswith("▲")] == ["▲ ≥ bound: At least this: the "]
    classes = run_view(source, "AI traffic").get("vega_lite_chart")
    assert not any(marks(classes[0])[0]) and all(marks(classes[1])[0]) and marks(classes[1])[1]


def check_tiles(source: DataSource) -> None:
    latency = tiles(source, "Latency")[:6]  # fast's, then slow's
    assert [label for label, _ in latency] == ["request p50", "request p95", "request p99"] * 2
    assert [value for _, value in latency[:3]] == FAST_TILES
    # before: "60000.0 ms", the largest finite bound shown as if it were the slow service's percentiles; then
    # "≥ 60000.0 ms", cut to "≥ 6000…" in the two services' columns
    assert [value for _, value in latency[3:]] == ["≥ 60 s"] * 3
    classes = tiles(source, "AI traffic")
    assert classes[0] == ("realtime p95", FAST_TILES[1]) and classes[3] == ("realtime p95", "≥ 60 s")
    assert dict(tiles(source, "Alerts"))["queue wait p95"] == "≥ 60 s"


def check_marked(source: DataSource, window: float) -> None:
    """The slow service's percentiles (and the queue wait's p95) are lower bounds of 60 s, the fast one's are not:
    in the latest points, in every point, on the tiles and on the charts."""
    slow = latest(source.latency_quantiles(window), "slow")
    assert slow == {"p50": (60.0, True), "p95": (60.0, True), "p99": (60.0, True)}
    assert all(not at_least for _, at_least in latest(source.latency_quantiles(window), "fast").values())
    assert latest(source.latency_by_class(window), "slow") == {"p50": (60.0, True), "p95": (60.0, True)}
    queue_wait = source.autoscaling_signals(window)[3]
    assert (queue_wait.name, queue_wait.value, queue_wait.at_least) == ("queue wait p95", 60.0, True)
    # every point, not only the latest the tiles show: the slow service's requests were all above 60 s
    assert lower_bounds_everywhere(source.latency_quantiles(window), "slow") is True
    assert lower_bounds_everywhere(source.latency_quantiles(window), "fast") is False
    assert lower_bounds_everywhere(source.latency_by_class(window), "slow") is True
    check_tiles(source)
    check_charts(source)


def test_quantile_overflows_when_the_rank_lies_above_the_largest_finite_bound() -> None:
    every_one_above = [(1.0, 0.0), (60.0, 0.0), (math.inf, 10.0)]
    assert histogram_quantile(0.5, every_one_above) == 60.0  # the bound, not the percentile
    assert quantile_overflows(0.5, every_one_above)
    two_above = [(1.0, 5.0), (60.0, 8.0), (math.inf, 10.0)]
    assert not quantile_overflows(0.5, two_above) and not quantile_overflows(0.8, two_above)
    assert quantile_overflows(0.95, two_above)
    assert not quantile_overflows(0.5, [(1.0, 0.0), (math.inf, 0.0)])  # no observation
    assert not quantile_overflows(0.5, [(math.inf, 3.0)])  # no finite bound
    assert not quantile_overflows(math.nan, every_one_above)


@pytest.mark.parametrize(("seconds", "at_least", "text"), [
    (None, False, "—"),
    (0.0, False, "0.0 ms"),
    (0.01234, False, "12.3 ms"),
    (0.09994, False, "99.9 ms"),
    (0.09996, False, "100 ms"),  # rounds up: no decimals from 100 ms on
    (0.5504, False, "550 ms"),
    (0.9994, True, "≥ 999 ms"),
    (0.9996, False, "1 s"),  # rounds up: in seconds from 1 s on
    (2.5, True, "≥ 2.5 s"),
    (60.0, True, "≥ 60 s"),
    (123.4, False, "123 s"),
    (3600.0, True, "≥ 3600 s"),
])
def test_a_tile_latency_is_short(seconds: float | None, at_least: bool, text: str) -> None:
    # a tile in a service's column of two shows about seven characters: "≥ 60000.0 ms" read "≥ 6000…"
    assert latency_text(seconds, at_least) == text
    assert len(text) <= 8


def test_the_scrape_source_marks_percentiles_above_the_largest_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    # a window that holds the four scrapes below while the three views draw, however slowly
    monkeypatch.setenv("AIWATCH_CONSOLE_WINDOW", str(LONG_WINDOW))
    src = ScrapeSource([URL], interval=1.0, history=600, start=False)
    traffic = Traffic()
    now = time.time()
    for i in range(4):
        traffic.step()
        src.record(URL, generate_latest(traffic.registry).decode(), ts=now - 3 + i)
    check_marked(src, LONG_WINDOW)


@pytest.fixture
def observed() -> Iterator[str]:
    """A /metrics endpoint of both services' traffic, observed every 0.2 s."""
    traffic = Traffic()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=traffic.registry)
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.2):
            traffic.step(1)

    stepping = threading.Thread(target=run, daemon=True)
    stepping.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        stop.set()
        stepping.join(5)
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.slow
def test_prometheus_source_marks_percentiles_above_the_largest_bucket(observed: str) -> None:
    with prometheus([observed]) as prom:
        src = PrometheusSource(prom.url, span=60, points=30)
        wait_until(lambda: len(latest(src.latency_quantiles(WINDOW), "slow")) == 3, 30, what="a rate of requests")
        check_marked(src, WINDOW)
