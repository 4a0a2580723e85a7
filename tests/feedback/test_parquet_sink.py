"""ParquetSink: Hive partitions by model and hour, rotation by rows / age / close, temp-and-rename (a file with its
final name is always complete; a crash leaves only hidden temp files that readers skip), and what pyarrow reads
back."""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from aiwatch.feedback import ParquetSink, PredictionLog, RowsLost, parquet_sink
from aiwatch.feedback.parquet_sink import hour_key, microseconds
from tests.servers import REPO, python_env

T0 = 1_790_000_000.0  # 2026-09-21T14:13:20Z


def row(i: int, model: str = "ranker", ts: float = T0, **extra: object) -> dict[str, object]:
    return {"request_id": f"r{i}", "timestamp": ts, "model": model, "model_version": "v1", "trace_id": None,
            "latency_seconds": 0.01 * i, "error": False, "sample_rate": 1.0, "basket_value": float(i),
            "country": "FR", **extra}


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def test_rows_land_in_model_and_hour_partitions(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    sink.write([row(1), row(2, model="fraud/v2"), row(3, ts=T0 + 3600)])
    sink.close()
    dirs = sorted(p.parent.relative_to(tmp_path).as_posix() for p in parquet_files(tmp_path))
    assert dirs == ["model=fraud%2Fv2/hour=2026-09-21T14", "model=ranker/hour=2026-09-21T14",
                    "model=ranker/hour=2026-09-21T15"]
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("model").to_pylist()) == ["fraud/v2", "ranker", "ranker"]
    assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert sorted(table.column("basket_value").to_pylist()) == [1.0, 2.0, 3.0]


