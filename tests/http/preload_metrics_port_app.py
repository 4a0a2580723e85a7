"""The app that ``test_http_preload`` serves with ``gunicorn --preload``: it serves its metrics on a port of their own
(``aiwatch.start_http_server`` on ``$AIWATCH_TEST_METRICS_PORT``), started at import, in the master."""

from __future__ import annotations

import os

from flask import Flask

import aiwatch

app = Flask("preload_metrics_port")


@app.get("/predict")
def predict() -> dict[str, int]:
    return {"pid": os.getpid()}


app = aiwatch.instrument(app, service="preload-port", metrics_path=None)  # type: ignore[assignment]
aiwatch.start_http_server(int(os.environ["AIWATCH_TEST_METRICS_PORT"]))
