"""``aiwatch quality LOG LABELS``: realised model quality per window, from delayed labels joined to the prediction
log. Exit codes: 0 every model's latest window meets its objectives (or none given); 1 one is below; 2 anything
else (bad arguments, unreadable input, no labelled request). ``--by-version``: per model and model_version, the
verdict on each model's latest window and on each version's (exit 1 when either is below); the table shows at most
``--max-versions`` versions per model, chosen below their objective first, then the latest, and keeps its usual
order, by window (``--json`` has them all); the ``--textfile`` gauges stay per model."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from aiwatch.commands.drift import EXIT_DRIFT, EXIT_ERROR, EXIT_OK, add_time_range, fail, positive_int, time_range

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """An argparse type: ``90``, ``15m``, ``1h``, ``1d`` -> seconds (> 0)."""
    found = _DURATION.match(text)
    seconds = float(found.group(1)) * _UNITS[found.group(2)] if found else 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be a duration such as 900, 15m, 1h or 1d, got {text!r}")
    return seconds


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quality", help="realised model quality from delayed labels joined to the prediction log "
                        "(exit 0 ok, 1 below objective, 2 error)",
        description="Join LABELS (a .csv/.parquet of request_id -> outcome) to the prediction LOG (a directory or "
                    "glob of Parquet files written by aiwatch.PredictionLog) and print the realised quality per "
                    "model and window. Exit codes: 0 every model's latest window meets its objectives, 1 one does "
                    "not, 2 error.")
    parser.add_argument("log", help="the prediction log: a directory or glob of Parquet files")
    parser.add_argument("labels", help="delayed labels: .csv or .parquet with request_id and outcome columns")
    parser.add_argument("--kind", choices=("classifier", "regressor"), default="classifier",
                        help="classifier: accuracy, precision, recall; regressor: mae, rmse (default classifier)")
    parser.add_argument("--prediction", default="output",
                        help="the log's column holding the prediction (default: output; e.g. output.label)")
    parser.add_argument("--positive", default="1", help="a classifier's positive class (default 1)")
    parser.add_argument("--id-column", default="request_id", help="the labels' request id column (default request_id)")
    parser.add_argument("--outcome-column", default="outcome", help="the labels' outcome column (default outcome)")
    parser.add_argument("--na-labels", choices=("missing", "class"), default="missing",
                        help="in a CSV column of text labels, pyarrow's missing-value markers (NA, N/A, NaN, null, "
                             "#N/A...): missing labels, left out, as pyarrow reads them (pandas and R read NA so too) "
                             "(default), or classes as written (class: NA for Namibia or not applicable; only an "
                             "empty field is missing). In a column of numbers or true/false they are missing either "
                             "way; a Parquet file's text is read as written")
    parser.add_argument("--window", type=duration, default=3600.0, help="window length (default 1h)")
    parser.add_argument("--objective", action="append", default=[], metavar="METRIC=BOUND",
                        help="a floor for accuracy/precision/recall, a ceiling for mae/rmse (repeatable)")
    parser.add_argument("--min-labelled", type=positive_int, default=30,
                        help="fewer labelled requests whose prediction could be scored in a window: not used for "
                             "the verdict (default 30)")
    parser.add_argument("--textfile", metavar="PATH", help="also write the gauges in Prometheus text format (for "
                                                           "node_exporter's textfile collector)")
    parser.add_argument("--json", action="store_true", help="print the windows as JSON")
    parser.add_argument("--by-version", action="store_true",
                        help="windows per model and model_version (a canary beside the stable version); the verdict "
                             "is taken on each model's latest window, as without the flag, and on each version's "
                             "(versions with too few labels for their own: the first 10 named on stderr, all "
                             "listed in --json). A request logged again under the same model and id counts once, "
                             "for the version of its latest row; an empty, null or missing model_version is shown "
                             "as (none). The --textfile gauges stay per model (they have no "
                             "version label)")
    parser.add_argument("--max-versions", type=_count, default=MAX_VERSIONS, metavar="N",
                        help="with --by-version, how many versions of each model the table shows (default "
                             f"{MAX_VERSIONS}), chosen below their objective first, then the latest; the table "
                             "keeps its usual order, by window. The others are counted on stderr, and their verdict "
                             "lines left out. 0 shows all; --json lists all")
    add_time_range(parser)
    parser.set_defaults(handler=run)


#: How many versions of each model ``--by-version``'s table shows by default (``--max-versions``).
MAX_VERSIONS = 20


def _count(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def objectives(items: list[str], kind: str) -> dict[str, float]:
    from aiwatch.feedback.outcomes import METRICS

    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            bound = float(value)
        except ValueError:
            bound = math.nan
        if not sep or not math.isfinite(bound):
            raise ValueError(f"--objective expects METRIC=NUMBER, got {item!r}")
        if name not in METRICS[kind]:
            raise ValueError(f"--objective {name!r}: a {kind} has {', '.join(METRICS[kind])}")
        # out of range, an objective is met or missed whatever the model does (accuracy=95 meant as a percentage)
        if kind == "classifier" and not 0 <= bound <= 1:
            raise ValueError(f"--objective {item!r}: {name} is a share from 0 to 1 ({bound:g}% is {bound / 100:g})"
                             if 10 <= bound <= 100 else f"--objective {item!r}: {name} is a share from 0 to 1")
        if kind == "regressor" and bound < 0:
            raise ValueError(f"--objective {item!r}: {name} is an error, a number >= 0")
        out[name] = bound
    return out


def _say_unusable(unusable: int, markers: int, kind: str) -> None:
    """The stderr line counting the labels left out, and how many of them were missing-value markers."""
    if not unusable:
        return
    # a regressor's NA is no number either way: the option would change nothing
    hint = f" ({markers} of them NA, null or another missing-value marker in a column of text: --na-labels " \
        "class reads them as classes)" if markers and kind == "classifier" else ""
    print(f"aiwatch quality: {unusable} labels left out: no request id, or a missing, NaN or infinite outcome"
          + (" or one that is not a number" if kind == "regressor" else "") + hint, file=sys.stderr)


#: what --textfile writes: the gauges the docs and AiwatchModelQualityLow name
TEXTFILE_SAMPLES = ("aiwatch_model_quality", "aiwatch_model_quality_objective", "aiwatch_model_quality_labelled")


class _Only:
    """``registry``'s families named in ``names``, in the registry's order (prometheus_client's
    ``restricted_registry`` yields them in a set's order, which changes from one process to the next)."""

    def __init__(self, registry: Any, names: tuple[str, ...]) -> None:
        self.registry, self.names = registry, names

    def collect(self) -> Iterator[Any]:
        return (family for family in self.registry.collect() if family.name in self.names)


def _write_textfile(path: str, registry: Any, write: Any) -> None:
    try:
        write(path, registry)
    except OSError as exc:  # its message names prometheus_client's temporary file, not the option's path
        # prometheus_client before 0.22 leaves its temporary file behind when the rename fails (a directory at
        # --textfile): the node exporter's textfile directory would collect a stray file a failed run. Its name
        # is the same in every version aiwatch allows (0.20-0.26: the path, the pid, the thread's ident).
        leftover = f"{path}.{os.getpid()}.{threading.current_thread().ident}"
        with contextlib.suppress(OSError):
            os.remove(leftover)
        raise OSError(f"cannot write --textfile {path!r}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, write_to_textfile

    from aiwatch.drift.errors import ProfileError
    from aiwatch.feedback.outcomes import (
        WindowQuality,
        below_objective,
        drop_unusable,
        export_quality,
        latest_per_version,
        quality_report,
        read_labels_counting_markers,
    )
    from aiwatch.metrics import Metrics

    try:
        bounds = objectives(args.objective, args.kind)
        read, markers = read_labels_counting_markers(args.labels, args.id_column, args.outcome_column,
                                                     na_labels=args.na_labels)
        labels, unusable = drop_unusable(read, args.kind)
        _say_unusable(unusable, markers, args.kind)  # before any error: markers may be why no window has labels
        report = quality_report(args.log, labels, kind=args.kind, prediction=args.prediction,
                                positive=args.positive, window_seconds=args.window, by_version=args.by_version,
                                **time_range(args, args.log))
        results = report.windows
        # in memory: run where the app runs (PROMETHEUS_MULTIPROC_DIR set), the gauges went into the workers' files
        metrics = Metrics(CollectorRegistry(), in_process=True)
        # the gauges have no version label: per model whatever --by-version says
        latest: dict[str, WindowQuality] = dict(export_quality(report.model_windows, metrics, bounds,
                                                               args.min_labelled))
        unscored = sum(q.unscored for q in results)
        if not latest:
            raise _no_window(args.min_labelled, results, report.untimed)
        if args.textfile:  # per model, with --by-version too: what a run without it writes
            # the quality gauges only: the registry's other families (aiwatch_instrumentation_errors_total, at 0)
            # in two jobs' files collide in node_exporter's textfile directory, same names and labels
            _write_textfile(args.textfile, _Only(metrics.registry, TEXTFILE_SAMPLES), write_to_textfile)
        # with --by-version the per-model verdict stands too: a version with too few labels for its own verdict
        # (a canary's first hour) must not hide what it does to the model
        per_version = latest_per_version(results, args.min_labelled) if args.by_version else {}
    except (ProfileError, ValueError, OSError, ImportError, KeyError) as exc:
        return fail(exc, command="aiwatch quality")
    except Exception as exc:  # never a traceback
        return fail(exc, unexpected=True, command="aiwatch quality")
    if report.duplicates:
        print(f"aiwatch quality: {report.duplicates} logged row{'s' * (report.duplicates != 1)} left out: a request "
              "logged again under the same model and request id, whatever its model_version (its latest row is "
              + ("scored, for its model_version)" if args.by_version else "scored: the quality is per model)"),
              file=sys.stderr)
    if report.unversioned:
        print(f"aiwatch quality: {report.unversioned} logged row{'s' * (report.unversioned != 1)} without a "
              "model_version (empty, null, or no such column in the log): shown as the version (none)", file=sys.stderr)
    if report.untimed:
        print(f"aiwatch quality: {report.untimed} logged row{'s' * (report.untimed != 1)} left out: a missing or "
              "non-finite timestamp", file=sys.stderr)
    if report.positive_found is False:
        shown = ", ".join(map(repr, report.classes)) or "none"
        print(f"aiwatch quality: --positive {args.positive!r} is no class of the labelled requests' predictions or "
              f"outcomes (their classes: {shown}): precision and recall are NaN; name the positive class as the "
              "predictions or labels write it", file=sys.stderr)
    if unscored:
        print(f"aiwatch quality: {unscored} labelled request{'s' * (unscored != 1)} not scored: a prediction that "
              "is missing" + (", NaN, infinite or not a number" if args.kind == "regressor" else " or NaN"),
              file=sys.stderr)
    without_verdict = _versions_without_verdict(results, per_version) if args.by_version else {}
    _say_versions_without_verdict(without_verdict, args.min_labelled)
    failing = {model: below_objective(q, bounds) for model, q in latest.items()}
    failing_versions = {key: below_objective(q, bounds) for key, q in per_version.items()}
    if args.json:
        below: dict[str, Any] = {model: worse for model, worse in failing.items() if worse}
        by_version: dict[str, Any] = {}
        for (model, version), worse in failing_versions.items():
            if worse:
                by_version.setdefault(model, {})[version] = worse
        no_verdict: dict[str, list[str]] = {}
        for model, version in without_verdict:
            no_verdict.setdefault(model, []).append(version)
        verdicts = {"below_objective": by_version, "below_objective_per_model": below,
                    "versions_without_verdict": no_verdict} if args.by_version else {"below_objective": below}
        print(json.dumps({"windows": [q.to_dict() for q in results], "labels_left_out": unusable,
                          "labels_markers_left_out": markers,
                          "logged_duplicates_left_out": report.duplicates, "logged_untimed_left_out": report.untimed,
                          **({"logged_unversioned": report.unversioned} if args.by_version else {}),
                          "positive_found": report.positive_found, **verdicts}, indent=2))
    else:
        names = sorted({name for q in results for name in q.metrics})
        in_table = _shown_versions(results, failing_versions, args.max_versions) if args.by_version else None
        rows = results if in_table is None else [q for q in results if (q.model, q.model_version or "") in in_table]
        cells = [table_version(shown_version(q.model_version or "")) for q in rows] if args.by_version else []
        width = max([len("version"), *map(len, cells)])
        starts = [_start(q.start, args.window) for q in rows]
        start_width = max([17, *map(len, starts)])
        version = f"{'version':<{width}} " if args.by_version else ""
        print(f"{'model':<16} {version}{'window (UTC)':<{start_width}} {'logged':>8} {'labelled':>8} "
              f"{'unscored':>8}  " + "  ".join(f"{n:>9}" for n in names))
        for i, q in enumerate(rows):
            version = f"{cells[i]:<{width}} " if args.by_version else ""
            print(f"{q.model:<16} {version}{starts[i]:<{start_width}} {q.logged:>8} {q.labelled:>8} "
                  f"{q.unscored:>8}  " + "  ".join(f"{q.metrics.get(n, math.nan):>9.4g}" for n in names))
        if in_table is not None:
            _say_versions_not_shown(results, in_table, failing_versions, args.max_versions)
        lines = [(model, latest[model], worse) for model, worse in failing.items()] + [
            (f"{model} version {shown_version(version)}", per_version[model, version], worse)
            for (model, version), worse in failing_versions.items()
            if in_table is None or (model, version) in in_table]
        for name, q, worse in lines:
            if worse:
                print(f"{name}: below objective: " + ", ".join(
                    f"{n} {q.metrics[n]:.4g} (objective {bounds[n]:g})" for n in worse))
    return EXIT_DRIFT if any(failing.values()) or any(failing_versions.values()) else EXIT_OK


#: How many versions without a verdict stderr names one by one; the rest are one line (``--json`` lists them all).
SHOWN_WITHOUT_VERDICT = 10


def _versions_without_verdict(results: list[Any], per_version: dict[tuple[str, str], Any],
                              ) -> dict[tuple[str, str], list[int]]:
    """Each (model, version) with no window of ``--min-labelled`` scored labels (no verdict of its own; the
    model's verdict still counts its requests), in the table's order, with the scored labels of each window."""
    found: dict[tuple[str, str], list[int]] = {}
    for q in results:
        key = (q.model, q.model_version or "")
        if key not in per_version:
            found.setdefault(key, []).append(q.scored)
    return found


def _say_versions_without_verdict(found: dict[tuple[str, str], list[int]], min_labelled: int) -> None:
    """Name the first :data:`SHOWN_WITHOUT_VERDICT` versions without a verdict on stderr, then count the rest (a
    version per request would be a line per request)."""
    for (model, version), scored in list(found.items())[:SHOWN_WITHOUT_VERDICT]:
        count = f"{max(scored)} scored label{'s' * (max(scored) != 1)}"
        print(f"aiwatch quality: {model} version {shown_version(version)}: "
              + (count if len(scored) == 1 else f"at most {count} in one of its {len(scored)} windows")
              + f", under --min-labelled {min_labelled}: no verdict", file=sys.stderr)
    more = len(found) - SHOWN_WITHOUT_VERDICT
    if more > 0:
        print(f"aiwatch quality: ... and {more} more version{'s' * (more != 1)} without a verdict (--json lists "
              "them)", file=sys.stderr)


def _shown_versions(results: list[Any], failing: dict[tuple[str, str], list[str]], limit: int,
                    ) -> set[tuple[str, str]]:
    """The (model, version)s the ``--by-version`` table shows: per model at most ``limit`` (0: all) versions, those
    whose latest verdict is below an objective first, then the others, each group the latest first: by the start of
    its latest window, then (versions seen in one window only) the last by name first."""
    latest: dict[tuple[str, str], float] = {}
    for q in results:
        key = (q.model, q.model_version or "")
        latest[key] = max(q.start, latest.get(key, q.start))
    if not limit:
        return set(latest)
    by_model: dict[str, list[tuple[str, str]]] = {}
    by_name = sorted(latest, key=lambda k: k[1], reverse=True)
    for key in sorted(by_name, key=lambda k: (not failing.get(k), -latest[k])):  # stable: by name within a tie
        by_model.setdefault(key[0], []).append(key)
    return {key for keys in by_model.values() for key in keys[:limit]}


def _say_versions_not_shown(results: list[Any], shown: set[tuple[str, str]],
                            failing: dict[tuple[str, str], list[str]], limit: int) -> None:
    """Count, per model, the versions the table leaves out (``--max-versions``), and those of them below an
    objective (their verdict lines are left out too)."""
    hidden: dict[str, set[str]] = {}
    for q in results:
        key = (q.model, q.model_version or "")
        if key not in shown:
            hidden.setdefault(q.model, set()).add(key[1])
    for model, versions in sorted(hidden.items()):
        below = sum(1 for version in versions if failing.get((model, version)))
        print(f"aiwatch quality: {model}: {len(versions)} more version{'s' * (len(versions) != 1)} not shown "
              f"({below} below objective); the table shows {limit} per model, chosen below objective first, then "
              "the latest: --max-versions 0 shows all, --json lists all", file=sys.stderr)


def _start(seconds: float, window: float) -> str:
    """A window's start as the table shows it, to the resolution of the window (``window`` seconds): minutes for a
    whole number of minutes, else seconds, with as many decimals as the window has (two windows of one minute read
    alike at minutes). Its Unix seconds when the platform cannot read it as a date, written whole (the shortest text
    that reads back as the same number: two starts never read alike)."""
    try:
        if window % 60 == 0:
            return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))
        decimals = max(0, -int(Decimal(repr(window)).normalize().as_tuple().exponent))
        start = Decimal(seconds).quantize(Decimal(1).scaleb(-decimals))  # the double's value, to those decimals
        whole = int(start.to_integral_value(rounding=ROUND_FLOOR))
        text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole))
        return text + f"{start - whole:.{decimals}f}"[1:]  # "0.250": the decimals, from the point (none: "0")
    except (OverflowError, OSError, ValueError, ArithmeticError):
        return repr(seconds)


