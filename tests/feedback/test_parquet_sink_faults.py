"""ParquetSink when a write fails (the disk is full: ENOSPC; or EIO) and then works again: the file being written is
discarded, never renamed into view half-written; its journal, holding the rows written to it before, is kept for the
next sink that starts to recover; its rows and the batch's are counted; the files rotated before stay intact; the next
batch starts a new file by itself.

Two kinds of fault. A real one: a 256 KiB tmpfs, filled and then freed (mounting needs root). And one injected into
the stream pyarrow writes to (no root needed), which pyarrow treats as it treats a failed write(2): the writer is done
for (every later write: "Operation on closed file")."""

from __future__ import annotations

import errno
import gc
import io
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from aiwatch import safety
from aiwatch.cli import main
from aiwatch.drift.datasets import open_dataset
from aiwatch.feedback import ParquetSink, PredictionLog, RowsLost, parquet_sink
from aiwatch.feedback import journal as journals
from tests.disks import tmpfs
from tests.feedback.test_parquet_sink import T0, row
from tests.feedback.test_parquet_sink_recovery import LAST_COUNTED, unstorable_journal


class Disk:
    """What the injected streams write to: while ``full``, every write raises ``OSError(error)``; ``fail_next``
    fails that many writes, then writing works again."""

    def __init__(self) -> None:
        self.full = False
        self.fail_next = 0
        self.error = errno.ENOSPC
        self.streams: list[_Stream] = []


class _Stream(io.RawIOBase):
    def __init__(self, path: str, disk: Disk) -> None:
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 (closed by the fixture: pyarrow never closes it)
        self._disk = disk

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self._disk.full or self._disk.fail_next:
            self._disk.fail_next = max(0, self._disk.fail_next - 1)
            raise OSError(self._disk.error, os.strerror(self._disk.error))
        view = memoryview(data)
        while view:
            view = view[self._file.write(view):]
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    """Every ParquetWriter the sink opens writes through a :class:`_Stream` on the file it names."""
    disk = Disk()
    real = pq.ParquetWriter

    def writer(where: Any, schema: Any, **kwargs: Any) -> Any:
        if not isinstance(where, str):  # the sink's check of its compression, in memory
            return real(where, schema, **kwargs)
        stream = _Stream(where, disk)
        disk.streams.append(stream)
        return real(stream, schema, **kwargs)

    monkeypatch.setattr(pq, "ParquetWriter", writer)
    yield disk
    # the writers only the garbage collector frees (reference cycles) go first, while their streams are open.
    # Collected after, each found its stream closed ("I/O operation on closed file"), and pyarrow formatted that
    # ValueError's traceback (an ast.parse in Python 3.11) wherever the collection happened: inside pytest's
    # ast.parse of a module imported late (hypothesis' flatmapped, in test_prediction_log), CPython 3.11.7's AST
    # converter, which is not reentrant, raised "SystemError: AST constructor recursion depth mismatch"
    gc.collect()
    for stream in disk.streams:
        stream.close()


