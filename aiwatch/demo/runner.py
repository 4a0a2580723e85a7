"""The demo runner behind ``aiwatch demo``: starts the services as child processes on loopback, drives the stages,
prints what aiwatch measured, and stops every child on exit, Ctrl-C (SIGINT) or SIGTERM.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import numpy as np

from aiwatch._optional import MissingExtraError
from aiwatch.demo import alerting, loadgen, scenarios, scrape, summary
from aiwatch.demo.faults import Injector
from aiwatch.demo.names import Names
from aiwatch.demo.processes import HOST, DemoFailed, Supervisor, claim_port, free_port, port_in_use
from aiwatch.demo.slowlink import SlowLink


@dataclass
class DemoOptions:
    duration: float = 60.0
    headless: bool = False
    redis: str | None = None
    prometheus: str | None = None
    normal_rps: float | None = None
    model_ms: float = 25.0
    max_batch: int = 2
    #: the sale offers this many times the model's measured capacity (when ``normal_rps`` is not given): more than
    #: it can serve, so requests queue for it (the model's time is mostly a simulated accelerator's, which a busy
    #: CPU does not slow down)
    overload: float = 1.5
    max_in_flight: int = 32
    seed: int = 7
    cycles: int | None = None
    json_path: str | None = None
    #: 0 = a free port
    gateway_port: int = 0
    inference_port: int = 0
    #: the gateway -> inference hop: "grpc" or "http" (default: grpc when grpcio is installed)
    transport: str = field(default_factory=lambda: default_transport())
    grpc_port: int = 0
    #: the console's port (0 = a free one)
    console_port: int = 8501
    #: the fault scenario (:mod:`aiwatch.demo.scenarios`) and the time its fault adds (default
    #: :data:`DEFAULT_SEVERITY_MS`; for the flash sale, no bound on the sale unless given)
    scenario: str = scenarios.DEFAULT
    severity_ms: float | None = None
    #: of the model's ``model_ms`` per call, the numpy recommender's CPU work; the rest is a simulated accelerator's
    #: time (a sleep: the host waits, its CPU is free), so the model's own time stays steady on a busy machine
    cpu_ms: float = 5.0
    #: start Prometheus and Alertmanager with the demo's rules when they are installed
    alerts: bool = True
    #: a directory: the inference service logs every request there (aiwatch.PredictionLog, Parquet)
    prediction_log: str | None = None
    #: the gateway's time budget per real-time request; past it, the answer comes from its recent answers (degraded)
    deadline_ms: float | None = 400.0
    out: TextIO = field(default_factory=lambda: sys.stdout)


#: The time a scenario's fault adds when ``--severity-ms`` is not given.
DEFAULT_SEVERITY_MS = 200.0


def grpc_problem() -> str | None:
    """Why the gRPC hop cannot run here (grpcio missing, a protobuf runtime too old for the generated code), or
    ``None`` when it can."""
    if importlib.util.find_spec("grpc") is None:
        return 'grpcio is not installed: pip install "aiwatch[grpc]"'
    try:
        importlib.import_module("aiwatch.demo.recommender_pb2_grpc")
    except Exception as exc:  # protobuf's VersionError, an ImportError...
        return f'the demo\'s generated gRPC code does not load ({exc}): pip install -U "aiwatch[grpc]"'
    return None


def default_transport() -> str:
    """``grpc`` when the ``grpc`` extra is installed (and loads), else ``http``."""
    return "http" if grpc_problem() is not None else "grpc"


def console_available() -> bool:
    """The console needs the ``console`` extra (streamlit, pandas)."""
    return all(importlib.util.find_spec(m) is not None for m in ("streamlit", "pandas"))


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(options: DemoOptions) -> int:
    """Run the demo; returns the exit code (130 when interrupted). Children are always stopped on the way out."""
    out = options.out
    # Ctrl-C raises KeyboardInterrupt wherever the runner is, as SIGTERM does. Left to asyncio.run's own handler, it
    # would only cancel the load's task, and under a heavy CPU load a demo was seen to run on for more than 30 s after
    # it (the next stage started).
    previous_int = signal.signal(signal.SIGINT, _raise_interrupt)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    supervisor = Supervisor()
    try:
        return _run(options, supervisor, out)
    except KeyboardInterrupt:
        print("\naiwatch demo: interrupted, stopping every service", file=out, flush=True)
        return 130
    except DemoFailed as exc:
        print(f"aiwatch demo: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # Ctrl-C twice must not leave children behind either.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            supervisor.stop()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)


def _run(options: DemoOptions, supervisor: Supervisor, out: TextIO) -> int:
    py = sys.executable
    scenario = scenarios.get(options.scenario)
    names = Names()
    if options.gateway_port and options.gateway_port == options.inference_port:
        raise DemoFailed(f"--gateway-port and --inference-port are both {options.gateway_port}: the two services need "
                         "two ports")
    for flag, port in (("--gateway-port", options.gateway_port), ("--inference-port", options.inference_port)):
        if port:
            claim_port(port, flag)
    inf_port, gw_port = options.inference_port or free_port(), options.gateway_port or free_port()
    inf_url, gw_url = f"http://{HOST}:{inf_port}", f"http://{HOST}:{gw_port}"
    if options.transport not in ("grpc", "http"):
        raise DemoFailed(f"unknown transport {options.transport!r} (grpc or http)")
    problem = grpc_problem() if options.transport == "grpc" else None
    if problem:
        raise DemoFailed(f"--transport grpc: {problem}")
    print("aiwatch demo: training the recommender and starting the services on loopback ...", file=out, flush=True)
    # The drift monitor's window (evaluated every 0.5 s) is shorter than a stage, so that at a stage's end it holds
    # only that stage's requests.
    drift_window = 0.9 * min(s.seconds for s in loadgen.plan(options.duration, 1.0))
    cpu_ms = min(options.cpu_ms, options.model_ms)
    inf_args = [py, "-m", "aiwatch.demo.inference", "--port", str(inf_port), "--model-ms", str(cpu_ms),
                "--device-ms", str(options.model_ms - cpu_ms), "--max-batch", str(options.max_batch),
                "--drift-window", f"{drift_window:.3f}"]
    if options.prediction_log:
        inf_args += ["--prediction-log", options.prediction_log]
        profile = write_log_profile(Path(options.prediction_log))
        print(f"  prediction log: {options.prediction_log} (test it: aiwatch drift {profile} "
              f"{options.prediction_log} --since <UTC time the sale began>)", file=out, flush=True)
    gw_args = [py, "-m", "aiwatch.demo.gateway", "--port", str(gw_port)]
    if options.deadline_ms:
        gw_args += ["--deadline-ms", f"{options.deadline_ms:g}"]
    grpc_port = (options.grpc_port or free_port()) if options.transport == "grpc" else 0
    link = _slow_link(supervisor, grpc_port or inf_port) if scenario.name == "network" else None
    hop_port = link.port if link is not None else (grpc_port or inf_port)
    if options.transport == "grpc":
        inf_args += ["--grpc-port", str(grpc_port)]
        gw_args += ["--inference-grpc", f"{HOST}:{hop_port}"]
        hop = f"gRPC {HOST}:{grpc_port} (Recommend)"
    else:
        gw_args += ["--inference-url", f"http://{HOST}:{hop_port}"]
        hop = f"HTTP {inf_url} (POST /predict)"
    if link is not None:
        hop += f" through the slow link on {HOST}:{link.port}"
    inference = supervisor.start("inference", inf_args)
    if options.redis:
        gw_args += ["--redis", options.redis]
    gateway = supervisor.start("gateway", gw_args)
    supervisor.wait_ready(inference, f"{inf_url}/healthz")
    supervisor.wait_ready(gateway, f"{gw_url}/healthz")
    with urllib.request.urlopen(f"{inf_url}/info", timeout=5) as resp:
        info = json.loads(resp.read())
    severity_ms = options.severity_ms if options.severity_ms is not None else DEFAULT_SEVERITY_MS
    bounded_sale = scenario.name == "flash-sale" and options.severity_ms is not None
    normal_rps = options.normal_rps or default_rate(scenario.name, info["model_seconds"], info["capacity_rps"],
                                                    severity_ms / 1000.0, 2.0 if bounded_sale else options.overload)
    sale_bound = None
    if bounded_sale:
        sale_bound = scenarios.sale_in_flight(severity_ms / 1000.0, info["model_seconds"], info["capacity_rps"])
    stages = loadgen.plan(options.duration, normal_rps, scenario=scenario, sale_in_flight=sale_bound)
    warmup = loadgen.warmup(options.duration, normal_rps)
    injector = Injector(scenario.name, severity_ms / 1000.0, gw_url, inf_url, link)
    metrics_urls = [f"{gw_url}/metrics", f"{inf_url}/metrics"]
    print(f"  gateway   {gw_url}   (POST /recommend, /metrics)  pid {gateway.pid}\n"
          f"  inference {inf_url}   (/metrics; called over {hop})  pid {inference.pid}\n"
          f"  model: {info['model_seconds'] * 1000:.1f} ms per batch of up to {info['max_batch']} "
          f"(capacity ~{info['capacity_rps']:.0f} req/s); feature cache: "
          f"{'redis ' + options.redis if options.redis else 'in-process LRU'}\n"
          + (f"  deadline: {options.deadline_ms:g} ms per real-time request at the gateway, then a cached answer "
             "(degraded)\n" if options.deadline_ms else "")
          + f"  scenario {scenario.name}: {scenario.story}"
          + (f" (+{severity_ms:g} ms)" if scenario.uses_severity and scenario.name != "flash-sale" else "")
          + (f" (at most {sale_bound} requests in flight)" if sale_bound else "") + "\n"
          "  stages: " + ", ".join(f"{s.name} {s.seconds:.0f}s at {s.rps:.0f} req/s" for s in stages)
          + f" (after a {warmup.seconds:.0f}s cache warm-up, not counted)",
          file=out, flush=True)
    console_port = options.console_port or free_port()
    prometheus = options.prometheus
    if prometheus is None and options.alerts:
        hold = round(min(max(stages[1].seconds / 3, 5.0), alerting.HOLD_SECONDS))
        stack = _start_alerting(supervisor, [f"{HOST}:{gw_port}", f"{HOST}:{inf_port}"], console_port, hold,
                                alerting.outside_model_threshold(severity_ms / 1000.0), out)
        prometheus = stack.prometheus_url if stack else None
    if not options.headless:
        _open_console(supervisor, metrics_urls, prometheus, console_port, out)
    cycles = options.cycles if options.cycles is not None else (1 if options.headless else None)
    rng = np.random.default_rng(options.seed)
    cycle = 0
    while cycles is None or cycle < cycles:
        cycle += 1
        results = asyncio.run(_drive(f"{gw_url}/recommend", stages, metrics_urls, rng, options.max_in_flight,
                                     lambda line: print(line, file=out, flush=True), supervisor.check_alive,
                                     warmup if cycle == 1 else None, injector, names))
        summary.diagnose_stages(results, names.gateway)
        if prometheus is not None and options.alerts and options.prometheus is None:
            _alerts_per_stage(prometheus, results)
        print("\n" + summary.format_summary(results, names) + "\n", file=out, flush=True)
        if options.prediction_log and len(results) > 1:
            print(log_drift_command(options.prediction_log, results[1]) + "\n", file=out, flush=True)
        if options.json_path:
            Path(options.json_path).write_text(json.dumps([s.as_dict() for s in results], indent=2) + "\n")
    return 0


def default_rate(scenario: str, model_seconds: float, capacity_rps: float, severity_seconds: float,
                 overload: float = 1.5) -> float:
    """The normal stage's rate when ``--rps`` is not given: ``overload`` x a tenth of the model's capacity (the sale
    then offers ``overload`` x what the model can serve; twice, when ``--severity-ms`` bounds the sale's requests in
    flight, so that they always find the model busy). In the ``model`` scenario, lower: a slower model also makes
    requests wait for it, so the rate is the one at which the throttled model is busy about a third of the time and
    its own added time stays the largest (at the default rate, +200 ms per call makes the queue add more than the
    model; docs/demo.md)."""
    rate = max(1.0, overload * capacity_rps / 10.0)
    if scenario == "model":
        rate = min(rate, max(0.5, MODEL_BUSY / (model_seconds + severity_seconds)))
    return rate


#: The share of time the throttled model is busy at the model scenario's default rate.
MODEL_BUSY = 0.35


def _slow_link(supervisor: Supervisor, target_port: int) -> SlowLink:
    """The network scenario's proxy on the gateway -> inference hop (a thread of this process)."""
    link = SlowLink(HOST, target_port)
    link.start()
    supervisor.on_stop(link.stop)
    return link


