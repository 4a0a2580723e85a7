"""``ParquetSink``: prediction rows into rotated Parquet files, partitioned by model and hour.

Layout (Hive-style, which ``pyarrow.dataset`` and ``aiwatch drift DIR`` read back)::

    DIR/model=ranker/hour=2026-11-30T10/part-20261130T101502-4242-000003.parquet

A file is written under a hidden temporary name (``.part-....parquet.inprogress``: readers skip names that
start with a dot) and renamed to its final name only after its footer is written and flushed to disk (then the
directory is synced too, so that the rename survives a power cut), so a file with a final name is always complete,
and a crash loses at most the rows of the files still open. A file is rotated when it holds ``max_rows`` rows, when
it is ``max_file_seconds`` old, when its hour ends, and when the log closes.
Each batch the writer hands over becomes one or more row groups.

The ``model`` value lives in the directory name, not in the file (``pyarrow.dataset`` with Hive partitioning
gives it back as a column). Reading a single file gives every other column.

A write that fails (the disk is full, an I/O error) leaves pyarrow's writer unusable and its file without a footer:
that file is removed at once, never renamed, and the next batch starts a new one. ``write``, ``flush`` and
``close`` then raise :class:`~aiwatch.feedback.sink.RowsLost` with the rows of the batch not stored and the rows of
the removed files written before.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiwatch._optional import require
from aiwatch.amounts import period
from aiwatch.feedback.sink import RowsLost
from aiwatch.safety import warn_rate_limited

#: The types of the log's own columns; every other column's type is inferred from its first values.
_FIXED_TYPES = {"request_id": "string", "timestamp": "timestamp", "model_version": "string", "trace_id": "string",
                "latency_seconds": "float64", "error": "bool_", "sample_rate": "float64"}
#: Columns whose mixed types are logged by name, per sink; past these, a rate-limited line without names.
_MAX_COLUMNS_TOLD = 1_000
_log = logging.getLogger("aiwatch")
TEMP_PREFIX = "."
TEMP_SUFFIX = ".inprogress"


@dataclass
class _OpenFile:
    writer: Any
    schema: Any
    temp: Path
    final: Path
    opened: float
    rows: int = 0
    #: of ``rows``, those of earlier ``write`` calls, which the caller has counted as written
    earlier: int = 0


@dataclass
class _Tally:
    """What one call to the sink did: rows of its batch stored (in a completed file or in a sound open one), rows of
    earlier batches lost with a file that failed, and its first failure."""

    stored: int = 0
    lost: int = 0
    error: Exception | None = None

    def file_failed(self, f: _OpenFile, exc: Exception) -> None:
        self.stored -= f.rows - f.earlier
        self.lost += f.earlier
        self.error = self.error or exc

    def raise_if_failed(self, failed: int) -> None:
        if self.error is not None:
            raise RowsLost(failed, self.lost, self.error) from self.error


def microseconds(timestamp: float) -> int:
    """Unix time in seconds to whole microseconds, rounded as ``datetime.fromtimestamp`` rounds it (the fraction
    on its own, half to even), so that a row stored at ``t`` falls on the side of ``--since`` / ``--until`` that the
    datetime of ``t`` does. ``round(t * 1e6)`` was 1 µs off for about one float in eight: the product's rounding.

    >>> microseconds(1790000000.123456), microseconds(-1.5)
    (1790000000123456, -1500000)
    """
    fraction, whole = math.modf(timestamp)
    return int(whole) * 1_000_000 + round(fraction * 1e6)


def hour_key(timestamp: float) -> str:
    """The ``hour`` partition value of a Unix time (UTC): ``2026-11-30T10``."""
    return time.strftime("%Y-%m-%dT%H", time.gmtime(timestamp))


class ParquetSink:
    """Writes prediction rows into ``directory`` (see the module docstring). ``compression`` is Parquet's
    (zstd by default)."""

    def __init__(self, directory: str | os.PathLike[str], *, max_rows: int = 100_000,
                 max_file_seconds: float = 300.0, compression: str = "zstd", fsync: bool = True) -> None:
        self.pa = require("pyarrow", "data")
        self.pq = require("pyarrow.parquet", "data")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"max_rows must be a whole number >= 1, got {max_rows!r}")
        self.directory = Path(directory)
        self.max_rows, self.max_file_seconds = max_rows, period(max_file_seconds, "max_file_seconds")
        self.compression, self.fsync = compression, fsync
        self._open: dict[tuple[str, str], _OpenFile] = {}
        self._seq = 0
        self._told_types: set[str] = set()
        #: Final paths of the files rotated so far, oldest first.
        self.completed: list[Path] = []

    # --- PredictionSink -----------------------------------------------------------------------------------
    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault((str(row["model"]), hour_key(float(row["timestamp"]))), []).append(row)
        tally = _Tally()
        for key, group in groups.items():
            try:
                self._write_group(key, group, tally)
            except Exception as exc:  # the other partitions' files may still work (EIO on one file)
                tally.error = tally.error or exc
        for f in self._open.values():
            f.earlier = f.rows
        tally.raise_if_failed(len(rows) - tally.stored)

    def flush(self) -> None:
        """Rotate the files that are ``max_file_seconds`` old or whose hour is over."""
        now, current_hour = time.monotonic(), hour_key(time.time())
        self._rotate_all([key for key, f in self._open.items()
                          if now - f.opened >= self.max_file_seconds or key[1] < current_hour])

    def close(self) -> None:
        self._rotate_all(list(self._open))

    # --- files --------------------------------------------------------------------------------------------
    def _write_group(self, key: tuple[str, str], rows: list[dict[str, Any]], tally: _Tally) -> None:
        while rows:
            f = self._open.get(key)
            room = self.max_rows - f.rows if f is not None else self.max_rows
            part, rows = rows[:room], rows[room:]
            table = self._table(part, f.schema if f is not None else None)
            if f is not None and not table.schema.equals(f.schema):  # a new field, or a type that changed
                self._tell_types_changed(f.schema, table.schema)
                self._rotate(key, tally)
                f = None
            if f is None:
                f = self._start(key, table.schema)
            try:
                f.writer.write_table(table)
            except Exception as exc:
                self._discard(key, tally, exc)
                raise
            f.rows += table.num_rows
            tally.stored += table.num_rows
            if f.rows >= self.max_rows:
                self._rotate(key, tally)

    def _table(self, rows: list[dict[str, Any]], known: Any) -> Any:
        """The rows as an Arrow table without ``model``: the open file's column types where they fit, new columns
        after them; a value that does not fit its column's type gives that column a freshly inferred type."""
        pa = self.pa
        names: dict[str, None] = {}
        if known is not None:
            names.update((name, None) for name in known.names)
        for row in rows:
            names.update((name, None) for name in row if name != "model")
        arrays, fields = [], []
        for name in names:
            values = [row.get(name) for row in rows]
            array = None
            if known is not None and name in known.names and name not in _FIXED_TYPES:
                try:
                    array = pa.array(values, type=known.field(name).type)
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
                    array = None
            if array is None:
                array = self._array(name, values)
            arrays.append(array)
            fields.append(pa.field(name, array.type))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

    def _array(self, name: str, values: list[Any]) -> Any:
        pa = self.pa
        fixed = _FIXED_TYPES.get(name)
        if fixed == "timestamp":
            return pa.array([None if v is None else microseconds(float(v)) for v in values],
                            type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        if fixed is not None:
            return pa.array(values, type=getattr(pa, fixed)())
        present = [v for v in values if v is not None]
        if not present:
            return pa.array(values, type=pa.float64())  # an all-null column: a float one is the likeliest later
        if all(isinstance(v, bool) for v in present):
            return pa.array(values, type=pa.bool_())
        if all(isinstance(v, float) for v in present):
            return pa.array(values, type=pa.float64())
        kinds = {type(v).__name__ for v in present}
        if kinds != {"str"}:
            self._tell_written_as_text(name, kinds)
        return pa.array([None if v is None else v if isinstance(v, str) else str(v) for v in values],
                        type=pa.string())

    def _tell_types_changed(self, old: Any, new: Any) -> None:
        for field in new:
            if field.name in old.names and not field.type.equals(old.field(field.name).type):
                self._tell_once(field.name, "aiwatch: prediction log column %r changed type from %s to %s between "
                                "batches: a new file is started, and aiwatch's readers of the log read the column as "
                                "text; logged once per column", field.name, old.field(field.name).type, field.type)

    def _tell_written_as_text(self, name: str, kinds: set[str]) -> None:
        self._tell_once(name, "aiwatch: prediction log column %r holds %s values in one batch: written as text, "
                        "numbers included (docs/prediction-log.md, Schema); logged once per column", name,
                        " and ".join(sorted(kinds)))

    def _tell_once(self, name: str, message: str, *args: object) -> None:
        """Log, once per column, that its values are no longer of one type (documented, and the log keeps every
        value, but a reader expecting numbers should hear of it)."""
        if name in self._told_types:
            return
        if len(self._told_types) >= _MAX_COLUMNS_TOLD:  # inputs named by a client: stay bounded, rate-limited
            warn_rate_limited("parquet_sink.types", "aiwatch: prediction log columns of mixed types (past the first "
                              "%d columns, which were named)", _MAX_COLUMNS_TOLD)
            return
        self._told_types.add(name)
        _log.warning(message, *args)

    def _start(self, key: tuple[str, str], schema: Any) -> _OpenFile:
        model, hour = key
        folder = self.directory / f"model={quote(model, safe='')}" / f"hour={hour}"
        folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{self._seq:06d}.parquet"
        final = folder / name
        temp = folder / f"{TEMP_PREFIX}{name}{TEMP_SUFFIX}"
        try:
            writer = self.pq.ParquetWriter(str(temp), schema, compression=self.compression)
        except Exception:  # it could not even write the file's header
            with suppress(OSError):
                temp.unlink(missing_ok=True)
            raise
        f = _OpenFile(writer, schema, temp, final, time.monotonic())
        self._open[key] = f
        return f

    def _rotate_all(self, keys: list[tuple[str, str]]) -> None:
        tally = _Tally()
        for key in keys:
            with suppress(Exception):  # counted in the tally; the other files are still rotated
                self._rotate(key, tally)
        tally.raise_if_failed(0)

    def _rotate(self, key: tuple[str, str], tally: _Tally) -> None:
        f = self._open.pop(key)
        try:
            f.writer.close()
            if self.fsync:
                fd = os.open(f.temp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            os.replace(f.temp, f.final)
        except Exception as exc:
            self._remove(f, tally, exc)
            raise
        if self.fsync:
            _sync_directory(f.final.parent)
        self.completed.append(f.final)

    def _discard(self, key: tuple[str, str], tally: _Tally, exc: Exception) -> None:
        """Remove the file of a writer whose write failed: the writer is done for (every later write: "Operation on
        closed file"), and its file has no footer (closing the writer may still write one, over data not all there)."""
        self._remove(self._open.pop(key), tally, exc)

    @staticmethod
    def _remove(f: _OpenFile, tally: _Tally, exc: Exception) -> None:
        for _ in range(2):  # a close that raised keeps the file open; pyarrow's next close releases it
            with suppress(Exception):
                f.writer.close()
        with suppress(OSError):
            f.temp.unlink(missing_ok=True)
        tally.file_failed(f, exc)


def _sync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a renamed file's new name lives in its directory, which ``fsync`` of the
    file does not write). The file is complete and readable either way, so a failure is not the rows' loss: it is
    ignored, as on a platform whose directories cannot be opened."""
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