@pytest.fixture
def quiet_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh burst log that stays quiet for an hour after its first warning: what one streak logs is countable."""
    monkeypatch.setattr(safety, "_burst", safety._BurstLog(burst_seconds=3600))


def files(root: Path) -> tuple[list[str], list[str]]:
    """The names of the visible ``.parquet`` files and of the hidden ones under ``root``."""
    every = [p for p in root.rglob("*") if p.is_file()]
    return (sorted(p.name for p in every if p.suffix == ".parquet" and not p.name.startswith(".")),
            sorted(p.name for p in every if p.name.startswith(".")))


def unreadable(root: Path) -> list[str]:
    bad = []
    for path in root.rglob("*.parquet"):
        try:
            pq.read_table(path)
        except Exception:
            bad.append(path.name)
    return bad


def values(root: Path) -> list[float]:
    return sorted(open_dataset(root).to_table(columns=["basket_value"]).column("basket_value").to_pylist())


def rows(start: int, stop: int) -> list[dict[str, object]]:
    return [row(i) for i in range(start, stop)]


def records(registry: CollectorRegistry, result: str) -> float:
    return registry.get_sample_value("aiwatch_prediction_log_records_total",
                                     {"log": "predictions", "result": result}) or 0.0


# --- injected faults: the sink ------------------------------------------------------------------------------------
def hidden_kinds(root: Path) -> list[str]:
    """The kinds of the hidden files under ``root`` (``journal``, ``inprogress``, ...), one per file, sorted."""
    return sorted(name.rsplit(".", 1)[1] for name in files(root)[1])


def sink_whose_second_write_failed(folder: Path, disk: Disk, *, journal: bool = True) -> ParquetSink:
    """A sink that wrote rows 0-2 to a file, then failed to write rows 3-4 to it (the disk full, and left so)."""
    sink = ParquetSink(folder, journal=journal)
    sink.write(rows(0, 3))
    disk.full = True
    with pytest.raises(RowsLost):
        sink.write(rows(3, 5))
    return sink


def test_after_a_failed_write_the_next_batch_goes_to_a_new_file(tmp_path: Path, disk: Disk) -> None:
    sink = sink_whose_second_write_failed(tmp_path, disk)
    disk.full = False
    sink.write(rows(5, 9))
    sink.close()
    assert [pq.read_table(p).column("basket_value").to_pylist() for p in sink.completed] == [[5, 6, 7, 8]]
    # the failed file's rows written before its failure, from its journal, at close
    assert [pq.read_table(p).column("basket_value").to_pylist() for p in sink.recovered] == [[0, 1, 2]]


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("journal", [True, False])
def test_a_file_whose_write_failed_is_removed_at_once_and_its_journal_kept(tmp_path: Path, disk: Disk, error: int,
                                                                          journal: bool) -> None:
    disk.error = error
    sink_whose_second_write_failed(tmp_path, disk, journal=journal)
    assert files(tmp_path)[0] == [] and hidden_kinds(tmp_path) == (["journal"] if journal else [])


def test_a_file_whose_write_failed_is_never_renamed_into_view(tmp_path: Path, disk: Disk) -> None:
    sink = sink_whose_second_write_failed(tmp_path, disk)
    assert files(tmp_path)[0] == [] and hidden_kinds(tmp_path) == ["journal"]
    disk.full = False
    sink.close()
    # what reaches view is the file rebuilt from its journal (the rows before the failed write), nothing half-written
    assert values(tmp_path) == [0.0, 1.0, 2.0] and unreadable(tmp_path) == [] and files(tmp_path)[1] == []


@pytest.mark.parametrize("where", ["write", "footer"])
def test_the_rows_of_a_file_that_failed_are_kept_in_its_journal_and_recovered_by_the_next_sink(
        tmp_path: Path, disk: Disk, where: str) -> None:
    sink = ParquetSink(tmp_path)
    sink.write(rows(0, 3))
    disk.full = True
    with pytest.raises(RowsLost) as lost:
        if where == "write":
            sink.write(rows(3, 5))
        else:
            sink.close()  # the footer; the sink still writes after it
    assert (lost.value.failed, lost.value.lost, lost.value.recoverable) == ((2 if where == "write" else 0), 0, 3)
    disk.full = False
    sink.write(rows(5, 7))  # the writer goes on, into a new file
    # another sink starting on the directory (a worker, a restart) before this one retries: the journal is unlocked
    again = ParquetSink(tmp_path)
    assert (again.recovery.records, again.recovery.files["recovered"]) == (3, 1)
    assert values(tmp_path) == [0.0, 1.0, 2.0]
    sink.close()  # its retry finds the journal gone: nothing made twice, nothing counted
    assert sink.take_recovery().records == 0 and sink.kept_journals == []
    assert values(tmp_path) == [0.0, 1.0, 2.0, 5.0, 6.0]
    assert files(tmp_path)[1] == [] and unreadable(tmp_path) == []


def test_a_file_that_cannot_start_leaves_nothing_behind(tmp_path: Path, disk: Disk) -> None:
    sink = ParquetSink(tmp_path)
    disk.full = True
    for start in range(0, 6, 2):
        with pytest.raises(RowsLost):
            sink.write(rows(start, start + 2))
    assert files(tmp_path) == ([], [])


@pytest.mark.parametrize("journal", [True, False])
def test_a_footer_that_cannot_be_written_counts_that_files_rows(tmp_path: Path, disk: Disk, journal: bool) -> None:
    sink = ParquetSink(tmp_path, journal=journal)
    sink.write(rows(0, 3))
    disk.full = True
    with pytest.raises(RowsLost) as lost:
        sink.close()
    assert (lost.value.failed, lost.value.lost, lost.value.recoverable) == ((0, 0, 3) if journal else (0, 3, 0))
    assert files(tmp_path)[0] == [] and hidden_kinds(tmp_path) == (["journal"] if journal else [])


@pytest.mark.parametrize("journal", [True, False])
def test_a_failed_write_counts_the_batch_failed_and_the_open_file_recoverable_or_lost(tmp_path: Path, disk: Disk,
                                                                                      journal: bool) -> None:
    sink = ParquetSink(tmp_path, max_rows=4, journal=journal)
    sink.write(rows(0, 6))  # one file of 4 rotated, 2 rows open
    disk.full = True
    with pytest.raises(RowsLost) as lost:
        sink.write(rows(6, 9))
    assert (lost.value.failed, lost.value.lost, lost.value.recoverable) == ((3, 0, 2) if journal else (3, 2, 0))


def test_a_batch_that_fails_in_one_partition_is_kept_in_the_others(tmp_path: Path, disk: Disk) -> None:
    sink = ParquetSink(tmp_path)
    disk.fail_next = 1  # the first file's first write: EIO on one file, the next one works
    disk.error = errno.EIO
    with pytest.raises(RowsLost) as lost:
        sink.write([row(1, model="a"), row(2, model="a"), row(3, model="b")])
    assert (lost.value.failed, lost.value.lost) == (2, 0)
    sink.close()
    assert values(tmp_path) == [3.0]


def test_close_completes_every_other_file_when_one_footer_fails(tmp_path: Path, disk: Disk) -> None:
    sink = ParquetSink(tmp_path)
    sink.write([row(1, model="a"), row(2, model="b"), row(3, model="c")])
    disk.fail_next = 1  # the first footer
    with pytest.raises(RowsLost):
        sink.close()
    assert [pq.read_table(p).column("basket_value").to_pylist() for p in sink.completed] == [[2], [3]]
    # and the one whose footer failed, from its journal, by close's retry (the disk works again)
    assert [pq.read_table(p).column("basket_value").to_pylist() for p in sink.recovered] == [[1]]
    assert values(tmp_path) == [1.0, 2.0, 3.0] and files(tmp_path)[1] == []


def test_files_rotated_before_the_fault_stay_complete(tmp_path: Path, disk: Disk) -> None:
    sink = ParquetSink(tmp_path, max_rows=3)
    sink.write(rows(0, 7))  # two files rotated, one row open
    rotated = list(sink.completed)
    disk.full = True
    for start in (7, 9):
        with pytest.raises(RowsLost):
            sink.write(rows(start, start + 2))
    disk.full = False
    sink.close()
    assert [pq.read_table(p).column("basket_value").to_pylist() for p in rotated] == [[0, 1, 2], [3, 4, 5]]


def log_and_flush(log: PredictionLog, numbers: Iterable[int]) -> None:
    """Log one record per number (its ``basket_value``) at T0, and wait until the writer has handed them over."""
    for i in numbers:
        log.log("ranker", {"basket_value": i}, timestamp=T0)
    assert log.flush()


# --- injected faults: through the log -----------------------------------------------------------------------------
def test_the_log_counts_a_disk_full_episode_and_resumes_by_itself(tmp_path: Path, disk: Disk,
                                                                  registry: CollectorRegistry) -> None:
    log = PredictionLog(ParquetSink(tmp_path), registry=registry, flush_seconds=3600)
    try:
        log_and_flush(log, range(5))
        disk.full = True
        log_and_flush(log, range(5, 8))
        disk.full = False
        log_and_flush(log, range(8, 12))
    finally:
        log.close()
    assert [records(registry, result) for result in ("written", "failed", "lost", "recoverable")] == [9, 3, 0, 5]
    # the failed file's 5 rows, kept in its journal, made into a file by the log's close (the disk has room)
    assert values(tmp_path) == [0.0, 1.0, 2.0, 3.0, 4.0, 8.0, 9.0, 10.0, 11.0]
    assert registry.get_sample_value("aiwatch_prediction_log_recovered_records_total", {"log": "predictions"}) == 5
    again = CollectorRegistry()
    PredictionLog(ParquetSink(tmp_path), registry=again, name="again").close()
    assert again.get_sample_value("aiwatch_prediction_log_recovered_records_total", {"log": "again"}) == 0


def test_a_footer_that_fails_at_close_is_counted_lost_by_the_log(tmp_path: Path, disk: Disk,
                                                                 registry: CollectorRegistry) -> None:
    with PredictionLog(ParquetSink(tmp_path), registry=registry, flush_seconds=3600) as log:
        log_and_flush(log, range(4))
        disk.full = True
    assert [records(registry, result) for result in ("written", "lost", "recoverable")] == [4, 0, 4]
    assert files(tmp_path)[0] == [] and hidden_kinds(tmp_path) == ["journal"]


# --- a running sink retries its kept journals ----------------------------------------------------------------------
@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The kept journals' clock, moved by hand: ``clock[0]`` is now."""
    now = [1000.0]
    monkeypatch.setattr(parquet_sink, "_monotonic", lambda: now[0])
    return now


