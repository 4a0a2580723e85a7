"""aiwatch: observability and drift monitoring for AI inference APIs.

    import aiwatch
    from fastapi import FastAPI

    app = aiwatch.instrument(FastAPI(), service="recommender")

    @app.post("/predict")
    async def predict(body: dict) -> dict:
        with aiwatch.phase("inference", model="ranker"):
            return {"score": 0.5}

Importing ``aiwatch`` imports no optional dependency; names below that need one are imported on first use. A name
whose extra is not installed is a placeholder that raises the ImportError naming the extra when it is used.
"""

from __future__ import annotations

from typing import Any

from aiwatch._optional import lazy_attribute
from aiwatch._version import __version__
from aiwatch.cardinality import LabelGuard
from aiwatch.metrics import CONTRACT, Metrics, MetricSpec, get_metrics
from aiwatch.timing import RequestRecorder, current_timeline, phase, record_phase, set_model

# name -> module that defines it; imported on first attribute access (heavier or optional dependencies).
_LAZY: dict[str, str] = {
    "instrument": "aiwatch.instrument_app",
    "make_recorder": "aiwatch.recording",
    "record_tokens": "aiwatch.genai",
    "degraded": "aiwatch.degradation",
    "TrafficClasses": "aiwatch.traffic",
    "TimedJSONResponse": "aiwatch.middleware.rendering",
    "timed_response_class": "aiwatch.middleware.rendering",
    "make_client_recorder": "aiwatch.recording",
    "AiwatchMiddleware": "aiwatch.middleware.asgi",
    "AiwatchWSGIMiddleware": "aiwatch.middleware.wsgi",
    "AiwatchDjangoRouteMiddleware": "aiwatch.middleware.django",
    "AiwatchStarletteInstrumentor": "aiwatch.middleware.instrumentor",
    "AiwatchFlaskInstrumentor": "aiwatch.middleware.instrumentor",
    "AiwatchDjangoInstrumentor": "aiwatch.middleware.instrumentor",
    "instrument_httpx": "aiwatch.client",
    "instrument_requests": "aiwatch.client",
    "make_asgi_app": "aiwatch.exposition",
    "make_wsgi_app": "aiwatch.exposition",
    "start_http_server": "aiwatch.exposition",
    "AiwatchGrpcInstrumentorClient": "aiwatch.grpc",
    "AiwatchGrpcInstrumentorServer": "aiwatch.grpc",
    "grpc_aio_client_interceptors": "aiwatch.grpc",
    "grpc_aio_server_interceptor": "aiwatch.grpc",
    "grpc_client_interceptor": "aiwatch.grpc",
    "grpc_server_interceptor": "aiwatch.grpc",
    "GpuCollector": "aiwatch.signals.gpu",
    "GpuPoller": "aiwatch.signals.gpu",
    "serve_gpu_metrics": "aiwatch.signals.gpu",
    "instrument_queue": "aiwatch.signals.queues",
    "uninstrument_queue": "aiwatch.signals.queues",
    "MicroBatcher": "aiwatch.signals.batcher",
    "FeatureCache": "aiwatch.signals.cache",
    "instrument_redis": "aiwatch.signals.cache",
    "instrument_mapping": "aiwatch.signals.cache",
    "queue_depth_per_replica_expr": "aiwatch.signals.autoscaling",
    "in_flight_per_replica_expr": "aiwatch.signals.autoscaling",
    "RulesConfig": "aiwatch.rules",
    "PrometheusSource": "aiwatch.console",
    "HTTPConfig": "aiwatch.httpconfig",
    "ScrapeSource": "aiwatch.console",
    "DriftMonitor": "aiwatch.drift",
    "ReferenceProfile": "aiwatch.drift",
    "ProfileError": "aiwatch.drift",
    "ProfileLimits": "aiwatch.drift",
    # diagnose() itself is aiwatch.diagnose.diagnose: the name aiwatch.diagnose is the subpackage
    "Diagnosis": "aiwatch.diagnose",
    "DiagnoseError": "aiwatch.diagnose",
    "PrometheusWindows": "aiwatch.diagnose",
    "totals_from_snapshots": "aiwatch.diagnose",
    "PredictionLog": "aiwatch.feedback",
    "PredictionSink": "aiwatch.feedback",
    "ParquetSink": "aiwatch.feedback",
    "RedisStreamSink": "aiwatch.feedback",
    "FieldPolicy": "aiwatch.feedback",
    "SamplingPolicy": "aiwatch.feedback",
    "profile_dask": "aiwatch.drift.on_dask",
    "compare_dask": "aiwatch.drift.on_dask",
}

__all__ = [
    "CONTRACT",
    "AiwatchDjangoInstrumentor",
    "AiwatchDjangoRouteMiddleware",
    "AiwatchFlaskInstrumentor",
    "AiwatchGrpcInstrumentorClient",
    "AiwatchGrpcInstrumentorServer",
    "AiwatchMiddleware",
    "AiwatchStarletteInstrumentor",
    "AiwatchWSGIMiddleware",
    "DiagnoseError",
    "Diagnosis",
    "DriftMonitor",
    "FeatureCache",
    "FieldPolicy",
    "GpuCollector",
    "GpuPoller",
    "HTTPConfig",
    "LabelGuard",
    "MetricSpec",
    "Metrics",
    "MicroBatcher",
    "ParquetSink",
    "PredictionLog",
    "PredictionSink",
    "ProfileError",
    "ProfileLimits",
    "PrometheusSource",
    "PrometheusWindows",
    "RedisStreamSink",
    "ReferenceProfile",
    "RequestRecorder",
    "RulesConfig",
    "SamplingPolicy",
    "ScrapeSource",
    "TimedJSONResponse",
    "TrafficClasses",
    "__version__",
    "compare_dask",
    "current_timeline",
    "degraded",
    "get_metrics",
    "grpc_aio_client_interceptors",
    "grpc_aio_server_interceptor",
    "grpc_client_interceptor",
    "grpc_server_interceptor",
    "in_flight_per_replica_expr",
    "instrument",
    "instrument_httpx",
    "instrument_mapping",
    "instrument_queue",
    "instrument_redis",
    "instrument_requests",
    "make_asgi_app",
    "make_client_recorder",
    "make_recorder",
    "make_wsgi_app",
    "phase",
    "profile_dask",
    "queue_depth_per_replica_expr",
    "record_phase",
    "record_tokens",
    "serve_gpu_metrics",
    "set_model",
    "start_http_server",
    "timed_response_class",
    "totals_from_snapshots",
    "uninstrument_queue",
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, globals(), _LAZY, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
