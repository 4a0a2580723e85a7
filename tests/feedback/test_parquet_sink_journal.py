"""ParquetSink's journal: the rows of a file still open survive the death of its writer (SIGKILL), a torn last batch
is dropped and counted, a live writer's journal is never taken, and a failing journal is counted, not raised."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from prometheus_client import CollectorRegistry

from aiwatch.feedback import ParquetSink, PredictionLog, RowsLost
from aiwatch.feedback import journal as journal_module
from tests.feedback.test_parquet_sink import T0, row
from tests.servers import REPO, python_env


def dataset_rows(root: Path) -> list[str]:
    """The ``request_id`` of every row a reader of the directory sees."""
    if not list(root.rglob("*.parquet")):
        return []  # a dataset of no files has no columns
    return sorted(ds.dataset(root, format="parquet", partitioning="hive").to_table().column("request_id").to_pylist())


def journals(root: Path) -> list[Path]:
    return sorted(root.rglob(".*.journal"))


def start_writer(script: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=python_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_rows_of_a_writer_killed_before_rotation_are_recovered_by_the_next_sink(tmp_path: Path) -> None:
    writer = start_writer(f"""
        from prometheus_client import CollectorRegistry
        from aiwatch.feedback import ParquetSink, PredictionLog
        log = PredictionLog(ParquetSink({str(tmp_path)!r}), batch_size=10, registry=CollectorRegistry())
        for i in range(35):
            log.log("ranker", {{"basket_value": i}}, {{"score": i / 35}}, request_id=f"r{{i:02d}}")
        assert log.flush(60), "not written"
        print("written", flush=True)
        import time
        time.sleep(600)
    """)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "written\n", writer.stderr.read() if writer.stderr else ""
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.wait(60)
    assert writer.returncode == -signal.SIGKILL
    assert dataset_rows(tmp_path) == []  # the default max_file_seconds (300 s): nothing rotated

    sink = ParquetSink(tmp_path)
    assert dataset_rows(tmp_path) == [f"r{i:02d}" for i in range(35)]
    assert len(sink.recovered) == 1 and sink.torn_batches == 0
    assert [p for p in tmp_path.rglob(".*") if p.is_file()] == []  # the journal and the dead writer's open file
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("basket_value").to_pylist()) == [float(i) for i in range(35)]
    assert set(table.column("model").to_pylist()) == {"ranker"}


def killed_writer_with_journal_sizes(folder: Path, batches: int) -> list[int]:
    """Run a writer that writes ``batches`` batches of 4 rows to a sink on ``folder`` and dies without closing it;
    the size of its journal after each batch."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os
        from pathlib import Path
        from aiwatch.feedback import ParquetSink
        sink = ParquetSink({str(folder)!r})
        for b in range({batches}):
            sink.write([{{"request_id": f"r{{b}}-{{i}}", "timestamp": {T0}, "model": "m", "x": float(i)}}
                        for i in range(4)])
            [journal] = Path({str(folder)!r}).rglob(".*.journal")
            print(journal.stat().st_size, flush=True)
        os._exit(9)
    """)], env=python_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    return [int(line) for line in proc.stdout.split()]


def test_a_torn_last_batch_is_dropped_counted_and_logged_and_the_whole_ones_recovered(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sizes = killed_writer_with_journal_sizes(tmp_path, 3)
    [journal] = journals(tmp_path)
    assert journal.stat().st_size == sizes[2]
    os.truncate(journal, (sizes[1] + sizes[2]) // 2)  # the writer died in the middle of its third batch
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        sink = ParquetSink(tmp_path)
    assert dataset_rows(tmp_path) == sorted(f"r{b}-{i}" for b in range(2) for i in range(4))
    assert sink.torn_batches == 1
    [warning] = [r.getMessage() for r in caplog.records if "torn" in r.getMessage()]
    assert str(journal) in warning and "8 rows of 2 whole batches" in warning
    assert f"({(sizes[1] + sizes[2]) // 2 - sizes[1]} bytes" in warning
    assert journals(tmp_path) == []


def test_a_journal_torn_in_its_first_batch_recovers_nothing_and_is_removed(tmp_path: Path) -> None:
    sizes = killed_writer_with_journal_sizes(tmp_path, 1)
    [journal] = journals(tmp_path)
    os.truncate(journal, sizes[0] - 1)
    sink = ParquetSink(tmp_path)
    assert sink.recovered == [] and sink.torn_batches == 1
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_live_writers_journal_is_not_taken_by_a_sink_in_another_process_or_this_one(tmp_path: Path) -> None:
    live = ParquetSink(tmp_path)
    live.write([row(i) for i in range(5)])
    [journal] = journals(tmp_path)
    other = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from aiwatch.feedback import ParquetSink
        print(len(ParquetSink({str(tmp_path)!r}).recovered))
    """)], env=python_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    assert other.stdout.split() == ["0"]
    assert ParquetSink(tmp_path).recovered == []  # flock's lock is the open file's, not the process's
    assert journals(tmp_path) == [journal] and dataset_rows(tmp_path) == []
    live.write([row(i) for i in range(5, 8)])
    live.close()
    assert dataset_rows(tmp_path) == sorted(f"r{i}" for i in range(8))  # each row once
    assert journals(tmp_path) == []


