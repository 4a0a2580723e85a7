"""A FastAPI service and a gRPC server that import nothing of aiwatch. Run under ``opentelemetry-instrument`` it must
come out instrumented by aiwatch's entry points; it prints one ``RESULT {json}`` line with what it saw."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import uvicorn
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.grpc_service.servicer import InferenceServicer, pb, pb_grpc

app = FastAPI()


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    with urllib.request.urlopen(f"{base}/items/3") as resp:
        http_timing = resp.headers.get("Server-Timing")
    with urllib.request.urlopen(f"{base}/metrics") as resp:
        http_metrics = resp.read().decode()
    server.should_exit = True
    thread.join(10)

    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_InferenceServicer_to_server(InferenceServicer(), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        _, call = pb_grpc.InferenceStub(channel).Predict.with_call(pb.PredictRequest(features=[1.0]))
    grpc_server.stop(None)
    print("RESULT " + json.dumps({
        "http_server_timing": http_timing,
        "http_metrics": [line for line in http_metrics.splitlines() if line.startswith("aiwatch_request_duration")],
        "grpc_trailer": dict(call.trailing_metadata()).get("server-timing"),
    }), flush=True)


if __name__ == "__main__":
    main()