def test_a_running_sink_makes_its_kept_journal_into_a_file_once_the_retry_is_due(tmp_path: Path, disk: Disk,
                                                                                 clock: list[float]) -> None:
    sink = sink_whose_second_write_failed(tmp_path, disk)  # rows 0-2 in the journal of the file that failed
    [kept] = sink.kept_journals
    disk.full = False
    sink.write(rows(5, 7))
    clock[0] += parquet_sink.KEPT_RETRY_SECONDS - 1
    sink.flush()  # rotates the file of rows 5-6 (its hour, T0's, is over); the retry is not due yet
    assert sink.kept_journals == [kept] and kept.exists() and values(tmp_path) == [5.0, 6.0]
    clock[0] += 1
    sink.flush()
    assert sink.kept_journals == [] and not kept.exists()
    assert values(tmp_path) == [0.0, 1.0, 2.0, 5.0, 6.0] and unreadable(tmp_path) == []
    recovery = sink.take_recovery()
    assert (recovery.records, recovery.files["recovered"]) == (3, 1)
    sink.close()
    assert values(tmp_path) == [0.0, 1.0, 2.0, 5.0, 6.0] and files(tmp_path)[1] == []
    assert sink.take_recovery().records == 0  # made and counted once


def test_a_retry_while_the_disk_is_still_full_keeps_the_journal_and_waits_again(
        tmp_path: Path, disk: Disk, clock: list[float], quiet_burst: None, caplog: pytest.LogCaptureFixture) -> None:
    sink = sink_whose_second_write_failed(tmp_path, disk)  # the disk stays full
    [kept] = sink.kept_journals
    clock[0] += parquet_sink.KEPT_RETRY_SECONDS
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        sink.flush()  # never raises for a retry
    assert sink.kept_journals == [kept] and hidden_kinds(tmp_path) == ["journal"]  # what the rebuild wrote is gone
    assert any("still cannot be made into a file" in r.getMessage() for r in caplog.records)
    disk.full = False
    clock[0] += parquet_sink.KEPT_RETRY_SECONDS - 1  # counted from the failed retry
    sink.flush()
    assert sink.kept_journals == [kept] and files(tmp_path)[0] == []
    clock[0] += 1
    sink.flush()
    assert sink.kept_journals == [] and values(tmp_path) == [0.0, 1.0, 2.0] and files(tmp_path)[1] == []
    assert sink.take_recovery().files["failed"] == 0  # a running sink's failed retry is logged, not counted


