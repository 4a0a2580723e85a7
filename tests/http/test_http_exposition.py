"""/metrics as an ASGI app, a WSGI app and a standalone server, with Prometheus text / OpenMetrics negotiation."""

from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry
from werkzeug.test import Client

from aiwatch.exposition import make_asgi_app, make_wsgi_app, start_http_server
from aiwatch.metrics import Metrics
from tests.http.asgi_driver import call
from tests.servers import free_port

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def populate(metrics: Metrics) -> None:
    h = metrics.child(metrics.request_duration, ("svc", "/p", "GET", "200", "realtime"))
    h.observe(0.01, {"trace_id": "ab" * 16})


def check(content_type: str, body: bytes, openmetrics: bool) -> None:
    text = body.decode()
    assert ('aiwatch_request_duration_seconds_count{method="GET",route="/p",service="svc",status="200",'
            'traffic_class="realtime"} 1') in text
    if openmetrics:
        assert content_type.startswith("application/openmetrics-text")
        assert text.endswith("# EOF\n")
        assert f'# {{trace_id="{"ab" * 16}"}} 0.01' in text
    else:
        assert content_type.startswith("text/plain; version=0.0.4")
        assert "# EOF" not in text and "trace_id" not in text


async def test_asgi_app_negotiates(metrics: Metrics, registry: CollectorRegistry) -> None:
    populate(metrics)
    app = make_asgi_app(registry)
    plain = await call(app, "/metrics")
    check(plain.headers["content-type"], plain.body, openmetrics=False)
    om = await call(app, "/metrics", headers=[("accept", OPENMETRICS)])
    check(om.headers["content-type"], om.body, openmetrics=True)


def test_wsgi_app_negotiates(metrics: Metrics, registry: CollectorRegistry) -> None:
    populate(metrics)
    client = Client(make_wsgi_app(registry))
    plain = client.get("/metrics", buffered=True)
    check(plain.headers["Content-Type"], plain.data, openmetrics=False)
    om = client.get("/metrics", headers={"Accept": OPENMETRICS}, buffered=True)
    check(om.headers["Content-Type"], om.data, openmetrics=True)


def test_standalone_server_negotiates(metrics: Metrics, registry: CollectorRegistry) -> None:
    populate(metrics)
    port = free_port()
    server, thread = start_http_server(port, registry=registry)
    try:
        for accept, openmetrics in ((None, False), (OPENMETRICS, True)):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
            if accept:
                request.add_header("Accept", accept)
            with urllib.request.urlopen(request, timeout=5) as resp:
                check(resp.headers["Content-Type"], resp.read(), openmetrics)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
