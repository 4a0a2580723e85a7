"""``aiwatch console``: run the Streamlit console (extra ``console``) on 127.0.0.1, headless.

    aiwatch console                                   # scrape http://127.0.0.1:8000/metrics every 5 s
    aiwatch console --scrape http://10.0.0.5:8000/metrics --scrape http://10.0.0.6:8000/metrics
    aiwatch console --prometheus http://127.0.0.1:9090 --port 8501 --refresh 15
    aiwatch console --prometheus https://mimir.example.com/prometheus --tenant team-a \
        --bearer-token-file /var/run/secrets/token --match 'cluster="eu-1"' --gpu-source dcgm
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiwatch.commands._connection import add_connection_options, connection_from_args
from aiwatch.gpuseries import SOURCES, UTILIZATION_FIELDS

APP = Path(__file__).resolve().parent.parent / "console" / "app.py"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "console", help="open the Streamlit console (latency split, GPUs, queues, drift, alerts)",
        description="Run the aiwatch console. Without --prometheus it scrapes /metrics endpoints itself.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prometheus", metavar="URL",
                        help="read from this Prometheus (http://host:9090; default AIWATCH_CONSOLE_PROMETHEUS)")
    source.add_argument("--scrape", metavar="URL", action="append",
                        help="a /metrics URL to scrape directly (repeatable; default AIWATCH_CONSOLE_SCRAPE, else "
                             "http://127.0.0.1:8000/metrics)")
    parser.add_argument("--port", type=int, default=8501, help="port to serve the console on (default 8501)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; use 0.0.0.0 only behind an authenticating proxy)")
    # no argparse defaults: an option not given keeps its AIWATCH_CONSOLE_* variable, else the config's default
    parser.add_argument("--refresh", type=float, metavar="SECONDS",
                        help="redraw the open view every SECONDS (0: off; default 10)")
    parser.add_argument("--interval", type=float, metavar="SECONDS",
                        help="scrape interval of the embedded scraper (default 5)")
    parser.add_argument("--history", type=float, metavar="SECONDS",
                        help="seconds of history the embedded scraper keeps in memory (default 1800)")
    parser.add_argument("--window", type=float, metavar="SECONDS",
                        help="default rate/quantile window (default 60)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="seconds one request to Prometheus (or one scrape) may take (default 5)")
    parser.add_argument("--aggregation-labels", metavar="LABELS",
                        help="labels the Prometheus queries keep apart, comma separated, or 'none' (default "
                             "cluster,namespace)")
    parser.add_argument("--match", metavar="MATCHERS",
                        help="PromQL matchers added to every Prometheus query, e.g. 'cluster=\"eu-1\"'")
    parser.add_argument("--gpu-source", choices=SOURCES,
                        help="read GPUs from aiwatch's collector or NVIDIA's dcgm-exporter (default aiwatch; dcgm "
                             "needs --prometheus)")
    parser.add_argument("--dcgm-utilization", choices=tuple(UTILIZATION_FIELDS),
                        help="with --gpu-source dcgm: the field that is utilization (default DCGM_FI_DEV_GPU_UTIL)")
    add_connection_options(parser)
    parser.set_defaults(handler=run)


def streamlit_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` command line and environment for ``args`` (validated; ValueError when bad)."""
    from aiwatch.console.config import ConsoleConfig, scrape_urls
    from aiwatch.promql import check_selection, label_list

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be 1-65535, got {args.port}")
    _check_address(args.address)
    # the flags not given keep their AIWATCH_CONSOLE_* variables (or the defaults); --prometheus and --scrape
    # replace both variables: either names the one source
    given = {"interval": args.interval, "history": args.history, "refresh": args.refresh, "window": args.window,
             "timeout": args.timeout, "gpu_source": args.gpu_source,
             "match": None if args.match is None else check_selection(args.match, "--match"),
             "dcgm_utilization": args.dcgm_utilization,
             "aggregation_labels": None if args.aggregation_labels is None
             else label_list(args.aggregation_labels, "--aggregation-labels")}
    values: dict[str, Any] = {**ConsoleConfig.env_values(), **{k: v for k, v in given.items() if v is not None},
                              "http": connection_from_args(args)}
    if args.prometheus is not None:
        values["prometheus"] = args.prometheus
    if args.scrape is not None:
        # each URL as the console reads it: a --scrape value may list several (checked one by one below)
        values.update(prometheus="", scrape=scrape_urls(args.scrape))
    defaults = ConsoleConfig()
    interval, history = values.get("interval", defaults.interval), values.get("history", defaults.history)
    if history > 0:  # at least one scrape interval of history; one that is no period is the config's error to name
        values["history"] = max(history, interval)
    config = ConsoleConfig(**values)
    _check_urls(config.prometheus, config.scrape)
    # streamlit run, with the data source started first: its scrape history runs from now, not the first page view
    cmd = [sys.executable, "-m", "aiwatch.console.streamlit_server", "run", str(APP),
           "--server.address", args.address, "--server.port", str(args.port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--server.runOnSave", "false",
           "--global.developmentMode", "false", "--theme.base", "light",
           "--client.toolbarMode", "minimal"]
    env = dict(os.environ)
    env.update(config.to_env())
    return cmd, env


def _check_address(address: str) -> None:
    """``address`` must be one streamlit can serve on: an address (or a name) of this machine. Streamlit would end
    in a traceback on any other, and an empty one would serve on every interface."""
    if not address.strip():
        raise ValueError("--address must not be empty (127.0.0.1 serves this machine only, 0.0.0.0 every interface)")
    try:
        family, kind, proto, _, where = socket.getaddrinfo(address, 0, type=socket.SOCK_STREAM,
                                                           flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.bind(where)  # port 0: whether the address is this machine's, whatever --port's state
    except (OSError, UnicodeError, ValueError) as exc:  # a name that does not resolve, too long, a NUL in it
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"--address {address!r} is no address of this machine to serve on ({reason})") from None


def _check_urls(prometheus: str, scrape: tuple[str, ...]) -> None:
    from urllib.parse import urlparse

    from aiwatch.httpconfig import refuse_credentials

    for url in ([prometheus] if prometheus else list(scrape)):
        refuse_credentials(url, "the Prometheus URL" if prometheus else "the /metrics URL")
        try:
            parsed = urlparse(url)
            parsed.port  # noqa: B018 - a port that is not a number from 0 to 65535 raises
        except ValueError as exc:  # an unclosed [IPv6 address, a bad port: else found only in the browser
            raise ValueError(f"not an http(s) URL: {url!r} ({exc})") from None
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")


def run(args: argparse.Namespace) -> int:
    from aiwatch._optional import MissingExtraError, require
    from aiwatch.console.config import ENV

    try:
        require("streamlit", "console")
        require("pandas", "console")
        require("re2", "console")  # checks --match's regexes as Prometheus compiles them
    except MissingExtraError as exc:
        print(f"aiwatch console: {exc}", file=sys.stderr)
        return 1
    try:
        cmd, env = streamlit_command(args)
    except ValueError as exc:
        print(f"aiwatch console: {exc}", file=sys.stderr)
        return 2
    where = env[ENV["prometheus"].name] or ", ".join(env[ENV["scrape"].name].split(","))
    print(f"aiwatch console on http://{args.address}:{args.port} reading {where}", flush=True)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130
