"""Profiles and drift on a Dask cluster: each partition is summarised where it lies, the summaries merge on the client.

* :func:`profile_dask` builds a :class:`~aiwatch.drift.profile.ReferenceProfile` from a ``dask.dataframe``: pass 1
  (statistics, categories, the bounded sample) per partition, merged by :func:`~aiwatch.drift.merge.merge_features`;
  bin edges from the merged sample; pass 2 (bin counts) per partition, added up.
* :func:`compare_dask` tests a ``dask.dataframe`` against a profile: each partition's current-side counts and
  sample (:class:`~aiwatch.drift.current.ChunkedCurrent`) merge on the client, then the tests run there.
* :func:`read_frame` opens a CSV file or Parquet data (a file, a directory, a glob) as a ``dask.dataframe``, with a
  time range.

The result is the single-machine result: a row's sample key depends only on the seed and its position
(:func:`~aiwatch.drift.sampling.row_keys`), and each partition is told where its rows start, so the samples are the
same rows, the bin edges the same, the counts the same. Only means and standard deviations may differ in the last
bits (floating-point sums in another order). The computation runs on the current Dask scheduler: a
``distributed.Client`` made before the call, as ``--dask ADDRESS`` does. Workers need aiwatch installed.

Needs ``pip install "aiwatch[dask]"``.
"""

from __future__ import annotations

import functools
import glob
import itertools
import logging
import operator
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from aiwatch._optional import require
from aiwatch.drift.batch import count_current, report_counted
from aiwatch.drift.builder import KIND_ROWS, ProfileBuilder, count_finite
from aiwatch.drift.columns import frame_column
from aiwatch.drift.current import ChunkedCurrent, CurrentPart
from aiwatch.drift.datasets import (
    DEFAULT_TIME_COLUMN,
    empty_window,
    is_dataset,
    open_dataset,
    partition_columns,
    partition_keys_in_files,
    read_as_text,
)
from aiwatch.drift.errors import ProfileError
from aiwatch.drift.evaluate import DriftReport, Options
from aiwatch.drift.features import DEFAULT_BINS, DEFAULT_SAMPLE_SIZE, DEFAULT_TOP_K, Feature
from aiwatch.drift.files import (
    DEFAULT_CHUNK_ROWS,
    PARQUET_SUFFIXES,
    TEXT_SUFFIXES,
    csv_column,
    numbers_in_text,
    text_separator,
    unreadable_suffix,
)
from aiwatch.drift.merge import merge_features
from aiwatch.drift.profile import ReferenceProfile
from aiwatch.drift.reweight import (
    SAMPLE_RATE,
    RateBounds,
    Thinning,
    merge_bounds,
    rate_bounds,
    take,
    thinned_chunks,
    thinning,
)
from aiwatch.drift.sampling import key_seed
from aiwatch.drift.validation import DEFAULT_LIMITS, ProfileLimits

__all__ = ["compare_dask", "connect", "open_local", "profile_dask", "read_frame", "retrying_csv_as_text"]

log = logging.getLogger("aiwatch.drift")
T = TypeVar("T")



