"""A slow Prometheus is "slow", with the query and the time, not "unreachable", and one slow panel does not blank the
others (issue 13, finding 8). The Prometheus is real: a loopback proxy in front of it holds back the answers to the
queries a test picks."""

from __future__ import annotations

import contextlib
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest

from aiwatch.console import PrometheusSource, SourceSlow, SourceUnavailable
from aiwatch.console.queries import PanelQueries
from aiwatch.promql import quantile_parts
from tests.console.conftest import Stack, run_view, texts
from tests.servers import handler_server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("console_env")]


@contextmanager
def delaying_proxy(upstream: str, slow: str, delay: float) -> Iterator[str]:
    """An HTTP proxy to ``upstream`` that answers requests whose URL matches the regex ``slow`` ``delay`` seconds
    late (as a loaded Prometheus would); yields its URL."""
    pattern = re.compile(slow)
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if pattern.search(urllib.parse.unquote_plus(self.path)):
                release.wait(delay)
            with urllib.request.urlopen(upstream + self.path, timeout=30) as resp:
                body, status, kind = resp.read(), resp.status, resp.headers.get("Content-Type", "")
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the console may have given up on this answer
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with handler_server(Handler, release) as url:
        yield url


def test_a_slow_query_is_slow_with_the_query_and_the_time(stack: Stack) -> None:
    # the quantiles' one query: the request histogram's bucket rates
    with delaying_proxy(stack.prom.url, r"\(rate\(aiwatch_request_duration_seconds_bucket", delay=10) as url:
        src = PrometheusSource(url, timeout=1)
        started = time.monotonic()
        with pytest.raises(SourceSlow) as info:
            src.latency_quantiles(5)
        message = str(info.value)
        assert message.startswith(f"Prometheus at {url} is slow: /api/v1/query_range (query: sum by (")
        assert "(rate(aiwatch_request_duration_seconds_bucket[5s]))" in message
        assert "was not answered within 1 s (gave up after " in message
        assert not isinstance(info.value, SourceUnavailable)
        assert time.monotonic() - started < 10  # it gave up; the proxy would have answered after 10 s
        assert src.throughput(5)  # the same source still answers the queries that are not slow


def test_one_slow_panel_does_not_blank_the_others(stack: Stack) -> None:
    # the bucket rates the per-service latency panel computes its quantiles from (whatever labels it keeps apart),
    # which the exemplars of its p99 read too, and only those
    found = quantile_parts(PanelQueries().latency_quantile(0.99, "WINDOW"))
    assert found is not None
    buckets = found[1].removesuffix("[WINDOW]))")
    assert buckets.startswith("sum by (")
    assert buckets.endswith("service, le) (rate(aiwatch_request_duration_seconds_bucket")
    # 3 s for each query: every other query must come within it on a loaded 2-core machine, through the proxy
    only_latency = re.escape(buckets)
    with delaying_proxy(stack.prom.url, only_latency, delay=20) as url:
        at = run_view(PrometheusSource(url, timeout=3, span=60, points=30), "Latency")
    warnings = texts(at.warning)
    slow = [w for w in warnings if "is slow" in w]
    # the latency panel and the slowest traced requests (the exemplars of the same query's series)
    assert len(slow) == 2, warnings
    assert slow[0].startswith("Request latency p50 / p95 / p99 per service (ms): Prometheus at ")
    assert slow[1].startswith("Slowest traced requests per service (last 5s): the exemplars of the p99 panel's "
                              "series: Prometheus at ") and "/api/v1/query_exemplars" in slow[1]
    assert all(buckets in w for w in slow)
    assert not any("unreachable" in t for t in texts(at.error) + warnings)
    # the phase split, the network time, the throughput and the error ratio still draw
    assert len(at.get("vega_lite_chart")) >= 4
    assert {m.label for m in at.metric} >= {"time per request"}


def test_a_slow_prometheus_is_slow_in_every_panel_not_unreachable(stack: Stack) -> None:
    with delaying_proxy(stack.prom.url, r"/api/v1/", delay=10) as url:
        at = run_view(PrometheusSource(url, timeout=1), "Resources")
    warnings = texts(at.warning)
    assert warnings[0].startswith(f"Could not read the scrape targets: Prometheus at {url} is slow: "
                                  "/api/v1/targets was not answered within 1 s")
    assert len([w for w in warnings if "is slow" in w]) == 1 + 6  # the banner and every panel
    assert not at.error and not at.get("vega_lite_chart")
