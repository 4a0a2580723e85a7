"""What a starting ParquetSink does with the files of writers that died, besides their journals: an open file
without a journal (``journal=False``, or one that could not be made) is removed once its writer is gone and never
while it lives, a recoverer's file being rebuilt is left to it, and a log exports what recovery did."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from aiwatch.feedback import ParquetSink, PredictionLog
from aiwatch.feedback.journal import EMPTY_GRACE_SECONDS
from aiwatch.feedback.parquet_sink import Recovery
from tests.feedback.test_parquet_sink import T0, row
from tests.feedback.test_parquet_sink_journal import (
    dataset_rows,
    journals,
    killed_writer_with_journal_sizes,
    start_writer,
)
from tests.servers import REPO, python_env

#: The ``result`` values of aiwatch_prediction_log_recovery_files_total.
RECOVERY_RESULTS = ("recovered", "torn", "set_aside", "orphan_removed", "failed")


def open_files(root: Path) -> list[Path]:
    return sorted(root.rglob(".*.inprogress"))


#: Python that makes every journal of the process fail to be made (its file goes on without one).
NO_JOURNAL = """
    from aiwatch.feedback import journal
    def refused(*args, **kwargs):
        raise OSError(28, "No space left on device")
    journal.Journal.__init__ = refused
"""


def killed_writer(folder: Path, models: list[str], *, journal: bool = True, prelude: str = "") -> None:
    """Run a writer that writes 3 rows per model to a sink on ``folder`` and is killed (SIGKILL) with its files open."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(prelude) + textwrap.dedent(f"""
        import os, signal
        from aiwatch.feedback import ParquetSink, RowsLost
        sink = ParquetSink({str(folder)!r}, journal={journal!r})
        for model in {models!r}:
            try:
                sink.write([{{"request_id": f"{{model}}-{{i}}", "timestamp": {T0}, "model": model, "x": float(i)}}
                            for i in range(3)])
            except RowsLost as lost:  # a journal that could not be made: every row stored all the same
                assert (lost.failed, lost.lost) == (0, 0)
        os.kill(os.getpid(), signal.SIGKILL)
    """)], env=python_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


@pytest.mark.parametrize("how", ["journal=False", "its journal could not be made"])
def test_the_open_files_of_a_killed_writer_without_a_journal_are_removed_logged_and_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str) -> None:
    """Each crash left one unreadable ``.inprogress`` file per open partition, for ever."""
    if how == "journal=False":
        killed_writer(tmp_path, ["a", "b"], journal=False)
    else:
        killed_writer(tmp_path, ["a", "b"], prelude=NO_JOURNAL)
    orphans = open_files(tmp_path)
    assert len(orphans) == 2 and journals(tmp_path) == []
    sizes = {path: path.stat().st_size for path in orphans}
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        sink = ParquetSink(tmp_path, journal=how != "journal=False")
    assert open_files(tmp_path) == [] and dataset_rows(tmp_path) == []
    assert sink.recovery.files == {**dict.fromkeys(RECOVERY_RESULTS, 0), "orphan_removed": 2}
    assert sink.recovery.records == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for path, size in sizes.items():
        assert any(str(path) in w and f"({size} bytes)" in w for w in warnings), warnings


def test_an_empty_open_file_is_left_alone_its_writer_may_be_about_to_lock_it(tmp_path: Path) -> None:
    killed_writer(tmp_path, ["a"], journal=False)
    [orphan] = open_files(tmp_path)
    empty = orphan.with_name(".part-20260921T141320-1-000001.parquet.inprogress")
    empty.touch()
    sink = ParquetSink(tmp_path)
    assert open_files(tmp_path) == [empty] and sink.recovery.files["orphan_removed"] == 1


def partition(root: Path) -> Path:
    folder = root / "model=m" / "hour=2026-09-21T14"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def made(path: Path, data: bytes = b"", *, old: bool = True) -> Path:
    """``path`` written with ``data``; ``old``: last modified past the grace period of an empty file."""
    path.write_bytes(data)
    if old:
        past = time.time() - EMPTY_GRACE_SECONDS - 5
        os.utime(path, (past, past))
    return path


def hidden(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".*") if p.is_file() or p.is_symlink())


def test_an_empty_open_file_past_the_grace_period_is_removed_and_counted(tmp_path: Path) -> None:
    """A writer killed between making its open file and locking it left it, empty, for ever."""
    folder = partition(tmp_path)
    made(folder / ".part-20260921T141320-1-000001.parquet.inprogress")
    fresh = made(folder / ".part-20260921T141320-1-000002.parquet.inprogress", old=False)
    sink = ParquetSink(tmp_path)
    assert open_files(tmp_path) == [fresh]
    assert sink.recovery.files == {**dict.fromkeys(RECOVERY_RESULTS, 0), "orphan_removed": 1}


def test_an_empty_open_file_past_the_grace_period_is_kept_while_its_writer_holds_it(tmp_path: Path) -> None:
    stale = made(partition(tmp_path) / ".part-20260921T141320-1-000001.parquet.inprogress")
    fd = os.open(stale, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        sink = ParquetSink(tmp_path)
    finally:
        os.close(fd)
    assert open_files(tmp_path) == [stale] and sink.recovery.files == dict.fromkeys(RECOVERY_RESULTS, 0)


@pytest.mark.parametrize("held", [False, True])
def test_an_empty_journal_under_its_temporary_name_past_the_grace_period_goes_with_its_open_file_unless_held(
        tmp_path: Path, held: bool) -> None:
    """A writer killed between making its journal (``.journal.new``) and locking it left both files for ever. The
    empty journal's lock proves nothing, so its open file's lock (taken before the journal was made) must be free."""
    folder = partition(tmp_path)
    temp = made(folder / ".part-20260921T141320-1-000001.parquet.inprogress", b"PAR1")
    made(folder / ".part-20260921T141320-1-000001.parquet.journal.new")
    young = [made(folder / ".part-20260921T141320-1-000002.parquet.inprogress", b"PAR1"),
             made(folder / ".part-20260921T141320-1-000002.parquet.journal.new", old=False)]
    before = hidden(tmp_path)
    fd = os.open(temp, os.O_RDONLY)
    try:
        if held:
            fcntl.flock(fd, fcntl.LOCK_EX)
        sink = ParquetSink(tmp_path)
    finally:
        os.close(fd)
    assert hidden(tmp_path) == (before if held else sorted(p.name for p in young))
    assert sink.recovery.files == {**dict.fromkeys(RECOVERY_RESULTS, 0), "orphan_removed": 0 if held else 1}


@pytest.mark.parametrize("suffix", [".inprogress", ".journal", ".journal.new"])
@pytest.mark.parametrize("data", [b"", b"a file of someone else's"])
def test_a_symlink_under_a_writers_name_is_neither_followed_nor_removed(tmp_path: Path, suffix: str,
                                                                       data: bytes) -> None:
    """Recovery locked, read and judged the file a link pointed to (and removed the link): a link is no writer's."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = made(elsewhere / "target", data)
    link = partition(tmp_path) / f".part-20260921T141320-1-000001.parquet{suffix}"
    link.symlink_to(target)
    sink = ParquetSink(tmp_path)
    assert link.is_symlink() and target.read_bytes() == data
    assert hidden(tmp_path) == [link.name]
    assert sink.recovery.files == dict.fromkeys(RECOVERY_RESULTS, 0)


