"""PromQL an autoscaler (KEDA's Prometheus scaler, HPA through prometheus-adapter) can act on.

Every replica exports ``aiwatch_queue_depth{queue}`` (items waiting in front of the model) and
``aiwatch_requests_in_flight{service}`` (requests being served). Summed per replica (gunicorn workers of one pod
are already summed: both gauges use multiprocess mode ``livesum``) and averaged over the replicas, they give the load
per replica; a target per replica turns that into a replica count::

    >>> print(queue_depth_per_replica_expr("ranker"))
    avg by (queue) (sum by (queue, instance) (aiwatch_queue_depth{queue="ranker"}))
    >>> print(in_flight_per_replica_expr("recommender"))
    avg by (service) (sum by (service, instance) (aiwatch_requests_in_flight{service="recommender"}))

Don't add the two: a request waiting in the batcher's queue is also in flight.
"""

from __future__ import annotations

import re

_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _per_replica(metric: str, label: str, value: str | None, replica_label: str) -> str:
    if not _LABEL.match(replica_label):
        raise ValueError(f"replica_label must be a Prometheus label name, got {replica_label!r}")
    selector = f"{{{label}={_quote(value)}}}" if value else ""
    return f"avg by ({label}) (sum by ({label}, {replica_label}) ({metric}{selector}))"


def queue_depth_per_replica_expr(queue: str | None = None, replica_label: str = "instance") -> str:
    """Average queue depth per replica, per queue (all queues when ``queue`` is ``None``). ``replica_label`` is the
    target label that tells replicas apart (``instance``, or ``pod`` on Kubernetes)."""
    return _per_replica("aiwatch_queue_depth", "queue", queue, replica_label)


def in_flight_per_replica_expr(service: str | None = None, replica_label: str = "instance") -> str:
    """Average in-flight requests per replica, per service."""
    return _per_replica("aiwatch_requests_in_flight", "service", service, replica_label)