def test_batches_appended_to_an_open_file_keep_their_timestamps(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    sink.write([row(1, ts=T0)])
    sink.write([row(2, ts=T0 + 1.5)])
    sink.close()
    [path] = parquet_files(tmp_path)
    stamps = [t.timestamp() for t in pq.read_table(path).column("timestamp").to_pylist()]
    assert stamps == [T0, T0 + 1.5]


@settings(max_examples=500, deadline=None)
@given(st.floats(min_value=-2e9, max_value=4e9, allow_nan=False))
def test_a_timestamp_is_stored_at_the_microsecond_its_datetime_has(ts: float) -> None:
    # --since / --until are datetimes: a row logged at ts must compare with datetime.fromtimestamp(ts) as equal
    since_epoch = datetime.fromtimestamp(ts, UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    assert microseconds(ts) == since_epoch // timedelta(microseconds=1)


def test_the_paths_of_completed_files_kept_are_the_latest_thousand(tmp_path: Path) -> None:
    """A sink lives as long as its service: ``completed`` kept the path of every file it ever rotated (1.4 kB each;
    a file every 5 minutes for 10 models is 400 MB a year). It keeps the latest 1000, oldest first; the files
    themselves are all there."""
    sink = ParquetSink(tmp_path, max_rows=1, fsync=False)
    for i in range(1100):
        sink.write([row(i)])
    on_disk = parquet_files(tmp_path)
    assert len(on_disk) == 1100
    assert sink.completed == on_disk[-1000:]
    assert parquet_sink.MAX_PATHS_KEPT == 1000
    sink.close()


def test_a_row_at_the_boundary_is_on_the_since_side(tmp_path: Path) -> None:
    # 1790000000.7887235 * 1e6 rounds to ...788724 µs, its datetime to ...788723: the row fell 1 µs after its time
    ts = 1790000000.7887235
    sink = ParquetSink(tmp_path)
    sink.write([row(1, ts=ts)])
    sink.close()
    stored = pq.read_table(parquet_files(tmp_path)[0]).column("timestamp").to_pylist()
    assert stored == [datetime.fromtimestamp(ts, UTC)]


def test_files_rotate_at_max_rows(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path, max_rows=4)
    sink.write([row(i) for i in range(10)])
    assert len(sink.completed) == 2  # two full files rotated, 2 rows still open
    sink.close()
    assert [pq.read_metadata(p).num_rows for p in sink.completed] == [4, 4, 2]


def test_an_open_file_is_hidden_until_rotated(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    sink.write([row(1), row(2)])
    assert parquet_files(tmp_path) == []
    temp, journal = sorted((p for p in tmp_path.rglob("*") if p.is_file()), key=lambda p: p.suffix)
    assert temp.name.startswith(".") and temp.name.endswith(".inprogress")
    assert journal.name == temp.name.replace(".inprogress", ".journal")  # hidden too
    assert ds.dataset(tmp_path, format="parquet", partitioning="hive").count_rows() == 0
    sink.close()
    assert [p.name.startswith("part-") for p in parquet_files(tmp_path)] == [True]


def synced(monkeypatch: pytest.MonkeyPatch, failing_directory: bool = False) -> list[tuple[Path, set[str]]]:
    """Each ``os.fsync`` call: the path synced, and the names its directory held then (or, for a file, the file's
    directory). With ``failing_directory``, syncing a directory raises EIO."""
    calls: list[tuple[Path, set[str]]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        calls.append((path, set(os.listdir(path if path.is_dir() else path.parent))))
        if failing_directory and path.is_dir():
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads which file a descriptor is from /proc")
def test_the_rename_is_synced_to_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = synced(monkeypatch)
    sink = ParquetSink(tmp_path)
    sink.write([row(1)])
    sink.close()
    [final] = parquet_files(tmp_path)
    (file_synced, _), (directory_synced, names_then) = calls
    assert file_synced.name.startswith(".") and file_synced.parent == final.parent
    assert directory_synced == final.parent and final.name in names_then  # after the rename


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads which file a descriptor is from /proc")
def test_a_directory_that_cannot_be_synced_loses_no_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = synced(monkeypatch, failing_directory=True)
    sink = ParquetSink(tmp_path)
    sink.write([row(1), row(2)])
    sink.close()  # raises nothing: the file is complete and in view
    assert [p for p, _ in calls if p.is_dir()] == [parquet_files(tmp_path)[0].parent]
    assert pq.read_table(parquet_files(tmp_path)[0]).num_rows == 2 and sink.completed == parquet_files(tmp_path)


def test_without_fsync_nothing_is_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    sink = ParquetSink(tmp_path, fsync=False)
    sink.write([row(1)])
    sink.close()
    assert calls == [] and len(parquet_files(tmp_path)) == 1


def test_flush_rotates_files_older_than_max_file_seconds(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path, max_file_seconds=1e-9)
    sink.write([row(1)])
    sink.flush()
    assert len(parquet_files(tmp_path)) == 1


def test_flush_rotates_a_file_whose_hour_is_over(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path, max_file_seconds=3600)
    sink.write([row(1, ts=T0)])  # September 2026: an hour long over
    sink.flush()
    assert len(parquet_files(tmp_path)) == 1
    assert hour_key(T0) == "2026-09-21T14"


def test_a_new_field_starts_a_new_file_and_the_dataset_reads_both(tmp_path: Path) -> None:
    from aiwatch.drift.datasets import open_dataset

    sink = ParquetSink(tmp_path)
    sink.write([row(1)])
    sink.write([row(2, discount=0.5)])
    sink.close()
    assert len(parquet_files(tmp_path)) == 2
    table = open_dataset(tmp_path).to_table(columns=["basket_value", "discount"])
    assert sorted(table.column("discount").to_pylist(), key=str) == [0.5, None]


def test_a_value_of_another_type_in_an_open_file_starts_a_new_file(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path)
    sink.write([row(1, code=1.0)])
    sink.write([row(2, code="A7")])
    sink.close()
    types = sorted(str(pq.read_schema(p).field("code").type) for p in parquet_files(tmp_path))
    assert types == ["double", "string"]


def test_a_bool_after_numbers_in_an_open_file_stays_a_bool(tmp_path: Path) -> None:
    """pyarrow stores True as 1.0 in a float column: a flag logged as 0.5 once, then as True and False, was written as
    1.0 and 0.0 while the file was open (booleans stay booleans: docs/prediction-log.md, "Schema")."""
    sink = ParquetSink(tmp_path)
    sink.write([row(1, flag=0.5)])
    sink.write([row(2, flag=True), row(3, flag=False)])
    sink.write([row(4, flag=None), row(5, flag=True)])
    sink.close()
    by_type = {str(t.schema.field("flag").type): t.column("flag").to_pylist()
               for t in map(pq.read_table, parquet_files(tmp_path))}
    assert by_type == {"double": [0.5], "bool": [True, False, None, True]}


def mixed_type_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("aiwatch") and "written as text" in r.getMessage()]


def test_a_batch_column_of_numbers_and_text_is_written_as_text_and_logged_once_per_column(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # documented (docs/prediction-log.md, "Schema"): such a column is text, numbers included; it must not be silent
    caplog.set_level(logging.WARNING, logger="aiwatch")
    sink = ParquetSink(tmp_path)
    sink.write([row(1, code=1.0), row(2, code="unknown")])
    sink.write([row(3, code=2.0), row(4, code="A7")])  # the same column again: not logged again
    sink.write([row(5, flag=True), row(6, flag="yes")])
    sink.write([row(7, label="a"), row(8, label="b")])  # text only: nothing to say
    sink.close()
    warnings = mixed_type_warnings(caplog)
    assert len(warnings) == 2, warnings
    assert "'code'" in warnings[0] and "float" in warnings[0] and "str" in warnings[0]
    assert "'flag'" in warnings[1] and "bool" in warnings[1]
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert sorted(v for v in table.column("code").to_pylist() if v is not None) == ["1.0", "2.0", "A7", "unknown"]


def test_a_flood_of_mixed_type_columns_names_a_bounded_number_of_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # column names come from traffic: a client sending 1500 columns of numbers and text must not make 1500 warnings,
    # nor grow the sink's memory of what it said without bound
    caplog.set_level(logging.WARNING, logger="aiwatch")
    sink = ParquetSink(tmp_path)
    columns = [f"c{i}" for i in range(1500)]
    sink.write([row(1, **dict.fromkeys(columns, 1.0)), row(2, **dict.fromkeys(columns, "x"))])
    sink.close()
    named = mixed_type_warnings(caplog)
    assert len(named) == 1000, len(named)
    assert len(sink._told_types) == 1000
    assert any("past the first 1000 columns" in r.getMessage() for r in caplog.records)


def test_a_column_whose_type_changes_between_batches_is_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aiwatch")
    sink = ParquetSink(tmp_path)
    sink.write([row(1, code=1.0)])
    sink.write([row(2, code="A7")])  # a new file: the log's files disagree on the column's type
    sink.write([row(3, code=2.0)])
    sink.write([row(4, discount=0.5)])  # a new column is no change of type
    sink.close()
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("aiwatch") and "'code'" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "double" in warnings[0] and "string" in warnings[0] and "as text" in warnings[0]
    assert not [r for r in caplog.records if "'discount'" in r.getMessage()]


def test_a_crash_keeps_every_rotated_file_and_nothing_half_written(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os
        from aiwatch.feedback import ParquetSink
        sink = ParquetSink({str(tmp_path)!r}, max_rows=3)
        rows = [{{"request_id": str(i), "timestamp": {T0}, "model": "m", "x": float(i)}} for i in range(8)]
        sink.write(rows)
        os._exit(9)  # no close, no atexit, no flush
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=python_env(), cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("x").to_pylist()) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # two rotated files of 3
    leftovers = sorted((p for p in tmp_path.rglob(".*") if p.is_file()), key=lambda p: p.suffix)
    assert [p.suffix for p in leftovers] == [".inprogress", ".journal"]
    with pytest.raises(pa.ArrowInvalid):  # the open file has no footer: its rows (6, 7) are in its journal only
        pq.read_table(leftovers[0])


def test_through_the_log_end_to_end(tmp_path: Path) -> None:
    with PredictionLog(ParquetSink(tmp_path), registry=CollectorRegistry()) as log:
        for i in range(50):
            log.log("ranker", {"basket_value": i, "country": "FR" if i % 2 else "DE"}, {"score": i / 50},
                    version="v2")
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 50
    assert set(table.column("model_version").to_pylist()) == {"v2"}
    assert sorted(table.column("basket_value").to_pylist()) == [float(i) for i in range(50)]
    assert {"request_id", "timestamp", "trace_id", "latency_seconds", "error", "sample_rate",
            "output.score", "country"} <= set(table.schema.names)


def test_a_row_that_does_not_fit_its_columns_fails_alone(tmp_path: Path) -> None:
    # rows of a caller's own (no FieldPolicy): an int in a string column, a timestamp with no hour
    sink = ParquetSink(tmp_path)
    rows = [row(0), row(1, request_id=7), row(2, trace_id=12), row(3, ts=float("nan")), row(4)]
    with pytest.raises(RowsLost) as lost:
        sink.write(rows)
    assert (lost.value.failed, lost.value.lost) == (3, 0)
    sink.close()
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("request_id").to_pylist()) == ["r0", "r4"]


def test_the_rows_that_do_not_fit_are_found_by_halves_at_both_ends_and_in_the_middle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a table per row, across every column, took 16 s for 1000 rows of 200 columns with one bad row
    sink = ParquetSink(tmp_path)
    bad = {0, 1, 100, 254, 255}
    rows = [row(i, request_id=i) if i in bad else row(i) for i in range(256)]
    builds: list[tuple[int, int]] = []  # (rows, columns) of each table tried
    table = sink._table

    def counted(part: list[dict[str, object]], known: object, columns: Sequence[str] | None = None) -> object:
        builds.append((len(part), len(sink._names(part, known)) if columns is None else len(columns)))
        return table(part, known, columns)

    monkeypatch.setattr(sink, "_table", counted)
    with pytest.raises(RowsLost) as lost:
        sink.write(rows)
    assert (lost.value.failed, lost.value.lost) == (len(bad), 0)
    every = len(sink._names(rows, None))
    # every column: the whole batch (failed), then the rows that fit (written); nothing else builds every column
    assert [n for n, columns in builds if columns == every] == [256, 256 - len(bad)]
    # each column checked once over the batch, then halves over the failing one (request_id) alone: at most two
    # halves per level (log2 256) per bad row
    assert len([n for n, columns in builds if columns == 1]) <= every + 2 * len(bad) * 8
    assert len(builds) == 2 + len([n for n, columns in builds if columns == 1])
    sink.close()
    stored = pq.read_table(parquet_files(tmp_path)[0]).column("request_id").to_pylist()
    assert stored == [f"r{i}" for i in range(256) if i not in bad]


def test_the_default_max_open_files_follows_the_descriptor_limit(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    resource = pytest.importorskip("resource")
    limits = ((12, 1), (60, 5), (1200, 100), (1024, 85), (1_000_000, 1024), (resource.RLIM_INFINITY, 1024))
    for soft, expected in limits:
        monkeypatch.setattr(resource, "getrlimit", lambda _which, soft=soft: (soft, resource.RLIM_INFINITY))
        assert ParquetSink(tmp_path).max_open_files == expected
        assert ParquetSink(tmp_path, max_open_files=3).max_open_files == 3  # one given is kept as is
    monkeypatch.setattr(parquet_sink, "resource", None)
    assert ParquetSink(tmp_path).max_open_files == parquet_sink.FALLBACK_MAX_OPEN_FILES


def test_65_models_written_every_batch_rotate_no_file_early_by_default(tmp_path: Path) -> None:
    # with a fixed cap of 64, every batch completed one file per model: 65 tiny files per batch
    resource = pytest.importorskip("resource")
    if 0 <= resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 65 * 12:
        pytest.skip("this process's descriptor limit gives a max_open_files below 65")
    sink = ParquetSink(tmp_path, fsync=False)
    for batch in range(3):
        sink.write([row(100 * batch + i, model=f"tenant-{i}") for i in range(65)])
    assert sink.forced_rotations == 0
    assert sink.completed == []
    sink.close()
    assert len(parquet_files(tmp_path)) == 65


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")
def test_a_flood_of_model_names_keeps_at_most_max_open_files_open_and_every_row(tmp_path: Path) -> None:
    # 3000 model names kept 9000 descriptors open until rotation: the host app's own open() failed with EMFILE
    cap, extra = 8, 12
    sink = ParquetSink(tmp_path, max_open_files=cap)
    before = open_descriptors()
    most = 0
    for i in range(cap + extra):
        sink.write([row(i, model=f"gpt-{i}"), row(1000 + i, model=f"gpt-{i}")])
        most = max(most, open_descriptors() - before)
        assert len(sink._open) <= cap
    assert most <= 3 * cap + 2  # pyarrow's file, its lock and its journal per open file; slack for the process
    assert sink.forced_rotations == extra
    sink.write([row(5000, model=f"gpt-{cap + extra - 1}")])  # the most recent is still open: no rotation
    assert sink.forced_rotations == extra
    sink.close()
    assert open_descriptors() <= before + 2
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 2 * (cap + extra) + 1


def test_a_log_exports_the_files_its_sink_completed_early(tmp_path: Path) -> None:
    """sink.forced_rotations was an attribute only: a flood of model names made small files unseen by the metrics."""
    registry = CollectorRegistry()
    sink = ParquetSink(tmp_path, max_open_files=2, fsync=False)
    name, labels = "aiwatch_prediction_log_forced_rotations_total", {"log": "tenants"}
    log = PredictionLog(sink, registry=registry, name="tenants", batch_size=100, flush_seconds=3600)
    assert registry.get_sample_value(name, labels) == 0  # the series exists from the start
    for i in range(5):  # five models in one batch: three files completed early at a cap of two
        log.log(f"tenant-{i}", {"x": float(i)}, {"score": 0.5})
    assert log.flush(60)
    log.close()  # counts what the sink did since the last count, as at each flush
    assert sink.forced_rotations == 3
    assert registry.get_sample_value(name, labels) == 3
    # taken once: a second log on the same sink counts nothing again
    other = CollectorRegistry()
    PredictionLog(sink, registry=other, name="tenants").close()
    assert other.get_sample_value(name, labels) == 0


def test_the_least_recently_written_file_is_the_one_completed(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path, max_open_files=2)
    sink.write([row(0, model="a")])
    sink.write([row(1, model="b")])
    sink.write([row(2, model="a")])  # "b" is now the least recently written
    sink.write([row(3, model="c")])
    assert [f.parent.parent.name for f in sink.completed] == ["model=b"]
    sink.close()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "64"])
def test_a_max_open_files_that_is_no_whole_number_is_refused_by_name(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match=f"^max_open_files must be a whole number >= 1, got {bad!r}$"):
        ParquetSink(tmp_path, max_open_files=bad)  # type: ignore[arg-type]


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ParquetSink(tmp_path, max_rows=0)
    with pytest.raises(ValueError, match=r"^max_file_seconds must be a number of seconds above 0 and at most 1e9, "
                                         r"got 0$"):
        ParquetSink(tmp_path, max_file_seconds=0)
    assert not os.listdir(tmp_path)


def test_two_logs_given_one_sink_never_write_it_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two logs on one sink (docs/prediction-log.md: "a second log on the same sink") call it from two writer threads:
    unlocked, both used one pyarrow writer at once, and the process died of a segfault."""
    inside, most = [0], [0]
    write_group = ParquetSink._write_group

    def slow_write_group(self: ParquetSink, *args: object) -> None:
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.005)  # long enough that a second writer thread comes in, if nothing keeps it out
            write_group(self, *args)  # type: ignore[arg-type]
        finally:
            inside[0] -= 1

    monkeypatch.setattr(ParquetSink, "_write_group", slow_write_group)
    sink = ParquetSink(tmp_path, max_rows=50, fsync=False)
    logs = [PredictionLog(sink, registry=CollectorRegistry(), name=f"log{k}", batch_size=5, flush_seconds=3600)
            for k in range(2)]

    def work(k: int) -> None:
        for i in range(200):
            logs[k].log("ranker", {"x": float(i)}, 1.0, request_id=f"{k}-{i}", timestamp=T0)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs:
        log.close()
    assert most[0] == 1
    ids = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table().column("request_id").to_pylist()
    assert sorted(ids) == sorted(f"{k}-{i}" for k in range(2) for i in range(200))


def test_a_name_taken_by_another_process_of_the_same_pid_is_passed_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file's name is its second, the pid and a count per process: two processes of one pid in one second (two
    containers' pid 1 on one volume, a crash-looping one whose restart recovered the dead one's journal under that
    name) made the same name, and the second's rename replaced the first's finished file, rows and all."""
    frozen = time.gmtime(T0)
    gmtime = time.gmtime
    monkeypatch.setattr(time, "gmtime", lambda *args: gmtime(*args) if args else frozen)
    for tag in "AB":
        monkeypatch.setattr(parquet_sink, "_SEQ", itertools.count(1))  # a new process: its count starts again
        sink = ParquetSink(tmp_path, fsync=False)
        sink.write([row(i, request_id=f"{tag}{i}") for i in range(3)])
        sink.close()
    # a dead writer's journal under the next name: left for recovery, not taken
    monkeypatch.setattr(parquet_sink, "_SEQ", itertools.count(1))
    taken = parquet_sink.journal_path(parquet_files(tmp_path)[-1].with_name(
        parquet_files(tmp_path)[-1].name.replace("000002", "000003")))
    taken.write_bytes(b"")
    sink = ParquetSink(tmp_path, fsync=False, journal=False)
    sink.write([row(9, request_id="C9")])
    sink.close()
    assert [p.name[-14:] for p in sink.completed] == ["000004.parquet"]
    ids = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table().column("request_id").to_pylist()
    assert sorted(ids) == ["A0", "A1", "A2", "B0", "B1", "B2", "C9"]


def test_a_row_is_in_the_hour_directory_of_the_time_it_is_stored_at(tmp_path: Path) -> None:
    """A row's ``hour=`` directory is the hour of its stored (whole microseconds) timestamp, with a four-digit year:
    the readers prune the directories by it. A time less than half a microsecond before an hour was stored as that
    hour's first microsecond but filed under the hour before, and one of the year 702 under ``702-...`` (after
    ``2026-...``): a window's read (``--since`` the hour, ``--until`` the year 800) left each out."""
    from aiwatch.drift.datasets import open_dataset, time_filter

    hour = datetime(2026, 12, 6, 9, tzinfo=UTC)
    early = datetime(702, 6, 15, tzinfo=UTC)
    edge = hour.timestamp() - 2.4e-7  # the float before the hour, rounded up to it when stored
    sink = ParquetSink(tmp_path)
    sink.write([row(1, ts=edge), row(2, ts=(early - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())])
    sink.close()

    data = open_dataset(tmp_path)
    since = data.to_table(filter=time_filter(data, hour, hour + timedelta(hours=1))).column("request_id")
    assert since.to_pylist() == ["r1"]
    until = data.to_table(filter=time_filter(data, None, datetime(800, 1, 1, tzinfo=UTC))).column("request_id")
    assert until.to_pylist() == ["r2"]
    assert sorted(p.parent.name for p in parquet_files(tmp_path)) == ["hour=0702-06-15T00", "hour=2026-12-06T09"]
