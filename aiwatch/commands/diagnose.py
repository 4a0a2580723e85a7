"""``aiwatch diagnose``: which part of a service's request time moved between a baseline and an incident window.

    aiwatch diagnose --prometheus http://127.0.0.1:9090 --service gateway
    aiwatch diagnose --prometheus http://127.0.0.1:9090 --incident 10m --baseline 2h --at 2025-03-01T12:00:00Z --json
    aiwatch diagnose --scrape http://127.0.0.1:8000/metrics --scrape http://127.0.0.1:8001/metrics --incident 30s
    aiwatch diagnose --prometheus https://thanos.example.com --bearer-token-file token --match 'cluster="eu-1"'

Exit codes: 0 a diagnosis was made, 2 invalid arguments, 3 the source is unreachable or answered with an error,
4 nothing to diagnose (no aiwatch metrics, no traffic in a window, an unknown service). See docs/diagnose.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from aiwatch import clock
from aiwatch.commands._connection import add_connection_options, connection_from_args
from aiwatch.promql import DEFAULT_AGGREGATION_LABELS

EXIT_OK, EXIT_USAGE, EXIT_SOURCE, EXIT_NOTHING = 0, 2, 3, 4
#: how Prometheus (Go's regexp/syntax) begins the error of a regex it cannot compile, in its 400 to a query
_REGEX_REFUSED = "error parsing regexp: "


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "diagnose", help="which part of a service's request time moved (exit 0 diagnosed, 2 bad arguments, "
                         "3 source failed, 4 nothing to diagnose)",
        description="Compare an incident window (the last --incident, ending at --at) with the baseline just "
                    "before it (--baseline long), split the change of the service's time per request into its "
                    "parts down the call graph, rank them, and end in a one-line verdict. Exit codes: 0 diagnosis "
                    "made, 2 invalid arguments, 3 source unreachable or failing, 4 nothing to diagnose.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus", metavar="URL", help="read from this Prometheus (http://host:9090)")
    source.add_argument("--scrape", metavar="URL", action="append",
                        help="scrape this /metrics URL itself (repeatable) for the length of both windows, then "
                             "diagnose: a short look at services without Prometheus")
    parser.add_argument("--service", metavar="NAME",
                        help="the service to explain (default: the entry service whose time rose most)")
    parser.add_argument("--incident", default="5m", metavar="DURATION",
                        help="length of the incident window, ending at --at (default 5m)")
    parser.add_argument("--baseline", default="1h", metavar="DURATION",
                        help="length of the baseline window, just before the incident window (default 1h)")
    parser.add_argument("--at", metavar="TIME", help="end of the incident window: unix seconds or RFC 3339 "
                        "(default now; not with --scrape)")
    parser.add_argument("--noise-floor", metavar="DURATION",
                        help="a part whose time per request moved less than this did not move (default: 2ms or 5%% "
                             "of the baseline's mean request time, whichever is larger)")
    parser.add_argument("--model-phase", action="append", metavar="PHASE",
                        help="a phase that is the model's own time (repeatable; default inference)")
    parser.add_argument("--interval", default="5s", metavar="DURATION",
                        help="with --scrape: seconds between scrapes (default 5s)")
    parser.add_argument("--timeout", default="10s", metavar="DURATION", help="per query or scrape (default 10s)")
    parser.add_argument("--json", action="store_true", help="print the diagnosis as one JSON object")
    parser.add_argument("--match", metavar="MATCHERS", default="",
                        help="with --prometheus: PromQL matchers selecting the series to read, e.g. "
                             "'cluster=\"eu-1\"' (one cluster of a Thanos or Mimir holding several)")
    parser.add_argument("--aggregation-labels", metavar="LABELS", default=",".join(DEFAULT_AGGREGATION_LABELS),
                        help="with --prometheus: labels whose values are never added together; a service found "
                             "under two of them must be narrowed with --match (default %(default)s; 'none')")
    add_connection_options(parser)
    parser.set_defaults(handler=run)


def _message(text: str) -> str:
    """``text`` for the terminal: control characters escaped, backslashes kept as written. A message quotes names
    with repr (escaped already) and Prometheus' text (PromQL, regexes), whose backslashes doubled would read as two."""
    from aiwatch.diagnose.text import printable

    return printable(text, backslashes=False)


