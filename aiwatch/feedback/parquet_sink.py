"""``ParquetSink``: prediction rows into rotated Parquet files, partitioned by model and hour.

Layout (Hive-style, which ``pyarrow.dataset`` and ``aiwatch drift DIR`` read back)::

    DIR/model=ranker/hour=2026-11-30T10/part-20261130T101502-4242-000003.parquet

A file is written under a hidden temporary name (``.part-....parquet.inprogress``: readers skip names that
start with a dot) and renamed to its final name only after its footer is written and flushed to disk (then the
directory is synced too, so that the rename survives a power cut), so a file with a final name is always complete.
A file is rotated when it holds ``max_rows`` rows, when it is ``max_file_seconds`` old, when its hour ends, and when
the log closes. Each batch the writer hands over becomes one or more row groups.

With ``journal`` (the default), each batch is also appended to the open file's journal
(``.part-....parquet.journal``, :mod:`aiwatch.feedback.journal`), deleted when the file rotates; a sink that starts
on the directory turns the journals of dead writers into finished files, so a crash loses only the batch being
written; a sink copied into a forked child (a gunicorn ``--preload`` worker, one forked in place of a killed one
included) does so at its first write or flush. A journal write that fails completes its file at once and is counted
(``RowsLost`` with no rows lost).

A writer holds a ``flock`` on each of its open files until the file is renamed or removed, so a sink that starts on
the directory also removes the open files of dead writers that have no journal (unreadable: no footer), which every
crash without a journal used to leave for ever. What the start did is in :attr:`ParquetSink.recovery`, which the
log the sink is given to exports (``aiwatch_prediction_log_recovery_files_total``,
``aiwatch_prediction_log_recovered_records_total``).

The ``model`` value lives in the directory name, not in the file (``pyarrow.dataset`` with Hive partitioning
gives it back as a column). Reading a single file gives every other column.

A write that fails (the disk is full, an I/O error) leaves pyarrow's writer unusable and its file without a footer:
that file is removed at once, never renamed, and the next batch starts a new one. Its journal, when it holds rows, is
kept (unlocked): the sink tries to make it into a file again at its first flush :data:`KEPT_RETRY_SECONDS` later
(a disk that was full may have room by then), then as often while it fails, and at its close; a sink that starts on
the directory recovers it too (if this process died first). What a retry recovers is counted as a start's recovery
is. ``write``, ``flush`` and ``close`` then
raise :class:`~aiwatch.feedback.sink.RowsLost` with the rows of the batch not stored, the rows of the removed files
written before and lost (no journal), and those kept in a journal (``recoverable``).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiwatch._optional import require
from aiwatch.amounts import period, warn_implausible
from aiwatch.feedback import journal as journals
from aiwatch.feedback.journal import JOURNAL_SUFFIX, NEW_SUFFIX, Journal, OpenFileLock
from aiwatch.feedback.sink import RowsLost, failure_text
from aiwatch.flags import flag
from aiwatch.forksafe import renew_at_fork
from aiwatch.metrics import RECOVERY_RESULTS
from aiwatch.safety import warn_rate_limited

try:
    import resource
except ImportError:  # not POSIX: the descriptor limit is not read
    resource = None  # type: ignore[assignment]

#: The types of the log's own columns; every other column's type is inferred from its first values.
_FIXED_TYPES = {"request_id": "string", "timestamp": "timestamp", "model_version": "string", "trace_id": "string",
                "trace_sampled": "bool_", "latency_seconds": "float64", "error": "bool_", "sample_rate": "float64"}
#: Columns whose mixed types are logged by name, per sink; past these, a rate-limited line without names.
_MAX_COLUMNS_TOLD = 1_000
_log = logging.getLogger("aiwatch")
TEMP_PREFIX = "."
TEMP_SUFFIX = ".inprogress"
#: The number in a file's name: per process, not per sink, so that two sinks of one process on one directory never
#: give two files (and journals) one name in the same second (``next`` of a count is atomic under the GIL).
_SEQ = itertools.count(1)
#: A ``max_file_seconds`` outside these bounds is warned of: below a second, each model's file is completed (two
#: fsyncs) more than once a second, more files than rows at a low rate; above an hour, it does nothing (a file is
#: rotated when its hour ends): ``300000`` meant as milliseconds.
SHORT_FILE_SECONDS, LONG_FILE_SECONDS = 1.0, 3600.0
#: Added to the name of a journal whose contents cannot become a Parquet file.
UNRECOVERABLE_SUFFIX = ".unrecoverable"
#: Orphans removed at one start that are logged by name; past these, one line sums up the rest.
_MAX_ORPHANS_TOLD = 100
#: Seconds a running sink waits before trying again to make the journal of a file that failed into a file (its
#: flushes do it, every ``flush_seconds`` of the log: 60 s at most between them by default).
KEPT_RETRY_SECONDS = 60.0
#: The most paths :attr:`ParquetSink.completed` and :attr:`ParquetSink.recovered` hold (the latest): every rotation
#: added one for the sink's life (1.4 kB each: a file every 5 minutes for 10 models, 400 MB a year).
MAX_PATHS_KEPT = 1_000
_monotonic = time.monotonic  # the kept journals' clock
#: Recovery writes a journal's batches to the rebuilt file once they hold this many bytes of data, or once it holds
#: this many batches (one row group): it holds at most that many of a journal of any size at once (a batch's Arrow
#: objects cost more than its data: a journal of tiny batches would otherwise pile up many of them).
_REBUILD_BYTES = 16 << 20
_REBUILD_BATCHES = 1024
#: ``max_open_files`` where the process's descriptor limit cannot be read (no ``resource`` module: Windows), and its
#: bounds where it can (a quarter of the soft limit, at 3 descriptors per open file).
FALLBACK_MAX_OPEN_FILES = 256
_MIN_OPEN_FILES, _MAX_OPEN_FILES = 1, 1024
#: Names a new file may try, each taken already, before its batch fails (:meth:`ParquetSink._new_name`).
_NAME_TRIES = 100


@dataclass
class Recovery:
    """What a sink did, when it started, with the files of writers that died: ``files`` by result (one of
    :data:`RECOVERY_RESULTS` each), and ``records``, the rows made into finished files from their journals."""

    files: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECOVERY_RESULTS, 0))
    records: int = 0


@dataclass
class _OpenFile:
    writer: Any
    schema: Any
    temp: Path
    final: Path
    opened: float
    journal: Journal | None
    #: the writer's lock on ``temp`` (``None`` without ``flock``), released once ``temp`` is renamed or removed
    lock: OpenFileLock | None
    rows: int = 0
    #: of ``rows``, those of earlier ``write`` calls, which the caller has counted as written
    earlier: int = 0
    #: of ``rows``, the first ones, whose batches are whole in the journal
    journaled: int = 0


@dataclass
class _Tally:
    """What one call to the sink did: rows of its batch stored (in a completed file, in a sound open one, or in the
    journal of a file that failed), rows of earlier batches lost with a file that failed, rows of a failed file kept
    in its journal for recovery, and its first failure."""

    stored: int = 0
    lost: int = 0
    recoverable: int = 0
    error: Exception | None = None
    #: what failed, when the failure told is a journal's (whose file's rows may all be stored)
    what: str = ""

    def failed(self, exc: Exception) -> None:
        """Tell ``exc``: the first failure of rows, before a journal's (which, the disk full, came first)."""
        if self.error is None or self.what:
            self.error, self.what = exc, ""

    def journal_failed(self, exc: Exception, what: str) -> None:
        if self.error is None:
            self.error, self.what = exc, what

    def file_failed(self, f: _OpenFile, exc: Exception, kept: int) -> None:
        """Count the rows of ``f``, which failed: its first ``kept`` rows are in its journal, left for recovery."""
        this_call = f.rows - f.earlier
        self.stored -= this_call - max(0, kept - f.earlier)
        self.lost += f.earlier - min(kept, f.earlier)
        self.recoverable += kept
        self.failed(exc)

    def raise_if_failed(self, failed: int, batch: bool = False) -> None:
        """Raise what this call lost, if anything failed; ``batch``: it wrote a batch (``stored`` counts it)."""
        if self.error is not None:
            why = failure_text(self.error, self.what) if self.what else self.error
            raise RowsLost(failed, self.lost, why, recoverable=self.recoverable,
                           stored=self.stored if batch else None) from self.error