def test_a_live_writers_open_file_is_kept_by_sinks_in_other_processes_and_in_its_own_until_it_dies(
        tmp_path: Path) -> None:
    writer = start_writer(f"""
        from aiwatch.feedback import ParquetSink
        sink = ParquetSink({str(tmp_path)!r}, journal=False)
        sink.write([{{"request_id": f"w{{i}}", "timestamp": {T0}, "model": "m", "x": 1.0}} for i in range(3)])
        print("written", flush=True)
        import time
        time.sleep(600)
    """)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "written\n", writer.stderr.read() if writer.stderr else ""
        [theirs] = open_files(tmp_path)
        live = ParquetSink(tmp_path, journal=False)  # a live sink of this process, too
        live.write([row(i) for i in range(3)])
        ours = next(path for path in open_files(tmp_path) if path != theirs)
        other = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            from aiwatch.feedback import ParquetSink
            ParquetSink({str(tmp_path)!r}, journal=False)
        """)], env=python_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
        assert other.returncode == 0, other.stderr
        ParquetSink(tmp_path)  # flock's lock is the open file's, not the process's
        assert open_files(tmp_path) == sorted([theirs, ours])
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(60)
    assert writer.returncode == -signal.SIGKILL
    ParquetSink(tmp_path)
    assert open_files(tmp_path) == [ours]
    live.write([row(3)])
    live.close()
    assert dataset_rows(tmp_path) == [f"r{i}" for i in range(4)] and open_files(tmp_path) == []


def test_a_file_a_recoverer_is_rebuilding_from_a_journal_is_left_to_it(tmp_path: Path) -> None:
    """A starting sink rebuilds a dead writer's file under its ``.inprogress`` name, without a lock on it: a sink
    starting meanwhile must not take it for an orphan (the journal still has its name until the file is renamed)."""
    killed_writer_with_journal_sizes(tmp_path, 2)
    [journal] = journals(tmp_path)
    recoverer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        import pyarrow.parquet as pq
        from aiwatch.feedback import ParquetSink
        real = pq.ParquetWriter.write_table

        def paused(self, table, *args, **kwargs):
            real(self, table, *args, **kwargs)
            if "request_id" in table.column_names:  # not the sink's check of its compression
                print("rebuilding", flush=True)
                sys.stdin.readline()

        pq.ParquetWriter.write_table = paused
        print(len(ParquetSink({str(tmp_path)!r}).recovered), flush=True)
    """)], env=python_env(), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert recoverer.stdout is not None
        assert recoverer.stdout.readline() == "rebuilding\n", recoverer.stderr.read() if recoverer.stderr else ""
        [rebuilding] = open_files(tmp_path)
        ParquetSink(tmp_path, journal=False)
        assert open_files(tmp_path) == [rebuilding] and journals(tmp_path) == [journal]
        out, err = recoverer.communicate("\n", timeout=120)
    finally:
        if recoverer.poll() is None:
            recoverer.kill()
            recoverer.wait(60)
    assert recoverer.returncode == 0, err
    assert out.split() == ["1"]
    assert dataset_rows(tmp_path) == sorted(f"r{b}-{i}" for b in range(2) for i in range(4))
    assert [p for p in tmp_path.rglob(".*") if p.is_file()] == []


