"""``aiwatch drift REFERENCE CURRENT``: batch drift check usable as a CI gate.

Exit codes: 0 tested, no dataset drift; 1 tested, dataset drift; 2 everything else: nothing could be tested (no
rows, none of the reference's columns, a profile without features, too few values everywhere), bad arguments,
unreadable or corrupt input. Every error is one line on stderr naming the problem, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from aiwatch.commands._paths import output_file

EXIT_OK, EXIT_DRIFT, EXIT_ERROR = 0, 1, 2
#: --chunk-rows's default, aiwatch.drift.files.DEFAULT_CHUNK_ROWS (not imported: the drift package loads on use)
CHUNK_ROWS = 100_000


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "drift", help="compare current data with a reference (exit 0 no drift, 1 drift, 2 error)",
        description="Compare CURRENT (.csv/.parquet, or a directory or glob of Parquet files such as a prediction "
                    "log) with REFERENCE (a profile .json or data). Exit codes: 0 no dataset drift, 1 dataset "
                    "drift, 2 error.")
    parser.add_argument("reference", help="reference profile (.json) or reference data (.csv/.parquet, a directory "
                                          "or a glob of Parquet files)")
    parser.add_argument("current", help="current data: .csv/.parquet, or a directory or glob of Parquet files")
    add_time_range(parser)
    add_dask(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--report", metavar="HTML", type=output_file,
                        help="also write Evidently's DataDriftPreset HTML report (needs the evidently extra and "
                             "reference data, not a profile)")
    parser.add_argument("--method", action="append", default=[], metavar="[FEATURE=]METHOD",
                        help="test for every feature or one feature: ks, chisquare, z, psi, jensenshannon, "
                             "wasserstein (repeatable)")
    parser.add_argument("--threshold", action="append", default=[], metavar="[FEATURE=]VALUE",
                        help="threshold for every feature or one feature (repeatable)")
    parser.add_argument("--correction", choices=["bh", "bonferroni"], help="multiple-testing correction")
    parser.add_argument("--rule", choices=["share", "any"], default="share",
                        help="dataset drift when the drifted share >= --drift-share (default) or any feature drifts")
    parser.add_argument("--drift-share", type=share, default=0.5,
                        help="share of drifted features, in (0, 1] (default 0.5)")
    parser.add_argument("--min-samples", type=positive_int, default=30,
                        help="fewer current values: insufficient data (default 30)")
    parser.add_argument("--chunk-rows", type=positive_int, default=CHUNK_ROWS, help="rows read at a time")
    parser.add_argument("--exact", action="store_true",
                        help="KS / Wasserstein on every current value instead of a uniform sample of 100 000 per "
                             "feature (holds the numerical columns in memory)")
    parser.add_argument("--no-reweight", dest="reweight", action="store_false",
                        help="compare every row of a prediction log as it is; by default, current data with a "
                             "sample_rate column is thinned to an equal-chance sample of the requests served (the "
                             "log keeps slow and failed requests more often)")
    parser.set_defaults(handler=run)


def add_time_range(parser: Any) -> None:
    """``--since``/``--until``/``--time-column``: the rows of a Parquet dataset in a time range."""
    parser.add_argument("--since", metavar="TIME", help="only rows at or after TIME (ISO 8601, UTC unless a zone is "
                                                        "given; Parquet only)")
    parser.add_argument("--until", metavar="TIME", help="only rows before TIME (ISO 8601)")
    parser.add_argument("--time-column", default="timestamp",
                        help="the timestamp column --since/--until apply to (default: timestamp)")


def add_dask(parser: Any) -> None:
    """``--dask SCHEDULER_ADDRESS``: read and summarise the data on a Dask cluster."""
    parser.add_argument("--dask", metavar="SCHEDULER_ADDRESS",
                        help="summarise the data on this Dask cluster (e.g. tcp://scheduler:8786): each partition "
                             "is counted on a worker, the parts merge here; same result as without (needs the dask "
                             "extra, and aiwatch on the workers)")
    parser.add_argument("--dask-timeout", metavar="SECONDS", type=seconds, default=5.0,
                        help="how long to wait for the --dask scheduler to answer (default 5)")


def dask_client(args: argparse.Namespace) -> Any:
    """The client of the ``--dask`` scheduler; one that does not answer is an error naming ``--dask``."""
    from aiwatch.drift.errors import ProfileError
    from aiwatch.drift.on_dask import connect

    try:
        return connect(args.dask, args.dask_timeout)
    except ProfileError as exc:
        raise ProfileError(f"--dask {exc}") from None


def time_range(args: argparse.Namespace, data: str) -> dict[str, Any]:
    """The keyword arguments of --since/--until/--time-column, which select rows of the Parquet data ``data``."""
    from aiwatch.drift.datasets import parse_time
    from aiwatch.drift.files import TEXT_SUFFIXES

    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    if since is not None and until is not None and since >= until:
        raise ValueError(f"--since ({args.since}) must be before --until ({args.until})")
    if (since is not None or until is not None) and data.lower().endswith(TEXT_SUFFIXES):
        raise ValueError(f"--since/--until select rows of Parquet data (a prediction log, a dataset); {data!r} is a "
                         f"text file: filter its rows first, or leave them out")
    return {"since": since, "until": until, "time_column": args.time_column}


def share(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def threshold(text: str) -> float:
    """A --threshold value: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise ValueError(f"--threshold must be a finite number >= 0, got {text!r}")
    return value


