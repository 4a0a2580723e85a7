"""The demo runner behind ``aiwatch demo``: starts the services as child processes on loopback, drives the stages,
prints what aiwatch measured, and stops every child on exit, Ctrl-C (SIGINT) or SIGTERM.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import numpy as np

from aiwatch.demo import loadgen, scrape, summary

HOST = "127.0.0.1"


@dataclass
class DemoOptions:
    duration: float = 60.0
    headless: bool = False
    redis: str | None = None
    prometheus: str | None = None
    normal_rps: float | None = None
    model_ms: float = 25.0
    max_batch: int = 2
    #: the sale offers this many times the model's measured capacity (when ``normal_rps`` is not given)
    overload: float = 0.9
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
    #: a directory: the inference service logs every request there (aiwatch.PredictionLog, Parquet)
    prediction_log: str | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


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


class Child:
    """A child process in its own session (the terminal's Ctrl-C reaches only the runner, which stops it, with
    every process of its group). An ``essential`` child that stops on its own stops the demo."""

    def __init__(self, name: str, args: Sequence[str], log_dir: Path, env: dict[str, str],
                 essential: bool = True) -> None:
        self.name = name
        self.essential = essential
        self.log = log_dir / f"{name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)


class DemoFailed(RuntimeError):
    """A part of the demo could not start or stopped on its own; the message has its log's tail."""


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="aiwatch-demo-")
        self.log_dir = Path(self._tmp.name)
        self.env = dict(os.environ)
        # One BLAS thread: the model's time stays steady and the demo stays within one core for the model.
        self.env.setdefault("OPENBLAS_NUM_THREADS", "1")
        self.env.setdefault("OMP_NUM_THREADS", "1")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [_package_root(), self.env.get("PYTHONPATH", "")]))

    def start(self, name: str, args: Sequence[str], essential: bool = True) -> Child:
        child = Child(name, args, self.log_dir, self.env, essential)
        self.children.append(child)
        return child

    def wait_ready(self, child: Child, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise DemoFailed(f"the {child.name} service exited with {child.proc.returncode}:\n{child.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise DemoFailed(f"the {child.name} service did not answer {url} within {timeout:.0f}s:\n{child.tail()}")

    def check_alive(self) -> None:
        for child in self.children:
            if child.essential and child.proc.poll() is not None:
                raise DemoFailed(f"the {child.name} service stopped (exit {child.proc.returncode}):\n{child.tail()}")

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self._tmp.cleanup()


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent.parent)


def console_available() -> bool:
    """The console needs the ``console`` extra (streamlit, pandas)."""
    return all(importlib.util.find_spec(m) is not None for m in ("streamlit", "pandas"))


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(options: DemoOptions) -> int:
    """Run the demo; returns the exit code (130 when interrupted). Children are always stopped on the way out."""
    out = options.out
    previous_int = signal.getsignal(signal.SIGINT)
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
    inf_args = [py, "-m", "aiwatch.demo.inference", "--port", str(inf_port), "--model-ms", str(options.model_ms),
                "--max-batch", str(options.max_batch), "--drift-window", f"{drift_window:.3f}"]
    if options.prediction_log:
        inf_args += ["--prediction-log", options.prediction_log]
        profile = write_log_profile(Path(options.prediction_log))
        print(f"  prediction log: {options.prediction_log} (test it: aiwatch drift {profile} "
              f"{options.prediction_log} --since <UTC time the sale began>)", file=out, flush=True)
    gw_args = [py, "-m", "aiwatch.demo.gateway", "--port", str(gw_port)]
    if options.transport == "grpc":
        grpc_port = options.grpc_port or free_port()
        inf_args += ["--grpc-port", str(grpc_port)]
        gw_args += ["--inference-grpc", f"{HOST}:{grpc_port}"]
        hop = f"gRPC {HOST}:{grpc_port} (Recommend)"
    else:
        gw_args += ["--inference-url", inf_url]
        hop = f"HTTP {inf_url} (POST /predict)"
    inference = supervisor.start("inference", inf_args)
    if options.redis:
        gw_args += ["--redis", options.redis]
    gateway = supervisor.start("gateway", gw_args)
    supervisor.wait_ready(inference, f"{inf_url}/healthz")
    supervisor.wait_ready(gateway, f"{gw_url}/healthz")
    with urllib.request.urlopen(f"{inf_url}/info", timeout=5) as resp:
        info = json.loads(resp.read())
    normal_rps = options.normal_rps or max(1.0, options.overload * info["capacity_rps"] / 10.0)
    stages = loadgen.plan(options.duration, normal_rps)
    warmup = loadgen.warmup(options.duration, normal_rps)
    metrics_urls = [f"{gw_url}/metrics", f"{inf_url}/metrics"]
    print(f"  gateway   {gw_url}   (POST /recommend, /metrics)  pid {gateway.pid}\n"
          f"  inference {inf_url}   (/metrics; called over {hop})  pid {inference.pid}\n"
          f"  model: {info['model_seconds'] * 1000:.1f} ms per batch of up to {info['max_batch']} "
          f"(capacity ~{info['capacity_rps']:.0f} req/s); feature cache: "
          f"{'redis ' + options.redis if options.redis else 'in-process LRU'}\n"
          f"  stages: " + ", ".join(f"{s.name} {s.seconds:.0f}s at {s.rps:.0f} req/s" for s in stages)
          + f" (after a {warmup.seconds:.0f}s cache warm-up, not counted)",
          file=out, flush=True)
    if not options.headless:
        _open_console(supervisor, metrics_urls, options, out)
    cycles = options.cycles if options.cycles is not None else (1 if options.headless else None)
    rng = np.random.default_rng(options.seed)
    cycle = 0
    while cycles is None or cycle < cycles:
        cycle += 1
        results = asyncio.run(_drive(f"{gw_url}/recommend", stages, metrics_urls, rng, options.max_in_flight,
                                     lambda line: print(line, file=out, flush=True), supervisor.check_alive,
                                     warmup if cycle == 1 else None))
        print("\n" + summary.format_summary(results) + "\n", file=out, flush=True)
        if options.json_path:
            Path(options.json_path).write_text(json.dumps([s.as_dict() for s in results], indent=2) + "\n")
    return 0


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


def _open_console(supervisor: Supervisor, metrics_urls: list[str], options: DemoOptions, out: TextIO) -> None:
    if not console_available():
        print('  console: not installed (pip install "aiwatch[console]"); watch the summary below, or scrape\n'
              f"           {' and '.join(metrics_urls)} with Prometheus", file=out, flush=True)
        return
    port = options.console_port or free_port()
    # Not essential: a console that cannot start (port taken) leaves the demo and its summary running.
    child = supervisor.start("console", console_args(metrics_urls, options.prometheus, port), essential=False)
    print(f"  console   http://{HOST}:{port}   pid {child.pid} (reading "
          f"{options.prometheus or 'the services /metrics'}; its log: {child.log})", file=out, flush=True)


async def _drive(url: str, stages: list[loadgen.Stage], metrics_urls: list[str], rng: np.random.Generator,
                 max_in_flight: int, say: Callable[[str], None], check_alive: Callable[[], None],
                 warmup: loadgen.Stage | None = None) -> list[summary.StageStats]:
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
                + (" with shifted basket values and new users" if stage.sale else ""))
            load = await loadgen.run_stage(client, url, stage, rng, max_in_flight)
            check_alive()
            after = await asyncio.to_thread(scrape.scrape_all, metrics_urls)
            stats = summary.stage_stats(stage.name, time.monotonic() - started, before, after)
            stats.started_at, stats.ended_at = started_at, time.time()
            stats.load = {"seconds": stage.seconds, "sent": load.sent, "ok": load.ok, "failed": load.failed,
                          "dropped": load.dropped}
            results.append(stats)
            say(f"  done: {load.ok} ok, {load.failed} failed, {load.dropped} not sent (over {max_in_flight} in "
                f"flight); request p99 {_fmt(stats.p('request', 99))}, model p50 {_fmt(stats.p('model', 50))}, "
                f"queue p99 {_fmt(stats.p('queue', 99))}")
    return results


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def options_from_args(args: Any) -> DemoOptions:
    return DemoOptions(duration=args.duration, headless=args.headless, redis=args.redis, prometheus=args.prometheus,
                       normal_rps=args.rps, model_ms=args.model_ms, seed=args.seed, cycles=args.cycles,
                       json_path=args.json, gateway_port=args.gateway_port, inference_port=args.inference_port,
                       transport=args.transport or default_transport(), console_port=args.console_port,
                       prediction_log=getattr(args, "prediction_log", None))
