"""Every example runs (Python) or parses and agrees with itself (YAML)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from aiwatch.demo import scrape
from aiwatch.scrape import Samples, parse_metrics
from tests.servers import REPO, free_port, http_get, python_app, python_env, require_binary, require_module

EXAMPLES = REPO / "examples"


def _post(url: str, body: dict[str, object]) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status), {k.lower(): v for k, v in resp.headers.items()}, resp.read()


def _samples_once_recorded(port: int, service: str, route: str) -> Samples:
    """The service's /metrics once the request is recorded. A WSGI server closes the response, which is when the
    middleware records it (PEP 3333), after the client has the body: a scrape at once may come first."""
    deadline = time.monotonic() + 15
    while True:
        status, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        samples = parse_metrics(metrics.decode())
        recorded = scrape.total(samples, "aiwatch_request_duration_seconds_count", service=service, route=route)
        if recorded or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def _check_service(port: int, service: str, route: str = "/predict") -> None:
    status, headers, body = _post(f"http://127.0.0.1:{port}/predict", {"user_id": 3, "basket_value": 42.0})
    assert status == 200 and len(json.loads(body)["items"]) == 10
    assert "inference;dur=" in headers["server-timing"] and "features;dur=" in headers["server-timing"]
    samples = _samples_once_recorded(port, service, route)
    for phase in ("features", "inference", "overhead"):
        assert scrape.total(samples, "aiwatch_phase_duration_seconds_count", service=service, phase=phase) == 1.0
    assert scrape.total(samples, "aiwatch_request_duration_seconds_count", service=service, route=route) == 1.0
    # a body without user_id is the client's mistake (the Flask and Django examples answered it 500, an error of
    # the service in its availability): 422, as FastAPI answers it, and a body that says so
    with pytest.raises(urllib.error.HTTPError) as refused:
        _post(f"http://127.0.0.1:{port}/predict", {"basket_value": 42.0})
    assert refused.value.code == 422
    assert "user_id" in refused.value.read().decode()


@pytest.mark.slow
def test_fastapi_example_serves_the_latency_split() -> None:
    port = free_port()
    with python_app([str(EXAMPLES / "fastapi_service" / "app.py"), "--port", str(port)],
                    f"http://127.0.0.1:{port}/healthz"):
        _check_service(port, "recommender")


@pytest.mark.slow
def test_flask_example_serves_the_latency_split() -> None:
    require_module("flask")
    port = free_port()
    with python_app([str(EXAMPLES / "flask_service" / "app.py"), "--port", str(port)],
                    f"http://127.0.0.1:{port}/healthz"):
        _check_service(port, "recommender-flask")


@pytest.mark.slow
def test_django_example_serves_the_latency_split() -> None:
    """Django's own route format (no leading slash), from aiwatch's route middleware."""
    port = free_port()
    with python_app([str(EXAMPLES / "django_service" / "app.py"), "--port", str(port)],
                    f"http://127.0.0.1:{port}/healthz"):
        _check_service(port, "recommender-django", route="predict")


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=python_env(), capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_batch_gate_data_generator_writes_both_files(tmp_path: Path) -> None:
    proc = _run([str(EXAMPLES / "batch_drift_gate" / "make_data.py"), "--out", str(tmp_path), "--rows", "50"])
    assert proc.returncode == 0, proc.stderr
    for name in ("reference.csv", "tonight.csv"):
        lines = (tmp_path / name).read_text().splitlines()
        assert lines[0] == "basket_value,items_in_cart,session_seconds,device" and len(lines) == 51


@pytest.mark.slow
def test_batch_gate_follows_the_drift_exit_code(tmp_path: Path) -> None:
    gate = str(EXAMPLES / "batch_drift_gate" / "nightly_gate.py")
    make = str(EXAMPLES / "batch_drift_gate" / "make_data.py")
    same, shifted = tmp_path / "same", tmp_path / "shifted"
    assert _run([make, "--out", str(same)]).returncode == 0
    assert _run([make, "--out", str(shifted), "--shift"]).returncode == 0

    ok = _run([gate, str(same / "reference.csv"), str(same / "tonight.csv"), "--publish-dir", str(same / "pub")])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (same / "pub" / "scores.csv").exists()

    held = _run([gate, str(shifted / "reference.csv"), str(shifted / "tonight.csv"),
                 "--publish-dir", str(shifted / "pub")])
    assert held.returncode == 1, held.stdout + held.stderr
    assert not (shifted / "pub").exists()

    broken = _run([gate, str(tmp_path / "missing.csv"), str(same / "tonight.csv"),
                   "--publish-dir", str(tmp_path / "pub")])
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert not (tmp_path / "pub").exists()


def test_prometheus_example_config_loads_the_alert_rules() -> None:
    config = yaml.safe_load((EXAMPLES / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["../../alerts/*.rules.yml"]
    assert config["scrape_configs"][0]["metrics_path"] == "/metrics"
    promtool = require_binary("promtool")
    proc = subprocess.run([promtool, "check", "config", str(EXAMPLES / "prometheus" / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kubernetes_manifests_agree_on_labels_and_the_metrics_port() -> None:
    docs = {p.name: yaml.safe_load(p.read_text()) for p in (EXAMPLES / "kubernetes").glob("*.yaml")}
    kustomize = docs.pop("kustomization.yaml")
    assert sorted(kustomize["resources"]) == sorted(docs)
    by_kind = {d["kind"]: d for d in docs.values()}
    deployment, service, monitor = by_kind["Deployment"], by_kind["Service"], by_kind["ServiceMonitor"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    container_ports = {p["name"]: p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]
                       ["ports"]}
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics"
    assert service_ports[endpoint["port"]]["targetPort"] in container_ports


def _stream(url: str, body: dict[str, object], headers: dict[str, str]) -> list[str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json", **headers})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        return [line.removeprefix("data: ") for line in resp.read().decode().split("\n\n") if line]


@pytest.mark.slow
def test_token_streaming_example_records_genai_signals() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/completions"
    with python_app([str(EXAMPLES / "token_streaming" / "app.py"), "--port", str(port)],
                    f"http://127.0.0.1:{port}/healthz"):
        events = _stream(url, {"prompt": "one two three", "max_tokens": 4, "prefill_ms": 30}, {})
        assert [json.loads(e)["token"] for e in events[:-1]] == ["three", "two", "one", "three"]
        assert events[-1] == "[DONE]"
        _stream(url, {"prompt": "word " * 100, "max_tokens": 2}, {"aiwatch-traffic-class": "batch"})
        status, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples = parse_metrics(metrics.decode())
    service = "completions"
    ttft = scrape.total(samples, "aiwatch_gen_ai_time_to_first_token_seconds_sum", service=service,
                        model="tiny-llm", traffic_class="realtime")
    assert ttft >= 0.03  # the prefill is before the first token
    assert scrape.total(samples, "aiwatch_gen_ai_time_per_output_token_seconds_count", service=service,
                        model="tiny-llm") == 1.0
    assert scrape.total(samples, "aiwatch_gen_ai_token_usage_tokens_sum", service=service, model="tiny-llm",
                        token_type="output") == 4.0
    assert scrape.total(samples, "aiwatch_gen_ai_token_usage_tokens_sum", service=service, model="tinier-llm",
                        token_type="input") == 100.0
    assert scrape.total(samples, "aiwatch_time_to_first_chunk_seconds_count", service=service,
                        route="/v1/completions") == 2.0
    assert scrape.total(samples, "aiwatch_degraded_responses_total", service=service, model="tinier-llm",
                        reason="smaller_model") == 1.0
    assert scrape.total(samples, "aiwatch_request_duration_seconds_count", service=service,
                        traffic_class="batch") == 1.0
    assert scrape.total(samples, "aiwatch_phase_duration_seconds_count", service=service, model="tiny-llm",
                        model_version="v1", phase="prefill") == 1.0
