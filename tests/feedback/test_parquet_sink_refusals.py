"""What a starting sink does with a dead writer's journal it cannot make into a file: set aside (``.unrecoverable``)
only when Arrow or Parquet refuses its data; left unchanged, counted ``failed``, for anything else; a batch that
claims more values than its journal's bytes could hold dropped as not valid (it held the start, or ran it out of
memory); and a compression Parquet cannot write refused when the sink is made, before it judges any journal."""

from __future__ import annotations

import errno
import gc
import logging
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aiwatch.feedback import ParquetSink
from aiwatch.feedback import journal as journal_module
from tests.feedback.test_parquet_sink_journal import dataset_rows
from tests.feedback.test_parquet_sink_recovery import RUNBOOK, runbook_salvage

NAME = ".part-20260921T141320-1-000001.parquet.journal"
SCHEMA = pa.schema([("request_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")), ("x", pa.float64())])


def good_batch(first: int, rows: int = 2) -> pa.RecordBatch:
    return pa.record_batch([pa.array([f"r{i}" for i in range(first, first + rows)]),
                            pa.array([1_758_463_260_000_000] * rows, pa.timestamp("us", tz="UTC")),
                            pa.array([float(i) for i in range(rows)])], schema=SCHEMA)


def good_journal(batches: int = 1) -> bytes:
    """A journal as the sink writes one: its schema, then each batch's messages."""
    return SCHEMA.serialize().to_pybytes() + b"".join(good_batch(2 * b).serialize().to_pybytes()
                                                       for b in range(batches))


def journal_at(root: Path, data: bytes) -> Path:
    """A dead writer's journal holding ``data`` (nothing holds its lock)."""
    folder = root / "model=m" / "hour=2026-09-21T14"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / NAME
    path.write_bytes(data)
    return path


def union_journal() -> bytes:
    """A dense union column: Parquet has no such type (ArrowNotImplementedError)."""
    union = pa.UnionArray.from_dense(pa.array([0], type=pa.int8()), pa.array([0], type=pa.int32()), [pa.array([1.0])])
    batch = pa.RecordBatch.from_arrays([pa.array(["r0"]), union], names=["request_id", "x"])
    return batch.schema.serialize().to_pybytes() + batch.serialize().to_pybytes()


def zero_width_binary_journal() -> bytes:
    """A ``fixed_size_binary(0)`` column: Parquet refuses it with an OSError that has no errno (a ParquetException,
    "Invalid FIXED_LEN_BYTE_ARRAY length: 0"), where the disk's OSErrors have one."""
    schema = pa.schema([("request_id", pa.string()), ("x", pa.binary(0))])
    batch = pa.record_batch([pa.array(["r0", "r1"]), pa.array([b"", b""], pa.binary(0))], schema=schema)
    return schema.serialize().to_pybytes() + batch.serialize().to_pybytes()


def failing_rebuild(monkeypatch: pytest.MonkeyPatch, fault: BaseException) -> None:
    def rebuild_part(self: ParquetSink, writer: Any, temp: Path, schema: Any, batches: list[Any]) -> Any:
        raise fault

    monkeypatch.setattr(ParquetSink, "_rebuild_part", rebuild_part)


REFUSALS = {
    "union (ArrowNotImplementedError)": (union_journal, None),
    "fixed_size_binary(0) (OSError without errno)": (zero_width_binary_journal, None),
    "ArrowInvalid": (good_journal, pa.ArrowInvalid("Parquet refuses a value")),
    "ArrowTypeError": (good_journal, pa.ArrowTypeError("Parquet refuses a type")),
    "ArrowCapacityError": (good_journal, pa.ArrowCapacityError("a value past Parquet's size limit")),
    "ArrowNotImplementedError": (good_journal, pa.ArrowNotImplementedError("a type Parquet cannot store")),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_journal_whose_data_arrow_or_parquet_refuses_is_set_aside_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    make, fault = REFUSALS[case]
    data = make()
    path = journal_at(tmp_path, data)
    if fault is not None:  # injected where the rebuild writes: the journal itself is one the sink writes
        failing_rebuild(monkeypatch, fault)
    recovery = ParquetSink(tmp_path).recovery
    assert {k: v for k, v in recovery.files.items() if v} == {"set_aside": 1}
    aside = path.with_name(NAME + ".unrecoverable")
    assert not path.exists() and aside.read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == [aside.name]  # no file rebuilt half-way left behind
    assert not any(ParquetSink(tmp_path).recovery.files.values())  # not tried again


@pytest.mark.parametrize("fault", [pa.ArrowKeyError("a bug in the rebuild"),
                                   OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))],
                         ids=["ArrowKeyError", "OSError-ENOSPC"])
