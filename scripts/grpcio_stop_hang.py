"""Reproduce grpcio's thread-pool server never finishing ``stop()`` after a request stream message it could not
deserialize, with no aiwatch in the server (docs/grpc.md; tests/grpc/conftest.py bounds its wait for this).

    python scripts/grpcio_stop_hang.py [servers]

Each round starts a server with two plain handlers (grpcio and the example's messages only), sends a
client-streaming and a bidirectional call whose second message is not a ``PredictRequest``, then stops the server and
waits 10 s for its end. Prints how many never ended (grpcio 1.85.3 here: 10 of 40).
Exit 1 when one hung, 0 otherwise.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.grpc_service import inference_pb2 as pb

SERVICE = "aiwatch.example.Inference"
UNDECODABLE = b"\xff\xff\xff\xff"  # a truncated varint: no PredictRequest


def upload(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
    return pb.UploadReply(count=sum(1 for _ in requests))


def chat(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
    for i, _ in enumerate(requests):
        yield pb.PredictReply(index=i)


def one_round() -> bool:
    """Whether the server ended within 10 s of stop()."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Upload": grpc.stream_unary_rpc_method_handler(upload, pb.PredictRequest.FromString,
                                                       pb.UploadReply.SerializeToString),
        "Chat": grpc.stream_stream_rpc_method_handler(chat, pb.PredictRequest.FromString,
                                                      pb.PredictReply.SerializeToString)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    messages = [pb.PredictRequest().SerializeToString(), UNDECODABLE]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for call in (lambda: channel.stream_unary(f"/{SERVICE}/Upload")(iter(messages)),
                     lambda: list(channel.stream_stream(f"/{SERVICE}/Chat")(iter(messages)))):
            try:
                call()
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INTERNAL, exc.code()
    return server.stop(0).wait(10)


def main() -> int:
    logging.getLogger("grpc._common").setLevel(logging.CRITICAL)  # grpcio logs each undecodable message
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    hung = sum(not one_round() for _ in range(rounds))
    print(f"grpcio {grpc.__version__}: {hung} of {rounds} servers did not end within 10 s of stop()")
    return 1 if hung else 0


if __name__ == "__main__":
    sys.exit(main())
