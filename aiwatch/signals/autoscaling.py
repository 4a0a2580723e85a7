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

from aiwatch.promql import Metric, by, check_label_name, eq, metric, series

QUEUE_DEPTH = metric("aiwatch_queue_depth")
IN_FLIGHT = metric("aiwatch_requests_in_flight")


def _per_replica(gauge: Metric, label: str, value: str | None, replica_label: str) -> str:
    try:
        check_label_name(replica_label)
    except ValueError:
        raise ValueError(f"replica_label must be a Prometheus label name, got {replica_label!r}") from None
    if value == "":
        raise ValueError(f"{label} must name a {label}: an empty name would select every {label} "
                         f"(pass None for that)")
    selected = series(gauge) if value is None else series(gauge, eq(label, value))
    return by("avg", (label,), by("sum", (label, replica_label), selected))


def queue_depth_per_replica_expr(queue: str | None = None, replica_label: str = "instance") -> str:
    """Average queue depth per replica, per queue (all queues when ``queue`` is ``None``; an empty name is refused).
    ``replica_label`` is the target label that tells replicas apart (``instance``, or ``pod`` on Kubernetes)."""
    return _per_replica(QUEUE_DEPTH, "queue", queue, replica_label)


def in_flight_per_replica_expr(service: str | None = None, replica_label: str = "instance") -> str:
    """Average in-flight requests per replica, per service (all services when ``service`` is ``None``)."""
    return _per_replica(IN_FLIGHT, "service", service, replica_label)
