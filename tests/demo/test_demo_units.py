"""The demo's parts on their own: metric arithmetic, PSI, the batched inference path, feature store, drift sketch,
model."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiwatch.console.source import histogram_quantile
from aiwatch.demo import data, scrape, summary
from aiwatch.demo.features import FeatureStore, LruCache, LruDict, RedisCache, backing_profile
from aiwatch.metrics import Metrics
from aiwatch.scrape import parse_metrics
from aiwatch.timing import RequestRecorder


def test_quantiles_from_a_scrape_delta_see_only_the_stage(metrics: Metrics) -> None:
    from prometheus_client import generate_latest

    hist = metrics.child(metrics.queue_wait, ("q",))
    for _ in range(100):
        hist.observe(0.001)
    before = parse_metrics(generate_latest(metrics.registry).decode())
    for _ in range(100):
        hist.observe(0.4)
    after = parse_metrics(generate_latest(metrics.registry).decode())
    d = scrape.delta(after, before)
    stage_p50 = histogram_quantile(0.5, scrape.buckets(d, "aiwatch_queue_wait_seconds", queue="q"))
    all_p50 = histogram_quantile(0.5, scrape.buckets(after, "aiwatch_queue_wait_seconds", queue="q"))
    assert stage_p50 is not None and 0.3 < stage_p50 <= 0.5
    assert all_p50 is not None and all_p50 <= 0.01


def test_psi_uses_the_fleet_promql_epsilon_convention() -> None:
    ref = {"a": 0.5, "b": 0.5, "c": 0.0}
    live = {"a": 80.0, "b": 20.0}
    eps = 0.0001
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5) + 0.0 * math.log(eps / eps)
    assert summary.psi(live, ref) == pytest.approx(expected)
    assert summary.psi({}, ref) is None


def test_sale_distribution_drifts_basket_value_only() -> None:
    ref = data.reference_features(20000)
    live = data.live_features(np.random.default_rng(3), 20000, sale=True)
    for feature in data.DRIFT_FEATURES:
        edges = np.quantile(ref[feature], np.linspace(0, 1, 11)[1:-1])
        edges = np.unique(edges)
        q = np.bincount(np.searchsorted(edges, ref[feature], side="right"), minlength=len(edges) + 1) / 20000
        p = np.bincount(np.searchsorted(edges, live[feature], side="right"), minlength=len(edges) + 1) / 20000
        value = summary.psi(dict(enumerate(p * 20000)), dict(enumerate(q)))  # type: ignore[arg-type]
        assert value is not None
        if feature == "basket_value":
            assert 0.25 < value < 0.4, value
        else:
            assert value < 0.02, (feature, value)


def test_drift_monitor_exports_the_local_verdict_and_the_fleet_sketch(metrics: Metrics) -> None:
    from aiwatch.demo.drift import MODEL, drift_monitor

    monitor = drift_monitor(metrics, window_seconds=60.0)
    get = metrics.registry.get_sample_value
    reference = monitor.profile.features["basket_value"].reference_id
    bins = {"model": MODEL, "feature": "basket_value", "reference": reference}
    shares = [get("aiwatch_feature_reference_ratio", {**bins, "bin": str(i)}) for i in range(10)]
    assert shares == pytest.approx([0.1] * 10, abs=0.01)  # the training data's deciles
    live = data.live_features(np.random.default_rng(5), 400, sale=True)
    for i in range(400):
        monitor.observe({k: float(v[i]) for k, v in live.items()})
    monitor.observe({"basket_value": float("nan"), "items_in_cart": 1.0, "session_seconds": 10.0})
    report = monitor.evaluate()
    assert report.features["basket_value"].drifted and report.features["basket_value"].method == "psi"
    counted = sum(get("aiwatch_feature_bin_total", {**bins, "bin": str(i)}) or 0.0 for i in range(10))
    assert counted == 400.0
    assert get("aiwatch_feature_missing_total", {"model": MODEL, "feature": "basket_value"}) == 1.0
    labels = {"model": MODEL, "feature": "basket_value", "test": "psi"}
    assert get("aiwatch_drift_detected", labels) == 1.0
    assert (get("aiwatch_drift_score", labels) or 0.0) > 0.2
    for feature in ("items_in_cart", "session_seconds"):
        assert get("aiwatch_drift_detected", {"model": MODEL, "feature": feature, "test": "psi"}) == 0.0


async def test_inference_core_batches_through_aiwatch_micro_batcher(metrics: Metrics) -> None:
    """The demo's inference path is aiwatch.signals.MicroBatcher in front of the recommender: each request records
    the queue and inference (model) phases under model="recommender", and the batch metrics carry that label."""
    from aiwatch.demo.inference import MODEL, InferenceCore
    from aiwatch.demo.model import Request

    core = InferenceCore(metrics, model_seconds=0.002, max_batch=2)
    recorder = RequestRecorder(metrics, service="inference", model=MODEL)
    phases: list[set[str]] = []

    async def request(user: int) -> list[int]:
        tl = recorder.begin()
        items = await core.predict(Request(user, 40.0, 2.0, 100.0))
        phases.append({name for name, _ in tl.phases})
        recorder.finish(tl, "/predict", "POST", "200")
        return items

    try:
        answers = await asyncio.gather(*(request(u) for u in range(6)))
    finally:
        await core.aclose()
    assert all(len(items) == 10 for items in answers)
    assert all(p == {"queue", "inference"} for p in phases)
    get = metrics.registry.get_sample_value
    assert get("aiwatch_queue_wait_seconds_count", {"queue": MODEL}) == 6.0
    batches = get("aiwatch_batch_size_count", {"model": MODEL})
    assert batches is not None and 3.0 <= batches < 6.0  # 6 concurrent requests, at most 2 per model call
    assert get("aiwatch_queue_depth", {"queue": MODEL}) == 0.0
    assert get("aiwatch_phase_duration_seconds_count",
               {"service": "inference", "model": MODEL, "model_version": "", "phase": "inference"}) == 6.0
    assert any(s.labels.get("bin") == "9" for family in metrics.registry.collect() for s in family.samples
               if s.name == "aiwatch_feature_bin_total" and s.labels.get("feature") == "basket_value")


def test_lru_dict_evicts_least_recently_used() -> None:
    cache = LruDict(capacity=2)
    cache["a"] = {"v": 1.0}
    cache["b"] = {"v": 2.0}
    assert cache["a"] == {"v": 1.0}
    cache["c"] = {"v": 3.0}
    assert "b" not in cache and "a" in cache and len(cache) == 2
    with pytest.raises(ValueError, match="capacity"):
        LruDict(0)


async def test_feature_store_counts_hits_and_misses_through_instrument_mapping(metrics: Metrics) -> None:
    store = FeatureStore(LruCache(metrics, capacity=10))
    first = await store.user_profile(42)
    second = await store.user_profile(42)
    assert first == second
    get = metrics.registry.get_sample_value
    assert get("aiwatch_feature_cache_requests_total", {"cache": "user_features", "result": "miss"}) == 1.0
    assert get("aiwatch_feature_cache_requests_total", {"cache": "user_features", "result": "hit"}) == 1.0
    assert get("aiwatch_feature_cache_lookup_duration_seconds_count", {"cache": "user_features", "result": "hit"}) == 1


async def test_a_failing_redis_cache_never_fails_the_lookup(metrics: Metrics) -> None:
    """Fault injection with a real redis client and nothing listening: aiwatch's instrument_redis counts the error
    and re-raises it; the demo's feature store serves the backing store's profile."""
    from tests.servers import free_port

    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", metrics)
    store = FeatureStore(cache)
    try:
        profile = await store.user_profile(7)
        again = await store.user_profile(7)
    finally:
        await cache.close()
    assert profile == again == backing_profile(7)
    get = metrics.registry.get_sample_value
    assert get("aiwatch_feature_cache_requests_total", {"cache": "user_features", "result": "error"}) == 2.0
    assert get("aiwatch_feature_cache_requests_total", {"cache": "user_features", "result": "hit"}) == 0.0


def test_recommender_pads_batches_and_rejects_oversized_ones() -> None:
    from aiwatch.demo.model import Recommender, Request

    model = Recommender(max_batch=2, candidates=200, hidden=32)
    known, unknown = Request(3, 40.0, 2.0, 100.0), Request(10**7, 40.0, 2.0, 100.0)
    out = model.predict([known, unknown])
    assert len(out) == 2 and all(len(items) == 10 and len(set(items)) == 10 for items in out)
    assert model.predict([known]) == out[:1]  # padding does not change a request's answer
    with pytest.raises(ValueError, match="batch size"):
        model.predict([known, known, known])



def test_stage_stats_take_the_drift_verdict_from_the_monitor_with_enough_values(metrics: Metrics) -> None:
    from prometheus_client import generate_latest

    from aiwatch.demo.drift import drift_monitor

    monitor = drift_monitor(metrics, window_seconds=600.0)
    rng = np.random.default_rng(11)

    def stage(n: int) -> summary.StageStats:
        before = parse_metrics(generate_latest(metrics.registry).decode())
        live = data.live_features(rng, n, sale=True)
        for i in range(n):
            monitor.observe({k: float(v[i]) for k, v in live.items()})
        monitor.evaluate()
        after = parse_metrics(generate_latest(metrics.registry).decode())
        return summary.stage_stats("sale", 1.0, before, after)

    few, many = stage(summary.MIN_DRIFT_SAMPLES - 1), stage(2000)
    assert few.drift_samples["basket_value"] == summary.MIN_DRIFT_SAMPLES - 1
    assert few.drifted == []  # too few values in the monitor's window: never drift
    assert many.drifted == ["basket_value"]
    assert 0.2 < many.psi["basket_value"] < 0.45
    assert many.detected["basket_value"] == pytest.approx(many.psi["basket_value"], abs=0.05)
    assert "DRIFT" in summary.format_summary([few, many]).split("PSI basket_value")[1].splitlines()[0]
    assert "drifted features during sale: basket_value (PSI" in summary.format_summary([many])


@pytest.mark.parametrize("argv, message", [
    (["--duration", "0"], "argument --duration: must be a finite number > 0, got '0'"),
    (["--rps", "fast"], "not a number"),
    (["--gateway-port", "70000"], "not a TCP port"),
    (["--cycles", "0"], "whole number >= 1"),
    (["--rps", "inf"], "argument --rps: must be a finite number > 0, got 'inf'"),
    (["--rps", "1e400"], "argument --rps: must be a finite number > 0, got '1e400'"),
    (["--severity-ms", "1e400"], "argument --severity-ms: must be a finite number > 0"),
    (["--model-ms", "inf"], "argument --model-ms: must be a finite number > 0"),
    (["--duration", "inf"], "argument --duration: must be a finite number > 0"),
    (["--duration", "nan"], "argument --duration: must be a finite number > 0"),
    (["--rps", "1e6"], "argument --rps: at most 100000 requests/s, got '1e6'"),
    (["--rps", "100001"], "argument --rps: at most 100000 requests/s, got '100001'"),
    (["--duration", "2e9"], "argument --duration: at most 1e+09 seconds, got '2e9'"),
    (["--duration", "-5"], "argument --duration: must be a finite number > 0, got '-5'"),
    (["--seed", "-1"], "argument --seed: must be a whole number >= 0, got '-1'"),
    (["--prometheus", "localhost:9090"], "argument --prometheus: not an http(s) URL: 'localhost:9090'"),
    (["--redis", "localhost:6379"], "argument --redis: not a Redis URL (redis://HOST:PORT/DB, rediss://, unix://): "
                                    "'localhost:6379'"),
    # the services refuse a fault over a minute: a 400, and a traceback once the middle stage had begun
    (["--scenario", "model", "--severity-ms", "70000"], "argument --severity-ms: at most 60000 ms, got '70000'"),
    (["--seed", "1.5"], "argument --seed: must be a whole number >= 0, got '1.5'"),
])
def test_demo_command_rejects_bad_arguments(argv: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from aiwatch.cli import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["demo", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("where", "message"), [
    ("missing/stages.json", "argument --json: cannot write 'missing/stages.json': no directory 'missing'"),
    ("a-file/stages.json", "argument --json: cannot write 'a-file/stages.json': 'a-file' is not a directory"),
    ("a-dir", "argument --json: cannot write 'a-dir': it is a directory"),
])
def test_demo_json_path_that_cannot_be_written_is_refused_before_the_demo_runs(
        where: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from aiwatch.cli import build_parser

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    with pytest.raises(SystemExit) as info:  # it was written after the whole demo had run: a traceback at the end
        build_parser().parse_args(["demo", "--json", where])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("where", "message"), [
    ("a-file", "argument --prediction-log: 'a-file' is not a directory"),
    ("a-file/log", "argument --prediction-log: cannot make the directory 'a-file/log': 'a-file' is not a directory"),
])
def test_demo_prediction_log_under_a_file_is_refused_before_the_demo_runs(
        where: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from aiwatch.cli import build_parser

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(SystemExit) as info:  # it was a FileExistsError / NotADirectoryError traceback
        build_parser().parse_args(["demo", "--prediction-log", where])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_demo_output_paths_that_can_be_made_are_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiwatch.cli import build_parser

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["demo", "--json", "stages.json", "--prediction-log", "new/log"])
    assert (args.json, args.prediction_log) == ("stages.json", "new/log")


def test_stage_plan_scales_with_the_duration() -> None:
    from aiwatch.demo.loadgen import plan

    stages = plan(100.0, 5.0)
    assert [s.name for s in stages] == ["normal", "flash sale", "recovery"]
    assert sum(s.seconds for s in stages) == pytest.approx(100.0)
    assert stages[1].rps == 10 * stages[0].rps and stages[1].sale and not stages[2].sale
    assert [s.seconds for s in plan(20.0, 5.0)] == pytest.approx([s.seconds / 5 for s in stages])


def test_without_grpcio_the_demo_falls_back_to_http_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from aiwatch.demo import runner

    real = importlib.util.find_spec
    monkeypatch.setattr(runner.importlib.util, "find_spec",
                        lambda name, *a: None if name == "grpc" else real(name, *a))
    assert runner.default_transport() == "http"
    problem = runner.grpc_problem()
    assert problem is not None and 'pip install "aiwatch[grpc]"' in problem


@pytest.mark.parametrize("prometheus", [None, "http://127.0.0.1:9090"])
def test_the_demo_opens_the_console_with_its_real_flags(prometheus: str | None) -> None:
    """The demo's console command line parses with `aiwatch console`'s own parser and passes its validation."""
    from aiwatch.cli import build_parser
    from aiwatch.commands.console import streamlit_command
    from aiwatch.demo.runner import console_args

    urls = ["http://127.0.0.1:8000/metrics", "http://127.0.0.1:8001/metrics"]
    argv = console_args(urls, prometheus, 8599)
    assert argv[1:4] == ["-m", "aiwatch", "console"]
    args = build_parser().parse_args(argv[3:])
    assert args.port == 8599 and args.address == "127.0.0.1"
    if prometheus:
        assert args.prometheus == prometheus and args.scrape is None
    else:
        assert args.scrape == urls and args.prometheus is None
    cmd, env = streamlit_command(args)
    assert "--server.port" in cmd and env["AIWATCH_CONSOLE_WINDOW"] == "15.0"


def test_the_package_docstring_names_only_modules_that_exist() -> None:
    import importlib.util
    import re

    import aiwatch.demo

    named = set(re.findall(r":mod:`(aiwatch\.demo\.\w+)`", aiwatch.demo.__doc__ or ""))
    assert len(named) >= 12
    assert [m for m in sorted(named) if importlib.util.find_spec(m) is None] == []


def test_free_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    """Outgoing connections draw their local ports from the ephemeral range; a service's port picked there could be
    taken by one of them before the service binds it (the root-cause matrix once lost a run that way)."""
    import socket

    from aiwatch.demo import processes

    low = processes._ephemeral_low()
    ports = [processes.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(processes._LOWEST_PORT <= p < low for p in ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((processes.HOST, ports[-1]))  # free when handed out


def test_without_the_rules_extra_the_demo_runs_on_without_its_alerts(monkeypatch: Any) -> None:
    """The demo's Prometheus needs aiwatch's rules, which need aiwatch[rules] (RE2): without it the demo says so and
    goes on without Prometheus instead of dying with a traceback (scripts/demo.sh once installed no rules extra)."""
    import io
    import sys

    from aiwatch.demo import alerting, runner
    from aiwatch.demo.processes import Supervisor

    monkeypatch.setitem(sys.modules, "re2", None)  # import re2 -> ImportError, as when the extra is not installed
    monkeypatch.setattr(alerting, "find_binaries", lambda: ("prometheus", "alertmanager"))
    supervisor = Supervisor()
    out = io.StringIO()
    try:
        assert runner._start_alerting(supervisor, ["127.0.0.1:1"], 8501, 20, 0.1, out) is None
    finally:
        supervisor.stop()
    assert 'the demo runs on without Prometheus' in out.getvalue()
    assert 'pip install "aiwatch[rules]"' in out.getvalue()
    assert supervisor.children == []


def test_the_matrix_reads_the_worst_workers_share_at_the_windows_end_as_diagnose_does() -> None:
    """The matrix asks its Prometheus diagnose's own query per read, over one cell's series: the worst worker's
    share (a ``last`` read) is its value at the window's end, ``last_over_time``, not the window's peak (a copy of
    the query without that kind read it with ``max_over_time``)."""
    from aiwatch.demo.matrix.reads import read_promql
    from aiwatch.diagnose import READS, sources

    worst = next(r for r in READS if r.key == "loop_worst_share")
    assert read_promql(worst, 300, "db200") == ('max by (service, job, instance) '
                                                '(last_over_time(aiwatch_event_loop_stalled_ratio{cell="db200"}[300s]))')
    assert all(read_promql(r, 300, "db200") == sources.read_promql(r, 300, 'cell="db200"') for r in READS)


@pytest.mark.parametrize(("missing", "extra", "transport", "more"),
                         [("fastapi", "demo", "http", []), ("httpx", "demo", "http", []), ("grpc", "grpc", "grpc", []),
                          ("redis.asyncio", "redis", "http",
                           ["--redis", "redis://127.0.0.1:6379/0", "--duration", "1", "--no-alerts"])])
def test_the_demo_without_its_extra_says_which_to_install_in_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], missing: str, extra: str,
        transport: str, more: list[str]) -> None:
    """``aiwatch demo`` on an install without the ``demo`` extra (or ``grpc``, for ``--transport grpc``; ``redis``, for
    ``--redis``) says so and exits 1, as ``aiwatch console`` does without its extra; it ended in a traceback of the
    ImportError (for ``--redis``, the gateway's, printed as the demo's failure once the services had started)."""
    import sys

    from aiwatch.cli import main

    monkeypatch.setitem(sys.modules, missing, None)  # import -> ImportError, as when the extra is not installed
    assert main(["demo", "--headless", "--transport", transport, *more]) == 1
    err = capsys.readouterr().err
    assert err == (f"aiwatch demo: {missing} is not installed; this aiwatch feature needs it: "
                   f'pip install "aiwatch[{extra}]"\n')


@pytest.mark.parametrize("taken", ["--gateway-port", "--inference-port"])
def test_a_fixed_port_already_in_use_is_refused_before_any_service_starts(
        taken: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A service that could not bind its fixed port exited, but whatever held the port answered the readiness check
    (the FastAPI example on 8000 serves /healthz), and the demo ended in a traceback (HTTP Error 404 from /info)."""
    import io
    import socket

    from aiwatch.demo import processes, runner

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((processes.HOST, 0))
        listener.listen()
        port = listener.getsockname()[1]
        other = processes.free_port()
        ports = {"gateway_port": port, "inference_port": other} if taken == "--gateway-port" else \
            {"gateway_port": other, "inference_port": port}
        out = io.StringIO()
        assert runner.run(runner.DemoOptions(headless=True, alerts=False, transport="http", out=out, **ports)) == 1
    assert capsys.readouterr().err == (f"aiwatch demo: {taken} {port}: {processes.HOST}:{port} is in use (Address "
                                       f"already in use): stop what listens there, or leave {taken} out for a free "
                                       "port\n")
    assert "starting the services" not in out.getvalue()


