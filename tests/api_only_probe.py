"""Run by tests/test_otel_api_only.py in a Python whose opentelemetry-sdk cannot be imported: exercises the core and
prints what it saw as one JSON object on stdout.

    python -m tests.api_only_probe modules      # import every aiwatch module
    python -m tests.api_only_probe middleware   # one request through the ASGI and the WSGI middleware
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import sys
from typing import Any

#: Modules that are programs rather than libraries: importing them runs them.
SCRIPTS = {"aiwatch.__main__", "aiwatch.console.app"}


def import_every_module() -> dict[str, Any]:
    import aiwatch
    from aiwatch._optional import MissingExtraError

    imported: list[str] = []
    missing_extra: dict[str, str] = {}
    failed: dict[str, str] = {}
    names = ["aiwatch"] + [m.name for m in pkgutil.walk_packages(aiwatch.__path__, "aiwatch.")]
    for name in sorted(set(names) - SCRIPTS):
        try:
            importlib.import_module(name)
        except MissingExtraError as exc:  # an optional dependency this environment lacks: not the SDK's business
            missing_extra[name] = str(exc)
        except ModuleNotFoundError as exc:
            if (exc.name or "").startswith("opentelemetry"):
                failed[name] = f"{type(exc).__name__}: {exc}"
            else:  # generated gRPC code imports grpc directly
                missing_extra[name] = str(exc)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
        else:
            imported.append(name)
    return {"imported": imported, "missing_extra": missing_extra, "failed": failed,
            "sdk_loaded": sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk"))}


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    import aiwatch

    with aiwatch.phase("inference", model="m"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def call_asgi(app: Any, path: str) -> dict[str, Any]:
    started: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.update(status=message["status"],
                           headers={k.decode().lower(): v.decode() for k, v in message.get("headers", [])})

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": [],
             "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80)}
    await app(scope, receive, send)
    return started


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    import aiwatch

    with aiwatch.phase("inference", model="m"):
        pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def call_wsgi(app: Any, path: str) -> dict[str, Any]:
    import io

    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started.update(status=int(status.split()[0]), headers={k.lower(): v for k, v in headers})

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr}
    body = app(environ, start_response)
    try:
        b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()  # as a WSGI server does: the request ends here
    return started


def _total(registry: Any, sample: str, **labels: str) -> float:
    return sum(s.value for metric in registry.collect() for s in metric.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def one_request_each() -> dict[str, Any]:
    from opentelemetry import trace
    from prometheus_client import CollectorRegistry

    import aiwatch

    out: dict[str, Any] = {}
    # no provider anywhere (tracing off), then the API's own no-op provider passed explicitly
    for provider_name, provider in (("none", None), ("api-noop", trace.NoOpTracerProvider())):
        for kind in ("asgi", "wsgi"):
            registry = CollectorRegistry()
            options: dict[str, Any] = {"service": "probe", "registry": registry}
            if provider is not None:
                options["tracer_provider"] = provider
            if kind == "asgi":
                response = asyncio.run(call_asgi(aiwatch.instrument(asgi_app, **options), "/predict"))
            else:
                response = call_wsgi(aiwatch.instrument(wsgi_app, **options), "/predict")
            out[f"{kind}/{provider_name}"] = {
                "status": response.get("status"),
                "server_timing": response.get("headers", {}).get("server-timing", ""),
                "requests": _total(registry, "aiwatch_request_duration_seconds_count", status="200"),
                "inference": _total(registry, "aiwatch_phase_duration_seconds_count", phase="inference"),
                "errors": _total(registry, "aiwatch_instrumentation_errors_total"),
            }
    from aiwatch.tracing import TracerSource

    out["tracing_off"] = TracerSource().tracer() is None  # no provider: no span work on the request path
    out["sdk_loaded"] = sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk"))
    return out


if __name__ == "__main__":
    mode = sys.argv[1]
    result = import_every_module() if mode == "modules" else one_request_each()
    print(json.dumps(result))
