"""``aiwatch profile build DATA -o profile.json``: build a reference profile from a CSV or Parquet file."""

from __future__ import annotations

import argparse
from typing import Any

from aiwatch.commands import usage_error
from aiwatch.commands._paths import output_file
from aiwatch.commands.drift import add_dask, add_time_range, dask_client, fail, positive_int, time_range


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("profile", help="build reference profiles for drift detection")
    sub = parser.add_subparsers(dest="profile_command", metavar="ACTION")
    build = sub.add_parser("build", help="profile a CSV or Parquet file, or a directory or glob of Parquet files "
                                         "(chunked, bounded memory)")
    build.add_argument("data", help="training data: .csv or .parquet, or a directory or glob of Parquet files")
    add_time_range(build)
    add_dask(build)
    build.add_argument("-o", "--output", required=True, type=output_file, help="where to write the profile JSON")
    build.add_argument("--bins", type=positive_int, default=10, help="bins per numerical feature (default 10)")
    build.add_argument("--top-k", type=positive_int, default=100, help="categories kept per categorical feature")
    build.add_argument("--sample-size", type=positive_int, default=20_000,
                       help="reference values kept for KS/Wasserstein")
    build.add_argument("--kind", action="append", default=[], metavar="FEATURE=KIND",
                       help="override an inferred type: numerical or categorical (repeatable)")
    build.add_argument("--chunk-rows", type=positive_int, default=100_000, help="rows read at a time")
    build.add_argument("--no-reweight", dest="reweight", action="store_false",
                       help="profile every row of a prediction log as it is; by default, data with a sample_rate "
                            "column is thinned to an equal-chance sample of the requests served first")
    build.set_defaults(handler=run_build)
    parser.set_defaults(handler=lambda args: usage_error(parser))


def parse_kinds(items: list[str]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for item in items:
        name, sep, kind = item.partition("=")
        if not sep:
            raise ValueError(f"--kind expects FEATURE=KIND, got {item!r}")
        kinds[name] = kind
    return kinds


def run_build(args: argparse.Namespace) -> int:
    from aiwatch.drift.batch import profile_source
    from aiwatch.drift.datasets import is_dataset
    from aiwatch.drift.errors import ProfileError
    from aiwatch.drift.features import NumericalFeature
    from aiwatch.feedback.schema import LOG_COLUMNS

    try:
        window = time_range(args, args.data)
        # a directory or glob may be a prediction log: profile the inputs and outputs, not the log's own columns
        ignore = LOG_COLUMNS if is_dataset(args.data) else ()
        options: dict[str, Any] = {"n_bins": args.bins, "top_k": args.top_k, "sample_size": args.sample_size,
                                   "kinds": parse_kinds(args.kind), "chunk_rows": args.chunk_rows}
        thinned: list[Any] = []
        if args.dask:
            profile = _profile_on_dask(args, options, window, ignore, thinned)
        else:
            profile = profile_source(args.data, ignore=ignore, reweight=args.reweight, thinned=thinned, **options,
                                     **window)
        profile.save(args.output)
    except (ProfileError, ValueError, OSError, ImportError) as exc:
        return fail(exc, command="aiwatch profile build")
    except Exception as exc:  # never a traceback
        return fail(exc, unexpected=True, command="aiwatch profile build")
    kinds = {n: f.kind for n, f in profile.features.items()}
    print(f"wrote {args.output}: {len(kinds)} features "
          f"({sum(k == 'numerical' for k in kinds.values())} numerical, "
          f"{sum(k == 'categorical' for k in kinds.values())} categorical)")
    if thinned:
        from aiwatch.drift.reweight import describe

        print(f"  {describe(thinned[0].to_dict(), 'profiled')}")
    for name, feature in profile.features.items():
        if isinstance(feature, NumericalFeature) and feature.invalid:
            print(f"  {name!r}: {feature.invalid} values are not numbers (text), left out and counted apart from "
                  f"the {feature.missing} missing")
    for name, kind in profile.skipped.items():
        # a datetime is no category and no number: an override would be refused
        how = "datetime columns are not tested" if kind == "datetime" else f"override with --kind {name}=categorical"
        print(f"  skipped {name!r}: inferred {kind} ({how})")
    return 0


def _profile_on_dask(args: argparse.Namespace, options: dict[str, Any], window: dict[str, Any],
                     ignore: tuple[str, ...], thinned: list[Any]) -> Any:
    """``--dask``: the profile built on the cluster, a local Parquet dataset opened (every footer read) once."""
    from aiwatch.drift.datasets import data_columns, partition_columns
    from aiwatch.drift.on_dask import open_local, profile_dask, read_frame, retrying_csv_as_text
    from aiwatch.drift.reweight import SAMPLE_RATE

    with dask_client(args):
        dataset = open_local(args.data)
        columns = None
        rate_only: list[str] = []
        if ignore:
            names = data_columns(dataset) if dataset is not None else read_frame(args.data).columns
            skip = {*ignore, window["time_column"], *(partition_columns(dataset) if dataset is not None else ())}
            columns = [str(name) for name in names if name not in skip]
            if args.reweight and SAMPLE_RATE in names and SAMPLE_RATE not in columns:
                columns.append(SAMPLE_RATE)  # read to thin the rows by, not profiled
                rate_only = [SAMPLE_RATE]
        return retrying_csv_as_text(lambda as_text: profile_dask(
            read_frame(args.data, columns=columns, csv_as_text=as_text, dataset=dataset, **window),
            reweight=args.reweight, ignore=rate_only, thinned=thinned, **options))
