"""A Django model service instrumented by aiwatch: its ASGI handler under uvicorn, in one file.

    pip install "aiwatch[all]" django
    python examples/django_service/app.py --port 8000
    curl -s -X POST localhost:8000/predict -H 'content-type: application/json' -d '{"user_id": 3}' -i
    curl -s localhost:8000/metrics | grep 'aiwatch_request_duration_seconds_count{'

A project with a settings module does the same in two places: the middleware entry in settings.py's MIDDLEWARE,
and ``aiwatch.instrument(get_asgi_application(), ...)`` (or ``get_wsgi_application()``) in asgi.py (wsgi.py).
"""

from __future__ import annotations

import argparse
import json
import time

import django
import numpy as np
from django.conf import settings

settings.configure(
    DEBUG=False, ALLOWED_HOSTS=["127.0.0.1", "localhost"], SECRET_KEY="example-only", ROOT_URLCONF=__name__,
    # aiwatch's route middleware first: it tells aiwatch which URL pattern each request matched
    MIDDLEWARE=["aiwatch.middleware.django.AiwatchDjangoRouteMiddleware"],
)
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402 - after the settings
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

import aiwatch  # noqa: E402

rng = np.random.default_rng(0)
ITEM_FACTORS = rng.normal(size=(2000, 16)).astype(np.float32)
USER_FACTORS = rng.normal(size=(500, 16)).astype(np.float32)


@aiwatch.phase("features")
def fetch_features(user_id: int) -> np.ndarray:
    time.sleep(0.002)  # a feature-store round trip
    return USER_FACTORS[user_id % len(USER_FACTORS)]


def predict(request: HttpRequest) -> JsonResponse:
    try:
        body = json.loads(request.body)
    except ValueError:
        body = None
    user_id = body.get("user_id") if isinstance(body, dict) else None
    if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id < 0:
        # the client's mistake, answered as the FastAPI example answers it: a 500 would count against availability
        return JsonResponse({"error": 'the body must be a JSON object whose "user_id" is an integer of at least 0'},
                            status=422)
    user = fetch_features(user_id)
    with aiwatch.phase("inference", model="mf"):
        top = np.argsort(-(ITEM_FACTORS @ user))[:10]
    return JsonResponse({"items": top.tolist()})


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [path("predict", predict), path("healthz", healthz)]

application = aiwatch.instrument(get_asgi_application(), service="recommender-django", exclude_paths=["/healthz"])

if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    uvicorn.run(application, host="127.0.0.1", port=parser.parse_args().port, log_level="warning")
