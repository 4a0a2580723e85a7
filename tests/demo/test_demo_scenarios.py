"""The demo's fault scenarios on their own: the slow link, the in-service faults, the stage plans, what each scenario
expects of diagnose and the alerts, the demo's rules, and the per-stage diagnosis from two /metrics snapshots."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from aiwatch.commands.demo import SCENARIO_NAMES
from aiwatch.demo import alerting, loadgen, runner, scenarios, summary
from aiwatch.demo.faults import Faults, Injector
from aiwatch.demo.names import Names
from aiwatch.demo.slowlink import SlowLink
from aiwatch.metrics import Metrics
from aiwatch.rules import render
from aiwatch.scrape import parse_metrics
from aiwatch.timing import RequestRecorder
from tests.servers import require_binary

# --- the slow link --------------------------------------------------------------------------------------------------


@contextmanager
def echo_server() -> Iterator[int]:
    """A TCP server on loopback that answers every chunk with the same bytes."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        server.close()


def round_trip(port: int, payload: bytes) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        start = time.monotonic()
        conn.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = conn.recv(65536)
            assert chunk, "the link closed the connection"
            got += chunk
        return got, time.monotonic() - start


def test_the_slow_link_adds_its_delay_per_round_trip_and_delivers_every_byte_in_order() -> None:
    with echo_server() as port:
        link = SlowLink("127.0.0.1", port)
        link_port = link.start()
        try:
            payload = bytes(range(256)) * 64  # 16 KiB: several chunks each way
            got, _ = round_trip(link_port, payload)
            assert got == payload and not link.congested
            link.congest(delay=0.2, bandwidth=None)
            got, seconds = round_trip(link_port, payload)
            assert got == payload
            assert seconds >= 0.2  # a round trip waits delay / 2 each way (never less; more on a busy machine)
            link.congest(delay=0.0, bandwidth=64_000)
            got, seconds = round_trip(link_port, payload)
            assert got == payload
            assert seconds >= len(payload) / 64_000  # 16 KiB through the link at 64 kB/s, at least one way
            link.clear()
            assert not link.congested
            assert round_trip(link_port, payload)[0] == payload
        finally:
            link.stop()


def test_the_slow_link_keeps_connections_apart_and_refuses_bad_settings() -> None:
    with echo_server() as port:
        link = SlowLink("127.0.0.1", port)
        link_port = link.start()
        try:
            link.congest(delay=0.05)
            results: dict[int, bytes] = {}

            def client(i: int) -> None:
                results[i] = round_trip(link_port, bytes([i]) * 5000)[0]

            threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            assert results == {i: bytes([i]) * 5000 for i in range(8)}
            with pytest.raises(ValueError):
                link.congest(delay=-1)
            with pytest.raises(ValueError):
                link.congest(delay=0.1, bandwidth=0)
        finally:
            link.stop()


# --- the in-service faults ------------------------------------------------------------------------------------------


def test_faults_change_only_what_they_name_and_refuse_the_rest() -> None:
    faults = Faults()
    faults.update({"features_delay_ms": 50})
    assert faults.features_delay == pytest.approx(0.05) and faults.model_delay == 0.0
    faults.update({"cold_cache": True})
    faults.update({"cold_cache": True})  # already cold: the cache is not flushed again
    assert faults.cold_cache and faults.cache_generation == 1
    faults.update({"cold_cache": False, "features_delay_ms": 0})
    faults.update({"cold_cache": True})
    assert faults.cache_generation == 2
    for bad in ({"nope": 1}, {"model_delay_ms": -1}, {"model_delay_ms": "fast"}, {"cold_cache": 1},
                {"model_delay_ms": True}, {"cache_generation": 5}):
        with pytest.raises(ValueError):
            faults.update(bad)