def profile_dask(frame: Any, *, n_bins: int = DEFAULT_BINS, top_k: int = DEFAULT_TOP_K,
                 sample_size: int = DEFAULT_SAMPLE_SIZE, kinds: dict[str, str] | None = None,
                 edges: dict[str, Sequence[float]] | None = None, seed: int | None = 0,
                 limits: ProfileLimits = DEFAULT_LIMITS, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 reweight: bool = True, ignore: Collection[str] = (),
                 thinned: list[Thinning] | None = None) -> ReferenceProfile:
    """The profile of a ``dask.dataframe``, built on its partitions (the same as
    :meth:`ReferenceProfile.from_file <aiwatch.drift.profile.ReferenceProfile.from_file>` on the same rows).
    Column kinds are decided on the first :data:`~aiwatch.drift.builder.KIND_ROWS` rows, as a file's are.
    A frame with a ``sample_rate`` column is thinned first, as
    :func:`~aiwatch.drift.batch.profile_source` thins it (unless ``reweight`` is False; ``thinned``: a list the
    thinning is appended to). ``ignore``: columns not profiled (``sample_rate`` read only to thin by)."""
    dask = require("dask", "dask")
    if not isinstance(reweight, bool):
        raise ValueError(f"reweight must be True or False, got {reweight!r}")
    if seed is None:  # one seed for every partition
        seed = int(np.random.default_rng().integers(0, 2**63))
    final = ProfileBuilder(n_bins=n_bins, top_k=top_k, sample_size=sample_size, kinds=kinds, edges=edges, seed=seed,
                           limits=limits)
    thinning_ = _frame_thinning(dask, frame, key_seed(seed)) if reweight else None
    head = _first_kept_rows(frame, thinning_)
    final.decide_kinds({name: values for name, values in head.items() if name not in ignore})
    names = list(final.kinds)
    if not names:
        final.features()  # raises: nothing to profile
    read = names if thinning_ is None or SAMPLE_RATE in names else [*names, SAMPLE_RATE]
    keep_rate = SAMPLE_RATE in names
    pass1 = functools.partial(_partial_profile, kinds=dict(final.kinds), sample_size=sample_size, seed=seed,
                              limits=limits, chunk_rows=chunk_rows, thinning=thinning_, keep_rate=keep_rate)
    merge1 = functools.partial(_merge_partial_profiles, sample_size=sample_size)
    merged = _tree_checked(dask, frame[read], lambda p, offset: dask.delayed(pass1)(p, offset), merge1)
    if merged is None:
        raise ProfileError("no rows to profile")
    features, counts = merged
    if features is None:
        raise ProfileError("no rows to profile")
    builder = ProfileBuilder(n_bins=n_bins, top_k=top_k, sample_size=sample_size, kinds=kinds, edges=edges,
                             seed=seed, limits=limits)
    builder.absorb(features)
    builder.skipped = dict(final.skipped)
    if builder.needs_second_pass and thinning_ is None:
        pass2 = functools.partial(_bin_counts, cuts=builder.cuts(), chunk_rows=chunk_rows)
        parts = frame[names].to_delayed()
        builder.add_bin_counts(_tree(dask, [dask.delayed(pass2)(p) for p in parts], _add_bin_counts))
    elif builder.needs_second_pass:  # the rows' positions decide which are kept
        pass2 = functools.partial(_bin_counts, cuts=builder.cuts(), chunk_rows=chunk_rows, thinning=thinning_,
                                  keep_rate=keep_rate)
        builder.add_bin_counts(_tree_checked(dask, frame[read], lambda p, offset: dask.delayed(pass2)(p, offset),
                                             _add_bin_counts))
    if thinning_ is not None:
        thinning_.add_counts(counts)
        if thinned is not None:
            thinned.append(thinning_)
    return ReferenceProfile.from_builder(builder)


def compare_dask(profile: ReferenceProfile, frame: Any, options: Options | None = None, *,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, ignore: Collection[str] = ()) -> DriftReport:
    """Drift of a ``dask.dataframe`` against ``profile`` (the same report as
    :func:`~aiwatch.drift.batch.compare_source` on the same rows). ``ignore``: columns not reported as unknown."""
    dask = require("dask", "dask")
    options = options or Options()
    options.validate(profile)
    present = [name for name in profile.features if name in frame.columns]
    acc = {name: ChunkedCurrent(feat, options.sample_limit()) for name, feat in profile.features.items()}
    thinned = _frame_thinning(dask, frame, key_seed(options.seed)) if present and options.reweight else None
    if present:
        shared = dask.delayed(profile, traverse=False)  # one copy in the graph, not one per partition
        count = functools.partial(_partial_current, options=options, chunk_rows=chunk_rows, thinning=thinned)
        merge = functools.partial(_merge_current, max_exact=options.sample_limit())
        columns = present if thinned is None or SAMPLE_RATE in present else [*present, SAMPLE_RATE]
        merged, counts = _tree_checked(dask, frame[columns],
                                       lambda p, offset: dask.delayed(count)(p, offset, shared), merge, shared)
        for name, part in merged.items():
            acc[name].merge(part)
        if thinned is not None:
            thinned.add_counts(counts)
    report = report_counted(profile, acc, options, {str(c) for c in frame.columns} - set(ignore), present=present,
                            thinning=thinned)
    # a frame of no rows says so, as compare_source does (the CLI says which --since/--until window selected none)
    empty_window(report, present, None, None, DEFAULT_TIME_COLUMN)
    return report