def test_a_failure_not_of_the_journals_data_leaves_it_counted_failed_logged_with_a_traceback_unless_the_disks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fault: Exception) -> None:
    """An Arrow error that is not a refusal says nothing of the journal; the disk's error (an errno) needs no
    traceback, anything else does (memory short, a bug: where)."""
    data = good_journal()
    path = journal_at(tmp_path, data)
    failing_rebuild(monkeypatch, fault)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        recovery = ParquetSink(tmp_path).recovery
    assert {k: v for k, v in recovery.files.items() if v} == {"failed": 1}
    assert path.read_bytes() == data and [p.name for p in path.parent.iterdir()] == [NAME]
    [record] = [r for r in caplog.records if "could not be recovered" in r.getMessage()]
    if isinstance(fault, OSError):
        assert record.exc_info is None
    else:
        assert record.exc_info is not None and record.exc_info[1] is fault


@pytest.mark.parametrize("compression", ["bogus", "lzo", {"latency_seconds": "lzo"}, {"latency_seconds": None},
                                         {1: "snappy"}],
                         ids=["bogus", "lzo", "per-column", "per-column-none", "per-column-key-no-str"])
def test_a_compression_parquet_cannot_write_is_refused_when_the_sink_is_made_before_any_journal_is_judged(
        tmp_path: Path, compression: Any) -> None:
    """A journal rebuilt with it failed as Parquet's refusal of its data would (an OSError without errno, an Arrow
    error): every journal would have been set aside for a reason not in it."""
    data = good_journal()
    path = journal_at(tmp_path, data)
    with pytest.raises(ValueError, match=re.escape(f"compression={compression!r}")):
        ParquetSink(tmp_path, compression=compression)
    assert [p.name for p in path.parent.iterdir()] == [NAME] and path.read_bytes() == data
    assert ParquetSink(tmp_path).recovery.files["recovered"] == 1


def null_rows_journal(rows: int) -> bytes:
    """A null column (no bytes a row) whose batch claims ``rows`` rows: reviewer's nulls2.py."""
    schema = pa.schema([("x", pa.null())])
    body = pa.RecordBatch.from_arrays([pa.nulls(123457)], schema=schema).serialize().to_pybytes()
    needle = (123457).to_bytes(8, "little")
    assert needle in body
    return schema.serialize().to_pybytes() + body.replace(needle, rows.to_bytes(8, "little"))


def no_column_journal(rows: int) -> bytes:
    """A schema of no columns whose one batch claims ``rows`` rows."""
    schema = pa.schema([])
    batch = pa.record_batch([pa.array(range(123457))], names=["x"]).select([])
    body = batch.serialize().to_pybytes()
    needle = (123457).to_bytes(8, "little")
    assert needle in body
    return schema.serialize().to_pybytes() + body.replace(needle, rows.to_bytes(8, "little"))


def null_items_batch(items: int) -> bytes:
    """A one-row batch whose large_list<null> column claims ``items`` items: reviewer's listnull.py."""
    lst = pa.LargeListArray.from_arrays(pa.array([0, 987654], pa.int64()), pa.nulls(987654))
    batch = pa.RecordBatch.from_arrays([pa.array(["b"]), lst], names=["request_id", "x"])
    return batch.serialize().to_pybytes().replace((987654).to_bytes(8, "little"), items.to_bytes(8, "little"))


def null_items_journal(items: int, good: int = 0) -> bytes:
    """``good`` batches of one row with an empty list, then the batch claiming ``items`` items: midclose.py."""
    lst = pa.LargeListArray.from_arrays(pa.array([0, 0], pa.int64()), pa.nulls(0))
    batch = pa.RecordBatch.from_arrays([pa.array(["g"]), lst], names=["request_id", "x"])
    return batch.schema.serialize().to_pybytes() + batch.serialize().to_pybytes() * good + null_items_batch(items)


