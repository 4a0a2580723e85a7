"""aiwatch: observability and drift monitoring for AI inference APIs.

    import aiwatch
    from fastapi import FastAPI

    app = aiwatch.instrument(FastAPI(), service="recommender")

    @app.post("/predict")
    async def predict(body: dict) -> dict:
        with aiwatch.phase("inference", model="ranker"):
            return {"score": 0.5}

Importing ``aiwatch`` imports no optional dependency; names below that need one are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from aiwatch._version import __version__
from aiwatch.cardinality import LabelGuard
from aiwatch.metrics import CONTRACT, Metrics, MetricSpec, get_metrics
from aiwatch.timing import RequestRecorder, current_timeline, phase, record_phase, set_model

# name -> module that defines it; imported on first attribute access (heavier or optional dependencies).
_LAZY: dict[str, str] = {
    "instrument": "aiwatch.instrument",
    "AiwatchMiddleware": "aiwatch.middleware.asgi",
    "make_asgi_app": "aiwatch.exposition",
    "make_wsgi_app": "aiwatch.exposition",
    "start_http_server": "aiwatch.exposition",
    "DriftMonitor": "aiwatch.drift",
    "ReferenceProfile": "aiwatch.drift",
    "ProfileError": "aiwatch.drift",
}

__all__ = [
    "CONTRACT",
    "AiwatchMiddleware",
    "DriftMonitor",
    "LabelGuard",
    "MetricSpec",
    "Metrics",
    "ProfileError",
    "ReferenceProfile",
    "RequestRecorder",
    "__version__",
    "current_timeline",
    "get_metrics",
    "instrument",
    "make_asgi_app",
    "make_wsgi_app",
    "phase",
    "record_phase",
    "set_model",
    "start_http_server",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiwatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