def test_the_same_fixed_port_for_both_services_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from aiwatch.demo import processes, runner

    port = processes.free_port()
    out = io.StringIO()
    assert runner.run(runner.DemoOptions(headless=True, alerts=False, transport="http", out=out, gateway_port=port,
                                         inference_port=port)) == 1
    assert capsys.readouterr().err == (f"aiwatch demo: --gateway-port and --inference-port are both {port}: the two "
                                       "services need two ports\n")
    assert "starting the services" not in out.getvalue()



def test_a_console_port_in_use_is_said_and_no_console_is_started() -> None:
    """The console's port taken (another demo's console on 8501): the demo printed ``console http://127.0.0.1:8501``
    all the same, whose page was the other demo's, while its own console exited at once."""
    import io
    import socket

    from aiwatch.demo import processes, runner

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((processes.HOST, 0))
        listener.listen()
        port = listener.getsockname()[1]
        supervisor = processes.Supervisor()
        out = io.StringIO()
        try:
            runner._open_console(supervisor, ["http://127.0.0.1:1/metrics"], None, port, out)
        finally:
            supervisor.stop()
    assert supervisor.children == []
    assert out.getvalue() == (f"  console: not started, {processes.HOST}:{port} is in use (Address already in use); "
                              "another demo's console? --console-port 0 picks a free port\n")


