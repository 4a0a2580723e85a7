"""``aiwatch demo``: the flash-sale demo (a recommendation API under normal traffic, a flash sale and recovery)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from aiwatch.commands._paths import output_file

#: kept here so that `aiwatch --help` does not import the demo (aiwatch.demo.scenarios.SCENARIOS, checked by a test)
SCENARIO_NAMES = ("flash-sale", "network", "feature-store", "model", "drift", "none", "batch-backfill")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the flash-sale demo: an instrumented recommendation API under load, on loopback",
        description="Start a gateway API and an inference service (numpy recommender behind a micro-batcher, feature "
                    "cache, drift sketch) on 127.0.0.1, drive normal traffic, a 10x flash sale with shifted inputs "
                    "and recovery, and show what aiwatch measured. Ctrl-C stops every part.")
    parser.add_argument("--headless", action="store_true",
                        help="no console: run the stages once and print the per-stage summary")
    parser.add_argument("--duration", type=_duration, default=60.0,
                        help="seconds per cycle of normal / flash sale / recovery (default 60; at most 1e9)")
    parser.add_argument("--cycles", type=_count, default=None,
                        help="cycles to run (default: 1 headless, until Ctrl-C with the console)")
    parser.add_argument("--redis", metavar="URL", default=None, type=_redis_url,
                        help="keep the feature cache in Redis (redis://127.0.0.1:6379/0) instead of in-process")
    parser.add_argument("--prometheus", metavar="URL", default=None, type=_http_url,
                        help="point the console at this Prometheus instead of scraping the services directly")
    parser.add_argument("--rps", type=_rate, default=None,
                        help="normal request rate (default: 15%% of the model's measured capacity, so the 10x "
                             f"sale offers 1.5 times what it can serve; at most {MAX_RPS:.0f}: every part runs on "
                             "this machine over loopback, the model serves about 80 req/s at the default --model-ms "
                             "and a few thousand at the fastest, so a higher rate only counts dropped requests)")
    parser.add_argument("--model-ms", type=_positive, default=25.0,
                        help="the model's time per batch (default 25): --cpu-ms of numpy work plus a simulated "
                             "accelerator's time")
    parser.add_argument("--gateway-port", type=_port, default=0,
                        help="gateway port on 127.0.0.1 (default: a free one), e.g. for a Prometheus scrape config")
    parser.add_argument("--inference-port", type=_port, default=0,
                        help="inference service port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--transport", choices=("grpc", "http"), default=None,
                        help="the gateway -> inference hop (default: grpc when the grpc extra is installed, else http)")
    parser.add_argument("--console-port", type=_port, default=8501,
                        help="port of the console on 127.0.0.1 (default 8501; 0: a free one)")
    parser.add_argument("--json", metavar="PATH", default=None, type=output_file,
                        help="also write the per-stage numbers to PATH as JSON (rewritten after each cycle: the "
                             "latest cycle's)")
    parser.add_argument("--scenario", choices=list(SCENARIO_NAMES), default="flash-sale",
                        help="what goes wrong in the middle stage: flash-sale (default: 10x traffic, the queue "
                             "grows), network (the gateway -> inference link is congested), feature-store (the "
                             "store slows, the cache misses), model (the model slows, a GPU throttle), drift (inputs "
                             "shift, latency stays flat), none (the control), batch-backfill (a batch client "
                             "shares the replicas with the real-time traffic)")
    parser.add_argument("--severity-ms", type=_severity, default=None,
                        help="time the fault adds to the part it slows (default 200, at most 60000; for flash-sale: "
                             "the queue wait the sale causes, by bounding its requests in flight; no bound by "
                             "default)")
    parser.add_argument("--cpu-ms", type=_positive, default=5.0,
                        help="of --model-ms, the part that is the numpy recommender's CPU work; the rest is a "
                             "simulated accelerator's time, which holds no CPU (default 5)")
    parser.add_argument("--deadline-ms", type=_positive, default=400.0,
                        help="the gateway's time budget per real-time request (default 400): when too little of it "
                             "is left for the inference call, the gateway answers from its cache of recent answers "
                             "and counts the response as degraded")
    parser.add_argument("--no-alerts", action="store_true",
                        help="do not start Prometheus and Alertmanager (started by default when installed)")
    parser.add_argument("--seed", type=_seed, default=7, help="seed of the generated traffic (a whole number >= 0)")
    parser.add_argument("--prediction-log", metavar="DIR", default=None, type=_directory,
                        help="the inference service logs every request into DIR (Parquet by model and hour); then "
                             "`aiwatch drift PROFILE DIR --since TIME` tests the sale's requests")
    parser.set_defaults(handler=run)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < math.inf:  # inf crashed the demo's parts (OverflowError, TypeError) after they had started
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


#: The highest --rps: far above what the demo's services serve on one machine (its inference service ~80 req/s at the
#: default --model-ms), and the sale sends 10x it.
MAX_RPS = 100_000.0
#: The longest --duration (about 32 years): a console demo may be left running, so only what is no time is refused.
MAX_DURATION = 1e9


def _rate(text: str) -> float:
    value = _positive(text)
    if value > MAX_RPS:
        raise argparse.ArgumentTypeError(f"at most {MAX_RPS:.0f} requests/s, got {text!r}")
    return value


def _severity(text: str) -> float:
    from aiwatch.demo.faults import MAX_DELAY_MS  # stdlib only: the demo's heavy parts stay unimported

    value = _positive(text)
    if value > MAX_DELAY_MS:  # the services refuse a longer fault: a 400 and a traceback once the stage began
        raise argparse.ArgumentTypeError(f"at most {MAX_DELAY_MS:.0f} ms, got {text!r}")
    return value


def _duration(text: str) -> float:
    value = _positive(text)
    if value > MAX_DURATION:
        raise argparse.ArgumentTypeError(f"at most {MAX_DURATION:g} seconds, got {text!r}")
    return value


# The paths are checked before the demo starts: --json is written after every stage has run, and --prediction-log
# made once the services are being started; either failing then was a traceback.
def _directory(text: str) -> str:
    path = Path(text)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory" if existing == path else
                                         f"cannot make the directory {text!r}: {str(existing)!r} is not a directory")
    return text


# Both URLs go to a child (the gateway, the console), where a bad one was a traceback in the demo's failure (--redis)
# or a console that exited unseen while the demo printed its address (--prometheus; headless, it also turned the
# demo's own Prometheus and alerts off).
def _http_url(text: str) -> str:
    from aiwatch.commands.console import _check_urls

    try:
        _check_urls(text, ())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _redis_url(text: str) -> str:
    from urllib.parse import urlparse

    if urlparse(text).scheme not in ("redis", "rediss", "unix"):
        raise argparse.ArgumentTypeError(f"not a Redis URL (redis://HOST:PORT/DB, rediss://, unix://): {text!r}")
    return text


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _seed(text: str) -> int:
    # numpy's generators take no negative seed: -1 was a ValueError traceback once the services had started
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    from aiwatch._optional import MissingExtraError, require

    try:
        for module in ("fastapi", "uvicorn", "httpx"):
            require(module, "demo")
        if args.transport == "grpc":
            require("grpc", "grpc")
        if args.redis:  # else the gateway died of the ImportError, its traceback printed as the demo's failure
            require("redis.asyncio", "redis")
    except MissingExtraError as exc:  # as `aiwatch console` says it: one line, not a traceback
        print(f"aiwatch demo: {exc}", file=sys.stderr)
        return 1
    from aiwatch.demo.runner import options_from_args
    from aiwatch.demo.runner import run as run_demo

    return run_demo(options_from_args(args))
