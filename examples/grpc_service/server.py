"""An example gRPC inference service instrumented by aiwatch.

    python examples/grpc_service/server.py --port 50051 --metrics-port 9464          # thread-pool server
    python examples/grpc_service/server.py --port 50051 --metrics-port 9464 --aio    # grpc.aio server
    python examples/grpc_service/client.py --target 127.0.0.1:50051
    curl -s 127.0.0.1:9464/metrics | grep aiwatch_

Every RPC gets aiwatch_request_duration_seconds (route = /aiwatch.example.Inference/<Method>, status = gRPC code
name), the servicer's phases (features, inference) plus overhead, and a server-timing trailing metadata entry that
the client turns into network time. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from concurrent import futures

import grpc

if __package__ in (None, ""):  # run as a script: make this checkout's aiwatch and this folder importable
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [here, os.path.dirname(os.path.dirname(here))]

import aiwatch
from aiwatch.grpc import grpc_aio_server_interceptor, grpc_server_interceptor

try:
    from .servicer import AioInferenceServicer, InferenceServicer, pb_grpc
except ImportError:
    from servicer import AioInferenceServicer, InferenceServicer, pb_grpc  # type: ignore[no-redef]

SERVICE = "inference-example"


def serve(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         interceptors=[grpc_server_interceptor(service=SERVICE, model="ranker")])
    pb_grpc.add_InferenceServicer_to_server(InferenceServicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"serving gRPC on 127.0.0.1:{bound}", flush=True)
    server.wait_for_termination()


async def serve_aio(port: int) -> None:
    server = grpc.aio.server(interceptors=[grpc_aio_server_interceptor(service=SERVICE, model="ranker")])
    pb_grpc.add_InferenceServicer_to_server(AioInferenceServicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"serving gRPC (asyncio) on 127.0.0.1:{bound}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=50051, help="gRPC port (0: any free port)")
    parser.add_argument("--metrics-port", type=int, default=9464, help="/metrics port (0: none)")
    parser.add_argument("--aio", action="store_true", help="use a grpc.aio server")
    args = parser.parse_args()
    if args.metrics_port:
        aiwatch.start_http_server(args.metrics_port)
        print(f"metrics on http://127.0.0.1:{args.metrics_port}/metrics", flush=True)
    if args.aio:
        asyncio.run(serve_aio(args.port))
    else:
        serve(args.port)


if __name__ == "__main__":
    main()