def read_frame(source: str | os.PathLike[str], *, columns: Sequence[str] | None = None,
               since: datetime | None = None, until: datetime | None = None,
               time_column: str = DEFAULT_TIME_COLUMN, csv_as_text: bool = False, dataset: Any = None) -> Any:
    """A CSV file, or Parquet data (a file, a directory with or without ``key=value`` partitions, a glob), as a
    ``dask.dataframe`` of ``columns`` (default: all), keeping the rows in ``[since, until)`` of ``time_column``
    (which is then left out unless ``columns`` names it).

    Dask types a CSV's columns once, from the file's first bytes, and fails the job on a later field that does not
    fit ("unknown" in a column of numbers). ``csv_as_text`` reads the fields as text and types each partition's
    columns as :func:`~aiwatch.drift.files.csv_column` does on one machine (about 8x the CPU of Dask's typed
    read: ``bench/csv_read_bench.py``); :func:`retrying_csv_as_text` does that only when Dask's typing failed.

    Local Parquet files that disagree on a column's type (a number in some, text in others: a prediction log's
    input that a client once sent as "unknown") are read as :func:`~aiwatch.drift.datasets.open_dataset` reads
    them on one machine: that column as text, each value that reads as a number that number. Dask takes the first
    file's type, and failed on the first text value (or, text first, read every number as text). Finding those
    columns reads every file's footer: ``dataset``, :func:`open_local`'s dataset of ``source``, saves reading them
    again when the caller has it."""
    dd = require("dask.dataframe", "dask")
    text = os.fspath(source)
    wanted = None if columns is None else list(dict.fromkeys([*columns, *([time_column] if since or until else [])]))
    parquet = is_dataset(text) or Path(text).suffix.lower() in PARQUET_SUFFIXES
    # a local file read_chunks refuses on one machine; a URL (s3://.../cur.csv.gz) is Dask's to read, compressed or not
    if not parquet and "://" not in text and Path(text).suffix.lower() not in TEXT_SUFFIXES:
        raise unreadable_suffix(text)
    try:
        if parquet and dataset is None:
            dataset = open_local(text)
    except Exception as exc:  # a file that is not Parquet...
        raise _cannot_read(text, exc) from exc
    _refuse_keys_in_files(dataset, text)
    try:
        if parquet:
            physical, as_text = _parquet_read_as_text(dataset)
            if as_text:
                frame = dd.read_parquet(text, columns=wanted, dataset={"schema": physical}).map_partitions(
                    _numbers_in_columns, columns=as_text)
            else:
                frame = dd.read_parquet(text, columns=wanted)
        elif csv_as_text:
            frame = dd.read_csv(text, usecols=wanted, dtype=object, sep=text_separator(text)).map_partitions(
                _typed_csv_fields)
        else:
            frame = dd.read_csv(text, usecols=wanted, sep=text_separator(text))
    except Exception as exc:  # a missing path, not Parquet...
        raise _cannot_read(text, exc) from exc
    if since is None and until is None:
        return frame
    if time_column not in frame.columns:
        raise ProfileError(f"--since/--until need a {time_column!r} column; the data has: "
                           f"{', '.join(map(str, frame.columns))}")
    frame = frame.map_partitions(_in_range, time_column=time_column, since=since, until=until)
    return frame if columns is not None and time_column in columns else frame.drop(columns=[time_column])


def _cannot_read(text: str, exc: Exception) -> ProfileError:
    detail = _first_line(exc)
    cause = exc.__cause__ or exc.__context__
    if detail.startswith(_DASK_BACKEND_WRAPPER) and cause is not None:  # Dask's wrapper says nothing: its cause
        detail = _first_line(cause)
    return ProfileError(f"cannot read {text!r} with Dask: {detail}")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


