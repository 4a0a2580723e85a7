"""``opentelemetry-instrument python app.py`` picks aiwatch up with no code change: a real FastAPI app served by
uvicorn and a real gRPC server, then a Flask app and a Django project on the standard library's WSGI server, each
in a subprocess, with the OpenTelemetry SDK configured from the environment and OpenTelemetry's own
instrumentations loaded next to aiwatch's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.servers import REPO

pytestmark = pytest.mark.slow

APP = Path(__file__).with_name("uninstrumented_app.py")
WSGI_APPS = Path(__file__).with_name("uninstrumented_wsgi_apps.py")


def _spans(stdout: str) -> list[dict[str, Any]]:
    """The spans the console exporter printed (JSON objects one after another)."""
    decoder = json.JSONDecoder()
    spans, i = [], 0
    while (start := stdout.find("{", i)) != -1:
        try:
            obj, i = decoder.raw_decode(stdout, start)
        except ValueError:
            i = start + 1
            continue
        if isinstance(obj, dict) and "context" in obj and "kind" in obj:
            spans.append(obj)
    return spans


def _run_instrumented(script: Path, cwd: Path, **extra_env: str) -> tuple[dict[str, Any], str]:
    """``opentelemetry-instrument python script``: its RESULT and its whole stdout (the console exporter's spans)."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "OTEL_SERVICE_NAME": "auto", "OTEL_TRACES_EXPORTER": "console",
           "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none", "PYTHONPATH": str(REPO), **extra_env}
    env.pop("AIWATCH_SERVICE", None)
    done = subprocess.run([str(bin_dir / "opentelemetry-instrument"), sys.executable, str(script)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")), done.stdout


def test_opentelemetry_instrument_picks_aiwatch_up(tmp_path: Path) -> None:
    result, stdout = _run_instrumented(APP, tmp_path)
    # HTTP: aiwatch's middleware is on the app (Server-Timing, /metrics with the route template)
    assert result["http_server_timing"] and "total;dur=" in result["http_server_timing"]
    assert any('route="/items/{item_id}"' in m and 'service="auto"' in m and m.endswith(" 1.0")
               for m in result["http_metrics"] if m.startswith("aiwatch_request_duration_seconds_count"))
    # gRPC: aiwatch's server interceptor sent its timing back
    assert result["grpc_trailer"] and "total;dur=" in result["grpc_trailer"]
    spans = _spans(stdout)
    servers = [s for s in spans if s["kind"] == "SpanKind.SERVER"]
    clients = [s for s in spans if s["kind"] == "SpanKind.CLIENT"]
    http = [s for s in servers if s["attributes"].get("http.route") == "/items/{item_id}"]
    rpc = [s for s in servers if s["attributes"].get("rpc.method") == "Predict"]
    # one SERVER span per request: OpenTelemetry's (FastAPI's instrumentation, gRPC's interceptor), none of aiwatch's
    assert len(http) == 1 and len(rpc) == 1, [(s["name"], s["attributes"]) for s in servers]
    assert len([c for c in clients if c["attributes"].get("rpc.method") == "Predict"]) == 1
    # and the scrape of /metrics (served by aiwatch's middleware, no route); contrib names its gRPC span with a slash
    assert sorted(s["name"] for s in servers) == ["/aiwatch.example.Inference/Predict", "GET",
                                                  "GET /items/{item_id}"]


def test_opentelemetry_instrument_picks_aiwatch_up_for_flask_and_django(tmp_path: Path) -> None:
    # OpenTelemetry's Django instrumentation is installed too, and it needs the settings module in the environment
    # before the project's wsgi.py sets it: it configures Django's default settings otherwise, with or without
    # aiwatch (open-telemetry/opentelemetry-python-contrib#677; docs/http.md)
    result, stdout = _run_instrumented(WSGI_APPS, tmp_path,
                                       DJANGO_SETTINGS_MODULE="tests.otel.django_project.settings")
    # Flask: aiwatch's middleware and route hook on the app made at import (Server-Timing, /metrics, the rule)
    assert result["flask_server_timing"] and "total;dur=" in result["flask_server_timing"]
    assert any('route="/items/<int:item_id>"' in m and 'service="auto"' in m and m.endswith(" 1.0")
               for m in result["flask_metrics"]), result["flask_metrics"]
    # Django: the project's get_wsgi_application() came back instrumented, the route middleware put first, before
    # the one OpenTelemetry's DjangoInstrumentor put first at startup
    assert result["django_middleware"] == ["aiwatch.middleware.django.AiwatchDjangoRouteMiddleware",
                                           "opentelemetry.instrumentation.django.middleware.otel_middleware."
                                           "_DjangoMiddleware",
                                           "tests.otel.django_project.middleware.ModelsMiddleware",
                                           "django.middleware.common.CommonMiddleware"]
    assert result["django_server_timing"] and "total;dur=" in result["django_server_timing"]
    assert any('route="items/<int:item_id>/"' in m and 'service="auto"' in m and m.endswith(" 1.0")
               for m in result["django_metrics"]), result["django_metrics"]
    # aiwatch's own SERVER span per request (no OpenTelemetry instrumentation of Flask is installed; OpenTelemetry's
    # Django middleware runs inside the handler aiwatch wraps)
    spans = _spans(stdout)
    servers = [s for s in spans if s["kind"] == "SpanKind.SERVER" and s["attributes"].get("http.route") not in
               (None, "/metrics")]
    assert sorted(s["attributes"]["http.route"] for s in servers) == ["/items/<int:item_id>", "items/<int:item_id>/"]
    # and OpenTelemetry's Django span is an INTERNAL one under aiwatch's, in its trace
    django = next(s for s in servers if s["attributes"]["http.route"] == "items/<int:item_id>/")
    (internal,) = [s for s in spans if s["kind"] == "SpanKind.INTERNAL"
                   and s["attributes"].get("http.route") == "items/<int:item_id>/"]
    assert internal["parent_id"] == django["context"]["span_id"]
    assert internal["context"]["trace_id"] == django["context"]["trace_id"]