@pytest.mark.parametrize(("data", "rows"), [
    (null_rows_journal(1 << 40), 0), (null_items_journal(1 << 40), 0), (null_items_journal(1 << 40, good=3), 3),
    (no_column_journal(1 << 40), 0),
], ids=["null-column-2^40-rows", "list-of-null-2^40-items", "after-3-good-batches", "no-column-2^40-rows"])
def test_a_batch_claiming_more_values_than_its_journal_could_hold_is_dropped_as_not_valid(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, data: bytes, rows: int) -> None:
    """Null values take no bytes: a damaged or hostile journal of a few hundred bytes claiming 2^40 of them held the
    sink's start for minutes (writing them to Parquet) or ran it out of memory, at every start."""
    path = journal_at(tmp_path, data)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        sink = ParquetSink(tmp_path)
    assert {k: v for k, v in sink.recovery.files.items() if v} == {"set_aside": 1}
    assert sink.recovery.records == rows and not path.exists()
    assert path.with_name(path.name + ".unrecoverable").read_bytes() == data
    assert [r for r in caplog.records if "is not valid" in r.getMessage() and "per byte" in r.getMessage()]
    if rows:
        assert pq.read_table(sink.recovered[0]).column("request_id").to_pylist() == ["g"] * rows


def test_the_sinks_own_journal_of_the_densest_rows_is_recovered_whole(tmp_path: Path) -> None:
    """The bound on values per byte is one the sink's journals never reach: bool columns are its densest (a bit a
    value), beside the timestamp column every batch has (8 bytes a row)."""
    live = tmp_path / "live"
    sink = ParquetSink(live)
    rows = [{"request_id": f"r{i}", "timestamp": 1_758_463_260.0, "model": "m",
             **{f"b{c}": bool(i % 2) for c in range(300)}} for i in range(500)]
    sink.write(rows)
    [written] = live.rglob(".*.journal")
    data = written.read_bytes()
    values = sum(journal_module._values(pa, batch) for batch in pa.ipc.open_stream(data))
    assert 0 < values <= journal_module.MAX_VALUES_PER_BYTE * len(data)
    journal_at(tmp_path / "dead", data)
    recovery = ParquetSink(tmp_path / "dead").recovery
    assert {k: v for k, v in recovery.files.items() if v} == {"recovered": 1} and recovery.records == 500
    sink.close()


def descriptors_under(root: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root)):
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads which file a descriptor is from /proc")
def test_a_writer_whose_first_write_of_a_rebuild_fails_is_closed_though_a_handler_keeps_the_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Its descriptor, of a file removed, lived on with the traceback the log record holds (caplog keeps it, as a
    buffering handler would)."""
    journal_at(tmp_path, good_journal())
    real = pq.ParquetWriter.write_table

    def short(self: Any, table: Any, *args: Any, **kwargs: Any) -> None:
        if "request_id" in table.column_names:  # not the sink's check of its compression
            raise MemoryError("short")
        real(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", short)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        assert ParquetSink(tmp_path).recovery.files["failed"] == 1
    [record] = [r for r in caplog.records if "could not be recovered" in r.getMessage()]
    assert record.exc_info is not None  # the traceback, and its frames, are alive
    gc.collect()
    assert descriptors_under(tmp_path) == []
    monkeypatch.undo()
    assert ParquetSink(tmp_path).recovery.records == 2 and dataset_rows(tmp_path) == ["r0", "r1"]


def test_the_runbooks_salvage_writes_a_column_parquet_refuses_with_an_oserror_as_text(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set aside now, the fixed_size_binary(0) journal needs the salvage too: its column fails with an OSError, which
    the snippet let through (it caught Arrow's errors only)."""
    journal_at(tmp_path, zero_width_binary_journal())
    assert ParquetSink(tmp_path).recovery.files["set_aside"] == 1
    [aside] = tmp_path.rglob(".part-*.parquet.journal.unrecoverable")
    name = aside.name[len(".part-"):-len(".parquet.journal.unrecoverable")]
    monkeypatch.chdir(aside.parent)
    exec(compile(runbook_salvage("as text").replace("<name>", name), str(RUNBOOK), "exec"), {})
    salvaged = aside.parent / f".salvaged-part-{name}.parquet"
    assert pq.read_table(salvaged).to_pylist() == [{"request_id": "r0", "x": "b''"}, {"request_id": "r1", "x": "b''"}]