def _no_window(min_labelled: int, results: list[Any], untimed: int) -> ValueError:
    """The error when no window has ``min_labelled`` scored labels."""
    unscored = sum(q.unscored for q in results)
    counts = f"{sum(q.labelled for q in results)} labelled of {sum(q.logged for q in results)} logged" + (
        f", {untimed} logged without a timestamp" if untimed else "")
    return ValueError(
        f"no window has {min_labelled} labelled requests or more ({counts}): labels not arrived yet, "
        "or request ids that do not match the log's" if not unscored else
        f"no window has {min_labelled} labelled requests or more with a prediction that can be scored "
        f"({counts}, {unscored} not scored): labels not arrived yet, request ids that do not match the "
        "log's, or predictions that are missing or not numbers")


def shown_version(version: str) -> str:
    """A model_version as the output shows it: ``(none)`` for an empty, null or missing one; as written when it is
    printable, has no whitespace and does not start with a quote; else (a newline, a space, the text ``(none)``)
    quoted as Python writes a string, so that two versions never read alike."""
    if not version:
        return "(none)"
    plain = version.isprintable() and not any(c.isspace() for c in version) and version[0] not in "'\"" and (
        version != "(none)")
    return version if plain else repr(version)


#: The widest version the table shows whole; a longer one is cut (:func:`table_version`).
VERSION_WIDTH = 40


def table_version(shown: str) -> str:
    """A shown version (:func:`shown_version`) as the table's column holds it: whole up to :data:`VERSION_WIDTH`
    characters; longer, its start, ``... `` and 10 hex digits of its SHA-1, so that two long versions that start
    alike stay apart. The space and the last character (a hex digit) keep a cut version apart from every whole
    one: a version shown as written has no whitespace, a quoted one ends with its quote."""
    if len(shown) <= VERSION_WIDTH:
        return shown
    digest = hashlib.sha1(shown.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{shown[:VERSION_WIDTH - 14]}... {digest}"


__all__ = ["EXIT_ERROR", "MAX_VERSIONS", "SHOWN_WITHOUT_VERDICT", "VERSION_WIDTH", "duration", "objectives",
           "register", "run", "shown_version", "table_version"]
