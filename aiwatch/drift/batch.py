"""Batch drift on files: CSV or Parquet read chunk by chunk, so memory stays bounded by the chunk size.

Reading files needs pandas (CSV) or pyarrow (Parquet): ``pip install "aiwatch[data]"``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from aiwatch._optional import require
from aiwatch.drift.builder import ProfileBuilder
from aiwatch.drift.current import ChunkedCurrent, CurrentFeature
from aiwatch.drift.datasets import (
    DEFAULT_TIME_COLUMN,
    data_columns,
    empty_window,
    is_dataset,
    open_dataset,
    partition_columns,
    scan_chunks,
    time_filter,
)
from aiwatch.drift.evaluate import DriftReport, Options, compare_features
from aiwatch.drift.files import DEFAULT_CHUNK_ROWS, column_chunks, pandas_index_columns, read_chunks
from aiwatch.drift.profile import ReferenceProfile
from aiwatch.drift.reweight import SAMPLE_RATE, Thinning, take, thinned_chunks, thinning_of
from aiwatch.drift.sampling import key_seed, row_keys

__all__ = ["DEFAULT_CHUNK_ROWS", "compare_file", "compare_source", "load_reference", "profile_file",
           "profile_source", "read_chunks"]


def profile_file(path: str | os.PathLike[str], *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 **options: Any) -> ReferenceProfile:
    """Build a profile from a CSV/Parquet file in bounded memory (:meth:`ReferenceProfile.from_file`)."""
    return ReferenceProfile.from_file(path, chunk_rows=chunk_rows, **options)


def load_reference(source: str | os.PathLike[str], **options: Any) -> ReferenceProfile:
    """A saved profile (``.json``), or data (a file, a directory or a glob of Parquet files) profiled on the
    fly."""
    if Path(source).suffix.lower() == ".json":
        return ReferenceProfile.load(source)
    return profile_source(source, **options)


def compare_file(profile: ReferenceProfile, path: str | os.PathLike[str], options: Options | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> DriftReport:
    """Drift of a CSV/Parquet file against ``profile``, chunk by chunk: bin and category counts are exact over
    every row; KS/Wasserstein use a uniform sample of at most ``options.max_exact`` values per feature, or every
    value with ``options.exact`` (then the numerical columns' values are held in memory)."""
    options = options or Options()
    options.validate(profile)
    columns: set[str] = set()
    thinned = file_thinning(path, options.reweight, key_seed(options.seed), chunk_rows) if profile.features else None
    acc = count_current(profile, read_chunks(path, chunk_rows), options, columns, thinning=thinned)
    if not columns and Path(path).suffix.lower() in (".parquet", ".pq"):
        # a CSV file of a header only gives a chunk of no rows (its columns seen); a Parquet file of no rows gives
        # no chunk, so no column was seen: its footer names them
        schema = require("pyarrow.parquet", "data").read_schema(path)
        columns = set(schema.names) - pandas_index_columns(schema)
    report = report_counted(profile, acc, options, columns, present=columns, thinning=thinned)
    if not report.tested_count:
        empty_window(report, [n for n in profile.features if n in columns], None, None, DEFAULT_TIME_COLUMN)
    return report


def file_thinning(path: str | os.PathLike[str], reweight: bool, seed: int, chunk_rows: int) -> Thinning | None:
    """The thinning of a file with a ``sample_rate`` column (:mod:`~aiwatch.drift.reweight`), from a first pass
    that reads that column alone; None without one, or with ``reweight`` off."""
    return thinning_of(column_chunks(path, SAMPLE_RATE, chunk_rows), seed) if reweight else None


def dataset_thinning(dataset: Any, predicate: Any, chunk_rows: int, seed: int) -> Thinning | None:
    """The thinning of a dataset's rows in the window (``predicate``), from a first pass over its ``sample_rate``
    column alone (the smallest rate decides every row's chance); None without the column."""
    if SAMPLE_RATE not in dataset.schema.names:
        return None
    return thinning_of((c[SAMPLE_RATE] for c in scan_chunks(dataset, [SAMPLE_RATE], predicate=predicate,
                                                            chunk_rows=chunk_rows)), seed)


def scan_thinned(dataset: Any, columns: Collection[str], predicate: Any, chunk_rows: int,
                 thinning: Thinning | None) -> Iterator[Mapping[str, Any]]:
    """The chunks of ``columns`` of a dataset's rows in the window, cut to the rows ``thinning`` keeps (its
    ``sample_rate`` column read to decide, and dropped unless asked for)."""
    rate = [SAMPLE_RATE] if thinning is not None and SAMPLE_RATE not in columns else []
    return thinned_chunks(scan_chunks(dataset, [*columns, *rate], predicate=predicate, chunk_rows=chunk_rows),
                          thinning, keep_rate=not rate)


def _compare_chunks(profile: ReferenceProfile, chunks: Iterable[dict[str, Any]], options: Options,
                    columns_seen: set[str], present: Collection[str] = (),
                    thinning: Thinning | None = None) -> DriftReport:
    acc = count_current(profile, chunks, options, columns_seen, thinning=thinning)
    return report_counted(profile, acc, options, columns_seen, present, thinning=thinning)


def report_counted(profile: ReferenceProfile, counted: dict[str, ChunkedCurrent], options: Options,
                   columns_seen: Collection[str], present: Collection[str] = (),
                   thinning: Thinning | None = None) -> DriftReport:
    """The drift report of the current side's per-feature counts (of a file's chunks or a cluster's partitions):
    each feature's test, and the columns seen that the profile does not know. ``present``: columns the data has
    (a file's header or footer, a dataset's schema, a frame's columns): a feature among them that no row reached
    (a file of no rows, a window that selects none) is reported with no value (``insufficient_data``, or
    ``no_reference``), like a feature whose values are all missing, not left out of both ``features`` and
    ``missing_features``. ``thinning``: the rows were thinned so (:mod:`~aiwatch.drift.reweight`), said in the
    report."""
    current: dict[str, CurrentFeature] = {}
    for name, chunked in counted.items():
        summary = chunked.result()
        if summary is None and name in present:
            chunked.add(np.empty(0), np.empty(0))  # no value: the counts of no row
            summary = chunked.result()
        if summary is not None:
            current[name] = summary
    report = compare_features(profile, current, options)
    report.unknown_features = sorted({str(c) for c in columns_seen} - set(profile.features))
    if thinning is not None:
        report.sample_rate_thinning = thinning.to_dict()
    return report


def count_current(profile: ReferenceProfile, chunks: Iterable[dict[str, Any]], options: Options,
                  columns_seen: set[str] | None = None, row_offset: int = 0,
                  thinning: Thinning | None = None) -> dict[str, ChunkedCurrent]:
    """Every profiled feature's current data, summed over ``chunks`` (rows numbered from ``row_offset`` for their
    sample keys: see :func:`~aiwatch.drift.sampling.row_keys`). ``thinning``: only the rows it keeps of chunks
    with a ``sample_rate`` column are counted (:mod:`~aiwatch.drift.reweight`)."""
    seed = key_seed(options.seed)
    acc = {name: ChunkedCurrent(feat, options.sample_limit()) for name, feat in profile.features.items()}
    rows = row_offset
    for chunk in chunks:
        if columns_seen is not None:
            columns_seen.update(chunk)
        present = [name for name in profile.features if name in chunk]
        if not present:
            continue
        n = len(chunk[present[0]])
        keys = row_keys(seed, rows, n)
        if thinning is not None and SAMPLE_RATE in chunk:
            kept = thinning.keep(chunk[SAMPLE_RATE], rows)
            if not kept.all():
                keys = keys[kept]
                chunk = {name: take(chunk[name], kept) for name in present}
        rows += n
        for name in present:
            acc[name].add(chunk[name], keys)
    return acc


def compare_source(profile: ReferenceProfile, source: str | os.PathLike[str], options: Options | None = None,
                   chunk_rows: int = DEFAULT_CHUNK_ROWS, *, since: datetime | None = None,
                   until: datetime | None = None, time_column: str = DEFAULT_TIME_COLUMN,
                   ignore: Collection[str] = ()) -> DriftReport:
    """:func:`compare_file` for a file, a directory or a glob of Parquet files (:mod:`~aiwatch.drift.datasets`):
    only the profile's columns are read, rows outside ``[since, until)`` of ``time_column`` are skipped, files are
    decoded in parallel. ``ignore``: columns not reported as unknown (a prediction log's own columns)."""
    if not is_dataset(source) and since is None and until is None:
        return compare_file(profile, source, options, chunk_rows)
    options = options or Options()
    options.validate(profile)
    dataset = open_dataset(source)
    predicate = time_filter(dataset, since, until, time_column)
    names = data_columns(dataset)
    wanted = [n for n in profile.features if n in names]
    thinned = None
    if options.reweight and wanted:
        thinned = dataset_thinning(dataset, predicate, chunk_rows, key_seed(options.seed))
    if thinned is not None and SAMPLE_RATE not in wanted:
        wanted.append(SAMPLE_RATE)
    chunks = scan_chunks(dataset, wanted, predicate=predicate, chunk_rows=chunk_rows)
    report = _compare_chunks(profile, chunks, options, set(), present=names, thinning=thinned)
    other = set(names) - set(profile.features) - partition_columns(dataset) - set(ignore)
    report.unknown_features = sorted(other - {time_column})
    empty_window(report, [n for n in profile.features if n in names], since, until, time_column)
    return report


def profile_source(source: str | os.PathLike[str], *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                   since: datetime | None = None, until: datetime | None = None,
                   time_column: str = DEFAULT_TIME_COLUMN, columns: Collection[str] | None = None,
                   ignore: Collection[str] = (), reweight: bool = True,
                   thinned: list[Thinning] | None = None, **options: Any) -> ReferenceProfile:
    """:func:`profile_file` for a file, a directory or a glob of Parquet files, optionally limited to
    ``[since, until)`` and to ``columns`` (default: every column but the partition keys, ``time_column`` and
    ``ignore``, such as a prediction log's own columns).

    Data with a ``sample_rate`` column (a prediction log) is thinned to an equal-chance sample of the requests
    served first, as :func:`compare_source` thins the current data (:mod:`~aiwatch.drift.reweight`), unless
    ``reweight`` is False; ``thinned``: a list the thinning is appended to, when there is one (what it kept)."""
    if not isinstance(reweight, bool):
        raise ValueError(f"reweight must be True or False, got {reweight!r}")
    seed = key_seed(options.get("seed", 0))
    if not is_dataset(source) and since is None and until is None and columns is None and not ignore:
        thinning = file_thinning(source, reweight, seed, chunk_rows)
        if thinning is None:
            return profile_file(source, chunk_rows=chunk_rows, **options)
        builder = ProfileBuilder(**options)
        builder.add_chunks(thinned_chunks(read_chunks(source, chunk_rows), thinning))
        if builder.needs_second_pass:
            for chunk in thinned_chunks(read_chunks(source, chunk_rows), thinning.fresh()):
                builder.count(chunk)
    else:
        dataset = open_dataset(source)
        predicate = time_filter(dataset, since, until, time_column)
        skip = {*partition_columns(dataset), time_column, *ignore}
        names = data_columns(dataset)
        wanted = list(columns) if columns is not None else [n for n in names if n not in skip]
        thinning = dataset_thinning(dataset, predicate, chunk_rows, seed) if reweight else None
        builder = ProfileBuilder(**options)
        builder.add_chunks(scan_thinned(dataset, wanted, predicate, chunk_rows, thinning))
        if builder.needs_second_pass:
            pass2 = thinning.fresh() if thinning is not None else None
            for chunk in scan_thinned(dataset, list(builder.kinds), predicate, chunk_rows, pass2):
                builder.count(chunk)
    if thinning is not None and thinned is not None:
        thinned.append(thinning)
    return ReferenceProfile.from_builder(builder)