def run(args: argparse.Namespace) -> int:
    from aiwatch.diagnose.report import DiagnoseError
    from aiwatch.diagnose.run import diagnose
    from aiwatch.diagnose.text import format_diagnosis
    from aiwatch.diagnose.timeargs import FutureTimeError

    try:
        options = _options(args)
        source = _source(args, options)
    except ValueError as exc:
        return _fail(EXIT_USAGE, str(exc))
    started = clock.monotonic()  # warnings_since's: a wall clock stepped back mid-run dated them before it
    try:
        if args.scrape:
            _wait_for_windows(source, options)
        result = diagnose(source, args.service, options["incident"], options["baseline"], options["at"],
                          model_phases=options["model_phases"], noise_floor=options["noise_floor"])
    except DiagnoseError as exc:
        if args.match and not options["match_checked"] and _REGEX_REFUSED in str(exc):
            return _fail(EXIT_USAGE, _message(f"--match: Prometheus cannot compile a regex of {args.match!r}: {exc} "
                                              f"(with google-re2 installed, pip install \"aiwatch[rules]\", "
                                              f"--match is checked before any query)"))
        return _fail(exc.exit_code, _message(str(exc)))
    except FutureTimeError as exc:
        return _fail(EXIT_USAGE, _message(f"--at: {exc}"))
    except ValueError as exc:
        return _fail(EXIT_USAGE, _message(str(exc)))
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    api = getattr(source, "api", None)
    warnings = api.warnings_since(started) if api is not None else []
    if args.json:
        print(json.dumps({**result.to_dict(), "warnings": warnings}, indent=2))
    else:
        sys.stdout.write(format_diagnosis(result))
    for warning in warnings:  # the answer may rest on part of the data
        print(f"aiwatch diagnose: warning: Prometheus warned that its answers may be incomplete: "
              f"{_message(warning)}", file=sys.stderr)
    return EXIT_OK


def _options(args: argparse.Namespace) -> dict[str, Any]:
    from aiwatch.diagnose.report import DEFAULT_MODEL_PHASES
    from aiwatch.diagnose.timeargs import parse_duration, parse_time

    def duration(flag: str, value: str) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"{flag}: {exc}") from None

    options: dict[str, Any] = {
        "incident": duration("--incident", args.incident),
        "baseline": duration("--baseline", args.baseline),
        "interval": duration("--interval", args.interval),
        "timeout": duration("--timeout", args.timeout),
        "noise_floor": duration("--noise-floor", args.noise_floor) if args.noise_floor else None,
        "model_phases": tuple(args.model_phase or DEFAULT_MODEL_PHASES),
        "at": None,
        "match_checked": False,
    }
    if args.at:
        if args.scrape:
            raise ValueError("--at needs --prometheus: --scrape can only look at the windows it scrapes from now on")
        try:  # checked against Prometheus' clock by diagnose(): this machine's may run behind it
            options["at"] = parse_time(args.at)
        except ValueError as exc:
            raise ValueError(f"--at: {exc}") from None
    return options


def _source(args: argparse.Namespace, options: dict[str, Any]) -> Any:
    http = connection_from_args(args)
    if args.prometheus is not None and not args.prometheus.strip():  # else taken as no --prometheus: --scrape's error
        raise ValueError("--prometheus: an empty URL (write e.g. http://127.0.0.1:9090)")
    if args.prometheus:
        from aiwatch._optional import MissingExtraError
        from aiwatch.diagnose.sources import PrometheusWindows
        from aiwatch.promql import check_selection, label_list

        try:  # a regex Prometheus cannot compile fails every query: refused here, naming --match
            check_selection(args.match, "--match")
            options["match_checked"] = True
        except MissingExtraError:  # no RE2 here: Prometheus' 400 at the first query says it (see run)
            pass

        return PrometheusWindows(args.prometheus, timeout=options["timeout"], http=http, match=args.match,
                                 scope=label_list(args.aggregation_labels, "--aggregation-labels"))
    if args.match:
        raise ValueError("--match needs --prometheus: a scrape reads the endpoints it is given")
    from aiwatch.console.scrape import ScrapeSource

    span = options["incident"] + options["baseline"]
    interval = options["interval"]
    if span < 2 * interval:
        raise ValueError(f"--scrape needs windows longer than two scrapes ({interval:g} s each), got "
                         f"--incident plus --baseline = {span:g} s")
    return ScrapeSource(args.scrape, interval=interval, history=span + 2 * interval,
                        timeout=min(options["timeout"], interval), start=False, http=http)


def _wait_for_windows(source: Any, options: dict[str, Any]) -> None:
    """Scrape from now for both windows (the baseline first), then set ``at`` to the last scrape's time. Fails at
    once when no endpoint answers the first scrape."""
    from aiwatch.diagnose.run import DiagnoseSourceError

    interval, span = options["interval"], options["baseline"] + options["incident"]
    # the monotonic clock: the wall clock set back while it waited (NTP, a VM's resume) made the wait as much longer
    began = clock.monotonic()
    source.scrape_once()
    if not any(h.up for h in source.health()):
        down = "; ".join(f"{h.url}: {h.error or 'no answer'}" for h in source.health())
        raise DiagnoseSourceError(f"no /metrics endpoint answered: {down}")
    print(f"{source.description} every {interval:g} s for {span:g} s (the baseline, then the incident "
          "window)...", file=sys.stderr, flush=True)
    while clock.monotonic() - began < span:
        time.sleep(min(interval, max(0.0, span - (clock.monotonic() - began))))
        source.scrape_once()
    options["at"] = source.now()


def _fail(code: int, message: str) -> int:
    print(f"aiwatch diagnose: {message}", file=sys.stderr)
    return code
