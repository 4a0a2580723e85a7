"""A Flask model service instrumented by aiwatch in one line (WSGI middleware).

    pip install "aiwatch[all]" flask
    python examples/flask_service/app.py --port 8000
    curl -s -X POST localhost:8000/predict -H 'content-type: application/json' -d '{"user_id": 3}' -i
    curl -s localhost:8000/metrics | grep aiwatch_phase_duration_seconds_count

Under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` so /metrics merges every worker.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from flask import Flask, jsonify, request

import aiwatch

rng = np.random.default_rng(0)
ITEM_FACTORS = rng.normal(size=(2000, 16)).astype(np.float32)
USER_FACTORS = rng.normal(size=(500, 16)).astype(np.float32)

app = Flask(__name__)


@aiwatch.phase("features")
def fetch_features(user_id: int) -> np.ndarray:
    time.sleep(0.002)  # a feature-store round trip
    return USER_FACTORS[user_id % len(USER_FACTORS)]


@app.post("/predict")
def predict():
    body = request.get_json(force=True, silent=True)
    user_id = body.get("user_id") if isinstance(body, dict) else None
    if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id < 0:
        # the client's mistake, answered as the FastAPI example answers it: a 500 would count against availability
        return jsonify(error='the body must be a JSON object whose "user_id" is an integer of at least 0'), 422
    user = fetch_features(user_id)
    with aiwatch.phase("inference", model="mf"):
        top = np.argsort(-(ITEM_FACTORS @ user))[:10]
    return jsonify(items=top.tolist())


@app.get("/healthz")
def healthz():
    return jsonify(status="ok")


app = aiwatch.instrument(app, service="recommender-flask", exclude_paths=["/healthz"])

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    app.run(host="127.0.0.1", port=parser.parse_args().port)