async def test_a_cold_cache_misses_every_lookup_and_waits_for_the_slow_store(metrics: Metrics) -> None:
    from aiwatch.demo.features import FeatureStore, LruCache

    faults = Faults()
    store = FeatureStore(LruCache(metrics, 100), faults)
    for _ in range(3):
        await store.user_profile(7)  # miss, then hits
    faults.update({"cold_cache": True, "features_delay_ms": 30})
    start = time.monotonic()
    for _ in range(3):
        await store.user_profile(7)  # every lookup misses and waits for the store
    assert time.monotonic() - start >= 3 * 0.03
    get = metrics.registry.get_sample_value
    labels = {"cache": "user_features"}
    assert get("aiwatch_feature_cache_requests_total", {**labels, "result": "hit"}) == 2.0
    assert get("aiwatch_feature_cache_requests_total", {**labels, "result": "miss"}) == 4.0
    faults.update({"cold_cache": False, "features_delay_ms": 0})
    await store.user_profile(7)  # the cache refills from empty after the fault
    await store.user_profile(7)
    assert get("aiwatch_feature_cache_requests_total", {**labels, "result": "miss"}) == 5.0
    assert get("aiwatch_feature_cache_requests_total", {**labels, "result": "hit"}) == 3.0


async def test_a_throttled_model_takes_the_delay_longer_per_call(metrics: Metrics) -> None:
    from aiwatch.demo.inference import InferenceCore
    from aiwatch.demo.model import Request

    faults = Faults()
    core = InferenceCore(metrics, model_seconds=0.002, max_batch=2, device_seconds=0.01, faults=faults)
    recorder = RequestRecorder(metrics, service="inference", model="recommender")
    try:
        async def one() -> None:
            tl = recorder.begin()
            await core.predict(Request(1, 40.0, 3.0, 120.0))
            recorder.finish(tl, "/predict", "POST", "200")

        await one()
        faults.update({"model_delay_ms": 60})
        await one()
    finally:
        await core.aclose()
    hist = "aiwatch_phase_duration_seconds"
    labels = {"service": "inference", "model": "recommender", "model_version": "", "phase": "inference"}
    get = metrics.registry.get_sample_value
    assert get(f"{hist}_count", labels) == 2.0
    assert get(f"{hist}_sum", labels) >= 2 * 0.01 + 0.06  # two calls' device time, and one call's throttle


def test_the_injector_switches_the_scenarios_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr("aiwatch.demo.faults.set_faults", lambda url, **changes: sent.append((url, changes)))
    Injector("feature-store", 0.2, "http://gw", "http://inf").on()
    Injector("model", 0.05, "http://gw", "http://inf").off()
    Injector("none", 0.2, "http://gw", "http://inf").on()
    assert sent == [("http://gw", {"features_delay_ms": 200.0, "cold_cache": True}),
                    ("http://inf", {"model_delay_ms": 0.0})]
    link = SlowLink("127.0.0.1", 1)
    Injector("network", 0.2, "http://gw", "http://inf", link).on()
    assert link.delay == 0.2 and link.congested
    with pytest.raises(ValueError, match="slow link"):
        Injector("network", 0.2, "http://gw", "http://inf")


# --- scenarios and plans --------------------------------------------------------------------------------------------


def test_the_cli_offers_every_scenario() -> None:
    assert list(SCENARIO_NAMES) == list(scenarios.SCENARIOS)
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        scenarios.get("nope")


@pytest.mark.parametrize("name", list(scenarios.SCENARIOS))
def test_each_scenario_changes_only_the_middle_stage(name: str) -> None:
    scenario = scenarios.get(name)
    first, middle, last = loadgen.plan(60.0, 5.0, scenario=scenario, sale_in_flight=3)
    for quiet in (first, last):
        assert (quiet.rps, quiet.sale, quiet.fault, quiet.max_in_flight) == (5.0, False, False, None)
    assert middle.fault and middle.name == scenario.stage
    assert middle.rps == (50.0 if name == "flash-sale" else 5.0)
    assert middle.sale == (name in ("flash-sale", "drift"))
    assert middle.max_in_flight == (3 if name == "flash-sale" else None)


