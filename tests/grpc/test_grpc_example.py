"""The example inference service and client under examples/grpc_service/, run as a user would run them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.servers import REPO, free_port, http_get, python_app, python_env

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "aio"])
def test_example_server_and_client(aio: bool) -> None:
    port, metrics_port = free_port(), free_port()
    args = [str(REPO / "examples/grpc_service/server.py"), "--port", str(port), "--metrics-port", str(metrics_port)]
    with python_app([*args, *(["--aio"] if aio else [])], f"http://127.0.0.1:{metrics_port}/metrics"):
        client = subprocess.run(
            [sys.executable, str(REPO / "examples/grpc_service/client.py"), "--target", f"127.0.0.1:{port}",
             "--calls", "3"], env=python_env(), capture_output=True, text=True, timeout=60, check=False)
        assert client.returncode == 0, client.stderr
        assert "Predict failed as asked: INVALID_ARGUMENT" in client.stdout
        assert "over 7 calls" in client.stdout  # 3 Predict, 3 streams, 1 aborted Predict: all report timing
        status, body = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    text = body.decode()
    assert status == 200
    route = "/aiwatch.example.Inference/"
    assert (f'aiwatch_request_duration_seconds_count{{method="grpc",route="{route}Predict",'
            f'service="inference-example",status="OK",traffic_class="realtime"}} 3.0') in text
    assert (f'route="{route}Predict",service="inference-example",status="INVALID_ARGUMENT",'
            f'traffic_class="realtime"}} 1.0') in text
    for method in ("PredictStream", "Upload", "Chat"):
        assert f'route="{route}{method}",service="inference-example",status="OK",traffic_class="realtime"}} 1.0' in text
    assert ('aiwatch_phase_duration_seconds_count{model="ranker",model_version="",phase="inference",'
            'service="inference-example"}') in text