@pytest.mark.parametrize("fault", [MemoryError("out of memory"), RuntimeError("a bug in the rebuild")],
                         ids=lambda e: type(e).__name__)
def test_a_retry_that_fails_for_any_reason_but_its_data_keeps_the_journal_unchanged_to_try_again(
        tmp_path: Path, disk: Disk, clock: list[float], monkeypatch: pytest.MonkeyPatch, fault: Exception) -> None:
    """Not set aside for a person: the rows come back once the retry works."""
    sink = sink_whose_second_write_failed(tmp_path, disk)
    [kept] = sink.kept_journals
    before = kept.read_bytes()
    disk.full = False
    failing = [True]
    real = ParquetSink._rebuild_part

    def rebuild_part(self: ParquetSink, writer: Any, temp: Path, schema: Any, batches: list[Any]) -> Any:
        if failing[0]:
            raise fault
        return real(self, writer, temp, schema, batches)

    monkeypatch.setattr(ParquetSink, "_rebuild_part", rebuild_part)
    clock[0] += parquet_sink.KEPT_RETRY_SECONDS
    sink.flush()  # never raises for a retry
    assert sink.kept_journals == [kept] and kept.read_bytes() == before and hidden_kinds(tmp_path) == ["journal"]
    recovery = sink.take_recovery()
    assert (recovery.files["set_aside"], recovery.files["recovered"]) == (0, 0)
    failing[0] = False
    clock[0] += parquet_sink.KEPT_RETRY_SECONDS
    sink.flush()
    assert sink.kept_journals == [] and values(tmp_path) == [0.0, 1.0, 2.0] and files(tmp_path)[1] == []
    assert sink.take_recovery().files["recovered"] == 1


