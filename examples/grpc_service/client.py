"""Calls the example inference service with every RPC kind and prints what aiwatch measured on the client side.

    python examples/grpc_service/client.py --target 127.0.0.1:50051

The client is instrumented with AiwatchGrpcInstrumentorClient: every channel created afterwards records
aiwatch_client_request_duration_seconds and aiwatch_network_duration_seconds (client time - the server's reported
total) for its target.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc

if __package__ in (None, ""):
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [here, os.path.dirname(os.path.dirname(here))]

from prometheus_client import REGISTRY

from aiwatch.grpc import AiwatchGrpcInstrumentorClient
from aiwatch.servertiming import parse_server_timing

try:
    from .servicer import pb, pb_grpc
except ImportError:
    from servicer import pb, pb_grpc  # type: ignore[no-redef]


def run(target: str, calls: int) -> None:
    instrumentor = AiwatchGrpcInstrumentorClient(service="example-client")
    instrumentor.instrument()
    try:
        with grpc.insecure_channel(target) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)  # connect first: setup is not network time
            stub = pb_grpc.InferenceStub(channel)
            for _ in range(calls):
                reply, call = stub.Predict.with_call(pb.PredictRequest(model="ranker", features=[0.2, 0.4],
                                                                       delay_ms=2))
            timing = parse_server_timing(dict(call.trailing_metadata())["server-timing"])
            print(f"Predict score={reply.score:.2f} server-timing(ms)="
                  + ", ".join(f"{k}={v * 1000:.2f}" for k, v in timing.items()))
            print("PredictStream", [r.index for r in stub.PredictStream(pb.PredictRequest(features=[1, 2, 3]))])
            upload = stub.Upload(iter([pb.PredictRequest(features=[float(i)]) for i in range(4)]))
            print(f"Upload count={upload.count} mean={upload.mean:.2f}")
            print("Chat", [r.score for r in stub.Chat(iter([pb.PredictRequest(features=[float(i)])
                                                             for i in range(3)]))])
            try:
                stub.Predict(pb.PredictRequest(fail="INVALID_ARGUMENT"))
            except grpc.RpcError as exc:
                print(f"Predict failed as asked: {exc.code().name}")
    finally:
        instrumentor.uninstrument()
    # the peer label is the name the server reported in its server-timing trailer (its aiwatch service)
    per_peer: dict[str, list[float]] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name in ("aiwatch_network_duration_seconds_count", "aiwatch_network_duration_seconds_sum") \
                    and sample.labels.get("service") == "example-client":
                found = per_peer.setdefault(sample.labels["peer"], [0.0, 0.0])
                found[sample.name.endswith("_sum")] += sample.value
    for peer, (count, total) in sorted(per_peer.items()):
        print(f"network time to {peer} ({target}): {total / max(count, 1) * 1e6:.0f} us per call over {count:.0f} "
              "calls")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    run(args.target, args.calls)


if __name__ == "__main__":
    main()
