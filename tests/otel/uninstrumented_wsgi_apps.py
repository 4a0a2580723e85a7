"""A Flask app and a Django project (its settings, URLs and ``wsgi.py`` in one file) that import nothing of aiwatch.
Run under ``opentelemetry-instrument`` they must come out instrumented by aiwatch's entry points; it serves each on
werkzeug's threaded server, asks each for ``/items/3`` and ``/metrics``, and prints one ``RESULT {json}`` line."""

from __future__ import annotations

import json
import threading
import urllib.request
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path
from flask import Flask
from werkzeug.serving import make_server

settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], SECRET_KEY="auto", ROOT_URLCONF=__name__,
                   MIDDLEWARE=["django.middleware.common.CommonMiddleware"], INSTALLED_APPS=[], USE_TZ=True)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402 - as a project's wsgi.py imports it


def django_item(request: HttpRequest, item_id: int) -> JsonResponse:
    return JsonResponse({"id": item_id})


urlpatterns = [path("items/<int:item_id>/", django_item)]
application = get_wsgi_application()  # the project's wsgi.py

flask_app = Flask(__name__)


@flask_app.get("/items/<int:item_id>")
def flask_item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


def ask(app: Any, item_path: str) -> tuple[str | None, list[str]]:
    """``item_path``'s Server-Timing and the ``aiwatch_request_duration_seconds_count`` lines of ``/metrics``."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(f"{base}{item_path}") as resp:
            timing = resp.headers.get("Server-Timing")
        with urllib.request.urlopen(f"{base}/metrics") as resp:
            metrics = [line for line in resp.read().decode().splitlines()
                       if line.startswith("aiwatch_request_duration_seconds_count")]
    finally:
        server.shutdown()
        thread.join(10)
    return timing, metrics


def main() -> None:
    flask_timing, flask_metrics = ask(flask_app, "/items/3")
    django_timing, django_metrics = ask(application, "/items/3/")
    print("RESULT " + json.dumps({"flask_server_timing": flask_timing, "flask_metrics": flask_metrics,
                                  "django_server_timing": django_timing, "django_metrics": django_metrics,
                                  "django_middleware": list(settings.MIDDLEWARE)}), flush=True)


if __name__ == "__main__":
    main()
