"""Fuzzing the reader of a dead writer's Parquet sink journal (``aiwatch.feedback.journal.Reader``) with damaged
journals: it never raises, never hands back a batch that is not valid (such a batch crashed Parquet's writer), and
accounts for every byte (those of its whole batches, the rest counted as dropped); a length prefix claiming
gigabytes allocates nothing of the sort."""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiwatch.feedback import journal
from tests.servers import require_module

pa = require_module("pyarrow")
pq = require_module("pyarrow.parquet")

SCHEMA = pa.schema([("request_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
                    ("score", pa.float64()), ("error", pa.bool_())])
BATCHES = [pa.RecordBatch.from_pylist([{"request_id": f"r{b}-{i}", "timestamp": 1_790_000_000_000_000 + i,
                                        "score": i / 3, "error": i % 2 == 0} for i in range(3 + b)], schema=SCHEMA)
           for b in range(3)]
JOURNAL = SCHEMA.serialize().to_pybytes() + b"".join(b.serialize().to_pybytes() for b in BATCHES)


@dataclass
class Contents:
    """What recovery's :class:`journal.Reader` gave for a journal, read to its end."""

    schema: Any
    batches: list[Any]
    torn_bytes: int


def read(data: bytes) -> Contents:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ".part-x.parquet.journal"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            reader = journal.Reader(fd, pa)
            batches = list(reader)
            return Contents(reader.schema, batches, reader.torn_bytes)
        finally:
            os.close(fd)


def check(data: bytes) -> Contents:
    contents = read(data)
    for batch in contents.batches:
        batch.validate(full=True)
    if contents.batches:
        sink = pa.BufferOutputStream()
        with pq.ParquetWriter(sink, contents.schema) as writer:  # what recovery does with them
            writer.write_table(pa.Table.from_batches(contents.batches, schema=contents.schema))
    assert 0 <= contents.torn_bytes <= len(data)
    return contents


damages = st.lists(st.tuples(st.integers(0, len(JOURNAL) - 1), st.integers(0, 255)), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damages)
def test_a_journal_with_damaged_bytes_is_read_without_raising_and_gives_only_valid_batches(
        damage: list[tuple[int, int]]) -> None:
    data = bytearray(JOURNAL)
    for at, value in damage:
        data[at] = value
    check(bytes(data))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(JOURNAL)), st.binary(max_size=300))
def test_a_journal_cut_anywhere_and_followed_by_any_bytes_keeps_the_whole_batches_before_the_cut(
        cut: int, tail: bytes) -> None:
    contents = check(JOURNAL[:cut] + tail)
    whole = [b for b in BATCHES if JOURNAL.index(b.serialize().to_pybytes()) + b.serialize().size <= cut]
    assert len(contents.batches) >= len(whole)
    assert all(b.equals(w) for b, w in zip(contents.batches[:len(whole)], whole, strict=True))


def test_a_length_prefix_claiming_gigabytes_allocates_nothing_of_the_sort() -> None:
    before = pa.total_allocated_bytes()
    contents = read(SCHEMA.serialize().to_pybytes() + struct.pack("<Ii", 0xFFFFFFFF, 0x7FFFFFF0) + b"\0" * 64)
    assert pa.total_allocated_bytes() - before < 1 << 20
    assert contents.batches == [] and contents.torn_bytes == 72
