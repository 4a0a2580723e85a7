"""A Flask app and a Django project (tests/otel/django_project, as ``startproject`` lays one out) that import
nothing of aiwatch.
Run under ``opentelemetry-instrument`` they must come out instrumented by aiwatch's entry points; it serves each on
werkzeug's threaded server, asks each for ``/items/3`` and ``/metrics``, and prints one ``RESULT {json}`` line."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

from django.conf import settings
from flask import Flask
from werkzeug.serving import make_server

from tests.otel.django_project.wsgi import application

flask_app = Flask(__name__)


@flask_app.get("/items/<int:item_id>")
def flask_item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


def ask(app: Any, item_path: str, route: str) -> tuple[str | None, list[str]]:
    """``item_path``'s Server-Timing and the ``aiwatch_request_duration_seconds_count`` lines of ``/metrics``, once
    they count the request to ``route`` (the server's thread records it when it closes the body, which may be
    after the client has read the response), or after 10 s."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.port}"
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
