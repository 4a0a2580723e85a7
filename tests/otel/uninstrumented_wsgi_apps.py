"""A Flask app and a Django project (tests/otel/django_project, as ``startproject`` lays one out) that import
nothing of aiwatch.
Run under ``opentelemetry-instrument`` they must come out instrumented by aiwatch's entry points; it serves each on
the standard library's WSGI server, asks each for ``/items/3`` and ``/metrics``, and prints one ``RESULT {json}`` line.
Not werkzeug's development server: when the client resets the connection after reading the response, it skips
closing the response (PEP 3333), and aiwatch then records that request only at the middleware's next call (3 runs
in 20 under load lost one request that way before aiwatch recorded dropped bodies at all)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from django.conf import settings
from flask import Flask

from tests.otel.django_project.wsgi import application

flask_app = Flask(__name__)


@flask_app.get("/items/<int:item_id>")
def flask_item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def ask(app: Any, item_path: str, route: str) -> tuple[str | None, list[str]]:
    """``item_path``'s Server-Timing and the ``aiwatch_request_duration_seconds_count`` lines of ``/metrics``, once
    they count the request to ``route`` (the server records it when it closes the body, which may be after the
    client has read the response), or after 10 s."""
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with urllib.request.urlopen(f"{base}{item_path}") as resp:
            timing = resp.headers.get("Server-Timing")
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(f"{base}/metrics") as resp:
                metrics = [line for line in resp.read().decode().splitlines()
                           if line.startswith("aiwatch_request_duration_seconds_count")]
            if any(f'route="{route}"' in line for line in metrics) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        server.shutdown()
        thread.join(10)
    return timing, metrics


def main() -> None:
    flask_timing, flask_metrics = ask(flask_app, "/items/3", "/items/<int:item_id>")
    django_timing, django_metrics = ask(application, "/items/3/", "items/<int:item_id>/")
    print("RESULT " + json.dumps({"flask_server_timing": flask_timing, "flask_metrics": flask_metrics,
                                  "django_server_timing": django_timing, "django_metrics": django_metrics,
                                  "django_middleware": list(settings.MIDDLEWARE)}), flush=True)


if __name__ == "__main__":
    main()