def _start_alerting(supervisor: Supervisor, targets: list[str], console_port: int, hold_seconds: int,
                    outside_model_p99_seconds: float, out: TextIO) -> alerting.Stack | None:
    binaries = alerting.find_binaries()
    if binaries is None:
        print(f"  alerts: Prometheus or Alertmanager not found: {alerting.INSTALL_HINT}", file=out, flush=True)
        return None
    try:
        cfg = alerting.rules_config(f"http://{HOST}:{console_port}/?runbook={{alert}}", hold_seconds,
                                    outside_model_p99_seconds=outside_model_p99_seconds)
    except MissingExtraError as exc:  # the rules need aiwatch[rules]; the demo runs on without its alerts
        print(f"  alerts: cannot render aiwatch's rules, the demo runs on without Prometheus: {exc}", file=out,
              flush=True)
        return None
    try:
        stack = alerting.start_stack(
            lambda name, args: supervisor.start(name, args, essential=False, die_with_parent=True),
            supervisor.wait_ready,
            supervisor.log_dir, [alerting.ScrapeGroup(targets, {})], cfg, binaries, free_port(), free_port())
    except DemoFailed as exc:
        print(f"  alerts: could not start Prometheus / Alertmanager, the demo runs on without them: {exc}",
              file=out, flush=True)
        return None
    print(f"  prometheus {stack.prometheus_url}   (aiwatch's rules on the demo's time scale; alerts: "
          f"{stack.prometheus_url}/alerts)  pid {stack.prometheus_pid}\n"
          f"  alertmanager {stack.alertmanager_url}  pid {stack.alertmanager_pid}", file=out, flush=True)
    return stack