@pytest.mark.parametrize("user_id", [2**63, 10**30])
async def test_the_gateway_refuses_a_user_id_the_grpc_hop_cannot_carry(user_id: int) -> None:
    """The gRPC hop's ``user_id`` is an int64: a larger id (which the gateway's body accepted) made protobuf raise
    ValueError inside the handler, and the client got a bare 500 "Internal Server Error"."""
    import json

    from aiwatch.demo.gateway import create_app
    from tests.http.asgi_driver import call

    app = create_app(inference_grpc="127.0.0.1:1")  # not reached: the body is refused first
    body = {"user_id": user_id, "basket_value": 1.0, "items_in_cart": 1.0, "session_seconds": 1.0}
    resp = await call(app, "/recommend", method="POST", headers=[("content-type", "application/json")],
                      body=json.dumps(body).encode())
    assert resp.status == 422
    assert "less than or equal to 9223372036854775807" in resp.body.decode()


def test_a_port_an_earlier_run_left_in_time_wait_is_not_in_use() -> None:
    """The fixed-port check binds as uvicorn does (SO_REUSEADDR): a connection the previous demo's service closed
    first leaves the port in TIME_WAIT for a minute, which a plain bind refuses but a new service binds through."""
    import socket

    from aiwatch.demo import processes

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((processes.HOST, 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection((processes.HOST, port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server closes first: its side of the connection waits in TIME_WAIT
            client.recv(1)
    assert processes.port_in_use(port) is None
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind((processes.HOST, port))