def test_a_kept_journal_another_sink_holds_is_tried_again(tmp_path: Path, disk: Disk, clock: list[float]) -> None:
    # another process's sink starting on the directory holds the journal's lock while it rebuilds it, and may fail
    # (the disk still full): the retry that met the lock dropped the journal for good, its rows waiting for a restart
    sink = sink_whose_second_write_failed(tmp_path, disk)
    [kept] = sink.kept_journals
    disk.full = False
    held = journals.claim(kept)  # as that sink's start does
    assert held is not None
    try:
        clock[0] += parquet_sink.KEPT_RETRY_SECONDS
        sink.flush()
        assert sink.kept_journals == [kept] and kept.exists()
    finally:
        os.close(held)  # that sink's rebuild failed: it lets go, the journal left
    clock[0] += parquet_sink.KEPT_RETRY_SECONDS
    sink.flush()
    assert sink.kept_journals == [] and values(tmp_path) == [0.0, 1.0, 2.0]


def test_the_log_counts_what_its_running_sink_recovers(tmp_path: Path, disk: Disk, clock: list[float],
                                                       registry: CollectorRegistry) -> None:
    log = PredictionLog(ParquetSink(tmp_path), registry=registry, flush_seconds=0.05)
    try:
        log_and_flush(log, range(3))
        disk.full = True
        log_and_flush(log, [3])
        assert records(registry, "recoverable") == 3
        disk.full = False
        clock[0] += parquet_sink.KEPT_RETRY_SECONDS
        deadline = time.monotonic() + 30  # the writer's next flush retries (every 0.05 s)
        recovered = 0.0
        while time.monotonic() < deadline and recovered < 3:
            time.sleep(0.05)
            recovered = registry.get_sample_value("aiwatch_prediction_log_recovered_records_total",
                                                  {"log": "predictions"}) or 0.0
        assert recovered == 3
        assert values(tmp_path) == [0.0, 1.0, 2.0]  # while the process runs, no restart
        files_recovered = registry.get_sample_value("aiwatch_prediction_log_recovery_files_total",
                                                    {"log": "predictions", "result": "recovered"})
        assert files_recovered == 1
    finally:
        log.close()


def test_a_failure_streak_is_logged_once_with_its_cause_not_per_batch_or_row(
        tmp_path: Path, disk: Disk, quiet_burst: None, registry: CollectorRegistry,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aiwatch")
    disk.full = True
    with PredictionLog(ParquetSink(tmp_path), registry=registry, flush_seconds=3600) as log:
        for i in range(10):
            log.log("ranker", {"basket_value": i}, timestamp=T0)
            assert log.flush()  # one batch each
    assert records(registry, "failed") == 10
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "prediction_log"}) == 10
    [record] = [r for r in caplog.records if r.name == "aiwatch"]
    assert "No space left on device" in record.getMessage()


# --- a real disk that fills and frees -----------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: writes past it fail with ENOSPC, as on a full disk. Unmounted afterwards."""
    with tmpfs(tmp_path, "256k") as disk:
        yield disk