def _stream(column: Any) -> bytes:
    batch = pa.RecordBatch.from_pydict({"x": column})
    out = pa.BufferOutputStream()
    with pa.ipc.new_stream(out, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(out.getvalue().to_pybytes())


def _large_list_of_nulls(items: int) -> Any:
    return pa.LargeListArray.from_arrays(pa.array([0, items], pa.int64()), pa.nulls(items))


NEEDS_LIST_VIEWS = pytest.mark.skipif(not hasattr(pa, "LargeListViewArray"), reason="pyarrow < 16 has no list views")
CLAIMS = 1 << 20  # null items a few hundred bytes claim, each written by Parquet: past the bound, not too slow to build


@pytest.mark.parametrize("column", [
    pytest.param(lambda: pa.ExtensionArray.from_storage(pa.opaque(pa.large_list(pa.null()), "t", "v"),
                                                        _large_list_of_nulls(CLAIMS)), id="opaque-extension",
                 marks=pytest.mark.skipif(not hasattr(pa, "opaque"), reason="pyarrow < 18 has no opaque type")),
    pytest.param(lambda: pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.null(), [CLAIMS]),
                                                        pa.FixedSizeListArray.from_arrays(pa.nulls(CLAIMS), CLAIMS)),
                 id="fixed-shape-tensor-extension"),
    # 1000 rows each viewing the same items: Parquet writes 1000 x (CLAIMS / 1000)
    pytest.param(lambda: pa.LargeListViewArray.from_arrays(pa.array([0] * 1000, pa.int64()),
                                                           pa.array([CLAIMS // 1000] * 1000, pa.int64()),
                                                           pa.nulls(CLAIMS // 1000)),
                 id="overlapping-list-views", marks=NEEDS_LIST_VIEWS),
    # views of one list of nulls each: a count of the views' sizes sees 1000 x 1 items, Parquet writes 1000 x CLAIMS
    pytest.param(lambda: pa.LargeListViewArray.from_arrays(pa.array([0] * 1000, pa.int64()),
                                                           pa.array([1] * 1000, pa.int64()),
                                                           _large_list_of_nulls(CLAIMS)),
                 id="views-of-a-nested-list", marks=NEEDS_LIST_VIEWS),
])
def test_what_pyarrows_own_extension_types_and_overlapping_list_views_claim_is_counted(
        tmp_path: Path, column: Any) -> None:
    """pyarrow's built-in extension types (opaque, fixed_shape_tensor: no ``pa.ExtensionType``) were counted as flat
    columns, their nested storage not at all; overlapping list views counted their items once, not per view (a
    list view is refused: the sink never writes one)."""
    data = _stream(column())
    assert len(data) < 20_000
    path = tmp_path / "hostile.journal"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = journal_module.Reader(fd, pa)
        assert list(reader) == []
        assert "claim" in reader.invalid or "never writes" in reader.invalid
    finally:
        os.close(fd)


def header_type_flipped(batches: int, damaged: int) -> bytes:
    """A journal of ``batches`` good batches whose batch ``damaged`` has a bit of its message's header type flipped
    (a bad sector, not a torn end): its bytes are all there, and pyarrow cannot read it."""
    data = bytearray(good_journal(batches))
    at = len(SCHEMA.serialize().to_pybytes()) + damaged * len(good_batch(0).serialize().to_pybytes())
    length = int.from_bytes(data[at + 4:at + 8], "little")
    metadata = bytes(data[at + 8:at + 8 + length])
    message = journal_module._table(metadata, journal_module._scalar(metadata, 0, journal_module._U32))
    header_type = journal_module._field(metadata, message, 1, 1)
    assert header_type is not None and metadata[header_type] == journal_module.RECORD_BATCH
    data[at + 8 + header_type] ^= 0x04
    return bytes(data)


def test_a_journal_damaged_but_not_torn_is_set_aside_with_the_batches_before_the_damage_recovered(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A batch pyarrow cannot read though its bytes are all there (a flipped bit) was taken for a torn end: the
    journal was counted torn and deleted, with the whole batches after the damage. It is set aside now."""
    data = header_type_flipped(3, damaged=1)
    path = journal_at(tmp_path, data)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        sink = ParquetSink(tmp_path)
    assert {k: v for k, v in sink.recovery.files.items() if v} == {"set_aside": 1}
    assert sink.recovery.records == 2 and dataset_rows(tmp_path) == ["r0", "r1"]
    assert not path.exists() and path.with_name(path.name + ".unrecoverable").read_bytes() == data
    [record] = [r for r in caplog.records if "is not valid" in r.getMessage()]
    assert "cannot be read" in record.getMessage() and "damaged, not torn" in record.getMessage()
    assert "2 rows of the 1 whole batches before it recovered into" in record.getMessage()


def test_a_journal_cut_anywhere_is_torn_never_damaged(tmp_path: Path) -> None:
    """What a writer that dies leaves, a journal cut short at any byte, is never taken for damage."""
    data = good_journal(3)
    path = tmp_path / "cut.journal"
    judged = []
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        fd = os.open(path, os.O_RDONLY)
        try:
            reader = journal_module.Reader(fd, pa)
            judged.append((len(list(reader)), reader.invalid))
        finally:
            os.close(fd)
    assert {invalid for _, invalid in judged} == {""}
    assert [batches for batches, _ in judged][-1] == 3


def test_an_empty_journal_is_removed_counted_torn_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    """A journal has its schema from the moment it has its name: an empty one lost what was written to it (a power
    cut before the disk had it). It was removed without a count or a word."""
    path = journal_at(tmp_path, b"")
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        sink = ParquetSink(tmp_path)
    assert {k: v for k, v in sink.recovery.files.items() if v} == {"torn": 1}
    assert sink.torn_batches == 1 and not path.exists() and sink.recovered == []
    assert [r for r in caplog.records if str(path) in r.getMessage() and "is empty" in r.getMessage()]


def test_the_runbooks_salvage_of_a_damaged_journal_writes_the_batches_after_the_damage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows before the damaged batch are in the recovered file already: the runbook's snippet for a damaged
    journal writes only those after it, skipping the batch that cannot be read."""
    path = journal_at(tmp_path, header_type_flipped(4, damaged=1))
    sink = ParquetSink(tmp_path)
    assert sink.recovery.files["set_aside"] == 1 and dataset_rows(tmp_path) == ["r0", "r1"]
    name = NAME[len(".part-"):-len(".parquet.journal")]
    monkeypatch.chdir(path.parent)  # where the runbook runs it
    exec(compile(runbook_salvage("read_message").replace("<name>", name), str(RUNBOOK), "exec"), {})
    salvaged = pq.read_table(path.parent / f".part-{name}-salvaged.parquet")
    assert salvaged.column("request_id").to_pylist() == ["r4", "r5", "r6", "r7"]


@pytest.mark.parametrize("under", ["", "logs"])
def test_a_directory_that_is_a_file_is_refused_when_the_sink_is_made(tmp_path: Path, under: str) -> None:
    """ParquetSink("/data/predictions") where that path (or a parent of it) is a file was taken, and every batch
    failed to make its folder ("File exists", "Not a directory"): every row lost, each batch logged and counted,
    with no word of the directory given. A directory not made yet is still taken (made at the first write)."""
    file = tmp_path / "predictions"
    file.write_text("")
    directory = file / under if under else file
    where = "is" if not under else f"is under {str(file)!r}, which is"
    with pytest.raises(ValueError, match=re.escape(f"the prediction log's directory {str(directory)!r} {where} a "
                                                   "file, not a directory")):
        ParquetSink(directory)
    ParquetSink(tmp_path / "not" / "made" / "yet").close()


@pytest.mark.parametrize("option", ["fsync", "journal", "journal_fsync"])
def test_a_string_switch_is_refused_naming_it(tmp_path: Path, option: str) -> None:
    with pytest.raises(TypeError, match=rf"^{option} must be True or False, got 'false' of type str$"):
        ParquetSink(tmp_path, **{option: "false"})
