"""The autoscaling PromQL in a real Prometheus scraping two replicas."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from aiwatch.metrics import Metrics
from aiwatch.signals.autoscaling import in_flight_per_replica_expr, queue_depth_per_replica_expr
from tests.servers import prometheus


def test_expressions_escape_and_validate() -> None:
    assert queue_depth_per_replica_expr('a"b') == \
        'avg by (queue) (sum by (queue, instance) (aiwatch_queue_depth{queue="a\\"b"}))'
    assert queue_depth_per_replica_expr(replica_label="pod") == \
        "avg by (queue) (sum by (queue, pod) (aiwatch_queue_depth))"
    with pytest.raises(ValueError, match="replica_label"):
        in_flight_per_replica_expr("svc", replica_label="not a label")


def test_an_empty_name_is_refused_not_read_as_every_one() -> None:
    """A queue or service name that came out empty (an unset setting) would otherwise drop the matcher and scale
    one deployment on the depth of every queue; None is the explicit "all"."""
    with pytest.raises(ValueError, match="queue must name a queue: an empty name would select every queue"):
        queue_depth_per_replica_expr("")
    with pytest.raises(ValueError, match="service must name a service: an empty name would select every service"):
        in_flight_per_replica_expr("")
    assert in_flight_per_replica_expr() == \
        "avg by (service) (sum by (service, instance) (aiwatch_requests_in_flight))"


@pytest.mark.slow
def test_per_replica_depth_and_in_flight_in_prometheus() -> None:
    servers = []
    targets = []
    try:
        for depth, other_queue, in_flight in ((6, 1, 3), (2, 0, 1)):
            registry = CollectorRegistry()
            m = Metrics(registry)
            m.queue_depth.labels("ranker").set(depth)
            m.queue_depth.labels("embedder").set(other_queue)
            m.requests_in_flight.labels("recommender").set(in_flight)
            server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
            servers.append((server, thread))
            targets.append(f"127.0.0.1:{server.server_port}")
        with prometheus(targets, scrape_interval="1s") as prom:
            # asked where both targets' scrapes answered and have landed: at now, a scrape failed since (its 1 s
            # timeout on a loaded machine) read that replica's gauges stale, and the queries of one replica or none
            at = prom.settled_for("up == 1 and on(instance) count by (instance) "
                                  "(aiwatch_requests_in_flight)", lambda r: len(r) == 2)
            assert prom.value(queue_depth_per_replica_expr("ranker"), at) == 4.0
            assert prom.value(in_flight_per_replica_expr("recommender"), at) == 2.0
            by_queue = {r["metric"]["queue"]: float(r["value"][1])
                        for r in prom.query(queue_depth_per_replica_expr(), at)}
            assert by_queue == {"ranker": 4.0, "embedder": 0.5}
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(5)


def test_module_doctests() -> None:
    import doctest

    import aiwatch.signals.autoscaling as module

    assert doctest.testmod(module).failed == 0