def fill(directory: Path) -> Path:
    """Write a ballast file until the disk is full; deleting it frees the disk."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 1024)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return ballast


def test_a_real_disk_that_fills_and_frees(small_disk: Path, tmp_path: Path, registry: CollectorRegistry,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aiwatch")
    data = small_disk / "log"
    sink = ParquetSink(data, max_rows=5)
    log = PredictionLog(sink, registry=registry, flush_seconds=3600)
    try:
        for i in range(8):  # one file of 5 rotated, 3 rows open
            log.log("ranker", {"basket_value": i, "blob": os.urandom(2048).hex()}, timestamp=T0)
        assert log.flush()
        ballast = fill(small_disk)
        for i in range(8, 12):
            log.log("ranker", {"basket_value": i, "blob": os.urandom(2048).hex()}, timestamp=T0)
        assert log.flush()
        assert hidden_kinds(data) == ["journal"]  # the half-written file is gone at once, its journal kept
        ballast.unlink()
        for i in range(12, 15):
            log.log("ranker", {"basket_value": i, "blob": os.urandom(2048).hex()}, timestamp=T0)
        assert log.flush()
    finally:
        log.close()
    assert [records(registry, result) for result in ("written", "failed", "lost", "recoverable")] == [11, 4, 0, 3]
    # the log line says so (before: "4 rows of this batch not stored, 0 rows written before lost, 3 rows kept for
    # recovery: [Errno 28] ...")
    [line] = [r.getMessage() for r in caplog.records if "failed and was skipped" in r.getMessage()]
    assert "RowsLost('4 of 4 rows of this batch not stored, 3 rows kept for recovery: the disk is full: " in line, line
    # the journal's 3 rows made into a file by the log's close, the disk freed
    assert registry.get_sample_value("aiwatch_prediction_log_recovered_records_total", {"log": "predictions"}) == 3
    assert values(data) == [float(i) for i in range(8)] + [12.0, 13.0, 14.0]
    assert unreadable(data) == [] and files(data)[1] == []
    assert main(["profile", "build", str(data), "-o", str(tmp_path / "profile.json")]) == 0


def test_a_real_disk_full_at_close_leaves_only_the_journal_for_the_next_start(small_disk: Path) -> None:
    sink = ParquetSink(small_disk / "log", max_rows=4)
    sink.write([row(i, blob=os.urandom(2048).hex()) for i in range(6)])  # one file of 4 rotated, 2 rows open
    ballast = fill(small_disk)
    with pytest.raises(RowsLost) as lost:
        sink.close()
    ballast.unlink()
    assert (lost.value.lost, lost.value.recoverable) == (0, 2)
    assert values(small_disk / "log") == [0.0, 1.0, 2.0, 3.0]
    assert hidden_kinds(small_disk / "log") == ["journal"]
    assert ParquetSink(small_disk / "log").recovery.records == 2
    assert values(small_disk / "log") == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert files(small_disk / "log")[1] == []


def test_the_log_stamps_a_kept_journal_its_running_sink_sets_aside_later(tmp_path: Path, disk: Disk,
                                                                         registry: CollectorRegistry) -> None:
    """Long after the start (whose count was 0): the time moves with the later count, and the alert fires on it."""
    sink = sink_whose_second_write_failed(tmp_path, disk)
    [kept] = sink.kept_journals
    disk.full = False
    log = PredictionLog(sink, registry=registry)
    assert [s for m in registry.collect() for s in m.samples if s.name == LAST_COUNTED] == []
    kept.write_bytes(unstorable_journal())  # what the retry finds: a stream Parquet refuses
    before = time.time()
    log.close()  # the sink's close retries its kept journals; the log counts what it did after
    after = time.time()
    assert registry.get_sample_value("aiwatch_prediction_log_recovery_files_total",
                                     {"log": "predictions", "result": "set_aside"}) == 1
    stamp = registry.get_sample_value(LAST_COUNTED, {"log": "predictions", "result": "set_aside"})
    assert stamp is not None and before <= stamp <= after
    assert registry.get_sample_value(LAST_COUNTED, {"log": "predictions", "result": "recovered"}) is None
