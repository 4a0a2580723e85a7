"""Columns from many Parquet files: a directory (Hive-partitioned or not) or a glob, read with ``pyarrow.dataset``.

Only the columns asked for are read (projection), a time range is pushed down as a predicate (``since`` /
``until`` on a timestamp column: Parquet row-group statistics skip what is outside, and an ``hour=`` partition
prunes whole directories), and pyarrow decodes files on its thread pool, one per core. Memory is bounded by the
chunk size times the read-ahead, not by the data: batches of at most ``chunk_rows`` rows, a few at a time.

Reading needs pyarrow: ``pip install "aiwatch[data]"``.
"""

from __future__ import annotations

import functools
import glob
import json
import os
from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

from aiwatch._optional import require
from aiwatch.drift.columns import arrow_values, is_text_type
from aiwatch.drift.errors import ProfileError
from aiwatch.drift.files import DEFAULT_CHUNK_ROWS, TEXT_SUFFIXES, numbers_in_text, pandas_index_columns

T = TypeVar("T")
DEFAULT_TIME_COLUMN = "timestamp"
_GLOB_CHARS = frozenset("*?[")


def is_dataset(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` names many files: a directory or a glob pattern."""
    text = os.fspath(source)
    return Path(text).is_dir() or any(c in _GLOB_CHARS for c in text)


def parse_time(text: str) -> datetime:
    """An ISO 8601 date or time (``2026-11-30``, ``2026-11-30T10:15``, ``...Z``, ``...+01:00``); without a time
    zone it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 date or time: {text!r} (e.g. 2026-11-30T10:00Z)") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _files(source: str) -> tuple[list[str] | str, str | None]:
    """What to hand pyarrow: a directory as is, a glob as its sorted matches (and the directory above the first
    wildcard, so that Hive partitions under it are still recognised)."""
    if Path(source).is_dir() or not any(c in _GLOB_CHARS for c in source):
        return source, None
    matches = sorted(p for p in glob.glob(source, recursive=True)
                     if Path(p).is_file() and not Path(p).name.startswith((".", "_")))
    if not matches:
        raise ProfileError(f"no file matches {source!r}")
    head = source[: min(source.index(c) for c in _GLOB_CHARS if c in source)]
    base = head if head.endswith(os.sep) else os.path.dirname(head)
    return matches, base or "."


def open_dataset(source: str | os.PathLike[str]) -> Any:
    """The Parquet dataset of a directory, glob or file, with Hive partitions (``key=value`` directories) as
    columns and every file's columns (a column added later in the log is still found).

    A partition key that is also a column of the files (``model=ranker/`` directories whose files hold a ``model``
    column; a ``ParquetSink`` log with an input named ``hour``): the column in a file is the data, and wins over
    the directory's name for that file's rows (nulls included), whatever either holds; the directory's value is
    the column's value only in the files without the column. Their types are unified as files that disagree are
    (:func:`_unified`: an int in the files and text in the directories is read as text, and numbers in it turned
    back into numbers where :func:`read_as_text` says so). Such a key is no partition column
    (:func:`partition_columns`), and an ``hour`` key that is also a column does not prune (:func:`time_filter`)."""
    ds = require("pyarrow.dataset", "data")
    pa = require("pyarrow", "data")
    text = os.fspath(source)
    files, base = _files(text)
    if isinstance(files, str) and not Path(files).exists():
        raise ProfileError(f"data {text!r} does not exist")
    if isinstance(files, str) and Path(files).suffix.lower() in TEXT_SUFFIXES:
        raise ProfileError(f"{text!r} is a text file; a time range (--since/--until), a choice of columns and a "
                           f"prediction log need Parquet data")
    try:
        partitioning = ds.HivePartitioning.discover(infer_dictionary=False)
        try:
            dataset = ds.dataset(files, format="parquet", partitioning=partitioning, partition_base_dir=base)
            text_keys = _text_partitioning(ds, pa, dataset)
            if text_keys is not None:
                partitioning = text_keys
                dataset = ds.dataset(files, format="parquet", partitioning=partitioning, partition_base_dir=base)
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            # a partition key that is also a column of the first file, of another type: pyarrow cannot merge them
            partitioning = _partitioning_alone(ds, pa, files, base)
            if partitioning is None:
                raise
            dataset = ds.dataset(files, format="parquet", partitioning=partitioning, partition_base_dir=base,
                                 schema=partitioning.schema)
        fragments = list(dataset.get_fragments())
        if not fragments:
            raise ProfileError(f"no Parquet file in {text!r}")
        schemas = [f.physical_schema for f in fragments]
        # pandas' stored index of any file (each file's own metadata: a file of a filtered frame stores
        # __index_level_0__ where another's RangeIndex stores none), read from the footers already opened
        index = sorted(set().union(*(pandas_index_columns(s) for s in schemas)))
        # only where a column is named as a partition field (a flat directory's are the files' own columns): the
        # fragments' keys took 11-19 ms for a log of 2000 files, which ParquetSink's own layout no longer pays
        named = getattr(getattr(dataset, "partitioning", None), "schema", None)
        file_columns = {name for schema in schemas for name in schema.names}
        if named is not None and set(named.names) & file_columns:
            keys = [ds.get_partition_keys(f.partition_expression) for f in fragments]
            in_files = {k for found in keys for k in found} & file_columns
            if in_files:
                return _file_columns_win(ds, pa, dataset, fragments, schemas, keys, in_files, index)
        if any(not s.equals(schemas[0]) for s in schemas[1:]):
            unified, as_text = _unified(pa, schemas)
            for field in dataset.schema:  # the partition columns
                if unified.get_field_index(field.name) < 0:
                    unified = unified.append(field)
            # the first file's metadata, as the dataset's schema (and Dask's) has it, and every file's pandas index
            metadata = {**(schemas[0].metadata or {}), _INDEX: json.dumps(index).encode()}
            if as_text:
                metadata[_AS_TEXT] = json.dumps(as_text).encode()
            unified = unified.with_metadata(metadata)
            dataset = ds.dataset(files, format="parquet", partitioning=partitioning, partition_base_dir=base,
                                 schema=unified)
        elif index != sorted(pandas_index_columns(dataset.schema)):  # the same columns, not the same metadata
            dataset = dataset.replace_schema(dataset.schema.with_metadata(
                {**(dataset.schema.metadata or {}), _INDEX: json.dumps(index).encode()}))
        return dataset
    except ProfileError:
        raise
    except Exception as exc:  # ArrowInvalid (not Parquet, incompatible schemas), OSError...
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ProfileError(f"cannot read Parquet data {text!r}: {detail}") from exc


#: Partition keys read as text whatever their values look like: the prediction log's ``model=`` directories, and
#: the ``model_version=`` ones of a log another tool partitioned by version (discovery reads values that are all
#: int32 as ints: ``model=007`` and ``model=7`` as the one int 7, merging two models, ``model_version=-0`` as ``0``).
#: The prediction log's ``hour=`` values (``2026-11-30T10``) are text already; another layout's ``hour=13`` stays a
#: number, which :func:`time_filter` does not compare with its ``YYYY-MM-DDTHH`` keys.
TEXT_PARTITION_KEYS = frozenset({"model", "model_version"})


def _text_partitioning(ds: Any, pa: Any, dataset: Any) -> Any:
    """A Hive partitioning like ``dataset``'s with the :data:`TEXT_PARTITION_KEYS` as text, or ``None`` when
    discovery already typed them so (or found none)."""
    found = getattr(dataset, "partitioning", None)
    schema = getattr(found, "schema", None)
    retyped = {f.name for f in schema or () if f.name in TEXT_PARTITION_KEYS and not pa.types.is_string(f.type)}
    if retyped:
        # without key=value directories discovery's schema is the files' own, whose int model_version is a column
        retyped &= _partition_keys(ds, dataset)
    if schema is None or not retyped:
        return None
    return ds.HivePartitioning(pa.schema([f.with_type(pa.string()) if f.name in retyped else f for f in schema]))


def _partition_keys(ds: Any, dataset: Any) -> set[str]:
    """The keys of ``dataset``'s ``key=value`` directories, over all its files."""
    keys: set[str] = set()
    for fragment in dataset.get_fragments():
        keys.update(ds.get_partition_keys(fragment.partition_expression))
    return keys


#: The schema metadata key listing the columns :func:`open_dataset` reads as text (their files disagree on the type).
_AS_TEXT = b"aiwatch.columns_read_as_text"
#: The schema metadata key listing the partition keys that are also columns of the files (the files' values win).
_KEYS_IN_FILES = b"aiwatch.partition_keys_in_files"
#: The schema metadata key listing pandas' stored index columns of every file (:func:`data_columns`), where the
#: first file's ``pandas`` metadata, which the dataset's schema keeps, does not list them all.
_INDEX = b"aiwatch.pandas_index"


def _partitioning_alone(ds: Any, pa: Any, files: list[str] | str, base: str | None) -> Any:
    """The Hive partitioning of ``files`` (the :data:`TEXT_PARTITION_KEYS` as text), discovered from the directory
    names without merging its schema with the files' (which fails where a key is also a column of another type);
    ``None`` when there is no ``key=value`` directory."""
    found = ds.dataset(files, format="parquet", partitioning=ds.HivePartitioning.discover(infer_dictionary=False),
                       partition_base_dir=base, schema=pa.schema([]))
    # discovery keeps the keys the given schema names: name them all, as text, then type each as discovery would
    names: dict[str, None] = {}
    # a directory's keys are below it; a file's, as pyarrow reads them, anywhere on its path
    root = base if base is not None else files if isinstance(files, str) and Path(files).is_dir() else None
    for fragment in found.get_fragments():
        path = fragment.path if root is None else os.path.relpath(fragment.path, root)
        # key names decoded as the partitioning's segment_encoding="uri" decodes them (my%20key= is 'my key')
        names.update((unquote(part.partition("=")[0]), None) for part in Path(path).parts[:-1] if "=" in part)
    if not names:
        return None
    as_text = ds.HivePartitioning(pa.schema([(name, pa.string()) for name in names]))
    listing = ds.dataset(files, format="parquet", partitioning=as_text, partition_base_dir=base,
                         schema=as_text.schema)
    values: dict[str, list[Any]] = {name: [] for name in names}
    for fragment in listing.get_fragments():
        for key, value in ds.get_partition_keys(fragment.partition_expression).items():
            values.setdefault(key, []).append(value)
    # a name no directory gave a value for is not pyarrow's key: typing it would add an empty column
    return ds.HivePartitioning(pa.schema([(name, pa.string() if name in TEXT_PARTITION_KEYS
                                           else _discovered_type(pa, values[name])) for name in names
                                          if values.get(name)]))


def _discovered_type(pa: Any, values: list[str | None]) -> Any:
    """The type Hive discovery gives a key of these values: int32 when each that is not null is one, else text."""
    if not values:
        raise ValueError("a partition key without values has no type")
    try:
        pa.array(values, type=pa.string()).cast(pa.int32())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.string()
    return pa.int32()


def _file_columns_win(ds: Any, pa: Any, dataset: Any, fragments: list[Any], schemas: list[Any],
                      keys: list[dict[str, Any]], in_files: set[str], index: list[str]) -> Any:
    """``dataset`` whose partition keys ``in_files`` (also columns of some files) are the files' columns where a
    file has one, the directory's value (cast to the unified type) in the others (:func:`open_dataset`)."""
    pc = require("pyarrow.compute", "data")
    directory_types = {k: _partition_type(pa, dataset, k) for found in keys for k in found}
    # a directory's value is data only in a file without the column: only then does its type count
    lacking = sorted({k for found, schema in zip(keys, schemas, strict=True) for k in found
                      if k in in_files and schema.get_field_index(k) < 0})
    extra = [pa.schema([pa.field(k, directory_types[k]) for k in lacking])] if lacking else []
    try:
        unified, as_text = _unified(pa, schemas + extra)
    except ProfileError as exc:
        if not lacking:
            raise
        raise ProfileError(f"{exc} (counting the {', '.join(f'{k}=' for k in lacking)} directories, whose value "
                           "stands for the column in the files without it)") from None
    for name, kind in directory_types.items():  # the partition columns no file holds
        if unified.get_field_index(name) < 0:
            unified = unified.append(pa.field(name, kind))
    metadata = {**(schemas[0].metadata or {}), _KEYS_IN_FILES: json.dumps(sorted(in_files)).encode(),
                _INDEX: json.dumps(index).encode()}
    if as_text:
        metadata[_AS_TEXT] = json.dumps(as_text).encode()
    expressions = []
    for found, schema in zip(keys, schemas, strict=True):
        expression = pc.scalar(True)
        for key, value in found.items():
            if schema.get_field_index(key) >= 0:  # the file's own column is the data
                continue
            kind = unified.field(key).type
            expression = expression & (pc.field(key).is_null() if value is None else
                                       pc.field(key) == pa.scalar(value, directory_types[key]).cast(kind))
        expressions.append(expression)
    return ds.FileSystemDataset.from_paths([f.path for f in fragments], schema=unified.with_metadata(metadata),
                                           format=ds.ParquetFileFormat(), filesystem=dataset.filesystem,
                                           partitions=expressions)


def _partition_type(pa: Any, dataset: Any, key: str) -> Any:
    """The type of partition ``key``'s values: the partitioning's (discovered, or text for the
    :data:`TEXT_PARTITION_KEYS`)."""
    schema = getattr(getattr(dataset, "partitioning", None), "schema", None)
    if schema is None or schema.get_field_index(key) < 0:
        return pa.string()
    return schema.field(key).type


def partition_keys_in_files(dataset: Any) -> set[str]:
    """The partition keys of ``dataset`` (:func:`open_dataset`'s) that are also columns of its files, whose values
    the files' columns give where they have one."""
    metadata = dataset.schema.metadata or {}
    return set(json.loads(metadata[_KEYS_IN_FILES])) if _KEYS_IN_FILES in metadata else set()


def _unified(pa: Any, schemas: list[Any]) -> tuple[Any, list[str]]:
    """One schema for files whose columns differ, and the columns it reads as text.

    A column that is a number in some files and text in others (a prediction log's input that a client once sent
    as "unknown": the sink writes that batch's column as text) cannot be unified by Arrow; it is read as text, and
    :func:`scan_chunks` turns each value that reads as a number back into that number. A column that is text in
    every file but ``string`` in some and ``string_view`` in others (Arrow merges neither into the other) is read as
    ``string``, its values as they are. Other conflicts (a struct and a number) are a :class:`ProfileError` naming
    the column and its types."""
    try:
        return pa.unify_schemas(schemas, promote_options="permissive"), []
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    types: dict[str, list[Any]] = {}
    for schema in schemas:
        for field in schema:
            seen = types.setdefault(field.name, [])
            if not any(field.type.equals(t) for t in seen):
                seen.append(field.type)
    fields, as_text = [], []
    for name, seen in types.items():
        try:
            fields.append(pa.unify_schemas([pa.schema([pa.field(name, t)]) for t in seen],
                                           promote_options="permissive").field(0))
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            if not all(_castable_to_text(pa, t) for t in seen):
                raise ProfileError(f"column {name!r} has the types {', '.join(map(str, seen))} in different files, "
                                   "which cannot be read as one") from None
            fields.append(pa.field(name, pa.string()))
            if not all(is_text_type(_value_type(pa, t)) or pa.types.is_null(t) for t in seen):
                as_text.append(name)
    return pa.schema(fields), as_text


def _value_type(pa: Any, kind: Any) -> Any:
    """A dictionary's value type (a ``dictionary<string>`` column is text), else ``kind``."""
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _castable_to_text(pa: Any, kind: Any) -> bool:
    types = pa.types
    kind = _value_type(pa, kind)  # a dictionary of text or numbers casts to text as its values do
    return bool(types.is_null(kind) or types.is_boolean(kind) or types.is_integer(kind) or types.is_floating(kind)
                or is_text_type(kind))


def read_as_text(dataset: Any) -> set[str]:
    """The columns :func:`open_dataset` reads as text because their files disagree on the type."""
    metadata = dataset.schema.metadata or {}
    return set(json.loads(metadata[_AS_TEXT])) if _AS_TEXT in metadata else set()


def time_filter(dataset: Any, since: datetime | None, until: datetime | None,
                time_column: str = DEFAULT_TIME_COLUMN) -> Any:
    """The predicate ``since <= time_column < until`` (``None`` when neither is given), plus the same range on
    an ``hour=YYYY-MM-DDTHH`` partition when the dataset has one (whole directories skipped). A naive ``since`` or
    ``until`` is UTC, on a timestamp column and on a Unix-seconds one alike."""
    if since is None and until is None:
        return None
    # one rule for a naive time, whatever the column's type: UTC, as parse_time reads --since/--until
    since, until = _utc(since), _utc(until)
    pa = require("pyarrow", "data")
    pc = require("pyarrow.compute", "data")
    index = dataset.schema.get_field_index(time_column)
    if index < 0:
        raise ProfileError(f"--since/--until need a {time_column!r} column; the data has: "
                           f"{', '.join(dataset.schema.names)}")
    kind = dataset.schema.field(index).type
    field = pc.field(time_column)

    def compared(t: datetime, upper: bool) -> Any:
        """``field < t`` (``upper``) or ``field >= t``, exactly, on the column's type."""
        # a column of whole ticks (seconds, milliseconds...) compared with the first tick at or after t: for a
        # whole x, x >= t is x >= ceil(t) and x < t is x < ceil(t); a cast truncated 100.5 s to 100, so a row
        # before --since was kept and one before --until left out
        micros = (t - _EPOCH) // _MICROSECOND
        if pa.types.is_timestamp(kind):
            per_tick = _MICROS_PER_TICK.get(kind.unit)
            ticks = micros * 1000 if per_tick is None else -(-micros // per_tick)  # ns: a microsecond is 1000
            # past the int64 ticks' range (a timestamp[ns] before 1677-09-21 or after 2262-04-11): every value of
            # the column is on one side of t, as the Dask path's pandas comparison finds; the cast raised
            if ticks < _INT64_MIN:  # x >= t for every x: since keeps every row, until none
                return field < _tick(pa, _INT64_MIN, kind) if upper else field >= _tick(pa, _INT64_MIN, kind)
            if ticks > _INT64_MAX:  # x < t for every x
                return field <= _tick(pa, _INT64_MAX, kind) if upper else field > _tick(pa, _INT64_MAX, kind)
            value = _tick(pa, ticks, kind)
        elif pa.types.is_integer(kind):  # not cast to the column's type: past an int32's range it wrapped
            value = pa.scalar(-(-micros // 10**6), type=pa.int64())
        elif pa.types.is_floating(kind):
            value = pa.scalar(t.timestamp(), type=pa.float64()).cast(kind, safe=False)
        else:
            raise ProfileError(f"column {time_column!r} is {kind}, not a timestamp or Unix time: --since/--until "
                               "cannot compare it")
        return field < value if upper else field >= value

    expr = None
    # the hour= partition is ParquetSink's, of its timestamp column: it says nothing of another time column's
    # and only where hour is the directories' key: a column of the files named hour (an input) is data, also where
    # no hour= directory is above the files (the log named by its hour directory, a glob under it, or one file)
    hour = pc.field("hour") if time_column == DEFAULT_TIME_COLUMN and "hour" in dataset.schema.names and \
        pa.types.is_string(dataset.schema.field("hour").type) and "hour" in partition_columns(dataset) else None
    for t, upper in ((since, False), (until, True)):
        if t is None:
            continue
        part = compared(t, upper)
        if hour is not None:
            # isoformat, not strftime("%Y"), which writes year 500 as "500": "500-..." sorted after "2026-..."
            key = t.astimezone(UTC).isoformat()[:13]
            # a file under no hour= directory (the log's own root, or beside the hour= directories) has a null
            # hour: kept and filtered by its timestamp; partition_columns saw only the first file, so it decides
            # only whether to prune, never which rows of a file without the key are left out
            part = part & ((hour <= key if upper else hour >= key) | hour.is_null())
        expr = part if expr is None else expr & part
    return expr


def empty_window(report: Any, present: Collection[str], since: datetime | None, until: datetime | None,
                 time_column: str) -> None:
    """Set ``report.no_rows`` when no row was read: the data has some of the profile's features (``present``) and
    no row reached any of them (each row read counts in every present feature, as a value, a missing or a
    wrong-typed one). Then either ``[since, until)`` selected none, or (without a window) the data has none. Without
    this the report said the data had none of the features, or no values for them. The present features are then
    no longer listed as missing from the current data (the table and ``--json`` said they were, while the error
    said no row was read); the readers list them in ``report.features``, untested, with no value
    (:func:`~aiwatch.drift.batch.report_counted`'s ``present``)."""
    if not present or any(f.current_count + f.missing + f.invalid for f in report.features.values()):
        return
    report.missing_features = [n for n in report.missing_features if n not in present]
    if since is None and until is None:
        report.no_rows = "the current data has no rows"
    else:
        report.no_rows = f"the time window selected no row: no {time_column!r} of the current data is " + \
            window_text(since, until)


def window_text(since: datetime | None, until: datetime | None) -> str:
    """``at or after SINCE and before UNTIL``, in UTC, for the bounds given."""
    parts = [f"{word} {_utc(t).astimezone(UTC).isoformat()}"  # type: ignore[union-attr]
             for word, t in (("at or after", since), ("before", until)) if t is not None]
    return " and ".join(parts) + " (--since/--until)"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: microseconds per tick of a timestamp unit coarser than one
_MICROS_PER_TICK = {"s": 10**6, "ms": 10**3, "us": 1}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _tick(pa: Any, ticks: int, kind: Any) -> Any:
    """``ticks`` (in the int64 range) as a scalar of the timestamp type ``kind``."""
    return pa.scalar(ticks, type=pa.int64()).cast(pa.timestamp(kind.unit, tz=kind.tz))


def _utc(t: datetime | None) -> datetime | None:
    """``t`` with a naive time read as UTC (not the machine's local time, which ``datetime.timestamp`` assumes)."""
    return t if t is None or t.tzinfo is not None else t.replace(tzinfo=UTC)


#: Row groups decoded ahead of the one being counted (each decoded with every core, one column per thread).
ROW_GROUPS_AHEAD = 2


def scan_chunks(dataset: Any, columns: Collection[str], *, predicate: Any = None,
                chunk_rows: int = DEFAULT_CHUNK_ROWS, threads: bool = True) -> Iterator[dict[str, Any]]:
    """Column dicts of at most ``chunk_rows`` rows of ``columns`` (those the dataset has), matching ``predicate``,
    in the dataset's order. A batch is converted to numpy only on the consumer's thread.

    The data is read one row group at a time, :data:`ROW_GROUPS_AHEAD` ahead of the consumer, so memory is a few
    row groups and does not grow with the data. (pyarrow's dataset scanner, which this replaced, decoded ahead of a
    slower consumer until its own back-pressure limit, and pre-buffered whole files: 1.5 GB at 10M rows.)"""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ProfileError(f"chunk_rows must be a whole number >= 1, got {chunk_rows!r}")
    wanted = [c for c in columns if dataset.schema.get_field_index(c) >= 0]
    if not wanted:
        return
    as_text = read_as_text(dataset)
    try:
        for table in _prefetched(_row_group_reads(dataset, wanted, predicate, threads), ROW_GROUPS_AHEAD):
            for batch in table.to_batches(max_chunksize=chunk_rows):
                if batch.num_rows:
                    yield {name: _values(col, name in as_text)
                           for name, col in zip(batch.schema.names, batch.columns, strict=True)}
    except ProfileError:
        raise
    except Exception as exc:  # a corrupt file, a column whose type changed between files...
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ProfileError(f"cannot read Parquet data: {detail}") from exc


def _values(column: Any, numbers_in_text_too: bool) -> Any:
    values = arrow_values(column)
    return numbers_in_text(values, exact=True) if numbers_in_text_too else values


def _row_group_reads(dataset: Any, wanted: list[str], predicate: Any, threads: bool) -> Iterator[Callable[[], Any]]:
    """One function per row group (those whose statistics and partition may match ``predicate``) that reads it."""
    ds = require("pyarrow.dataset", "data")
    options = ds.ParquetFragmentScanOptions(pre_buffer=False)
    for fragment in dataset.get_fragments(filter=predicate):
        for piece in fragment.split_by_row_group(filter=predicate, schema=dataset.schema):
            yield functools.partial(piece.to_table, schema=dataset.schema, columns=wanted, filter=predicate,
                                    use_threads=threads, fragment_scan_options=options)


def _prefetched(reads: Iterator[Callable[[], T]], ahead: int) -> Iterator[T]:
    """The results of ``reads``, in order, each started up to ``ahead`` reads before it is needed."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiwatch-parquet") as pool:
        pending: deque[Future[T]] = deque()
        try:
            for read in reads:
                pending.append(pool.submit(read))
                if len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def data_columns(dataset: Any) -> list[str]:
    """The columns of ``dataset`` (:func:`open_dataset`'s) but pandas' stored index
    (:func:`~aiwatch.drift.files.pandas_index_columns` of any of its files' metadata, which Dask reads as the
    index or leaves out)."""
    metadata = dataset.schema.metadata or {}
    index = set(json.loads(metadata[_INDEX])) if _INDEX in metadata else pandas_index_columns(dataset.schema)
    return [name for name in dataset.schema.names if name not in index]


def partition_columns(dataset: Any) -> set[str]:
    """Columns that come from ``key=value`` directory names rather than from the files (none for a flat directory:
    the discovered partitioning's schema is then the files' own; a key that is also a column of the files is
    data, :func:`partition_keys_in_files`)."""
    ds = require("pyarrow.dataset", "data")
    try:
        first = next(iter(dataset.get_fragments()), None)
        keys = set(ds.get_partition_keys(first.partition_expression)) if first is not None else set()
        return keys - partition_keys_in_files(dataset)
    except Exception:
        return set()