#: How Dask wraps an error of a backend's reader ("... the read_parquet method registered to the pandas backend."),
#: raising it from the reader's own error.
_DASK_BACKEND_WRAPPER = "An error occurred while calling the "


def retrying_csv_as_text(run: Callable[[bool], T]) -> T:
    """``run(False)``, or ``run(True)`` when that failed because Dask's typing of a CSV did not fit a later field
    (``run(csv_as_text)`` reads its data with :func:`read_frame`)."""
    try:
        return run(False)
    except ValueError as exc:
        if _DASK_CSV_TYPES_FAILED not in str(exc):
            raise
        columns = _mismatched_columns(str(exc))
        log.warning("aiwatch: Dask typed the CSV's columns from the start of the file, and a later field does not "
                    "fit%s; reading its fields as text, each typed as on one machine", columns)
        return run(True)


#: What Dask's CSV reader says when a partition's field does not fit the dtype it inferred from the first bytes.
_DASK_CSV_TYPES_FAILED = "Mismatched dtypes found in `pd.read_csv`"


def _mismatched_columns(message: str) -> str:
    """`` (age: object, typed float64)`` from Dask's table of mismatched columns, or ``""``."""
    found = []
    for line in message.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("Column", "") and not set(cells[0]) <= set("-+"):
            found.append(f"{cells[0]}: {cells[1]}, typed {cells[2]}")
    return f" ({'; '.join(found)})" if found else ""


def open_local(source: str | os.PathLike[str]) -> Any:
    """:func:`~aiwatch.drift.datasets.open_dataset` of local Parquet data (a file, a directory, a glob of files
    here), else None: a CSV file, or a path that is not local (``s3://...``), which is left to Dask."""
    text = os.fspath(source)
    parquet = is_dataset(text) or Path(text).suffix.lower() in PARQUET_SUFFIXES
    local = Path(text).exists() or (is_dataset(text) and bool(glob.glob(text, recursive=True)))
    return open_dataset(text) if parquet and local else None


def _refuse_keys_in_files(dataset: Any, text: str) -> None:
    """A :class:`ProfileError` when a partition key of ``dataset`` (local Parquet, or None) is also a column of its
    files (some or all of them): Dask reads it neither as one machine does (the file's column, else the directory's
    value) nor at all (a raw KeyError "['region'] not in index" from the workers where some files lack it, and
    "An error occurred while calling the read_parquet method" where every file holds it). Known from
    :func:`~aiwatch.drift.datasets.open_dataset`'s schema: no file is read again."""
    keys = sorted(partition_keys_in_files(dataset)) if dataset is not None else []
    if keys:
        raise ProfileError(f"{text!r}: {'each of ' if len(keys) > 1 else ''}{', '.join(map(repr, keys))} is both a "
                           "key= directory and a column of the files, which --dask cannot read (the file's column, "
                           "else the directory's value); read it without --dask")


def _parquet_read_as_text(dataset: Any) -> tuple[Any, list[str]]:
    """For a dataset (or None: not local) whose files disagree on a column's type: the files' columns unified
    (without the partition columns, which Dask adds itself) and the columns read as text; else ``(None, [])``."""
    if dataset is None:
        return None, []
    as_text = sorted(read_as_text(dataset))
    if not as_text:
        return None, []
    pa = require("pyarrow", "dask")
    partitions = partition_columns(dataset)
    # with the dataset's metadata: Dask reads pandas' stored index from it (as the index, not a column)
    return pa.schema([f for f in dataset.schema if f.name not in partitions], metadata=dataset.schema.metadata), \
        as_text


def _numbers_in_columns(frame: Any, columns: list[str]) -> Any:
    """A partition with each of ``columns`` (text) as an object column, each value that reads as a number that
    number."""
    present = [c for c in columns if c in frame.columns]
    if not present:
        return frame
    return frame.assign(**{c: numbers_in_text(_as_objects(frame[c]), exact=True) for c in present})