def test_a_rotated_file_leaves_no_journal_and_the_next_file_has_its_own(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path, max_rows=3)
    sink.write([row(i) for i in range(5)])
    [journal] = journals(tmp_path)
    assert journal.name == f".{sink._open[('ranker', '2026-09-21T14')].final.name}.journal"
    sink.close()
    assert journals(tmp_path) == [] and len(dataset_rows(tmp_path)) == 5


def test_without_a_journal_none_is_written(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path, journal=False)
    sink.write([row(1)])
    assert journals(tmp_path) == []
    sink.close()
    assert dataset_rows(tmp_path) == ["r1"]


def test_a_journal_whose_file_was_completed_is_removed_without_touching_the_file(tmp_path: Path) -> None:
    """The writer died after renaming its file into view and before removing its journal."""
    sink = ParquetSink(tmp_path)
    sink.write([row(i) for i in range(3)])
    [journal] = journals(tmp_path)
    kept = journal.with_name(journal.name + ".kept")
    shutil.copyfile(journal, kept)
    sink.write([row(3)])
    sink.close()
    os.replace(kept, journal)  # the journal, as it was before the last batch: its file holds more
    assert len(ParquetSink(tmp_path).recovered) == 0
    assert journals(tmp_path) == [] and dataset_rows(tmp_path) == [f"r{i}" for i in range(4)]


class Disk:
    """What a journal's writes meet: while ``full``, each raises ENOSPC."""

    full = False


@pytest.fixture
def failing_journal(monkeypatch: pytest.MonkeyPatch) -> Disk:
    disk, real = Disk(), journal_module._write

    def write(fd: int, data: Any) -> int:
        if disk.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(journal_module, "_write", write)
    return disk


def test_a_failing_journal_write_is_counted_and_its_file_completed_with_every_row(
        tmp_path: Path, failing_journal: Disk) -> None:
    sink = ParquetSink(tmp_path)
    sink.write([row(i) for i in range(3)])
    failing_journal.full = True
    with pytest.raises(RowsLost) as raised:
        sink.write([row(i) for i in range(3, 5)])
    assert (raised.value.failed, raised.value.lost) == (0, 0)  # every row stored: the file was completed
    assert isinstance(raised.value.__cause__, OSError)
    assert dataset_rows(tmp_path) == [f"r{i}" for i in range(5)] and journals(tmp_path) == []
    failing_journal.full = False
    sink.write([row(5)])  # a new file, with a new journal
    assert len(journals(tmp_path)) == 1
    sink.close()
    assert dataset_rows(tmp_path) == [f"r{i}" for i in range(6)] and journals(tmp_path) == []