def _split(items: list[str], convert: Any) -> tuple[Any, dict[str, Any]]:
    every, per = None, {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if sep:
            per[name] = convert(value)
        else:
            every = convert(value)
    return every, per


def run(args: argparse.Namespace) -> int:
    from aiwatch.drift.batch import compare_source, load_reference
    from aiwatch.drift.errors import ProfileError
    from aiwatch.drift.evaluate import Options
    from aiwatch.feedback.schema import LOG_COLUMNS

    doing = ""
    try:
        if args.report:  # before the comparison, not after it
            check_report_reference(args.reference)
        method, methods = _split(args.method, str)
        every, thresholds = _split(args.threshold, threshold)
        options = Options(methods=methods, thresholds=thresholds, method=method, threshold=every,
                          correction=args.correction, drift_share=args.drift_share, rule=args.rule,
                          min_samples=args.min_samples, exact=args.exact, reweight=args.reweight)
        options.check_numbers()
        window = time_range(args, args.current)
        if args.dask:
            report, profile = compare_on_dask(args, options, window)
        else:
            profile = load_reference(args.reference, chunk_rows=args.chunk_rows, reweight=args.reweight)
            report = compare_source(profile, args.current, options, chunk_rows=args.chunk_rows, ignore=LOG_COLUMNS,
                                    **window)
        if args.report and not report.why_nothing_tested():  # else the error below says why, not the report's
            doing = f"writing the --report {args.report}: "
            write_report(args.reference, args.current, args.report,
                         {name: f.kind for name, f in profile.features.items()}, window, chunk_rows=args.chunk_rows,
                         reweight=args.reweight)
    except (ProfileError, ValueError, OSError, ImportError, KeyError) as exc:
        return fail(exc, doing=doing)
    except Exception as exc:  # a CI gate must never print a traceback that could be read as a verdict
        return fail(exc, unexpected=True, doing=doing)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_table(report)
    untested = report.why_nothing_tested()
    if untested:
        print(f"aiwatch drift: error: nothing was tested: {untested}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_DRIFT if report.drifted else EXIT_OK


def compare_on_dask(args: argparse.Namespace, options: Any, window: dict[str, Any]) -> tuple[Any, Any]:
    """``--dask``: the reference profiled (unless it is a .json profile) and the current data compared on the
    cluster; the columns reported unknown are those the single-machine run reports. Each local Parquet dataset is
    opened (every file's footer read) once."""
    from aiwatch.drift.datasets import empty_window, is_dataset, partition_columns
    from aiwatch.drift.on_dask import compare_dask, open_local, profile_dask, read_frame, retrying_csv_as_text
    from aiwatch.drift.profile import ReferenceProfile
    from aiwatch.drift.reweight import SAMPLE_RATE
    from aiwatch.feedback.schema import LOG_COLUMNS

    with dask_client(args):
        if args.reference.lower().endswith(".json"):
            profile = ReferenceProfile.load(args.reference)
        else:
            reference = open_local(args.reference)
            profile = retrying_csv_as_text(lambda as_text: profile_dask(
                read_frame(args.reference, csv_as_text=as_text, dataset=reference), chunk_rows=args.chunk_rows,
                reweight=options.reweight))
        current = open_local(args.current)
        every = [str(c) for c in read_frame(args.current, dataset=current).columns]
        wanted = [c for c in profile.features if c in every]
        if options.reweight and wanted and SAMPLE_RATE in every and SAMPLE_RATE not in wanted:
            wanted.append(SAMPLE_RATE)
        report = retrying_csv_as_text(lambda as_text: compare_dask(
            profile, read_frame(args.current, columns=wanted, csv_as_text=as_text, dataset=current, **window),
            options, chunk_rows=args.chunk_rows))
    skip = set(profile.features)
    if is_dataset(args.current) or window["since"] is not None or window["until"] is not None:
        # Dask adds the partition columns of a path that is not local too, and those are reported unknown
        skip |= {*LOG_COLUMNS, window["time_column"], *(partition_columns(current) if current is not None else ())}
    report.unknown_features = sorted(set(every) - skip)
    empty_window(report, [c for c in wanted if c in profile.features], window["since"], window["until"],
                 window["time_column"])
    return report, profile


def fail(exc: BaseException, unexpected: bool = False, command: str = "aiwatch drift", doing: str = "") -> int:
    """Print one error line for ``exc`` (after ``doing``, what failed) and return exit code 2."""
    text = str(exc) or type(exc).__name__
    if unexpected or isinstance(exc, KeyError):
        text = f"{type(exc).__name__}: {text}"
    if unexpected:
        text += " (unexpected: please report it)"
    print(f"{command}: error: {doing}{text}", file=sys.stderr)
    return EXIT_ERROR


def check_report_reference(reference: str) -> None:
    if reference.lower().endswith(".json"):
        raise ValueError("--report needs reference data (.csv/.parquet): Evidently cannot read an aiwatch profile")


def write_report(reference: str, current: str, path: str, kinds: dict[str, str],
                 window: dict[str, Any] | None = None, *, chunk_rows: int = CHUNK_ROWS, reweight: bool = True) -> None:
    """Evidently's HTML report of ``reference`` against ``current`` (``run`` has checked the reference first), of
    the profile's features typed with the profile's ``kinds``, as aiwatch's comparison reads them, and of the
    current rows it compared (``window``: :func:`time_range`'s ``since`` / ``until`` / ``time_column``), read
    ``chunk_rows`` rows at a time as the comparison reads them (``--chunk-rows``); data with a ``sample_rate``
    column thinned as the comparison thins it, unless ``reweight`` is False (``--no-reweight``)."""
    from aiwatch.drift.report import evidently_html

    pd = __import__("pandas")
    frames = []
    for source, rows in ((reference, {}), (current, window or {})):
        chunks = [pd.DataFrame(c) for c in _report_chunks(source, kinds, rows, chunk_rows, reweight)]
        if not chunks:  # pandas' own "No objects to concatenate" names nothing
            raise ValueError(f"no rows of {source!r} to report")
        frames.append(pd.concat(chunks, ignore_index=True))
    ref, cur = frames
    evidently_html(ref, cur, path, [c for c in kinds if c in ref.columns and c in cur.columns], kinds=kinds)


def _report_chunks(source: str, columns: Collection[str], window: dict[str, Any],
                   chunk_rows: int = CHUNK_ROWS, reweight: bool = True) -> Iterable[Mapping[str, Any]]:
    """The rows of ``source`` the comparison read, as :func:`~aiwatch.drift.batch.compare_source` selects them: a
    file whole, a dataset (a directory or glob of Parquet files) or a time window through the dataset reader; a
    prediction log's rows thinned by their ``sample_rate`` as the comparison and the profile thin them (the
    default seed's rows: :mod:`~aiwatch.drift.reweight`)."""
    from aiwatch.drift.batch import dataset_thinning, file_thinning, scan_thinned
    from aiwatch.drift.datasets import DEFAULT_TIME_COLUMN, is_dataset, open_dataset, time_filter
    from aiwatch.drift.files import read_chunks
    from aiwatch.drift.reweight import thinned_chunks
    from aiwatch.drift.sampling import key_seed

    seed = key_seed(0)
    since, until = window.get("since"), window.get("until")
    if not is_dataset(source) and since is None and until is None:
        return thinned_chunks(read_chunks(source, chunk_rows), file_thinning(source, reweight, seed, chunk_rows))
    dataset = open_dataset(source)
    predicate = time_filter(dataset, since, until, window.get("time_column") or DEFAULT_TIME_COLUMN)
    thinned = dataset_thinning(dataset, predicate, chunk_rows, seed) if reweight else None
    return scan_thinned(dataset, list(columns), predicate, chunk_rows, thinned)


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.4g}"


def _share(share: float, drift_share: float) -> str:
    """``share`` to 2 decimals, or to as many digits as it takes to stay on its side of ``drift_share``."""
    text = f"{share:.2f}"
    return text if (float(text) >= drift_share) == (share >= drift_share) else f"{share:.6g}"


def print_table(report: Any) -> None:
    # with a correction, the threshold is compared with the adjusted p-value: shown beside the raw one, whose row
    # read "p-value 0.016, threshold 0.05, ok" (its adjusted 0.082 made it ok)
    adjusted = bool(report.correction)
    adj_head = f" {'adj. p':>10}" if adjusted else ""
    print(f"{'feature':<24} {'kind':<12} {'test':<14} {'statistic':>10} {'p-value':>10}{adj_head} {'threshold':>9} "
          f"{'n':>8}  result")
    for r in report.features.values():
        result = "DRIFT" if r.drifted else ("ok" if r.status == "ok" else r.status)
        adj = f" {_fmt(r.adjusted_pvalue):>10}" if adjusted else ""
        print(f"{r.feature:<24} {r.kind:<12} {r.method:<14} {_fmt(r.statistic):>10} {_fmt(r.pvalue):>10}{adj} "
              f"{_fmt(r.threshold):>9} {r.current_count:>8}  {result}")
    for r in report.features.values():
        if r.missing or r.invalid:
            print(f"{r.feature:<24} left out of n: {r.missing} missing (None, NaN, inf), {r.invalid} wrong-typed")
        if r.reference_invalid:
            print(f"{r.feature:<24} left out of the reference: {r.reference_invalid} not numbers (text)")
    for name in report.missing_features:
        print(f"{name:<24} missing from the current data")
    if getattr(report, "no_rows", None):
        print(f"no row compared: {report.no_rows}")
    thinned = getattr(report, "sample_rate_thinning", None)
    if thinned:
        from aiwatch.drift.reweight import describe

        print(describe(thinned))
    if report.unknown_features:
        print(f"not in the reference (ignored): {', '.join(report.unknown_features)}")
    untested = report.why_nothing_tested()
    if untested:  # no verdict: "dataset: no drift (0/0 features drifted...)" read as a pass beside exit 2
        print(f"dataset: nothing tested: {untested}")
        return
    verdict = "DRIFT" if report.drifted else "no drift"
    rule = (f"drifted share {_share(report.share_drifted, report.drift_share)} "
            f"{'>=' if report.drifted else '<'} {report.drift_share}" if report.rule == "share"
            else "any feature drifted")
    correction = f", correction {report.correction}" if report.correction else ""
    print(f"dataset: {verdict} ({report.drifted_count}/{report.tested_count} features drifted; rule: {rule}"
          f"{correction})")
