"""The diagnosis of a real gRPC hop whose server's response serialization slowed down: a gateway request calls an
``infer`` server (grpcio's thread-pool server, aiwatch's interceptors at both ends), and between two windows the
response's serializer takes 30 ms longer. The diagnosis, read from registry snapshots as ``aiwatch diagnose
--snapshot`` reads them, must name ``serialize`` in ``infer``: the serialization ran in ``infer``'s process,
after its handler returned. When it was recorded outside the RPC's total, it was a part offset by a negative "time
outside infer's phases" (with a false overlap caution), and the caller counted it as network time."""

from __future__ import annotations

import time
from concurrent import futures
from typing import Any

import grpc
import pytest
from prometheus_client import generate_latest

import aiwatch
from aiwatch.diagnose import Diagnosis, totals_from_snapshots
from aiwatch.diagnose.report import diagnose_windows
from aiwatch.grpc import grpc_client_interceptor, grpc_server_interceptor
from aiwatch.metrics import Metrics
from aiwatch.scrape import Samples, parse_metrics
from aiwatch.timing import RequestRecorder
from examples.grpc_service.servicer import pb
from tests.grpc.conftest import req, stub_for

pytestmark = pytest.mark.slow

SLOWER = 0.03
CALLS = 20


def _serializer(delay: dict[str, float]) -> Any:
    def serialize(message: Any) -> bytes:
        time.sleep(delay["seconds"])
        return bytes(message.SerializeToString())

    return serialize


def _predict(request: Any, context: Any) -> Any:
    with aiwatch.phase("inference"):
        time.sleep(0.002)
    return pb.PredictReply(score=1.0)


def _snapshot(metrics: Metrics) -> tuple[Samples, float]:
    return parse_metrics(generate_latest(metrics.registry).decode()), time.time()


def _diagnosis(metrics: Metrics) -> Diagnosis:
    """Two windows of CALLS gateway requests, the second with the serializer SLOWER, diagnosed at the gateway."""
    delay = {"seconds": 0.0}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         interceptors=[grpc_server_interceptor(service="infer", model="ranker", metrics=metrics)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("aiwatch.example.Inference", {
        "Predict": grpc.unary_unary_rpc_method_handler(_predict, request_deserializer=pb.PredictRequest.FromString,
                                                       response_serializer=_serializer(delay))}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    gateway = RequestRecorder(metrics, service="gateway")
    snapshots = [_snapshot(metrics)]
    try:
        with stub_for(f"127.0.0.1:{port}", grpc_client_interceptor(service="gateway", metrics=metrics)) as stub:
            for seconds in (0.0, SLOWER):
                delay["seconds"] = seconds
                for _ in range(CALLS):
                    tl = gateway.begin()
                    stub.Predict(req(features=[1.0]))
                    gateway.finish(tl, "/recommend", "POST", "200")
                snapshots.append(_snapshot(metrics))
    finally:
        server.stop(None)
    (s0, t0), (s1, t1), (s2, t2) = snapshots
    return diagnose_windows(totals_from_snapshots(s0, s1, t0, t1), totals_from_snapshots(s1, s2, t1, t2), "gateway")


def test_a_slower_unary_serialization_is_named_as_the_servers_serialize_phase(metrics: Metrics) -> None:
    d = _diagnosis(metrics)
    assert d.cause == "phase:infer/serialize", d.verdict
    assert d.moved[0].delta_seconds == pytest.approx(SLOWER, abs=0.01)
    assert "caution" not in d.verdict and not d.notes, (d.verdict, d.notes)
    # neither the network nor the time outside infer's phases moved by what the serializer added
    for c in d.contributors:
        if c.part.component in ("network", "unaccounted"):
            assert abs(c.delta_seconds) < SLOWER / 3, (c.part, c.delta_seconds)