def _alerts_per_stage(prometheus_url: str, stages: list[summary.StageStats]) -> None:
    for stage in stages:
        try:
            found = alerting.firing_during(prometheus_url, stage.started_at, stage.ended_at)
        except (OSError, RuntimeError, ValueError):
            continue
        stage.alerts = sorted({alerting.describe(labels) for labels in found})


def log_drift_command(log_dir: str, stage: summary.StageStats) -> str:
    """The ``aiwatch drift`` command that tests the prediction log's requests of ``stage`` (the middle one), with its
    UTC start and end: the docs' ``--since <UTC time the sale began>``, which the demo printed nowhere."""
    from datetime import UTC, datetime

    def utc(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    profile = Path(log_dir) / "_reference_profile.json"
    return (f"prediction log: the {stage.name} ran {utc(stage.started_at)} to {utc(stage.ended_at)}; test its "
            f"requests for drift:\n  aiwatch drift {profile} {log_dir} --since {utc(stage.started_at)} "
            f"--until {utc(stage.ended_at)} --method psi --threshold {summary.PSI_THRESHOLD:g} --rule any")


def write_log_profile(log_dir: Path) -> Path:
    """The demo's reference profile, saved in the prediction log's directory under a name that readers of the log
    skip (``_``), for ``aiwatch drift PROFILE LOG_DIR``."""
    from aiwatch.demo.drift import reference_profile

    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "_reference_profile.json"
    reference_profile().save(path)
    return path


def console_args(metrics_urls: list[str], prometheus: str | None, port: int) -> list[str]:
    """The ``aiwatch console`` command line: the embedded scraper on the services' ``/metrics`` (every second,
    a 15 s window, so a demo stage shows up while it runs), or ``--prometheus URL``."""
    args = [sys.executable, "-m", "aiwatch", "console", "--port", str(port), "--refresh", "3", "--window", "15"]
    if prometheus:
        return [*args, "--prometheus", prometheus]
    for url in metrics_urls:
        args += ["--scrape", url]
    return [*args, "--interval", "1"]


def _open_console(supervisor: Supervisor, metrics_urls: list[str], prometheus: str | None, port: int,
                  out: TextIO) -> None:
    if not console_available():
        print('  console: not installed (pip install "aiwatch[console]"); watch the summary below, or scrape\n'
              f"           {' and '.join(metrics_urls)} with Prometheus", file=out, flush=True)
        return
    why = port_in_use(port)
    if why is not None:  # the console it would print would be whatever holds the port: another demo's, often
        print(f"  console: not started, {HOST}:{port} is in use ({why}); another demo's console? --console-port 0 "
              "picks a free port", file=out, flush=True)
        return
    # Not essential: a console that cannot start leaves the demo and its summary running.
    child = supervisor.start("console", console_args(metrics_urls, prometheus, port), essential=False)
    print(f"  console   http://{HOST}:{port}   pid {child.pid} (reading "
          f"{prometheus or 'the services /metrics'}; its log: {child.log})", file=out, flush=True)


async def _drive(url: str, stages: list[loadgen.Stage], metrics_urls: list[str], rng: np.random.Generator,
                 max_in_flight: int, say: Callable[[str], None], check_alive: Callable[[], None],
                 warmup: loadgen.Stage | None = None, injector: Injector | None = None,
                 names: Names | None = None) -> list[summary.StageStats]:
    import httpx

    results: list[summary.StageStats] = []
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        if warmup is not None:
            say(f"warm-up: {warmup.seconds:.0f}s at {warmup.rps:.0f} req/s (fills the feature cache; not counted)")
            await loadgen.run_stage(client, url, warmup, rng, max_in_flight)
        for stage in stages:
            check_alive()
            before = await asyncio.to_thread(scrape.scrape_all, metrics_urls)
            started, started_at = time.monotonic(), time.time()
            say(f"stage {stage.name}: {stage.seconds:.0f}s at {stage.rps:.0f} req/s"
                + (" with shifted basket values" if stage.sale else "")
                + (" and new users" if stage.new_user_share >= 0.5 else "")
                + (f" plus a batch client ({stage.batch_workers} workers, aiwatch-traffic-class: batch)"
                   if stage.batch_workers else "")
                + (f" ({injector.describe()})" if stage.fault and injector is not None and injector.describe()
                   else ""))
            if stage.fault and injector is not None:
                await asyncio.to_thread(injector.on)
            try:
                load = await loadgen.run_stage(client, url, stage, rng, max_in_flight)
            finally:
                if stage.fault and injector is not None:
                    await asyncio.to_thread(injector.off)
            check_alive()
            after = await asyncio.to_thread(scrape.scrape_all, metrics_urls)
            stats = summary.stage_stats(stage.name, time.monotonic() - started, before, after, names, started_at,
                                        time.time())
            stats.load = {"seconds": stage.seconds, "sent": load.sent, "ok": load.ok, "failed": load.failed,
                          "dropped": load.dropped, "batch_ok": load.batch_ok, "batch_failed": load.batch_failed}
            results.append(stats)
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(load.failures.items()))
            why = f" ({reasons})" if reasons else ""
            # the flash sale's own bound with --severity-ms, not the run's 32, is what its requests were dropped over
            bound = max_in_flight if stage.max_in_flight is None else min(max_in_flight, stage.max_in_flight)
            say(f"  done: {load.ok} ok, {load.failed} failed{why}, {load.dropped} not sent (over {bound} in "
                f"flight)" + (f", batch {load.batch_ok} ok, {load.batch_failed} failed" if stage.batch_workers else "")
                + f"; request p99 {_fmt(stats.p('request', 99))}, model p50 {_fmt(stats.p('model', 50))}, "
                f"queue p99 {_fmt(stats.p('queue', 99))}")
    return results


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def options_from_args(args: Any) -> DemoOptions:
    return DemoOptions(duration=args.duration, headless=args.headless, redis=args.redis, prometheus=args.prometheus,
                       normal_rps=args.rps, model_ms=args.model_ms, seed=args.seed, cycles=args.cycles,
                       json_path=args.json, gateway_port=args.gateway_port, inference_port=args.inference_port,
                       transport=args.transport or default_transport(), console_port=args.console_port,
                       scenario=args.scenario, severity_ms=args.severity_ms, cpu_ms=args.cpu_ms,
                       alerts=not args.no_alerts, prediction_log=getattr(args, "prediction_log", None),
                       deadline_ms=args.deadline_ms)