def test_the_log_counts_a_failing_journal_as_an_error_and_its_rows_as_written(
        tmp_path: Path, failing_journal: Disk) -> None:
    registry = CollectorRegistry()
    failing_journal.full = True  # the first file's journal cannot be made: it goes on without one
    with PredictionLog(ParquetSink(tmp_path), registry=registry) as log:
        for i in range(4):
            log.log("ranker", {"basket_value": i})
        assert log.flush(30)

    def sample(name: str, labels: dict[str, str]) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert sample("aiwatch_instrumentation_errors_total", {"component": "prediction_log"}) == 1
    assert sample("aiwatch_prediction_log_records_total", {"log": "predictions", "result": "written"}) == 4
    assert sample("aiwatch_prediction_log_records_total", {"log": "predictions", "result": "failed"}) == 0
    assert len(dataset_rows(tmp_path)) == 4
    assert [p for p in tmp_path.rglob(".*") if p.is_file()] == []  # no journal, nor the name it was made under


def test_a_journal_the_full_disk_refuses_is_logged_as_what_it_is_with_no_rows_lost(
        tmp_path: Path, failing_journal: Disk, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    # before: "aiwatch: prediction_log failed and was skipped: RowsLost('0 rows of this batch not stored, 0 rows
    # written before lost: [Errno 28] No space left on device')", which reads as a loss; every row was stored
    caplog.set_level(logging.WARNING, logger="aiwatch")
    with PredictionLog(ParquetSink(tmp_path), registry=registry, batch_size=2) as log:
        log.log("ranker", {"basket_value": 0})
        assert log.flush(30)
        failing_journal.full = True
        log.log("ranker", {"basket_value": 1})
        log.log("ranker", {"basket_value": 2})
        assert log.flush(30)
    [line] = [r.getMessage() for r in caplog.records if "failed and was skipped" in r.getMessage()]
    assert line.startswith(f"aiwatch: prediction_log 'predictions' (into {tmp_path}) failed and was skipped: RowsLost("
                           "'no rows lost, all 2 rows of this batch stored: the disk is full: the journal "), line
    assert line.endswith(".parquet.journal could not be appended to ([Errno 28] No space left on device)')"), line
    assert len(dataset_rows(tmp_path)) == 3


def test_rows_lost_says_what_was_stored_and_what_not() -> None:
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(RowsLost(2, 7)) == "2 rows of this batch not stored, 7 rows written before lost"
    assert str(RowsLost(0, 3)) == "3 rows written before lost"
    assert str(RowsLost(0, 0, full, recoverable=4)) == ("no rows lost, 4 rows kept for recovery: the disk is full: "
                                                         "[Errno 28] No space left on device")
    assert str(RowsLost(5, 0, full, stored=45)) == ("5 of 50 rows of this batch not stored: the disk is full: "
                                                    "[Errno 28] No space left on device")
    assert str(RowsLost(0, 0, "a reason", stored=3)) == "no rows lost, all 3 rows of this batch stored: a reason"
    assert str(RowsLost(-1, -2, recoverable=-3)) == "-1 rows of this batch not stored, -2 rows written before lost, " \
                                                    "-3 rows kept for recovery"  # a sink's miscount, shown as it is


@pytest.mark.parametrize("fault", ["fsync", "partial write"])
def test_a_failed_journal_append_leaves_only_the_rows_counted_for_recovery(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    """The batch of a failed append (its sync failed, or its write stopped half way) is counted failed: the journal
    must not keep it, or the next start recovers rows the log counted as not stored. Every file fails here (its sync
    too), so the journal is what is left."""
    sink = ParquetSink(tmp_path, journal_fsync=True)
    sink.write([row(i) for i in range(3)])
    real_fsync, real_write = os.fsync, journal_module._write

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    def write(fd: int, data: Any) -> int:
        real_write(fd, memoryview(data)[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    if fault == "partial write":
        monkeypatch.setattr(journal_module, "_write", write)
    with pytest.raises(RowsLost) as raised:
        sink.write([row(i) for i in range(3, 5)])
    assert (raised.value.failed, raised.value.lost, raised.value.recoverable) == (2, 0, 3)
    monkeypatch.undo()
    again = ParquetSink(tmp_path)
    assert (again.recovery.records, again.recovery.files["recovered"], again.torn_batches) == (3, 1, 0)
    assert dataset_rows(tmp_path) == [f"r{i}" for i in range(3)]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads which file a descriptor is from /proc")
@pytest.mark.parametrize("journal", [True, False])
def test_a_writer_stopped_before_locking_its_file_while_another_sink_removed_it_uses_a_new_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal: bool) -> None:
    """A writer stopped (SIGSTOP) for longer than EMPTY_GRACE_SECONDS between making its empty open file and locking
    it: a sink starting meanwhile removes the file as a dead writer's. Its lock then held the removed file, pyarrow
    made an unlocked one under the name, and the next start removed that one as an orphan: its rows were lost."""
    real = journal_module.fcntl

    class Stopped:
        LOCK_EX, LOCK_NB, removed = real.LOCK_EX, real.LOCK_NB, False

        @staticmethod
        def flock(fd: int, op: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if path.endswith(".inprogress") and not Stopped.removed:
                Stopped.removed = True
                os.unlink(path)  # what a sink starting while the writer was stopped did
            real.flock(fd, op)

    sink = ParquetSink(tmp_path, journal=journal)
    monkeypatch.setattr(journal_module, "fcntl", Stopped)
    sink.write([row(i) for i in range(5)])
    monkeypatch.undo()
    assert Stopped.removed
    assert ParquetSink(tmp_path).recovery.files["orphan_removed"] == 0  # the file being written is locked
    sink.close()
    assert dataset_rows(tmp_path) == [f"r{i}" for i in range(5)]


def test_a_file_pyarrow_opened_by_name_that_is_not_the_locked_one_fails(tmp_path: Path) -> None:
    """pyarrow opens the open file by its name: one removed under it after it was locked is made again there, and
    written unlocked (a starting sink removes it as an orphan). The batch fails, counted, and the sink goes on."""
    import pyarrow.parquet as pq

    sink = ParquetSink(tmp_path, journal=False)

    class Removing:
        @staticmethod
        def ParquetWriter(where: str, *args: Any, **kwargs: Any) -> Any:
            os.unlink(where)
            return pq.ParquetWriter(where, *args, **kwargs)

    sink.pq = Removing
    with pytest.raises(RowsLost) as raised:
        sink.write([row(i) for i in range(3)])
    assert (raised.value.failed, raised.value.lost) == (3, 0)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    sink.pq = pq
    sink.write([row(i) for i in range(3, 5)])
    sink.close()
    assert dataset_rows(tmp_path) == ["r3", "r4"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads which file a descriptor is from /proc")
def test_journal_fsync_syncs_the_journal_after_each_batch_and_its_name_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    sink = ParquetSink(tmp_path, fsync=False, journal_fsync=True)
    sink.write([row(1)])
    sink.write([row(2)])
    [journal] = journals(tmp_path)
    assert synced == [str(journal.parent), str(journal), str(journal)]
    sink.close()
    assert len(synced) == 3  # fsync=False: the Parquet file is not synced


def test_a_journal_batch_that_does_not_validate_is_not_written_and_its_journal_set_aside(
        tmp_path: Path) -> None:
    """A damaged journal (a flipped byte on disk, not a torn end) can hold a batch that Arrow's stream reader accepts
    while its string offsets point outside their data: writing it as Parquet crashed the starting process
    (SIGSEGV in libparquet). The batches before it are recovered; the journal, counted torn and deleted before
    (the batches after the damage with it), is set aside for a person and counted so."""
    sizes = killed_writer_with_journal_sizes(tmp_path, 2)
    [journal] = journals(tmp_path)
    data = journal.read_bytes()
    offsets = struct.pack("<5i", 0, 4, 8, 12, 16)  # of the request ids "r1-0" .. "r1-3" of the second batch
    assert data[sizes[0]:].count(offsets) == 1
    journal.write_bytes(data[:sizes[0]] + data[sizes[0]:].replace(offsets, struct.pack("<5i", 0, 1 << 30, 8, 12, 16)))
    start = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import logging
        from aiwatch.feedback import ParquetSink
        logging.basicConfig(level=logging.WARNING)
        sink = ParquetSink({str(tmp_path)!r})
        print(len(sink.recovered), sink.torn_batches, sink.recovery.files["set_aside"], sink.recovery.files["torn"])
    """)], env=python_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    assert start.stdout.split() == ["1", "1", "1", "0"]
    assert str(journal) in start.stderr and "not valid" in start.stderr
    assert f"{sizes[1] - sizes[0]} bytes from it on not read" in start.stderr
    assert "4 rows of the 1 whole batches before it recovered" in start.stderr
    assert dataset_rows(tmp_path) == [f"r0-{i}" for i in range(4)]
    assert journals(tmp_path) == []
    assert journal.with_name(journal.name + ".unrecoverable").exists()


def test_a_journal_left_under_its_temporary_name_is_removed_once_its_writer_is_gone(tmp_path: Path) -> None:
    """A writer that dies between creating its journal (``.journal.new``) and renaming it left that file and its
    ``.inprogress`` file behind for good (no rows: a batch is appended only after the rename); a live writer's is
    never touched."""
    writer = start_writer(f"""
        import os, time
        from aiwatch.feedback import ParquetSink
        real = os.replace

        def stuck(src, dst):
            if str(src).endswith(".journal.new"):
                print("between", flush=True)
                time.sleep(600)
            return real(src, dst)

        os.replace = stuck
        ParquetSink({str(tmp_path)!r}).write([{{"request_id": "r1", "timestamp": {T0}, "model": "m", "x": 1.0}}])
    """)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "between\n", writer.stderr.read() if writer.stderr else ""
        left = sorted(p.name for p in tmp_path.rglob(".*") if p.is_file())
        assert [name.rsplit(".", 1)[-1] for name in left] == ["inprogress", "new"]
        assert ParquetSink(tmp_path).recovered == []
        assert sorted(p.name for p in tmp_path.rglob(".*") if p.is_file()) == left  # its writer is alive
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.wait(60)
    assert writer.returncode == -signal.SIGKILL
    assert ParquetSink(tmp_path).recovered == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_journal_that_cannot_become_a_parquet_file_is_set_aside_and_not_tried_at_every_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A journal whose contents Parquet cannot store (here a union column: never written by a sink, so a foreign or
    damaged file) was left under its name, so every later start read it again and logged the same warning."""
    sizes = killed_writer_with_journal_sizes(tmp_path, 1)
    [journal] = journals(tmp_path)
    assert journal.stat().st_size == sizes[0]
    union = pa.UnionArray.from_dense(pa.array([0, 1], type=pa.int8()), pa.array([0, 0], type=pa.int32()),
                                     [pa.array([1.0]), pa.array(["a"])])
    batch = pa.RecordBatch.from_arrays([union], names=["x"])
    journal.write_bytes(batch.schema.serialize().to_pybytes() + batch.serialize().to_pybytes())
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        first = ParquetSink(tmp_path)
    [warning] = [r.getMessage() for r in caplog.records if str(journal) in r.getMessage()]
    aside = journal.with_name(journal.name + ".unrecoverable")
    assert "dense_union" in warning and str(aside) in warning
    assert first.recovered == [] and journals(tmp_path) == [] and first.recovery.files["set_aside"] == 1
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [aside]  # kept for a person, its .inprogress gone
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        ParquetSink(tmp_path)
    assert [r.getMessage() for r in caplog.records] == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [aside]


def test_two_sinks_of_one_process_on_one_directory_name_their_files_and_journals_apart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each sink numbered its files from 1, so two sinks of one process that started a file for the same model in
    the same second gave both the same .inprogress file, journal and final name: the second journal replaced the
    first, both writers wrote one file, and the directory held one unreadable file."""
    real = time.gmtime
    monkeypatch.setattr(time, "gmtime", lambda secs=None: real(T0 if secs is None else secs))  # one second
    first, second = ParquetSink(tmp_path), ParquetSink(tmp_path)
    first.write([row(i) for i in range(3)])
    second.write([row(i) for i in range(3, 5)])
    assert len(journals(tmp_path)) == 2
    first.close()
    second.close()
    assert dataset_rows(tmp_path) == [f"r{i}" for i in range(5)] and journals(tmp_path) == []


def die_at(step: str) -> str:
    """Python that makes the process exit (as SIGKILL would: no cleanup) at ``step`` of completing a file."""
    return textwrap.dedent(f"""
        import os
        from aiwatch.feedback import journal
        real_replace, real_remove = os.replace, journal.Journal.remove

        def replace(src, dst):
            if str(src).endswith(".inprogress"):
                if {step!r} == "before rename":
                    os._exit(9)
                real_replace(src, dst)
                if {step!r} == "after rename":
                    os._exit(9)
                return
            real_replace(src, dst)

        def remove(self):
            real_remove(self)
            if {step!r} == "after journal delete":
                os._exit(9)

        os.replace, journal.Journal.remove = replace, remove
    """)


@pytest.mark.parametrize(("writer_dies", "recoverer_dies"), [
    ("before rename", "before rename"), ("before rename", "after rename"), ("before rename", None),
    ("after rename", None), ("after journal delete", None)])
def test_a_writer_or_a_recoverer_that_dies_at_any_step_of_completing_a_file_leaves_each_row_once(
        tmp_path: Path, writer_dies: str, recoverer_dies: str | None) -> None:
    writer = subprocess.run([sys.executable, "-c", die_at(writer_dies) + textwrap.dedent(f"""
        from aiwatch.feedback import ParquetSink
        sink = ParquetSink({str(tmp_path)!r})
        for b in range(3):
            sink.write([{{"request_id": f"r{{b}}-{{i}}", "timestamp": {T0}, "model": "m"}} for i in range(4)])
        sink.close()
        os._exit(0)
    """)], env=python_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert writer.returncode == 9, writer.stderr
    assert len(journals(tmp_path)) == (0 if writer_dies == "after journal delete" else 1)
    if recoverer_dies is not None:
        recoverer = subprocess.run([sys.executable, "-c", die_at(recoverer_dies) + textwrap.dedent(f"""
            from aiwatch.feedback import ParquetSink
            ParquetSink({str(tmp_path)!r})
            os._exit(0)
        """)], env=python_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
        assert recoverer.returncode == 9, recoverer.stderr
        assert len(journals(tmp_path)) == 1
    ParquetSink(tmp_path)
    assert dataset_rows(tmp_path) == sorted(f"r{b}-{i}" for b in range(3) for i in range(4))
    assert [p for p in tmp_path.rglob(".*") if p.is_file()] == []


def test_sinks_starting_at_once_in_several_processes_recover_each_journal_once(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os
        from aiwatch.feedback import ParquetSink
        sink = ParquetSink({str(tmp_path)!r})
        for m in range(40):
            sink.write([{{"request_id": f"m{{m}}-{{i}}", "timestamp": {T0}, "model": f"m{{m}}"}} for i in range(3)])
        os._exit(9)
    """)], env=python_env(), cwd=REPO, timeout=120, check=False)
    assert len(journals(tmp_path)) == 40
    starts = [start_writer(f"""
        from aiwatch.feedback import ParquetSink
        print(len(ParquetSink({str(tmp_path)!r}).recovered))
    """) for _ in range(3)]
    recovered = []
    for start in starts:
        out, err = start.communicate(timeout=120)
        assert start.returncode == 0, err
        recovered.append(int(out))
    assert sum(recovered) == 40
    assert dataset_rows(tmp_path) == sorted(f"m{m}-{i}" for m in range(40) for i in range(3))
    assert [p for p in tmp_path.rglob(".*") if p.is_file()] == []


def _directories_cannot_be_synced(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """``os.fsync`` of a directory fails with ``code`` (a filesystem without directory sync: EINVAL; a failing disk:
    EIO); of a file it works."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_journal_whose_directory_cannot_be_synced_stays_its_live_writers(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """journal_fsync on a filesystem whose directories cannot be fsynced (EINVAL) or on EIO: the failed directory
    sync after the rename left the journal under its journal name unlocked while its writer lived, and a sink
    starting on the directory (another worker) took it for a dead writer's and deleted the writer's open file."""
    _directories_cannot_be_synced(monkeypatch, errno.EINVAL)
    live = ParquetSink(tmp_path, fsync=False, journal_fsync=True)
    live.write([row(i) for i in range(3)])  # no RowsLost: the journal is written and locked
    [journal] = journals(tmp_path)
    other = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from aiwatch.feedback import ParquetSink
        print(len(ParquetSink({str(tmp_path)!r}).recovered))
    """)], env=python_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    assert other.stdout.split() == ["0"] and journals(tmp_path) == [journal]
    live.close()
    assert dataset_rows(tmp_path) == ["r0", "r1", "r2"] and journals(tmp_path) == []


def test_a_journal_that_fails_once_renamed_is_removed_under_its_journal_name_before_its_lock_goes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the rename (an interrupt there) removed the temporary name, which was gone, and released the
    lock: the journal stayed, unlocked, under its journal name, for a starting sink to take as a dead writer's."""
    real_replace = os.replace

    def replace_then_fail(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        if str(dst).endswith(journal_module.JOURNAL_SUFFIX):
            raise KeyboardInterrupt  # as a signal's handler raising between the rename and what follows

    monkeypatch.setattr(journal_module.os, "replace", replace_then_fail)
    sink = ParquetSink(tmp_path, fsync=False)
    with pytest.raises(KeyboardInterrupt):
        sink.write([row(i) for i in range(3)])
    assert journals(tmp_path) == [] and list(tmp_path.rglob(f"*{journal_module.NEW_SUFFIX}")) == []


#: Each pool a test sets as pyarrow's default: kept alive for the process, as buffers made from it may outlive the test.
_POOLS: list[Any] = []


@pytest.fixture
def arrow_pool() -> Iterator[Callable[[], Any]]:
    """Sets a pool of pyarrow's (a proxy of its default, counting its own allocations) as the default until the test
    ends, when called: its ``max_memory`` is the peak pyarrow allocated from then on."""
    default = pa.default_memory_pool()

    def start() -> Any:
        pool = pa.proxy_memory_pool(default)
        _POOLS.append(pool)
        pa.set_memory_pool(pool)
        return pool

    try:
        yield start
    finally:
        pa.set_memory_pool(default)


def test_a_large_journal_is_recovered_in_bounded_memory_every_row_and_a_torn_end_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, arrow_pool: Any) -> None:
    """Recovery read a journal whole into memory (and built one table of it): a journal the size of the memory the
    starting app has left made it fail, or be killed. It streams now: the Python memory it takes stays far below the
    journal's size."""
    import tracemalloc

    from aiwatch.feedback import parquet_sink

    monkeypatch.setattr(parquet_sink, "_REBUILD_BYTES", 1 << 20, raising=False)
    folder = tmp_path / "model=m" / "hour=2026-09-21T14"
    folder.mkdir(parents=True)
    schema = pa.schema([("request_id", pa.string()), ("blob", pa.string())])
    batches = [pa.RecordBatch.from_pylist([{"request_id": f"r{b:03d}-{i:02d}", "blob": os.urandom(16_384).hex()}
                                           for i in range(16)], schema=schema) for b in range(48)]  # 24 MiB
    torn = batches[0].serialize().to_pybytes()[:1000]
    journal = folder / ".part-20260921T141320-1-000001.parquet.journal"
    journal.write_bytes(schema.serialize().to_pybytes() + b"".join(b.serialize().to_pybytes() for b in batches) + torn)
    assert journal.stat().st_size > 24 << 20
    # pyarrow allocates from its own pool, which tracemalloc does not see: a pool of the test's counts its peak
    del batches
    pool = arrow_pool()
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING, logger="aiwatch"):
            sink = ParquetSink(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    assert pool.max_memory() < 8 << 20, pool.max_memory()
    assert (sink.recovery.records, sink.recovery.files["torn"]) == (48 * 16, 1)
    assert dataset_rows(tmp_path) == sorted(f"r{b:03d}-{i:02d}" for b in range(48) for i in range(16))
    assert journals(tmp_path) == [] and "ends in a torn batch (1000 bytes" in caplog.text


def journal_of(folder: Path, schema: Any, body: bytes) -> Path:
    folder.mkdir(parents=True)
    journal = folder / ".part-20260921T141320-1-000001.parquet.journal"
    journal.write_bytes(schema.serialize().to_pybytes() + body)
    return journal


def test_a_journal_of_many_small_batches_is_rebuilt_holding_a_bounded_number_of_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the bytes held were bounded: a journal of many one-row batches (a quiet hour, one row per write) was held
    whole (each batch's Arrow objects cost far more than its row) before the first row group was written."""
    import pyarrow.parquet as pq

    from aiwatch.feedback import parquet_sink

    monkeypatch.setattr(parquet_sink, "_REBUILD_BATCHES", 4, raising=False)
    schema = pa.schema([("request_id", pa.string())])
    one = [pa.RecordBatch.from_pylist([{"request_id": f"r{i:02d}"}], schema=schema) for i in range(10)]
    empty = pa.RecordBatch.from_pylist([], schema=schema)  # no row: not held
    journal_of(tmp_path / "model=m" / "hour=2026-09-21T14", schema,
               b"".join(b.serialize().to_pybytes() + empty.serialize().to_pybytes() for b in one))
    (final,) = ParquetSink(tmp_path).recovered
    assert pq.ParquetFile(final).metadata.num_row_groups == 3  # 4 + 4 + 2 batches
    assert dataset_rows(tmp_path) == [f"r{i:02d}" for i in range(10)]


def test_a_length_prefix_claiming_huge_metadata_is_a_torn_end_not_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A damaged length prefix (int32 max) had the reader read every byte left in the journal, and hold them, before
    it failed: the journal's size in memory at the start."""
    schema = pa.schema([("request_id", pa.string())])
    whole = pa.RecordBatch.from_pylist([{"request_id": f"r{i}"} for i in range(4)], schema=schema)
    rest = 8 << 20
    journal_of(tmp_path / "model=m" / "hour=2026-09-21T14", schema, whole.serialize().to_pybytes()
               + b"\xff\xff\xff\xff" + struct.pack("<i", 0x7FFFFFF0) + b"\0" * rest)
    read: list[int] = []
    real = os.pread

    def pread(fd: int, n: int, at: int) -> bytes:
        data = real(fd, n, at)
        read.append(len(data))
        return data

    monkeypatch.setattr(os, "pread", pread)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        sink = ParquetSink(tmp_path)
    monkeypatch.undo()
    assert (sink.recovery.records, sink.recovery.files["torn"]) == (4, 1)
    assert sum(read) < 1 << 20, sum(read)
    assert f"ends in a torn batch ({rest + 8} bytes" in caplog.text


def test_a_directory_that_cannot_be_synced_is_logged_once_per_directory_and_never_raised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A failed directory sync (journal_fsync, rotation's fsync) was ignored without a word."""
    _directories_cannot_be_synced(monkeypatch, errno.EIO)
    monkeypatch.setattr(journal_module, "_sync_told", set(), raising=False)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        sink = ParquetSink(tmp_path, max_rows=2, journal_fsync=True)
        sink.write([row(i, model=model) for model in ("a", "b") for i in range(5)])  # 3 files and journals each
        sink.close()
    told = sorted(r.getMessage() for r in caplog.records if "could not be synced" in r.getMessage())
    assert len(told) == 2 and all("Input/output error" in line for line in told)
    assert "model=a" in told[0] and "model=b" in told[1]
    assert len(dataset_rows(tmp_path)) == 10 and journals(tmp_path) == []
