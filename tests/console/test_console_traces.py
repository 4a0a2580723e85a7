"""The Latency view's slowest traced requests: the exemplars a real Prometheus with exemplar storage kept of the
series the p99 panel reads, each with its trace id, linked to the trace by ``AIWATCH_CONSOLE_TRACE_URL``; label
values a hostile target sends stay text and cannot move the link elsewhere; the embedded scraper says it keeps
none."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from aiwatch.console import PrometheusSource, ScrapeSource
from aiwatch.console.config import ConsoleConfig
from tests.console.conftest import console_window, run_view, texts
from tests.http.test_http_tracing import fastapi_app
from tests.servers import Prometheus, handler_server, prometheus, uvicorn_in_thread, wait_until

TEMPLATE = "https://tempo.example/trace/{trace_id}"
HOSTILE_ID = "[x](javascript:alert(1))/../../admin?a=1#"
HOSTILE_SERVICE = "**evil** [link](https://evil.example)"
PANEL = "Slowest traced requests per service"


class _HostileTarget(BaseHTTPRequestHandler):
    """An OpenMetrics endpoint that is not aiwatch's: its request histogram's exemplar and service are text meant
    to become Markdown links."""

    def do_GET(self) -> None:
        labels = f'service="{HOSTILE_SERVICE}",route="/",method="GET",status="200",traffic_class="realtime"'
        body = ("# TYPE aiwatch_request_duration_seconds histogram\n"
                f'aiwatch_request_duration_seconds_bucket{{{labels},le="5.0"}} 1 # {{trace_id="{HOSTILE_ID}"}} 4.5 '
                f"{time.time():.3f}\n"
                f'aiwatch_request_duration_seconds_bucket{{{labels},le="+Inf"}} 1\n'
                f"aiwatch_request_duration_seconds_count{{{labels}}} 1\n"
                f"aiwatch_request_duration_seconds_sum{{{labels}}} 4.5\n# EOF\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def traced(registry: CollectorRegistry, provider: TracerProvider,
           exporter: InMemorySpanExporter) -> Iterator[tuple[Prometheus, str, float]]:
    """A Prometheus with exemplar storage scraping a uvicorn-served traced FastAPI app that served one sampled
    request, and the hostile target; yields it, the request's trace id and a time before the request."""
    before = time.time()
    with uvicorn_in_thread(fastapi_app(registry, tracer_provider=provider)) as (port, _), \
            handler_server(_HostileTarget) as hostile:
        assert requests.get(f"http://127.0.0.1:{port}/items/1", timeout=10).status_code == 200

        def servers() -> list[Any]:
            return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER
                    and s.instrumentation_scope is not None and s.instrumentation_scope.name == "aiwatch"]

        # the middleware ends the span after the response's last message: the client may have it first
        wait_until(lambda: len(servers()) == 1, 10, what="the request's server span")
        [server] = servers()
        with prometheus([f"127.0.0.1:{port}", hostile.removeprefix("http://")],
                        flags=["--enable-feature=exemplar-storage"]) as prom:
            yield prom, f"{server.context.trace_id:032x}", before


def test_the_slowest_traced_requests_link_to_their_traces(traced: tuple[Prometheus, str, float],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    prom, trace_id, before = traced
    src = PrometheusSource(prom.url, span=60, points=30)
    wait_until(lambda: len(src.slowest_traces(60.0)) == 2, what="both targets' exemplars")
    rows = {r.service: r for r in src.slowest_traces(60.0)}
    assert rows["svc"].trace_id == trace_id and 0 < rows["svc"].seconds < 4.5
    assert rows[HOSTILE_SERVICE].trace_id == HOSTILE_ID and rows[HOSTILE_SERVICE].seconds == 4.5
    assert before - 0.001 <= rows["svc"].at <= time.time()  # when it was observed (Prometheus keeps milliseconds)

    console_window(monkeypatch, 60)
    monkeypatch.setenv("AIWATCH_CONSOLE_TRACE_URL", TEMPLATE)
    table = _table(run_view(src, "Latency"))
    assert list(table["trace_id"]) == [HOSTILE_ID, trace_id]  # text, as the target sent it; services in name order
    assert list(table["service"]) == [HOSTILE_SERVICE, "svc"]
    assert list(table["trace"]) == [
        "https://tempo.example/trace/%5Bx%5D%28javascript%3Aalert%281%29%29%2F..%2F..%2Fadmin%3Fa%3D1%23",
        f"https://tempo.example/trace/{trace_id}"]

    monkeypatch.delenv("AIWATCH_CONSOLE_TRACE_URL")
    at = run_view(src, "Latency")
    assert "trace" not in _table(at).columns
    assert any("AIWATCH_CONSOLE_TRACE_URL" in c for c in texts(at.caption))


def _table(at: Any) -> Any:
    [table] = [d.value for d in at.dataframe if "trace_id" in d.value.columns]
    return table


def test_the_scrape_source_says_it_keeps_no_exemplars(monkeypatch: pytest.MonkeyPatch) -> None:
    console_window(monkeypatch, 60)
    src = ScrapeSource(["http://127.0.0.1:9/metrics"], interval=1.0, history=60, start=False)
    at = run_view(src, "Latency")
    assert any("keeps no exemplars" in i and "exemplar-storage" in i for i in texts(at.info))


@pytest.mark.parametrize(("template", "wrong"), [("https://tempo.example/trace/", "must hold {trace_id}"),
                                                 ("javascript:alert('{trace_id}')", "must be an http(s) URL")])
def test_a_trace_url_template_that_cannot_link_is_refused_naming_the_variable(template: str, wrong: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"AIWATCH_CONSOLE_TRACE_URL {wrong}")):
        ConsoleConfig.from_env({"AIWATCH_CONSOLE_TRACE_URL": template})


def test_a_trace_url_template_holding_credentials_is_refused_without_printing_them() -> None:
    """Each trace link on the page is the template with the id in it: ``https://admin:pw@grafana...`` handed the
    Grafana password to everyone who can open the console (which has no login)."""
    with pytest.raises(ValueError, match=r"^AIWATCH_CONSOLE_TRACE_URL https://grafana\.example/.* holds credentials") \
            as info:
        ConsoleConfig.from_env({"AIWATCH_CONSOLE_TRACE_URL": "https://admin:pa55word@grafana.example/t/{trace_id}"})
    assert "pa55word" not in str(info.value)
