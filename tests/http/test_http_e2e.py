"""End to end through real servers on loopback: uvicorn + an instrumented httpx client, and gunicorn with two
workers in prometheus_client multiprocess mode (every request counted exactly once)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import aiwatch.client
from aiwatch.servertiming import parse_server_timing
from tests.http.test_http_wsgi_server import leave_mid_stream
from tests.labels import with_defaults
from tests.servers import free_port, http_get, python_app, python_env, wait_until

pytestmark = pytest.mark.slow


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = http_get(url)
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(with_defaults(name, labels).items()))))


def test_uvicorn_and_httpx_client(registry: CollectorRegistry, provider: TracerProvider,
                                  exporter: InMemorySpanExporter) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with python_app(["-m", "uvicorn", "tests.http.e2e_apps:fastapi_app", "--host", "127.0.0.1", "--port",
                     str(port), "--log-level", "warning"], f"{base}/metrics"):
        with aiwatch.client.instrument_httpx(httpx.Client(), service="gateway", registry=registry,
                                             peer="inference", tracer_provider=provider) as client:
            with aiwatch.client.route("/predict/{model_name}"):
                responses = [client.post(f"{base}/predict/ranker") for _ in range(5)]
            streamed = client.get(f"{base}/stream")
            missing = client.get(f"{base}/does/not/exist")
        samples = scrape(f"{base}/metrics")

    assert all(r.status_code == 200 for r in responses)
    assert streamed.text == "012" and missing.status_code == 404
    timing = parse_server_timing(responses[0].headers["server-timing"])
    assert {"features", "inference", "overhead", "total"} <= set(timing)
    # each call's CLIENT span travelled to the server as W3C trace context
    client_spans = [s for s in exporter.get_finished_spans() if s.name == "POST /predict/{model_name}"]
    assert sorted(r.json()["traceparent"].split("-")[1] for r in responses) == sorted(
        f"{s.context.trace_id:032x}" for s in client_spans)

    req = "aiwatch_request_duration_seconds_count"
    assert value(samples, req, service="inference", route="/predict/{model_name}", method="POST", status="200") == 5
    assert value(samples, req, service="inference", route="__unmatched__", method="GET", status="404") == 1
    assert value(samples, "aiwatch_phase_duration_seconds_count", service="inference", model="ranker",
                 phase="inference") == 5
    stream_sum = value(samples, "aiwatch_request_duration_seconds_sum", service="inference", route="/stream",
                       method="GET", status="200")
    assert stream_sum is not None and stream_sum >= 0.09  # timed to the last of three 30 ms chunks
    assert value(samples, "aiwatch_requests_in_flight", service="inference") == 0

    assert registry.get_sample_value("aiwatch_client_request_duration_seconds_count", {
        "service": "gateway", "peer": "inference", "route": "/predict/{model_name}", "status": "200",
        "phase": ""}) == 5
    assert registry.get_sample_value("aiwatch_network_duration_seconds_count",
                                     {"service": "gateway", "peer": "inference", "phase": ""}) == 7


def test_gunicorn_does_not_serve_a_killed_runs_requests_as_in_flight(tmp_path: Path) -> None:
    # a run killed with its master mid-request never ran child_exit: its workers' files said 3 requests were in
    # flight, and /metrics summed them in after every restart until someone wiped the directory
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    killed = subprocess.run([sys.executable, "-c", "from aiwatch.metrics import get_metrics; m = get_metrics(); "
                             "m.child(m.requests_in_flight, ('flask',)).inc(3)"], env=env, check=True)
    assert killed.returncode == 0 and any(p.name.startswith("gauge_livesum_") for p in multiproc.iterdir())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with python_app(["-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "-c", "python:aiwatch.gunicorn",
                     "tests.http.e2e_apps:flask_app"], f"{base}/metrics", env=env):
        assert requests.get(f"{base}/work/1", timeout=10).status_code == 200
        in_flight = value(scrape(f"{base}/metrics"), "aiwatch_requests_in_flight", service="flask")
    assert in_flight == 0


def test_gunicorn_two_workers_count_every_request_once(tmp_path: Path, registry: CollectorRegistry) -> None:
    n = 40
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    with python_app(["-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "-c", "python:aiwatch.gunicorn",
                     "tests.http.e2e_apps:flask_app"], f"{base}/metrics", env=env):
        session = aiwatch.client.instrument_requests(requests.Session(), service="caller", registry=registry,
                                                     peer="flask")

        def one(i: int) -> int:
            resp = session.get(f"{base}/work/{i}")
            assert resp.status_code == 200
            return int(json.loads(resp.text)["pid"])

        with ThreadPoolExecutor(4) as pool:
            pids = set(pool.map(one, range(n)))
        # A WSGI request is recorded when the server closes its response, which can come after the client has read
        # the body: the last requests may reach the metrics a moment after their responses.
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

        def all_counted() -> bool:
            samples.clear()
            samples.update(scrape(f"{base}/metrics"))
            return value(samples, "aiwatch_request_duration_seconds_count", service="flask", route="/work/<int:n>",
                         method="GET", status="200") == n

        wait_until(all_counted, 10, what=f"{n} requests counted")

    assert len(pids) == 2, f"expected both workers to serve requests, got pids {pids}"
    assert value(samples, "aiwatch_phase_duration_seconds_count", service="flask", model="",
                 phase="inference") == n
    assert value(samples, "aiwatch_requests_in_flight", service="flask") == 0
    assert registry.get_sample_value("aiwatch_network_duration_seconds_count",
                                     {"service": "caller", "peer": "flask", "phase": ""}) == n


def test_gunicorn_records_a_client_gone_mid_stream_as_499(tmp_path: Path) -> None:
    """gunicorn's worker closes the body when its write to a client gone fails (PEP 3333): the request is 499, as
    the ASGI middleware records it; before, it kept the app's 200. A stream read whole stays 200."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    with python_app(["-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "-c", "python:aiwatch.gunicorn",
                     "tests.http.e2e_apps:flask_app"], f"{base}/metrics",
                    env=python_env(PROMETHEUS_MULTIPROC_DIR=str(multiproc))):
        leave_mid_stream(port, "/stream/1000")
        assert requests.get(f"{base}/stream/3", timeout=10).text == "chunk 0\nchunk 1\nchunk 2\n"

        def counted(status: str) -> float | None:
            return value(scrape(f"{base}/metrics"), "aiwatch_request_duration_seconds_count", service="flask",
                         route="/stream/<int:n>", method="GET", status=status)

        wait_until(lambda: counted("499") == 1 and counted("200") == 1, 10, what="both streams recorded")