def gather(sources: list[Path], target: Path) -> None:
    """Move the files under each of ``sources`` to the same place under ``target`` (each writer left them in a
    directory of its own: a sink starting on a directory recovers what dead writers left there)."""
    for source in sources:
        for path in [p for p in source.rglob("*") if p.is_file()]:
            (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            path.rename(target / path.relative_to(source))


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_log_exports_what_its_sink_recovered_at_start_once(tmp_path: Path) -> None:
    whole, torn, orphan, root = tmp_path / "whole", tmp_path / "torn", tmp_path / "orphan", tmp_path / "log"
    killed_writer_with_journal_sizes(whole, 3)  # 12 rows in a journal
    sizes = killed_writer_with_journal_sizes(torn, 2)  # 8 rows, the second batch torn: 4 recovered
    [journal] = journals(torn)
    os.truncate(journal, sizes[1] - 1)
    killed_writer(orphan, ["a"], journal=False)
    gather([whole, torn, orphan], root)
    registry = CollectorRegistry()
    sink = ParquetSink(root)
    with PredictionLog(sink, registry=registry, name="orders") as log:
        files = {result: sample(registry, "aiwatch_prediction_log_recovery_files_total",
                                {"log": "orders", "result": result}) for result in RECOVERY_RESULTS}
        assert files == {"recovered": 1, "torn": 1, "set_aside": 0, "orphan_removed": 1, "failed": 0}
        assert sample(registry, "aiwatch_prediction_log_recovered_records_total", {"log": "orders"}) == 16
        other = CollectorRegistry()
        with PredictionLog(sink, registry=other, name="orders"):  # the same sink: counted by one log only
            assert sample(other, "aiwatch_prediction_log_recovered_records_total", {"log": "orders"}) == 0
            assert sample(other, "aiwatch_prediction_log_recovery_files_total",
                          {"log": "orders", "result": "recovered"}) == 0
        log.log("ranker", {"x": 1.0})
    assert len(dataset_rows(root)) == 12 + 4 + 1
    assert [p for p in root.rglob(".*") if p.is_file()] == []


LAST_COUNTED = "aiwatch_prediction_log_recovery_last_timestamp_seconds"


def unstorable_journal(*, torn: bool = False) -> bytes:
    """An Arrow stream that reads but that Parquet refuses (a dense union column ``x`` beside a string column): a
    sink sets it aside. Two whole batches of two rows; with ``torn``, half a third batch after them."""
    union = pa.UnionArray.from_dense(pa.array([0, 1], type=pa.int8()), pa.array([0, 0], type=pa.int32()),
                                     [pa.array([1.0]), pa.array(["a"])])
    batch = pa.RecordBatch.from_arrays([pa.array(["r0", "r1"]), union], names=["request_id", "x"])
    body = batch.serialize().to_pybytes()
    return bytes(batch.schema.serialize().to_pybytes() + body + body + (body[:len(body) // 2] if torn else b""))


def test_a_log_stamps_when_its_sink_counted_journals_torn_or_set_aside_at_start(tmp_path: Path) -> None:
    """The count alone cannot tell a restart that counts the same number from the old count:
    AiwatchPredictionLogRecoveryIncomplete reads the time it was last counted."""
    torn, aside, root = tmp_path / "torn", tmp_path / "aside", tmp_path / "log"
    sizes = killed_writer_with_journal_sizes(torn, 2)
    [journal] = journals(torn)
    os.truncate(journal, sizes[1] - 1)
    killed_writer_with_journal_sizes(aside, 1)
    [journal] = journals(aside)
    journal.write_bytes(unstorable_journal())
    gather([torn, aside], root)
    registry = CollectorRegistry()
    before = time.time()
    with PredictionLog(ParquetSink(root), registry=registry, name="orders"):
        after = time.time()
        assert sample(registry, "aiwatch_prediction_log_recovery_files_total",
                      {"log": "orders", "result": "set_aside"}) == 1
        stamps = {result: sample(registry, LAST_COUNTED, {"log": "orders", "result": result})
                  for result in RECOVERY_RESULTS}
    assert {result for result, stamp in stamps.items() if stamp is not None} == {"torn", "set_aside"}
    assert before <= stamps["torn"] <= after and before <= stamps["set_aside"] <= after  # type: ignore[operator]


def test_a_journal_that_cannot_be_recovered_now_is_counted_failed_and_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    killed_writer_with_journal_sizes(tmp_path, 1)

    def full(self: ParquetSink, temp: Path, final: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ParquetSink, "_publish", full)
    registry = CollectorRegistry()
    with PredictionLog(ParquetSink(tmp_path), registry=registry):
        pass
    assert sample(registry, "aiwatch_prediction_log_recovery_files_total",
                  {"log": "predictions", "result": "failed"}) == 1
    assert sample(registry, LAST_COUNTED, {"log": "predictions", "result": "failed"}) is not None
    # the journal is kept; the file it was rebuilt into is removed (on a full disk it takes the space a retry needs)
    assert len(journals(tmp_path)) == 1 and open_files(tmp_path) == []
    monkeypatch.undo()
    assert ParquetSink(tmp_path).recovery.files["recovered"] == 1 and open_files(tmp_path) == []


@pytest.mark.parametrize("fault", [MemoryError("out of memory"), pa.ArrowMemoryError("malloc of 64 MiB failed"),
                                   RuntimeError("a bug in the rebuild")], ids=lambda e: type(e).__name__)
def test_a_rebuild_that_fails_for_any_reason_but_its_data_leaves_the_journal_unchanged_counted_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fault: Exception) -> None:
    """Only data that Parquet refuses is the journal's fault: a rebuild that ran short of memory (or met a bug) set
    the journal aside for a person, whose per-column salvage then found nothing wrong with it."""
    killed_writer_with_journal_sizes(tmp_path, 1)
    [journal] = journals(tmp_path)
    before = journal.read_bytes()

    def failing(self: ParquetSink, writer: object, temp: Path, schema: object, batches: list[object]) -> object:
        raise fault

    monkeypatch.setattr(ParquetSink, "_rebuild_part", failing)
    registry = CollectorRegistry()
    with caplog.at_level(logging.WARNING, logger="aiwatch"), PredictionLog(ParquetSink(tmp_path), registry=registry):
        pass
    files = {result: sample(registry, "aiwatch_prediction_log_recovery_files_total",
                            {"log": "predictions", "result": result}) for result in RECOVERY_RESULTS}
    assert files == {"recovered": 0, "torn": 0, "set_aside": 0, "orphan_removed": 0, "failed": 1}
    assert journals(tmp_path) == [journal] and journal.read_bytes() == before  # under its name, unchanged
    assert list(tmp_path.rglob("*.unrecoverable")) == [] and open_files(tmp_path) == []
    assert [r for r in caplog.records if str(journal) in r.getMessage() and repr(fault) in r.getMessage()]
    monkeypatch.undo()  # the fault gone: the next start recovers its rows
    assert ParquetSink(tmp_path).recovery.files["recovered"] == 1
    assert dataset_rows(tmp_path) == [f"r0-{i}" for i in range(4)] and journals(tmp_path) == []


def test_a_fifo_under_an_open_files_name_neither_holds_the_start_nor_is_removed(tmp_path: Path) -> None:
    """Only a regular file is a writer's: opening a FIFO for reading waits for a writer to open it, which held the
    starting sink (and the app making it) for as long as nobody did."""
    folder = tmp_path / "model=m" / "hour=2026-09-21T14"
    folder.mkdir(parents=True)
    fifo = folder / ".part-20260921T141320-1-000001.parquet.inprogress"
    os.mkfifo(fifo)
    start = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from aiwatch.feedback import ParquetSink
        print(ParquetSink({str(tmp_path)!r}).recovery.files)
    """)], env=python_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    assert "'orphan_removed': 0" in start.stdout and "'failed': 0" in start.stdout
    assert open_files(tmp_path) == [fifo]


class _Sink:
    """A sink of the user's with a ``take_recovery`` of its own."""

    def __init__(self, take: object) -> None:
        self.take_recovery = take

    def write(self, rows: object) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_sinks_take_recovery_that_raises_is_counted_and_one_with_other_results_exports_only_the_known_ones() -> None:
    def raises() -> Recovery:
        raise RuntimeError("not that kind of recovery")

    registry = CollectorRegistry()
    with PredictionLog(_Sink(raises), registry=registry, name="a"):
        pass
    assert sample(registry, "aiwatch_instrumentation_errors_total", {"component": "prediction_log"}) == 1
    foreign = [Recovery({"recovered": 2, "x" * 200: 5}, records=7)]

    def take_once() -> Recovery:  # what is new since the last call: the log calls it again after flushes and at close
        return foreign.pop() if foreign else Recovery()

    with PredictionLog(_Sink(take_once), registry=registry, name="b"):
        pass
    results = {s.labels["result"]: s.value for m in registry.collect()
               if m.name == "aiwatch_prediction_log_recovery_files" for s in m.samples
               if s.labels.get("log") == "b" and s.name.endswith("_total")}
    assert results == {**dict.fromkeys(RECOVERY_RESULTS, 0.0), "recovered": 2.0}
    assert sample(registry, "aiwatch_prediction_log_recovered_records_total", {"log": "b"}) == 7


RUNBOOK = REPO / "aiwatch" / "runbooks" / "AiwatchPredictionLogRecoveryIncomplete.md"


def runbook_salvage(marker: str) -> str:
    """The runbook's Python snippet holding ``marker``: ``as text`` (a journal whose data Parquet refuses),
    ``read_message`` (a damaged one)."""
    [block] = [b for b in re.findall(r"```python\n(.*?)```", RUNBOOK.read_text(), re.S) if marker in b]
    return textwrap.dedent(block)


@pytest.mark.parametrize("torn", [False, True], ids=["whole", "torn-end"])
def test_the_runbooks_salvage_makes_a_set_aside_journal_into_a_parquet_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torn: bool) -> None:
    """A journal is set aside only when Parquet refuses its data, so the snippet's plain ``pq.write_table`` failed on
    every real one: it now writes the refused column as text."""
    killed_writer_with_journal_sizes(tmp_path, 1)
    [journal] = journals(tmp_path)
    journal.write_bytes(unstorable_journal(torn=torn))
    assert ParquetSink(tmp_path).recovery.files["set_aside"] == 1
    [aside] = tmp_path.rglob(".part-*.parquet.journal.unrecoverable")
    name = aside.name[len(".part-"):-len(".parquet.journal.unrecoverable")]
    monkeypatch.chdir(aside.parent)  # where the runbook runs it
    exec(compile(runbook_salvage("as text").replace("<name>", name), str(RUNBOOK), "exec"), {})
    salvaged = aside.parent / f".salvaged-part-{name}.parquet"
    assert pq.read_table(salvaged).to_pylist() == [{"request_id": "r0", "x": "1.0"}, {"request_id": "r1", "x": "a"}] * 2