def _typed_csv_fields(frame: Any) -> Any:
    """A partition of a CSV read as text, each column typed as pandas types a column of such fields (float64,
    int64, object where text remains), each field read as :func:`~aiwatch.drift.files.csv_column` reads it on one
    machine. Dask's own typing fails the whole job on one text field ("unknown") in a column it typed as numbers
    from the file's first bytes."""
    pd = require("pandas", "dask")
    return pd.DataFrame({name: csv_column(frame[name]) for name in frame.columns}, index=frame.index).infer_objects()


#: Seconds :func:`connect` waits for the scheduler to answer (``--dask-timeout``). Dask's own default (30 s) made a
#: wrong address look like a hang.
DEFAULT_CONNECT_TIMEOUT = 5.0


def connect(address: str, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Any:
    """A ``distributed.Client`` of the scheduler at ``address`` (``tcp://host:8786``), the default scheduler until
    it is closed (use it as a context manager). A scheduler that does not answer within ``timeout`` seconds raises
    :class:`ProfileError` naming the address."""
    distributed = require("distributed", "dask")
    try:
        return distributed.Client(address, timeout=timeout)
    except OSError as exc:  # refused, unreachable, or silent: distributed retries until the timeout, then this
        raise ProfileError(f"{address}: no Dask scheduler answered within {timeout:g} s ({exc})") from None


def frame_columns(frame: Any) -> dict[str, Any]:
    """The columns of a pandas DataFrame as the chunk readers give them, and as ``columns_of`` reads a DataFrame in
    memory: an extension dtype (pandas' nullable and Arrow-backed columns, which Dask makes of strings) as its numpy
    counterpart. An ``Int64`` column was made floats here: numerical where the same frame in memory was
    categorical."""
    return {str(name): frame_column(frame[name]) for name in frame.columns}


def _as_objects(column: Any) -> Any:
    """A pandas column as a numpy object array, each missing value (``pd.NA`` of a nullable or Arrow-backed
    column) None."""
    return column.astype(object).where(column.notna(), None).to_numpy()


# ------------------------------------------------------------------------------------- run on the workers


def _first_kept_rows(frame: Any, thinned: Thinning | None) -> dict[str, Any]:
    """The columns of the first :data:`~aiwatch.drift.builder.KIND_ROWS` rows that ``thinned`` keeps (of the
    first rows when it is None), on which one machine decides the kinds."""
    rows = KIND_ROWS
    while True:
        first = _first_rows(frame, rows)
        head = frame_columns(first)
        if thinned is None:
            return head
        kept = thinned.fresh().keep(head[SAMPLE_RATE], 0) if len(first) else np.zeros(0, dtype=bool)
        if int(kept.sum()) >= KIND_ROWS or len(first) < rows:
            kept &= np.cumsum(kept) <= KIND_ROWS
            return {name: take(values, kept) for name, values in head.items()}
        rows *= 4


def _first_rows(frame: Any, rows: int) -> Any:
    """The first ``rows`` rows of a ``dask.dataframe`` (all of them when it has fewer), read from as few partitions
    as hold them: the first, then four times as many until they do.

    The partitions are those of the optimized graph, the ones the summaries read: ``head(npartitions=)`` counted
    the frame's partitions before Dask fused small Parquet files together, and asked for more than there were (a
    prediction log of 700-row files: "only 3 partitions, head received 4", and no profile)."""
    dask = require("dask", "dask")
    pd = require("pandas", "dask")
    parts = frame.optimize().to_delayed()
    got: list[Any] = []
    held = done = 0
    while done < len(parts):
        upto = min(max(1, 4 * done), len(parts))
        for part in dask.compute(*parts[done:upto]):
            got.append(part)
            held += len(part)
        done = upto
        if held >= rows:
            break
    return pd.concat(got).iloc[:rows] if len(got) > 1 else got[0].iloc[:rows]


def _chunks(frame: Any, chunk_rows: int) -> Iterator[dict[str, Any]]:
    for start in range(0, len(frame), chunk_rows):
        yield frame_columns(frame.iloc[start:start + chunk_rows])


def _partial_profile(frame: Any, offset: int, *, kinds: dict[str, str], sample_size: int, seed: int,
                     limits: ProfileLimits, chunk_rows: int, thinning: Thinning | None = None,
                     keep_rate: bool = True) -> tuple[dict[str, Feature] | None, tuple[int, int, int]]:
    """Pass 1 over one partition whose first row is row ``offset`` of the data (None when it has no rows), with
    the counts of its ``thinning``."""
    if not len(frame):
        return None, (0, 0, 0)
    mine = None if thinning is None else thinning.fresh()
    builder = ProfileBuilder(sample_size=sample_size, seed=seed, row_offset=offset, limits=limits)
    builder.use_kinds(kinds)
    for chunk in thinned_chunks(_chunks(frame, chunk_rows), mine, start=offset, keep_rate=keep_rate):
        builder.add(chunk)
    return builder.partial_features(), (0, 0, 0) if mine is None else mine.counts()


def _bin_counts(frame: Any, offset: int = 0, *, cuts: dict[str, list[float]], chunk_rows: int,
                thinning: Thinning | None = None, keep_rate: bool = True) -> dict[str, Any]:
    """Pass 2 over one partition (whose first row is row ``offset`` of the data): the bin counts of every
    numerical column."""
    out: dict[str, Any] = {}
    mine = None if thinning is None else thinning.fresh()
    for chunk in thinned_chunks(_chunks(frame, chunk_rows), mine, start=offset, keep_rate=keep_rate):
        for name, edges in cuts.items():
            counts = count_finite(edges, chunk[name])
            out[name] = out[name] + counts if name in out else counts
    return out


def _partial_current(frame: Any, offset: int, profile: ReferenceProfile, *, options: Options, chunk_rows: int,
                     thinning: Thinning | None = None) -> tuple[dict[str, CurrentPart], tuple[int, int, int]]:
    """The current-side summary of one partition whose first row is row ``offset`` of the data, and the counts of
    its ``thinning`` (rows, kept, not rates)."""
    mine = None if thinning is None else thinning.fresh()
    counted = count_current(profile, _chunks(frame, chunk_rows), options, row_offset=offset, thinning=mine)
    return {name: acc.part for name, acc in counted.items()}, (0, 0, 0) if mine is None else mine.counts()


def _frame_thinning(dask: Any, frame: Any, seed: int) -> Thinning | None:
    """The thinning of a frame with a ``sample_rate`` column (None without one), from a first pass over that column
    alone: the smallest rate decides every row's chance."""
    if SAMPLE_RATE not in frame.columns:
        return None
    return thinning(_tree(dask, [dask.delayed(_rate_bounds)(p) for p in frame[[SAMPLE_RATE]].to_delayed()],
                          merge_bounds), seed)


def _rate_bounds(frame: Any) -> RateBounds:
    return rate_bounds(frame_column(frame[SAMPLE_RATE])) if len(frame) else None


def _sum_counts(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    """Two partitions' thinning counts (rows, kept, not rates) added."""
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def _in_range(frame: Any, *, time_column: str, since: datetime | None, until: datetime | None) -> Any:
    pd = require("pandas", "dask")
    column = frame[time_column]
    keep = np.ones(len(frame), dtype=bool)
    for bound, upper in ((since, False), (until, True)):
        if bound is None:
            continue
        if pd.api.types.is_datetime64_any_dtype(column.dtype):
            value: Any = pd.Timestamp(bound)
            if getattr(column.dtype, "tz", None) is None:
                value = value.tz_convert("UTC").tz_localize(None)
        elif pd.api.types.is_numeric_dtype(column.dtype):
            value = bound.timestamp()
        else:
            raise ProfileError(f"column {time_column!r} is {column.dtype}, not a timestamp or Unix time: "
                               "--since/--until cannot compare it")
        keep &= (column < value if upper else column >= value).to_numpy(dtype=bool, na_value=False)
    return frame[keep]


# ----------------------------------------------------------------------------------------------- scheduling


class _LengthsDiffer(Exception):
    """A partition's row count is not the one Dask's metadata gave (raised on a worker, caught on the client)."""


def _tree_checked(dask: Any, frame: Any, summarise: Callable[[Any, Any], Any], merge: Callable[..., Any],
                  *shared: Any) -> Any:
    """:func:`_tree` over ``summarise(partition, offset)`` of each partition, ``offset`` being where its rows start
    in the whole. When Dask knows the partitions' row counts from the data's metadata (Parquet footers, a pandas
    frame), the offsets are plain numbers and the partitions independent: each worker reads and summarises one
    partition after another. Otherwise (or when a partition's count turns out different from its metadata's) the
    offsets are tasks, the running sum of the partitions' lengths, and a partition's summary waits for every
    partition before it to be read, so a worker may hold several partitions at once."""
    optimized = frame.optimize()
    parts = optimized.to_delayed()
    lengths = _known_lengths(optimized, len(parts))
    if lengths is not None:
        offsets = itertools.accumulate(lengths[:-1], initial=0)
        try:
            return _tree(dask, [summarise(dask.delayed(_checked)(p, n), offset)
                                for p, n, offset in zip(parts, lengths, offsets, strict=True)], merge, *shared)
        except _LengthsDiffer:
            pass
    offsets_as_tasks: list[Any] = [0]
    for part in parts[:-1]:
        offsets_as_tasks.append(dask.delayed(operator.add)(offsets_as_tasks[-1], dask.delayed(len)(part)))
    return _tree(dask, [summarise(p, offset) for p, offset in zip(parts, offsets_as_tasks, strict=True)], merge,
                 *shared)


def _known_lengths(frame: Any, partitions: int) -> list[int] | None:
    """The row count of each partition of an optimized ``frame`` when Dask knows them without reading the data
    (dask-expr's ``_get_lengths``: Parquet footers, a pandas frame's lengths), else None."""
    try:
        lengths = frame.expr._get_lengths()
    except Exception:  # not dask-expr, an expression that cannot know, a Dask without the method
        return None
    if lengths is None or len(lengths) != partitions:
        return None
    return [int(n) for n in lengths]


def _checked(frame: Any, expected: int) -> Any:
    if len(frame) != expected:
        raise _LengthsDiffer(f"a partition has {len(frame)} rows, its metadata said {expected}")
    return frame


def _tree(dask: Any, tasks: list[Any], merge: Callable[..., Any], *shared: Any) -> Any:
    """The partitions' results merged pairwise on the cluster, level by level, so that the client receives one
    (``merge(a, b, *shared)``)."""
    level = tasks
    while len(level) > 1:
        level = [dask.delayed(merge)(level[i], level[i + 1], *shared) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return dask.compute(level[0])[0]


def _merge_partial_profiles(a: tuple[dict[str, Feature] | None, tuple[int, int, int]],
                            b: tuple[dict[str, Feature] | None, tuple[int, int, int]], *,
                            sample_size: int) -> tuple[dict[str, Feature] | None, tuple[int, int, int]]:
    (fa, ca), (fb, cb) = a, b
    counts = _sum_counts(ca, cb)
    if fa is None or fb is None:
        return (fa if fb is None else fb), counts
    return merge_features(fa, fb, top_k=None, sample_size=sample_size), counts


def _add_bin_counts(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {name: a[name] + b[name] if name in a and name in b else a.get(name, b.get(name)) for name in {*a, *b}}


def _merge_current(a: tuple[dict[str, CurrentPart], tuple[int, int, int]],
                   b: tuple[dict[str, CurrentPart], tuple[int, int, int]], profile: ReferenceProfile, *,
                   max_exact: int | None) -> tuple[dict[str, CurrentPart], tuple[int, int, int]]:
    """Two partitions' current-side summaries (and thinning counts) merged."""
    (parts_a, counts_a), (parts_b, counts_b) = a, b
    out: dict[str, CurrentPart] = {}
    for name in {*parts_a, *parts_b}:
        acc = ChunkedCurrent(profile.features[name], max_exact)
        for part in (parts_a.get(name), parts_b.get(name)):
            if part is not None:
                acc.merge(part)
        out[name] = acc.part
    return out, _sum_counts(counts_a, counts_b)