def test_gunicorn_two_workers_serve_only_the_metrics_a_scrape_names(tmp_path: Path) -> None:
    """``/metrics?name[]=...`` (prometheus_client's filter, which Prometheus' params can set) answered an empty 200
    in multiprocess mode: the merged view describes no names for prometheus_client to restrict it by."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    env = python_env(PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    named = "name[]=aiwatch_request_duration_seconds_count&name[]=aiwatch_requests_in_flight"
    with python_app(["-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "-c", "python:aiwatch.gunicorn",
                     "tests.http.e2e_apps:flask_app"], f"{base}/metrics", env=env):
        for i in range(6):
            assert requests.get(f"{base}/work/{i}", timeout=10).status_code == 200
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

        def all_counted() -> bool:
            samples.clear()
            samples.update(scrape(f"{base}/metrics?{named}"))
            return value(samples, "aiwatch_request_duration_seconds_count", service="flask", route="/work/<int:n>",
                         method="GET", status="200") == 6

        wait_until(all_counted, 10, what="6 requests counted")
        openmetrics = requests.get(f"{base}/metrics?name[]=aiwatch_requests_in_flight", timeout=10,
                                   headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert {name for name, _ in samples} == {"aiwatch_request_duration_seconds_count", "aiwatch_requests_in_flight"}
    assert value(samples, "aiwatch_requests_in_flight", service="flask") == 0
    assert openmetrics.status_code == 200
    lines = [line for line in openmetrics.text.splitlines() if not line.startswith("#")]
    assert 'aiwatch_requests_in_flight{service="flask"} 0.0' in lines
    assert {line.partition("{")[0] for line in lines} == {"aiwatch_requests_in_flight"}