def microseconds(timestamp: float) -> int:
    """Unix time in seconds to whole microseconds, rounded as ``datetime.fromtimestamp`` rounds it (the fraction
    on its own, half to even), so that a row stored at ``t`` falls on the side of ``--since`` / ``--until`` that the
    datetime of ``t`` does. ``round(t * 1e6)`` was 1 µs off for about one float in eight: the product's rounding.

    >>> microseconds(1790000000.123456), microseconds(-1.5)
    (1790000000123456, -1500000)
    """
    fraction, whole = math.modf(timestamp)
    return int(whole) * 1_000_000 + round(fraction * 1e6)


def default_max_open_files() -> int:
    """``max_open_files`` when none is given: a quarter of the process's soft ``RLIMIT_NOFILE`` at 3 descriptors per
    open file, between 1 and 1024 (1024 with no limit; :data:`FALLBACK_MAX_OPEN_FILES` where it cannot be read).
    A fixed 64 rotated one file per model per batch as soon as a service wrote to more than 64 models at once."""
    if resource is None:
        return FALLBACK_MAX_OPEN_FILES
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return FALLBACK_MAX_OPEN_FILES
    unlimited = soft == resource.RLIM_INFINITY
    if unlimited or soft < 0:
        return _MAX_OPEN_FILES
    return max(_MIN_OPEN_FILES, min(_MAX_OPEN_FILES, soft // 12))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def hour_key(timestamp: float) -> str:
    """The ``hour`` partition value of a Unix time (UTC): ``2026-11-30T10``, the hour of the time the row is stored at
    (:func:`microseconds`), with the year in four digits, as the readers' ``--since``/``--until`` prune the
    directories (:func:`~aiwatch.drift.datasets.time_filter`). A time less than half a microsecond before the hour
    was stored as the hour's first microsecond in the hour before's directory, and one of the year 702 went to
    ``702-...``, after ``2026-...``: a window's read left both out."""
    return (_EPOCH + timedelta(microseconds=microseconds(timestamp))).isoformat()[:13]


def _keep_latest(paths: list[Path], path: Path) -> None:
    """Append ``path``, keeping the latest :data:`MAX_PATHS_KEPT`."""
    paths.append(path)
    if len(paths) > MAX_PATHS_KEPT:
        del paths[:-MAX_PATHS_KEPT]


class ParquetSink:
    """Writes prediction rows into ``directory`` (see the module docstring). ``compression`` is Parquet's
    (zstd by default); ``fsync`` syncs each file before its rename; ``journal`` keeps a journal of each open file
    (recovered after a crash), ``journal_fsync`` syncs it after each batch (docs/prediction-log.md, "The journal").
    ``max_open_files`` bounds the files open at once (one per model and hour, each holding up to 3 file
    descriptors): a new one past it first completes the least recently written one (counted in
    :attr:`forced_rotations`), so that a flood of model names cannot take the process's descriptors. ``None`` (the
    default) takes it from the process's descriptor limit (:func:`default_max_open_files`). Past the cap every batch
    that writes to more files than it completes files early: the cap is for floods, not for the models served.
    ``file_mode`` and ``dir_mode`` are the modes of the files (journals included) and directories the sink makes,
    less the process's umask: 0o640 and 0o750 by default, since the rows hold the model's inputs (a log shipper
    running as another user reads them through the group, or is given 0o644 and 0o755)."""

    def __init__(self, directory: str | os.PathLike[str], *, max_rows: int = 100_000,
                 max_file_seconds: float = 300.0, compression: str = "zstd", fsync: bool = True,
                 journal: bool = True, journal_fsync: bool = False, max_open_files: int | None = None,
                 file_mode: int = 0o640, dir_mode: int = 0o750) -> None:
        self.pa = require("pyarrow", "data")
        self.pq = require("pyarrow.parquet", "data")
        if max_open_files is None:
            max_open_files = default_max_open_files()
        for label, number in (("max_rows", max_rows), ("max_open_files", max_open_files)):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ValueError(f"{label} must be a whole number >= 1, got {number!r}")
        self.max_open_files: int = max_open_files
        self.file_mode = _mode(file_mode, "file_mode", 0o600)
        self.dir_mode = _mode(dir_mode, "dir_mode", 0o700)
        #: Files completed early because ``max_open_files`` were open and another was needed.
        self.forced_rotations = 0
        self._forced_rotations_taken = 0
        self.directory = _check_directory(Path(directory))
        self.max_rows, self.max_file_seconds = max_rows, period(max_file_seconds, "max_file_seconds")
        if self.max_file_seconds < SHORT_FILE_SECONDS:
            warn_implausible(self.max_file_seconds, "max_file_seconds", below=SHORT_FILE_SECONDS,
                             effect="a file of each model is completed (footer, rename, two fsyncs) that often, "
                                    "more files than rows at a low rate (the default is 300)")
        else:
            warn_implausible(self.max_file_seconds, "max_file_seconds", above=LONG_FILE_SECONDS,
                             effect="no file is rotated for its age: each one is when its hour ends (or at max_rows), "
                                    "so its rows are readable in a finished file only then (the default is 300)")
        self.compression, self.fsync = compression, flag(fsync, "fsync")
        self.journal = flag(journal, "journal") and journals.AVAILABLE
        self.journal_fsync = flag(journal_fsync, "journal_fsync")
        # pyarrow's first pa.array() in a process imports pandas under a lock of pyarrow's (its pandas shim) that
        # nothing renews at a fork: a worker forked while the log's writer thread is in there hangs its own writer
        # for ever. Done here, on the thread that makes the sink, before any writer thread or fork. A pandas that
        # fails to import with more than an ImportError (built for another numpy) fails this first call only:
        # pyarrow marks the check done either way, and the sink's own arrays do not need pandas.
        with suppress(Exception):
            self.pa.array([0.0])
        self._check_compression()  # after that first call, which may fail once
        self._open: dict[tuple[str, str], _OpenFile] = {}
        self._told_types: set[str] = set()
        #: Final paths of the files rotated so far, oldest first: the latest :data:`MAX_PATHS_KEPT`.
        self.completed: list[Path] = []
        #: Final paths of the files made from the journals of dead writers when the sink started, and of its own
        #: kept ones since: the latest :data:`MAX_PATHS_KEPT`.
        self.recovered: list[Path] = []
        #: Journals of dead writers that ended in a torn batch (dropped), were empty, or held a batch that was not
        #: valid (the journal set aside), when the sink started.
        self.torn_batches = 0
        #: What the start did with dead writers' files, until :meth:`take_recovery` hands it to a log's metrics.
        self.recovery = Recovery()
        #: The journals this sink kept for files of its own that failed, with when to try each again (monotonic).
        self._kept: dict[Path, float] = {}
        #: Held by write, flush, close and the take_ methods: two logs given one sink call it from two writer threads
        #: (and pyarrow's writer, used from both at once, crashed the process with a segfault).
        self._lock = threading.RLock()
        #: a copy in a forked child recovers at its first write or flush (:meth:`_renew_after_fork`)
        self._recover_pending = False
        if journals.AVAILABLE:  # without flock nothing tells a dead writer's files from a live one's
            self._recover_all()
        renew_at_fork(self)

    def _check_compression(self) -> None:
        """Raise ``ValueError`` for a ``compression`` Parquet cannot write (a name it does not know, a codec not built
        into this pyarrow): found now, not at each file's first write. Before recovery, which would otherwise take
        the refusal for the journal's data and set every journal aside."""
        pa = self.pa
        setting: Any = self.compression
        try:
            # the setting as given, on columns of its names where it is a codec per column (pyarrow reads a codec
            # in a dict otherwise than alone: None is refused there)
            names = list(setting) if isinstance(setting, dict) else []
            if not all(isinstance(name, str) for name in names):
                raise TypeError("a compression dict's keys are column names (str)")
            table = pa.table({name: pa.array([0.0]) for name in names or ["x"]})
            writer = self.pq.ParquetWriter(pa.BufferOutputStream(), table.schema, compression=setting)
            try:
                writer.write_table(table)
            finally:
                writer.close()
        except MemoryError:  # an ArrowMemoryError too: not the setting's
            raise
        except (pa.ArrowException, ValueError, TypeError, AttributeError, OSError) as exc:
            if _errno(exc) is not None:
                raise
            raise ValueError(f"compression={self.compression!r}: Parquet cannot write it ({exc})") from exc

    def take_recovery(self) -> Recovery:
        """What the sink recovered since the last call (at its start: dead writers' journals; later: its own kept
        ones), for the metrics of the log it is given to (once: a second caller gets nothing, so that two logs
        sharing a sink do not count it twice)."""
        with self._lock:
            recovery, self.recovery = self.recovery, Recovery()
        return recovery

    def take_forced_rotations(self) -> int:
        """The files completed early (:attr:`forced_rotations`) since the last call, for the metrics of the log the
        sink is given to (once, as :meth:`take_recovery`: two logs sharing a sink do not count them twice)."""
        with self._lock:
            total = self.forced_rotations
            taken, self._forced_rotations_taken = total - self._forced_rotations_taken, total
        return taken

    def _renew_after_fork(self) -> None:
        # The open files are the parent's: it writes, closes and renames them. The child starts files of its own
        # (named by its pid) and lets go of its copies of the parent's without writing: a pyarrow writer that is
        # closed, or only collected, writes its footer at the file offset the child shares with the parent. Each
        # journal lets go of its own descriptor in the child (Journal.let_go), those being made at the fork included.
        # Each file's lock lets go of itself (OpenFileLock), as its journal does.
        self._lock = threading.RLock()  # a writer thread of the parent's may have held it: it is not in the child
        inherited, self._open = self._open, {}
        self.completed, self.recovered, self.recovery = [], [], Recovery()
        self._kept = {}  # the parent's to retry
        self.forced_rotations = self._forced_rotations_taken = 0
        for f in inherited.values():
            _let_go(f.writer)
        # A gunicorn --preload worker (forked from the master, which made the sink at import) starts no sink of its
        # own: a worker killed mid-write (SIGKILL, the OOM killer, gunicorn's timeout) left its journal to a sink
        # that starts on the directory, and none did until the next deployment. The worker forked in its place
        # recovers it, on its writer thread, not here (a child that execs at once must not scan the directory).
        self._recover_pending = journals.AVAILABLE

    # --- PredictionSink -----------------------------------------------------------------------------------
    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            self._recover_after_fork()
            self._write(rows)

    def _recover_after_fork(self) -> None:
        if self._recover_pending:
            self._recover_pending = False
            self._recover_all()

    def _write(self, rows: Sequence[dict[str, Any]]) -> None:
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        tally = _Tally()
        for row in rows:
            try:
                key = (str(row["model"]), hour_key(float(row["timestamp"])))
            except Exception as exc:  # no partition for this row: it fails alone (counted: not stored)
                tally.failed(exc)
                continue
            groups.setdefault(key, []).append(row)
        for key, group in groups.items():
            try:
                self._write_group(key, group, tally)
            except Exception as exc:  # the other partitions' files may still work (EIO on one file)
                tally.failed(exc)
        for f in self._open.values():
            f.earlier = f.rows
        tally.raise_if_failed(len(rows) - tally.stored, batch=True)

    def flush(self) -> None:
        """Rotate the files that are ``max_file_seconds`` old or whose hour is over; try again the journals kept
        :data:`KEPT_RETRY_SECONDS` ago or more."""
        with self._lock:
            self._recover_after_fork()
            self._flush()

    def _flush(self) -> None:
        now, current_hour = time.monotonic(), hour_key(time.time())
        try:
            self._rotate_all([key for key, f in self._open.items()
                              if now - f.opened >= self.max_file_seconds or key[1] < current_hour])
        finally:
            self._retry_kept(_monotonic())

    def close(self) -> None:
        with self._lock:
            try:
                self._rotate_all(list(self._open))
            finally:
                self._retry_kept(None)

    @property
    def kept_journals(self) -> list[Path]:
        """The journals of this sink's files that failed, whose rows wait for a retry (or a sink's start)."""
        return list(self._kept)

    def _retry_kept(self, now: float | None) -> None:
        """Make the journals this sink kept, those due at ``now`` (``None``: all), into files, as a sink's start
        would. Never raises: one that fails again (the disk still full) waits :data:`KEPT_RETRY_SECONDS` more."""
        for path, due in list(self._kept.items()):
            if now is not None and now < due:
                continue
            try:
                self._recover(path, JOURNAL_SUFFIX)  # gone already (another sink's start took it): nothing to do
            except Exception as exc:
                self._kept[path] = _monotonic() + KEPT_RETRY_SECONDS
                warn_rate_limited("parquet_sink.kept_retry", "aiwatch: prediction log journal %s still cannot be "
                                  "made into a file (%r): tried again in %.0f s", path, exc, KEPT_RETRY_SECONDS)
                continue
            if os.path.lexists(path):  # locked: another process's sink is recovering it, and may fail to
                self._kept[path] = _monotonic() + KEPT_RETRY_SECONDS
                continue
            del self._kept[path]

    # --- files --------------------------------------------------------------------------------------------
    def _write_group(self, key: tuple[str, str], rows: list[dict[str, Any]], tally: _Tally) -> None:
        f = self._open.pop(key, None)
        if f is not None:  # the most recently written last: the cap on open files completes the first
            self._open[key] = f
        while rows:
            f = self._open.get(key)
            room = self.max_rows - f.rows if f is not None else self.max_rows
            part, rows = rows[:room], rows[room:]
            table = self._fitting_table(part, f.schema if f is not None else None, tally)
            if table is None:
                continue
            if f is not None and not table.schema.equals(f.schema):  # a new field, or a type that changed
                self._tell_types_changed(f.schema, table.schema)
                self._rotate(key, tally)
                f = None
            if f is None:
                f = self._start(key, table.schema, tally)
            try:
                f.writer.write_table(table)
            except Exception as exc:
                self._discard(key, tally, exc)
                raise
            f.rows += table.num_rows
            tally.stored += table.num_rows
            if f.rows >= self.max_rows or not self._journaled(f, table, tally):  # a full file needs no journal
                self._rotate(key, tally)

    @staticmethod
    def _journaled(f: _OpenFile, table: Any, tally: _Tally) -> bool:
        """Append ``table`` to the file's journal; ``False`` when that failed (counted in ``tally``): the journal is
        torn, so the file is to be completed now, which makes its rows durable without it."""
        if f.journal is None:
            return True
        try:
            f.journal.append(table)
        except Exception as exc:
            tally.journal_failed(exc, f"the journal {f.journal.path} could not be appended to")
            return False
        f.journaled += table.num_rows
        return True

    def _fitting_table(self, rows: list[dict[str, Any]], known: Any, tally: _Tally) -> Any:
        """The rows as a table (:meth:`_table`); when that fails, of those rows alone that fit their columns (a
        row of another writer's with an int ``request_id``): each row that does not fails alone, counted in
        ``tally`` as not stored. ``None`` when no row fits."""
        try:
            return self._table(rows, known)
        except Exception:
            pass
        names = self._names(rows, known)
        failing = [name for name in names if not self._builds(rows, known, name)]
        fitting: list[dict[str, Any]] = []
        self._keep_fitting(rows, known, tally, fitting, failing or names)  # none alone: the table as a whole
        return self._table(fitting, known) if fitting else None

    def _builds(self, rows: list[dict[str, Any]], known: Any, name: str) -> bool:
        try:
            self._table(rows, known, (name,))
        except Exception:
            return False
        return True

    def _keep_fitting(self, rows: list[dict[str, Any]], known: Any, tally: _Tally, fitting: list[dict[str, Any]],
                      columns: Sequence[str]) -> None:
        """Append to ``fitting``, in order, the rows of a batch whose table failed that fit alone: each half whose
        ``columns`` (those that failed over the whole batch) build is kept whole and each that fails is split again,
        down to single rows. A table per row, over every column, took 16 s for 1000 rows of 200 columns with one
        bad row; halves over every column, 10 s for 1000 rows all bad."""
        half = len(rows) // 2
        for part in (rows[:half], rows[half:]):
            if not part:
                continue
            try:
                self._table(part, known, columns)
            except Exception as exc:
                if len(part) == 1:
                    tally.failed(exc)
                else:
                    self._keep_fitting(part, known, tally, fitting, columns)
            else:
                fitting.extend(part)

    @staticmethod
    def _names(rows: list[dict[str, Any]], known: Any) -> list[str]:
        """The columns of a table of ``rows``: the open file's, then the new ones in the order they come."""
        names: dict[str, None] = {}
        if known is not None:
            names.update((name, None) for name in known.names)
        for row in rows:
            names.update((name, None) for name in row if name != "model")
        return list(names)

    def _table(self, rows: list[dict[str, Any]], known: Any, columns: Sequence[str] | None = None) -> Any:
        """The rows as an Arrow table without ``model``: the open file's column types where they fit, new columns
        after them; a value that does not fit its column's type gives that column a freshly inferred type.
        ``columns``: only those (a check that they build)."""
        pa = self.pa
        arrays, fields = [], []
        for name in self._names(rows, known) if columns is None else columns:
            values = [row.get(name) for row in rows]
            array = None
            if known is not None and name in known.names and name not in _FIXED_TYPES:
                kind = known.field(name).type
                # pyarrow stores True as 1.0 in a float column: a bool would be a number in this file, and a bool or
                # text (in a batch of bools and numbers) in another
                if pa.types.is_floating(kind) and any(value.__class__ is bool for value in values):
                    kind = None
                try:
                    array = None if kind is None else pa.array(values, type=kind)
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
        for column in new:
            if column.name in old.names and not column.type.equals(old.field(column.name).type):
                self._tell_once(column.name, "aiwatch: prediction log column %r changed type from %s to %s between "
                                "batches: a new file is started, and aiwatch's readers of the log read the column as "
                                "text; logged once per column", column.name, old.field(column.name).type, column.type)

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

    def _start(self, key: tuple[str, str], schema: Any, tally: _Tally) -> _OpenFile:
        self._make_room(tally)
        model, hour = key
        folder = self.directory / f"model={quote(model, safe='')}" / f"hour={hour}"
        _make_folders(folder, self.dir_mode)
        try:
            final, temp, lock = self._new_name(folder, self.file_mode)
        except journals.Replaced:  # stopped between making and locking it, and taken for a dead writer's: again
            final, temp, lock = self._new_name(folder, self.file_mode)
        try:
            if lock is None:  # no flock: made here all the same, for its mode (pyarrow's would be 0o666)
                _make_file(temp, self.file_mode)
            writer = self.pq.ParquetWriter(str(temp), schema, compression=self.compression)
            if lock is not None and not lock.holds(temp):  # pyarrow made a file of its own there: nothing locks it
                _let_go(writer)
                raise journals.Replaced(f"{temp} was replaced as it was opened: not written")
        except Exception:  # it could not even write the file's header
            with suppress(OSError):
                temp.unlink(missing_ok=True)
            if lock is not None:
                lock.release()
            raise
        f = _OpenFile(writer, schema, temp, final, time.monotonic(), self._new_journal(final, schema, tally), lock)
        self._open[key] = f
        return f

    def _make_room(self, tally: _Tally) -> None:
        """Complete the least recently written files while ``max_open_files`` are open (a flood of model names kept
        3 descriptors per name open until rotation, and the host app's own ``open()`` then failed with EMFILE)."""
        while len(self._open) >= self.max_open_files:
            oldest = next(iter(self._open))
            self.forced_rotations += 1
            warn_rate_limited("parquet_sink.max_open_files", "aiwatch: prediction log has %d files open "
                              "(max_open_files): completing the least recently written one (%s) early; %d so far "
                              "(more models are written at once than that: raise max_open_files, or the process's "
                              "descriptor limit, ulimit -n)",
                              len(self._open), self._open[oldest].final, self.forced_rotations)
            with suppress(Exception):  # counted in the tally (its rows recoverable or lost); the new file is made
                self._rotate(oldest, tally)

    @staticmethod
    def _new_name(folder: Path, mode: int) -> tuple[Path, Path, OpenFileLock | None]:
        """A new file's final and temporary names, its temporary one made and locked before pyarrow writes a byte
        into it (raises :class:`~aiwatch.feedback.journal.Replaced` when it was removed before it was locked).

        A name taken already (its file, open file or journal there) is passed over for the next number: two
        processes of one pid (each container's pid 1 on one volume, or one restarted within the second it started
        a file, whose journal the restart recovered under that name) made the same name, and the second rename
        replaced the first one's finished file. Checked once the open file is made: its ``O_EXCL`` keeps out any
        writer whose open file is there, and a writer that renamed its file has made the final name by then."""
        for _ in range(_NAME_TRIES):
            name = f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{next(_SEQ):06d}.parquet"
            final, temp = folder / name, folder / f"{TEMP_PREFIX}{name}{TEMP_SUFFIX}"
            if not journals.AVAILABLE:
                if not os.path.lexists(final):
                    return final, temp, None
                continue
            try:
                lock = OpenFileLock(temp, mode)
            except FileExistsError:  # a live writer's open file (or a dead one's, left for recovery)
                continue
            if not (os.path.lexists(final) or os.path.lexists(journal_path(final))):
                return final, temp, lock
            with suppress(OSError):
                temp.unlink()
            lock.release()
        raise FileExistsError(f"no free file name in {folder} after {_NAME_TRIES} tries")

    def _new_journal(self, final: Path, schema: Any, tally: _Tally) -> Journal | None:
        """The journal of a new file; ``None``, counted in ``tally``, when it cannot be made (the file's rows then
        become durable when it rotates, as without a journal)."""
        if not self.journal:
            return None
        path = journal_path(final)
        try:
            return Journal(path, schema, fsync=self.journal_fsync, mode=self.file_mode)
        except Exception as exc:
            tally.journal_failed(exc, f"the journal {path} could not be made")
            return None

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
            self._publish(f.temp, f.final)
        except Exception as exc:
            self._remove(f, tally, exc)
            raise
        if f.journal is not None:  # only now: a crash before the rename is durable must still find the journal
            f.journal.remove()
        if f.lock is not None:
            f.lock.release()
        _keep_latest(self.completed, f.final)

    def _publish(self, temp: Path, final: Path) -> None:
        """Give a finished file its final name (synced first, and the rename after it, with ``fsync``)."""
        if self.fsync:
            fd = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(temp, final)
        if self.fsync:
            journals.sync_directory(final.parent)

    # --- recovery -----------------------------------------------------------------------------------------
    def _recover_all(self) -> None:
        """Turn the journals of dead writers under the directory into finished files (with ``journal``), remove
        those they left under their temporary name, then remove the open files of dead writers that have no journal
        (orphans: no footer, no reader can read them). Never raises: a file that cannot be dealt with is logged,
        counted ``failed`` and left for the next sink."""
        try:  # one walk of every hour's folder (a year of them per model, on a long-lived directory)
            found = sorted(self.directory.glob(f"model=*/hour=*/{TEMP_PREFIX}part-*.parquet.*"))
        except OSError as exc:
            _log.warning("aiwatch: prediction log files under %s could not be listed: %r", self.directory, exc)
            return
        if self.journal:
            for path in found:
                if JOURNAL_SUFFIX not in path.name:
                    continue
                suffix = path.name[path.name.rindex(JOURNAL_SUFFIX):]
                if suffix not in (JOURNAL_SUFFIX, JOURNAL_SUFFIX + NEW_SUFFIX):  # one set aside, or foreign
                    continue
                try:
                    self._recover(path, suffix)
                except Exception as exc:
                    self.recovery.files["failed"] += 1
                    # the disk's (an errno): no traceback; anything else (memory short, a bug): it says where
                    _log.warning("aiwatch: prediction log journal %s could not be recovered (left for the next "
                                 "sink): %r", path, exc, exc_info=None if _errno(exc) is not None else exc)
        # after the journals: the open files they were for are gone now, rebuilt or removed
        removed: list[tuple[Path, int]] = []
        for path in found:
            size = self._remove_orphan(path) if path.name.endswith(TEMP_SUFFIX) else None
            if size is not None:
                removed.append((path, size))
        self._tell_orphans(removed)

    def _remove_orphan(self, path: Path) -> int | None:
        """Remove ``path``, an open file, when its writer is gone and it has no journal; its size, else ``None``.

        One with a journal (under either name) is the journal recovery's: a recoverer (this sink, or another
        starting at once) rebuilds the file under that name, holding no lock on it, and removes the journal only
        after the file is renamed into view. A writer locks its file before pyarrow writes into it and until it
        is renamed or removed, so an empty one is left alone (its writer may be about to lock it)."""
        journal = path.with_name(path.name[:-len(TEMP_SUFFIX)] + JOURNAL_SUFFIX)
        try:
            if journal.exists() or journal.with_name(journal.name + NEW_SUFFIX).exists():
                return None
            fd = journals.claim(path, begun=True)
            if fd is None:  # its writer is alive, or has just renamed or removed it
                return None
            try:
                size = os.fstat(fd).st_size
                path.unlink()
            finally:
                os.close(fd)  # only now: the file is gone
        except Exception as exc:
            self.recovery.files["failed"] += 1
            _log.warning("aiwatch: prediction log file %s of a writer that died could not be removed (left for the "
                         "next sink): %r", path, exc)
            return None
        self.recovery.files["orphan_removed"] += 1
        return size

    @staticmethod
    def _tell_orphans(removed: list[tuple[Path, int]]) -> None:
        for path, size in removed[:_MAX_ORPHANS_TOLD]:
            _log.warning("aiwatch: prediction log file %s (%d bytes) of a writer that died without a journal "
                         "removed: it had no footer, so no reader could read its rows, lost with the writer",
                         path, size)
        if len(removed) > _MAX_ORPHANS_TOLD:
            rest = removed[_MAX_ORPHANS_TOLD:]
            _log.warning("aiwatch: %d more prediction log files (%d bytes) of writers that died without a journal "
                         "removed", len(rest), sum(size for _, size in rest))

    def _recover(self, path: Path, suffix: str) -> None:
        """Recover the journal ``path`` (named ``.<file name><suffix>``) when its writer is gone. One under its
        temporary name holds no rows (a batch is appended only after the rename): it and its file are removed."""
        unnamed = suffix != JOURNAL_SUFFIX
        fd = journals.claim(path, begun=unnamed)
        if fd is None:  # its writer is alive, or has just completed its file
            return
        try:
            name = path.name[len(TEMP_PREFIX):-len(suffix)]
            final, temp = path.with_name(name), path.with_name(f"{TEMP_PREFIX}{name}{TEMP_SUFFIX}")
            if unnamed and not os.fstat(fd).st_size:  # claimed empty: past the grace, a writer dead before locking
                self._remove_empty_journal(path, temp)
                return
            # a file that exists: its writer died after completing it, before removing the journal
            if not unnamed and not final.exists():
                try:
                    damage = self._rebuild(fd, temp, final, path)
                except Exception as exc:
                    if not self._refused(exc):  # the disk, memory, a bug: not the journal, a later try may succeed
                        with suppress(OSError):  # what it wrote, while the journal is still locked (no one else's)
                            temp.unlink()
                        raise
                    self._set_aside(path, temp, f"cannot be made into a Parquet file ({exc!r})")
                    return
                if damage:
                    self._set_aside(path, temp, damage)
                    return
            with suppress(FileNotFoundError):
                temp.unlink()
            path.unlink()
        finally:
            os.close(fd)  # only now: the journal is gone

    def _remove_empty_journal(self, path: Path, temp: Path) -> None:
        """Remove an empty journal under its temporary name whose writer died before locking it, with its open file.
        The journal's lock proves nothing (it was never taken), so the open file's must: its writer locked it
        before making the journal, and holds it while it lives."""
        held = os.path.lexists(temp)
        fd = journals.claim(temp, begun=True) if held else None
        if held and fd is None:  # its writer is alive (or it is no writer's file: left alone)
            return
        try:
            with suppress(FileNotFoundError):
                temp.unlink()
            path.unlink()
        finally:
            if fd is not None:
                os.close(fd)
        self.recovery.files["orphan_removed"] += 1
        _log.warning("aiwatch: prediction log journal %s, empty, of a writer that died before locking it removed "
                     "(with its open file: no rows)", path)

    def _refused(self, exc: Exception) -> bool:
        """Whether ``exc``, raised rebuilding a journal, is Arrow or Parquet refusing its data (a type Parquet
        cannot store, a value past a size limit): the same at every try, so the journal is set aside. Parquet's own
        refusals are OSErrors without an errno (``Invalid FIXED_LEN_BYTE_ARRAY length: 0``), the disk's have one
        (as :class:`~aiwatch.feedback.journal.Reader` tells them apart); the sink's compression, which Parquet could
        refuse the same way, was checked when it was made. Anything else (an I/O error, memory short, an error
        inside aiwatch or pyarrow) says nothing of the journal: it is left under its name, counted ``failed``, for
        the next try (an ArrowMemoryError is a MemoryError: not a refusal)."""
        pa = self.pa
        refusals = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, pa.ArrowCapacityError)
        return isinstance(exc, refusals) or (isinstance(exc, OSError) and exc.errno is None)

    def _set_aside(self, path: Path, temp: Path, why: str) -> None:
        """Keep a journal whose data Parquet refuses, or that is damaged (not torn), under a name recovery does not
        look for (for a person to look at), rather than delete it or read it and log it again at every start."""
        aside = path.with_name(path.name + UNRECOVERABLE_SUFFIX)
        with suppress(FileNotFoundError):
            temp.unlink()  # first: while the journal has its name, a sink starting at once leaves the file to it
        os.replace(path, aside)
        self.recovery.files["set_aside"] += 1
        _log.warning("aiwatch: prediction log journal %s of a writer that died %s: kept as %s, not tried again",
                     path, why, aside)

    def _rebuild(self, fd: int, temp: Path, final: Path, path: Path) -> str:
        """Write the whole batches of a dead writer's journal (claimed, ``fd``) as the file it was writing (under its
        name), streamed: batches are read and written in turn, at most :data:`_REBUILD_BYTES` of data or
        :data:`_REBUILD_BATCHES` batches held at once, so a journal of any size is rebuilt without holding it.
        Returns why the journal is to be set aside (a batch in it that is not valid: damage, not a torn end, with
        whole batches perhaps after it), else ``""``."""
        journal = journals.Reader(fd, self.pa)
        writer = None
        try:
            held: list[Any] = []
            size = 0  # of ``held``, kept as it grows: a journal of many small batches stays linear
            for batch in journal:
                if not batch.num_rows:  # nothing to store (a writer never appends one): not held
                    continue
                held.append(batch)
                size += batch.nbytes
                if size >= _REBUILD_BYTES or len(held) >= _REBUILD_BATCHES:
                    writer = self._rebuild_part(writer, temp, journal.schema, held)
                    held, size = [], 0
            if held:
                writer = self._rebuild_part(writer, temp, journal.schema, held)
        finally:
            if writer is not None:
                writer.close()
        if journal.torn_bytes and not journal.invalid:
            _log.warning("aiwatch: prediction log journal %s of a writer that died ends in a torn batch (%d bytes, "
                         "being written when it died): dropped; %d rows of %d whole batches recovered", path,
                         journal.torn_bytes, journal.rows, journal.batches)
        elif journal.schema is None and not journal.invalid:  # empty: its schema never reached the disk
            _log.warning("aiwatch: prediction log journal %s of a writer that died is empty (what was written to it "
                         "never reached the disk: a power cut before it was synced?): its rows are lost", path)
        if journal.rows:
            self._publish(temp, final)
            _keep_latest(self.recovered, final)
            self.recovery.records += journal.rows
            _log.info("aiwatch: prediction log: %d rows of a writer that died recovered from its journal into %s",
                      journal.rows, final)
        # counted once the file is made: a failure to make it is counted failed instead
        if journal.invalid:  # set aside by the caller, and counted there
            self.torn_batches += 1
            return (f"holds a batch that is not valid ({journal.invalid}), damage rather than a torn end: "
                    f"{journal.rows} rows of the {journal.batches} whole batches before it recovered"
                    + (f" into {final}" if journal.rows else "") + f", {journal.torn_bytes} bytes from it on not read")
        if journal.torn_bytes or journal.schema is None:
            self.torn_batches += 1
            self.recovery.files["torn"] += 1
        elif journal.rows:
            self.recovery.files["recovered"] += 1
        return ""

    def _rebuild_part(self, writer: Any, temp: Path, schema: Any, batches: list[Any]) -> Any:
        """Write ``batches`` (one row group, or more past pyarrow's row group size) to the file being rebuilt, made
        at the first of them (no file for a journal without a whole batch). A writer made here whose first write
        raises is closed here: the caller never gets it, and its descriptor (of a file the caller removes) would live
        on with the traceback, which a log handler may keep."""
        if writer is not None:
            writer.write_table(self.pa.Table.from_batches(batches, schema=schema))
            return writer
        _make_file(temp, self.file_mode)  # the dead writer's open file keeps the mode it has
        made = self.pq.ParquetWriter(str(temp), schema, compression=self.compression)
        try:
            made.write_table(self.pa.Table.from_batches(batches, schema=schema))
        except BaseException:
            with suppress(Exception):
                made.close()
            raise
        return made

    def _discard(self, key: tuple[str, str], tally: _Tally, exc: Exception) -> None:
        """Remove the file of a writer whose write failed: the writer is done for (every later write: "Operation on
        closed file"), and its file has no footer (closing the writer may still write one, over data not all there)."""
        self._remove(self._open.pop(key), tally, exc)

    def _remove(self, f: _OpenFile, tally: _Tally, exc: Exception) -> None:
        """Remove a file that failed. Its journal, when it holds rows, is kept (unlocked) for this sink to retry
        (:meth:`_retry_kept`) and for the next sink that starts on the directory: those rows are counted
        ``recoverable``, not lost."""
        for _ in range(2):  # a close that raised keeps the file open; pyarrow's next close releases it
            with suppress(Exception):
                f.writer.close()
        with suppress(OSError):
            f.temp.unlink(missing_ok=True)
        if f.lock is not None:  # after the unlink; a file left by one that failed is then an orphan to remove
            f.lock.release()
        kept = f.journaled if f.journal is not None else 0
        if f.journal is not None:
            if kept:  # after the file's unlink: a recoverer that takes it now rebuilds the file under that name
                f.journal.let_go()
                self._kept[f.journal.path] = _monotonic() + KEPT_RETRY_SECONDS
                warn_rate_limited("parquet_sink.kept", "aiwatch: prediction log file %s could not be completed "
                                  "(%r): its journal %s (%d rows) is kept, to be made into a file in %.0f s, at "
                                  "close, or by the next sink that starts on the directory", f.final, exc,
                                  f.journal.path, kept, KEPT_RETRY_SECONDS)
            else:
                f.journal.remove()
        tally.file_failed(f, exc, kept)


def _errno(exc: BaseException) -> int | None:
    """The errno of an OSError (the disk's, the system's); ``None`` for anything else, or an OSError without one."""
    return exc.errno if isinstance(exc, OSError) else None


def _mode(mode: int, name: str, needed: int) -> int:
    """``mode`` checked: permission bits that keep ``needed`` (the sink's own access), else a ``ValueError``."""
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777 or mode & needed != needed:
        shown = oct(mode) if isinstance(mode, int) and not isinstance(mode, bool) else repr(mode)
        raise ValueError(f"{name} must be permission bits from {oct(needed)} to 0o777 that include {oct(needed)} "
                         f"(the sink reads and writes what it makes), got {shown}")
    return mode


def _check_directory(directory: Path) -> Path:
    """``directory``, or a ValueError naming it when it, or the nearest of its parents that exists, is no directory:
    every batch then failed to make its folder (``File exists``, ``Not a directory``), and its rows were lost, from
    the first batch on. One that does not exist yet is made at the first write (a volume mounted later)."""
    for path in (directory, *directory.parents):
        try:
            path.stat()  # a path under a file: ENOTDIR, its parent is looked at next
        except OSError:
            continue
        if not path.is_dir():
            where = "is" if path == directory else f"is under {str(path)!r}, which is"
            raise ValueError(f"the prediction log's directory {str(directory)!r} {where} a file, not a directory: "
                             "no row could be written there")
        break
    return directory


def _make_folders(folder: Path, mode: int) -> None:
    """Make ``folder`` and each missing directory above it with ``mode`` (less the umask): ``Path.mkdir`` gives
    the ones above the default mode."""
    missing: list[Path] = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode)
        except FileExistsError:  # another sink or process made it meanwhile (a file there: the error stands)
            if not path.is_dir():
                raise


def _make_file(path: Path, mode: int) -> None:
    """Make ``path`` empty with ``mode`` (less the umask) unless it exists, for pyarrow to open by its name."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, mode))


def journal_path(final: Path) -> Path:
    """The journal of the file that will be ``final``: ``.part-....parquet.journal`` (hidden, like the open file)."""
    return final.with_name(f"{TEMP_PREFIX}{final.name}{JOURNAL_SUFFIX}")


def _let_go(writer: Any) -> None:
    """Close a forked child's copy of a writer's file descriptor, and nothing else: no footer is written (its
    ``__del__`` closes only an open writer; the C++ writer's own close then fails on the closed file, unseen)."""
    writer.is_open = False
    handle = getattr(writer, "file_handle", None)
    if handle is not None:
        with suppress(Exception):
            handle.close()