def test_expected_causes_and_alerts_name_the_demos_own_parts() -> None:
    names = Names.prefixed("x1")
    causes = {name: s.expected_cause(names) for name, s in scenarios.SCENARIOS.items()}
    assert causes == {"flash-sale": "queue:x1-inference", "network": "network:x1-gateway->x1-inference",
                      "feature-store": "phase:x1-gateway/features", "model": "model:x1-inference/inference",
                      "drift": "drift:x1-recommender/basket_value", "none": "none",
                      "batch-backfill": "queue:x1-inference"}
    for scenario in scenarios.SCENARIOS.values():
        required, forbidden = scenario.required_alerts(names), scenario.forbidden_alerts(names)
        # an alert cannot be both required and forbidden
        assert not {str(r) for r in required} & {str(f) for f in forbidden}
        # the model-latency alert must stay silent wherever the model did not change
        if scenario.name != "model":
            assert any(f.alert == "AiwatchModelLatencyHigh" for f in forbidden)
    network, network_phase = scenarios.get("network").required_alerts(names)
    assert network.matches({"alertname": "AiwatchNetworkLatencyHigh", "service": "x1-gateway", "peer": "x1-inference",
                            "severity": "warning"})
    assert network_phase.matches({"alertname": "AiwatchNonModelLatencyHigh", "service": "x1-gateway",
                                  "phase": "network", "peer": "x1-inference", "severity": "warning"})
    assert not network_phase.matches({"alertname": "AiwatchNonModelLatencyHigh", "service": "x2-gateway",
                                      "phase": "network", "peer": "x2-inference"})


def test_the_sale_bound_makes_requests_wait_about_the_severity() -> None:
    # one request per 60 ms call: one in the model, one on its way, then one waiting per 60 ms of severity
    assert scenarios.sale_in_flight(0.05, 0.06, 1 / 0.06) == 3
    assert scenarios.sale_in_flight(0.2, 0.06, 1 / 0.06) == 6
    assert scenarios.sale_in_flight(0.06, 0.06, 1 / 0.06) == 3
    # two requests per 25 ms call (the demo's model): batches of two
    assert scenarios.sale_in_flight(0.2, 0.025, 80.0) == 20


# --- the demo's rules and the alerting stack's configs ---------------------------------------------------------------


def test_the_demos_rules_pass_promtool_and_link_to_the_console(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    cfg = alerting.rules_config("http://127.0.0.1:8765/?runbook={alert}")
    files = []
    for name, text in render(cfg).items():
        (tmp_path / name).write_text(text)
        files.append(str(tmp_path / name))
    checked = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    yaml = pytest.importorskip("yaml")
    rules = [r for g in yaml.safe_load(render(cfg)["aiwatch-alerts.rules.yml"])["groups"] for r in g["rules"]]
    assert {r["annotations"]["runbook_url"] for r in rules} == {
        f"http://127.0.0.1:8765/?runbook={r['alert']}" for r in rules}
    assert not cfg.runbook_url_is_placeholder


def _latency_alerts(text: str) -> dict[str, dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    return {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"]
            if r.get("alert") in ("AiwatchModelLatencyHigh", "AiwatchNonModelLatencyHigh", "AiwatchNetworkLatencyHigh")}


def _latency_holds(text: str) -> dict[str, str]:
    return {name: rule["for"] for name, rule in _latency_alerts(text).items()}


def test_the_matrix_holds_the_network_and_non_model_alerts_longer_and_within_its_fault_stage() -> None:
    """A fault-free cell's network p99 over 10 s stays over the threshold while the slow calls of a busy machine
    follow each other within a window: the drift cells' (8 req/s) held it for over 20 s and fired both alerts that
    read it. The matrix holds them 30 s, the model's 20 s; the interactive demo holds all three alike."""
    from aiwatch.demo.matrix import MatrixOptions

    options = MatrixOptions()
    assert _latency_holds(render(options.rules_config())["aiwatch-alerts.rules.yml"]) == {
        "AiwatchModelLatencyHigh": "20s", "AiwatchNonModelLatencyHigh": "30s", "AiwatchNetworkLatencyHigh": "30s"}
    assert set(_latency_holds(render(alerting.rules_config(hold_seconds=7))["aiwatch-alerts.rules.yml"]).values()) \
        == {"7s"}
    # an injected fault's p99 crosses within a scrape and an evaluation of the injection; the alert then fires a
    # hold later, and must be seen before the fault stage and its grace end
    interval = float(options.interval.removesuffix("s"))
    assert options.outside_model_hold_seconds + 2 * interval < options.fault_seconds + options.grace_seconds


def _outside_model_thresholds(text: str) -> dict[str, float]:
    return {name: float(rule["expr"].rsplit(">", 1)[1]) for name, rule in _latency_alerts(text).items()
            if name != "AiwatchModelLatencyHigh"}


def test_the_interactive_demo_sets_its_outside_model_threshold_above_one_queued_model_call() -> None:
    """Before any fault the queue's p99 is about a model call (24-49 ms in the normal stage, 60-70 ms in the cache
    warm-up): at a 50 ms threshold the queue alert fired in the normal stage with no fault in each of three quiet
    demo runs. The demo's default fault (200 ms) leaves room for 100 ms; a fault under 150 ms, and the matrix's
    50 ms cells, keep 50 ms."""
    from aiwatch.demo.matrix import MatrixOptions

    assert alerting.outside_model_threshold(runner.DEFAULT_SEVERITY_MS / 1000) == 0.1
    assert alerting.outside_model_threshold(0.15) == 0.1
    assert alerting.outside_model_threshold(0.149) == 0.05
    assert alerting.outside_model_threshold(0.05) == 0.05
    wide = render(alerting.rules_config(outside_model_p99_seconds=0.1))["aiwatch-alerts.rules.yml"]
    assert _outside_model_thresholds(wide) == {"AiwatchNonModelLatencyHigh": 0.1, "AiwatchNetworkLatencyHigh": 0.1}
    assert _outside_model_thresholds(render(MatrixOptions().rules_config())["aiwatch-alerts.rules.yml"]) == {
        "AiwatchNonModelLatencyHigh": 0.05, "AiwatchNetworkLatencyHigh": 0.05}


def test_the_stack_configs_are_what_prometheus_and_alertmanager_read(tmp_path: Path) -> None:
    groups = [alerting.ScrapeGroup(["127.0.0.1:1", "127.0.0.1:2"], {"cell": "a"})]
    config = json.loads(alerting.prometheus_config(groups, [tmp_path / "r.yml"], "127.0.0.1:9093", "2s"))
    assert config["global"] == {"scrape_interval": "2s", "evaluation_interval": "2s"}
    assert config["scrape_configs"][0]["static_configs"] == [
        {"targets": ["127.0.0.1:1", "127.0.0.1:2"], "labels": {"cell": "a"}}]
    (tmp_path / "prometheus.yml").write_text(alerting.prometheus_config(groups, [], "127.0.0.1:9093"))
    promtool = require_binary("promtool")
    checked = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (tmp_path / "alertmanager.yml").write_text(alerting.alertmanager_config())
    amtool = require_binary("amtool")
    checked = subprocess.run([amtool, "check-config", str(tmp_path / "alertmanager.yml")], capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alerts_are_described_by_what_they_are_about() -> None:
    assert alerting.describe({"alertname": "AiwatchNonModelLatencyHigh", "service": "gw", "phase": "network",
                              "peer": "inf", "severity": "warning", "instance": "x"}) == \
        "AiwatchNonModelLatencyHigh{service=gw, phase=network, peer=inf}"
    assert alerting.describe({"alertname": "AiwatchTargetAbsent"}) == "AiwatchTargetAbsent"


# --- the per-stage diagnosis ------------------------------------------------------------------------------------------


def snapshot(metrics: Metrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    return parse_metrics(generate_latest(metrics.registry).decode())


def serve_requests(metrics: Metrics, n: int, features: float, model: float, network: float) -> None:
    """``n`` requests of the demo's two services, recorded the way the demo's instrumentation records them."""
    gw = RequestRecorder(metrics, service="gateway")
    inf = RequestRecorder(metrics, service="inference", model="recommender")
    m = metrics
    for _ in range(n):
        for recorder, route, phases in ((inf, "/predict", {"inference": model}),
                                        (gw, "/recommend", {"features": features, "inference_call": model + network})):
            m.child(m.request_duration, (recorder.service, route, "POST", "200", "realtime")).observe(
                sum(phases.values()))
            for phase, seconds in phases.items():
                m.child(m.phase_duration, (recorder.service, recorder.model or "", "", phase)).observe(seconds)
        m.child(m.client_request_duration, ("gateway", "inference", "/predict", "200", "inference_call")).observe(
            model + network)
        m.child(m.network_duration, ("gateway", "inference", "inference_call")).observe(network)


def test_each_stage_is_diagnosed_against_the_first(metrics: Metrics) -> None:
    snaps = [snapshot(metrics)]
    for features, model, network in ((0.001, 0.02, 0.002), (0.001, 0.02, 0.202), (0.001, 0.02, 0.002)):
        serve_requests(metrics, 50, features, model, network)
        snaps.append(snapshot(metrics))
    stages = [summary.stage_stats(name, 10.0, before, after, Names(), started_at=10.0 * i,
                                  ended_at=10.0 * (i + 1))
              for i, (name, before, after) in enumerate(zip(("normal", "net congested", "recovery"), snaps,
                                                            snaps[1:], strict=False))]
    summary.diagnose_stages(stages, "gateway")
    assert stages[0].diagnosis is None
    assert stages[1].diagnosis is not None and stages[1].diagnosis.cause == "network:gateway->inference"
    assert stages[2].diagnosis is not None and stages[2].diagnosis.cause == "none"
    text = summary.format_summary(stages)
    assert "diagnosis (aiwatch diagnose, each stage against normal):" in text
    assert "top contributor: network:gateway->inference +200.0 ms (100% of the added time)" in text
    assert stages[1].as_dict()["diagnosis"]["cause"] == "network:gateway->inference"


def test_run_stage_honours_a_stage_bound_on_requests_in_flight() -> None:
    class Slow:
        in_flight = 0
        most = 0

        async def post(self, url: str, json: object) -> object:
            Slow.in_flight += 1
            Slow.most = max(Slow.most, Slow.in_flight)
            await asyncio.sleep(0.2)
            Slow.in_flight -= 1

            class Ok:
                status_code = 200
            return Ok()

    import numpy as np

    stage = loadgen.Stage("sale", 1.0, 100.0, max_in_flight=3)
    result = asyncio.run(loadgen.run_stage(Slow(), "http://x", stage, np.random.default_rng(1), max_in_flight=32))
    assert Slow.most == 3 and result.dropped > 0 and result.ok == result.sent


def test_run_stage_counts_why_each_request_failed() -> None:
    """A failed request is counted with its reason (the status, or the client's exception), so that a run with
    failures says what they were."""
    import httpx
    import numpy as np

    class Flaky:
        calls = 0

        async def post(self, url: str, json: object) -> object:
            Flaky.calls += 1
            if Flaky.calls % 3 == 1:
                raise httpx.ReadTimeout("slow")

            class Answer:
                status_code = 503 if Flaky.calls % 3 == 2 else 200
            return Answer()

    stage = loadgen.Stage("sale", 1.0, 30.0)
    result = asyncio.run(loadgen.run_stage(Flaky(), "http://x", stage, np.random.default_rng(2), max_in_flight=32))
    timeouts, unavailable = (Flaky.calls + 2) // 3, (Flaky.calls + 1) // 3
    assert result.failures == {"ReadTimeout": timeouts, "HTTP 503": unavailable}
    assert (result.failed, result.ok) == (timeouts + unavailable, Flaky.calls - timeouts - unavailable)


@pytest.mark.slow
@pytest.mark.alone
def test_the_network_scenario_end_to_end_is_diagnosed_as_the_network(tmp_path: Path) -> None:
    """``aiwatch demo --headless --scenario network``: the slow link on the gateway -> inference hop is switched on
    for the middle stage only, and the summary's diagnosis of that stage names the network."""
    import sys

    from tests.servers import python_env

    out = tmp_path / "stages.json"
    proc = subprocess.run([sys.executable, "-m", "aiwatch", "demo", "--headless", "--scenario", "network",
                           "--severity-ms", "200", "--duration", "24", "--no-alerts", "--json", str(out)],
                          env=python_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "through the slow link on 127.0.0.1:" in proc.stdout
    assert "stage net congested: 8s at" in proc.stdout and "link congested, +200 ms per round trip" in proc.stdout
    stages = {s["name"]: s for s in json.loads(out.read_text())}
    assert list(stages) == ["normal", "net congested", "recovery"]
    assert stages["normal"]["diagnosis"] is None
    fault = stages["net congested"]["diagnosis"]
    assert fault["cause"] == "network:gateway->inference", proc.stdout
    top = fault["contributors"][0]
    # the link adds 200 ms per round trip; the delta is the stage's mean less the baseline's, and a loaded machine's
    # baseline can hold more of its own noise than the stage (CI run 77: +197.7 ms)
    assert top["component"] == "network" and top["delta_seconds"] >= 0.15
    # switched off: the requests still on the link when the stage ended are all the recovery sees of it
    after = {(c["component"], c["peer"]): c["delta_seconds"] for c in stages["recovery"]["diagnosis"]["contributors"]}
    assert after[("network", "inference")] < 0.1, proc.stdout
    assert "top contributor: network:gateway->inference +" in proc.stdout
