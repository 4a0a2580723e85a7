"""A journal batch compressed with Arrow IPC body compression (zstd, lz4), which the sink never writes, is refused
before pyarrow reads it: pyarrow's stream reader decompresses a body on its own, and a few kilobytes of zstd decoded to
gigabytes at the sink's start (one run of zeros in a string is one value: the bound on values per byte saw nothing).
The refusal is taken from the message's metadata (a flatbuffer) read apart, by :func:`journal._message_header`, which
reads any bytes without raising. pyarrow also decodes a batch of metadata version V4 compressed in Arrow 0.17's form
(the codec named in the message's custom metadata, no compression field): a batch of any version but V5, the one the
sink writes, is refused too."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiwatch.feedback import ParquetSink
from aiwatch.feedback import journal as journal_module
from tests.feedback.test_parquet_sink_refusals import NAME, SCHEMA, good_batch, journal_at

CODECS = [codec for codec in ("zstd", "lz4") if pa.Codec.is_available(codec)]
KINDS = {"schema": 1, "dictionary": 2, "record batch": 3}  # union MessageHeader of Arrow's format/Message.fbs
DICT_SCHEMA = pa.schema([("request_id", pa.string()), ("model_version", pa.dictionary(pa.int32(), pa.string()))])


def dict_batch(first: int, versions: list[str]) -> pa.RecordBatch:
    return pa.record_batch([pa.array([f"r{i}" for i in range(first, first + len(versions))]),
                            pa.array(versions).dictionary_encode()], schema=DICT_SCHEMA)


def stream(schema: pa.Schema, batches: list[pa.RecordBatch], compression: str | None,
           version: pa.ipc.MetadataVersion = pa.ipc.MetadataVersion.V5) -> bytes:
    """The batches as pyarrow's stream writer writes them, without its end marker (a journal has none)."""
    out = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression, metadata_version=version)
    with pa.ipc.new_stream(out, schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return out.getvalue().to_pybytes()[:-8]


def messages(data: bytes) -> list[Any]:
    return list(pa.ipc.MessageReader.open_stream(pa.BufferReader(data)))


def metadata_samples() -> list[bytes]:
    """The metadata of each kind of message pyarrow writes, compressed or not: schemas, dictionary and record batches
    (a replacement dictionary between batches included)."""
    found = []
    for compression in (None, *CODECS):
        data = stream(DICT_SCHEMA, [dict_batch(0, ["v1", "v2"]), dict_batch(2, ["v3"])], compression)
        found += [m.metadata.to_pybytes() for m in messages(data)]
    return found


SAMPLES = metadata_samples()


@pytest.mark.parametrize("version", [pa.ipc.MetadataVersion.V4, pa.ipc.MetadataVersion.V5])
@pytest.mark.parametrize("compression", [None, *CODECS])
def test_the_header_of_each_message_pyarrow_writes_is_read_as_pyarrow_reads_it(
        compression: str | None, version: pa.ipc.MetadataVersion) -> None:
    data = stream(DICT_SCHEMA, [dict_batch(0, ["v1", "v2"]), dict_batch(2, ["v3"])], compression, version)
    found = messages(data)
    assert [m.type for m in found] == ["schema", "dictionary", "record batch", "dictionary", "record batch"]
    for message in found:
        header = journal_module._message_header(message.metadata.to_pybytes())
        body = 0 if message.body is None else message.body.size
        assert message.metadata_version == version
        assert header == (KINDS[message.type], body, compression is not None and message.type != "schema",
                          int(message.metadata_version))


def test_every_message_of_the_sinks_own_journal_is_of_metadata_version_v5(tmp_path: Path) -> None:
    """The rule that refuses a batch of any other version refuses nothing the sink writes (pyarrow's default since
    1.0, the version ``serialize`` writes)."""
    assert pa.ipc.IpcWriteOptions().metadata_version == pa.ipc.MetadataVersion.V5 == journal_module.V5
    sink = ParquetSink(tmp_path)
    for first in (0, 2):
        sink.write([{"request_id": f"r{i}", "timestamp": 1_758_463_260.0 + i, "model": "m", "latency_seconds": 0.1,
                     "error": False, "model_version": "v1"} for i in range(first, first + 2)])
    [written] = tmp_path.rglob(".*.journal")
    found = messages(written.read_bytes())
    assert [m.type for m in found] == ["schema", "record batch", "record batch"]
    assert {journal_module._message_header(m.metadata.to_pybytes()).version for m in found} == {journal_module.V5}


def test_metadata_with_an_offset_out_of_its_bytes_is_not_valid() -> None:
    metadata = bytearray(messages(good_batch(0).serialize().to_pybytes())[0].metadata.to_pybytes())
    assert journal_module._message_header(bytes(metadata)) is not None
    for root in (len(metadata), len(metadata) - 2, 0xFFFFFFFF):  # the Message table at or past the end
        damaged = bytearray(metadata)
        damaged[:4] = root.to_bytes(4, "little")
        assert journal_module._message_header(bytes(damaged)) is None
    table = int.from_bytes(metadata[:4], "little")
    vtable = table - int.from_bytes(metadata[table:table + 4], "little", signed=True)
    for soffset in (table + 1, table - len(metadata), -(1 << 31), (1 << 31) - 1):  # its vtable before or past them
        damaged = bytearray(metadata)
        damaged[table:table + 4] = soffset.to_bytes(4, "little", signed=True)
        assert journal_module._message_header(bytes(damaged)) is None
    damaged = bytearray(metadata)
    damaged[vtable:vtable + 2] = (0xFFFE).to_bytes(2, "little")  # a vtable longer than the bytes
    assert journal_module._message_header(bytes(damaged)) is None
    for slot in (4, 6, 8, 10):  # version, header_type, header, bodyLength: past the end
        damaged = bytearray(metadata)
        damaged[vtable + slot:vtable + slot + 2] = (0xFFFF).to_bytes(2, "little")
        assert journal_module._message_header(bytes(damaged)) is None


@pytest.mark.parametrize("metadata", SAMPLES, ids=range(len(SAMPLES)))
def test_metadata_cut_anywhere_is_not_valid_or_read_as_whole(metadata: bytes) -> None:
    """Only the fields read are checked (pyarrow checks the rest): a cut past them reads as the whole, never as a
    body uncompressed that is not."""
    whole = journal_module._message_header(metadata)
    assert whole is not None
    cuts = [journal_module._message_header(metadata[:cut]) for cut in range(len(metadata))]
    assert set(cuts) <= {None, whole} and cuts[:8] == [None] * 8


def check_header(data: bytes) -> None:
    header = journal_module._message_header(data)
    assert header is None or (isinstance(header, journal_module._MessageHeader) and header.body_length >= 0)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_as_metadata_are_read_or_not_valid_never_raised(data: bytes) -> None:
    check_header(data)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(SAMPLES), st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1,
                                           max_size=8), st.integers(0, 1 << 16))
def test_metadata_with_damaged_bytes_is_read_or_not_valid_never_raised(
        metadata: bytes, damage: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(metadata)
    for at, value in damage:
        data[at % len(data)] = value
    check_header(bytes(data[:cut]))
    check_header(bytes(data))


class Reads:
    """The byte ranges the journal's reader (its :class:`journal._Bounded` source) read."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ranges: list[tuple[int, int]] = []
        read = journal_module._Bounded.read

        def recorded(source: Any, size: int | None = -1) -> bytes:
            at = source.tell()
            data: bytes = read(source, size)
            self.ranges.append((at, at + len(data)))
            return data

        monkeypatch.setattr(journal_module._Bounded, "read", recorded)

    def furthest(self) -> int:
        return max(end for _, end in self.ranges)


def read_journal(path: Path) -> tuple[journal_module.Reader, list[pa.RecordBatch]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = journal_module.Reader(fd, pa)
        return reader, list(reader)
    finally:
        os.close(fd)


def compressed_journal(compression: str, good: int = 2, after: int = 1) -> tuple[bytes, int]:
    """``good`` batches as the sink writes them, a batch compressed with ``compression`` (as one stream writer writes
    it: the sink's schema), then ``after`` more as the sink writes them; and where the compressed one starts."""
    head = SCHEMA.serialize().to_pybytes() + b"".join(good_batch(2 * b).serialize().to_pybytes() for b in range(good))
    compressed = stream(SCHEMA, [good_batch(100, rows=1000)], compression)[len(SCHEMA.serialize().to_pybytes()):]
    tail = b"".join(good_batch(200 + 2 * b).serialize().to_pybytes() for b in range(after))
    return head + compressed + tail, len(head)


@pytest.mark.parametrize("compression", CODECS)
def test_a_compressed_batch_is_refused_unread_and_the_batches_before_it_are_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str) -> None:
    data, start = compressed_journal(compression)
    path = journal_at(tmp_path, data)
    reads = Reads(monkeypatch)
    reader, batches = read_journal(path)
    assert [b.equals(good_batch(2 * i)) for i, b in enumerate(batches)] == [True, True]
    assert "compressed" in reader.invalid and reader.torn_bytes == len(data) - start
    assert reads.furthest() <= start  # not even its length prefix: pyarrow was never handed it


@pytest.mark.parametrize("compression", CODECS)
def test_a_starting_sink_sets_a_journal_with_a_compressed_batch_aside_and_recovers_the_batches_before_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, compression: str) -> None:
    data, start = compressed_journal(compression)
    path = journal_at(tmp_path, data)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        sink = ParquetSink(tmp_path)
    assert {k: v for k, v in sink.recovery.files.items() if v} == {"set_aside": 1}
    assert sink.recovery.records == 4 and not path.exists() and sink.torn_batches == 1
    assert path.with_name(path.name + ".unrecoverable").read_bytes() == data  # not a sink's: kept to find its writer
    assert pq.read_table(sink.recovered[0]).column("request_id").to_pylist() == ["r0", "r1", "r2", "r3"]
    [record] = [r for r in caplog.records if "is not valid" in r.getMessage()]
    assert f"{len(data) - start} bytes from it on not read: kept as" in record.getMessage()
    assert "body is compressed" in record.getMessage()


@pytest.mark.parametrize("compression", CODECS)
def test_a_journal_compressed_from_its_first_batch_recovers_nothing_and_is_set_aside(
        tmp_path: Path, compression: str) -> None:
    data = stream(SCHEMA, [good_batch(0), good_batch(2)], compression)
    path = journal_at(tmp_path, data)
    sink = ParquetSink(tmp_path)
    assert {k: v for k, v in sink.recovery.files.items() if v} == {"set_aside": 1}
    assert sink.recovery.records == 0 and sink.recovered == [] and not path.exists()
    assert path.with_name(path.name + ".unrecoverable").read_bytes() == data


@pytest.mark.parametrize("compression", CODECS)
def test_a_compressed_dictionary_batch_is_refused_unread_before_the_batch_that_needs_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str) -> None:
    """The sink's columns are never dictionaries, but a journal's may be: pyarrow reads (and decompresses) the
    dictionary batches before a record batch in the same call, so each is judged with it."""
    plain = stream(DICT_SCHEMA, [dict_batch(0, ["v1", "v2"])], None)
    schema_size = len(DICT_SCHEMA.serialize().to_pybytes())
    later = stream(DICT_SCHEMA, [dict_batch(2, ["v3"] * 1000)], compression)[schema_size:]
    [dictionary, batch] = messages(DICT_SCHEMA.serialize().to_pybytes() + later)[1:]
    assert dictionary.type == "dictionary" and batch.type == "record batch"
    path = journal_at(tmp_path, plain + later)
    reads = Reads(monkeypatch)
    reader, batches = read_journal(path)
    assert len(batches) == 1 and batches[0].equals(dict_batch(0, ["v1", "v2"]))
    assert reader.invalid.startswith("a dictionary batch whose body is compressed")
    assert reader.torn_bytes == len(later) and reads.furthest() <= len(plain)


@pytest.mark.parametrize("compression", CODECS)
def test_a_compressed_batch_after_an_uncompressed_dictionary_batch_is_refused_before_either_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str) -> None:
    """pyarrow reads a replacement dictionary and the record batch after it in one call: the walk over the
    dictionary batch (by its body length) reaches the compressed batch first."""
    plain = stream(DICT_SCHEMA, [dict_batch(0, ["v1", "v2"])], None)
    [dictionary] = [m for m in messages(stream(DICT_SCHEMA, [dict_batch(2, ["v3"])], None)) if m.type == "dictionary"]
    [batch] = [m for m in messages(stream(DICT_SCHEMA, [dict_batch(2, ["v3"] * 1000)], compression))
               if m.type == "record batch"]
    later = b"".join(m.serialize().to_pybytes() for m in (dictionary, batch))
    path = journal_at(tmp_path, plain + later)
    reads = Reads(monkeypatch)
    reader, batches = read_journal(path)
    assert len(batches) == 1 and reader.invalid.startswith("a record batch whose body is compressed")
    assert reader.torn_bytes == len(later) and reads.furthest() <= len(plain)


def test_a_stream_of_dictionary_batches_uncompressed_is_read_whole(tmp_path: Path) -> None:
    """A replacement dictionary between batches: the dictionary batches read before each record batch are walked
    over by their body lengths."""
    expected = [dict_batch(0, ["v1", "v2"]), dict_batch(2, ["v3"]), dict_batch(3, ["v1", "v4", "v4"])]
    data = stream(DICT_SCHEMA, expected, None)
    assert [m.type for m in messages(data)].count("dictionary") == 3
    reader, batches = read_journal(journal_at(tmp_path, data))
    assert reader.invalid == "" and reader.torn_bytes == 0
    assert [b.equals(e) for b, e in zip(batches, expected, strict=True)] == [True] * 3


def test_a_message_whose_metadata_is_not_valid_is_dropped_as_not_valid_with_the_batches_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether its body is compressed cannot be told: it is not handed to pyarrow."""
    head = SCHEMA.serialize().to_pybytes() + good_batch(0).serialize().to_pybytes()
    damaged = bytearray(good_batch(2).serialize().to_pybytes())
    damaged[8:12] = (1 << 20).to_bytes(4, "little")  # the Message table's offset: past the metadata's end
    path = journal_at(tmp_path, head + bytes(damaged) + good_batch(4).serialize().to_pybytes())
    reads = Reads(monkeypatch)
    reader, batches = read_journal(path)
    assert len(batches) == 1 and batches[0].equals(good_batch(0))
    assert reader.invalid.startswith("a message's metadata is not valid") and reads.furthest() <= len(head)


def test_the_sinks_own_journal_is_recovered_bit_for_bit(tmp_path: Path) -> None:
    """Nothing the sink writes is refused: what the rebuilt file holds is every batch of its journal, equal."""
    live = tmp_path / "live"
    sink = ParquetSink(live)
    rows = [{"request_id": f"r{i}", "timestamp": 1_758_463_260.0 + i, "model": "m", "latency_seconds": i / 7,
             "error": i % 3 == 0, "model_version": "v1", "x": None if i % 5 else f"s{i}", "score": i * 0.5}
            for i in range(300)]
    for first in range(0, 300, 100):
        sink.write(rows[first:first + 100])
    [written] = live.rglob(".*.journal")
    data = written.read_bytes()
    journaled = pa.ipc.open_stream(data).read_all()
    assert journaled.num_rows == 300
    path = journal_at(tmp_path / "dead", data)
    recovered = ParquetSink(tmp_path / "dead")
    assert {k: v for k, v in recovered.recovery.files.items() if v} == {"recovered": 1} and not path.exists()
    assert pq.read_table(recovered.recovered[0]).equals(journaled)
    assert recovered.recovered[0].name == NAME[1:].removesuffix(".journal")


def _u16(data: bytearray, at: int) -> int:
    return int.from_bytes(data[at:at + 2], "little")


def _table_at(data: bytearray, at: int) -> tuple[int, int]:
    """A flatbuffer table (where it is, where its vtable is) that the uoffset at ``at`` points to."""
    table = at + int.from_bytes(data[at:at + 4], "little")
    return table, table - int.from_bytes(data[table:table + 4], "little", signed=True)


def _string(value: bytes) -> bytes:
    data = len(value).to_bytes(4, "little") + value + b"\0"
    return data + b"\0" * (-len(data) % 4)


def in_the_old_form(metadata: bytes, codec: str) -> bytes:
    """The metadata of a batch message of version V4 compressed with ``codec`` (its body unchanged) in Arrow 0.17's
    form, which pyarrow still decodes: no compression field, the codec named in the message's custom metadata
    (``ARROW:experimental_compression``, appended here with a vtable of its own for the Message table)."""
    data = bytearray(metadata)
    message, vtable = _table_at(data, 0)
    assert int.from_bytes(data[message + _u16(data, vtable + 4):][:2], "little") == pa.ipc.MetadataVersion.V4
    batch, batch_vtable = _table_at(data, message + _u16(data, vtable + 8))  # header
    if data[message + _u16(data, vtable + 6)] == KINDS["dictionary"]:
        batch, batch_vtable = _table_at(data, batch + _u16(data, batch_vtable + 6))  # its data
    assert _u16(data, batch_vtable + 10)  # the compression field pyarrow wrote ...
    data[batch_vtable + 10:batch_vtable + 12] = bytes(2)  # ... gone
    data += bytes(-len(data) % 4)
    field = len(data)  # the custom_metadata field's uoffset, outside the table but after it: flatbuffers allow it
    data += bytes(4)
    size = _u16(data, vtable)
    new_vtable = len(data)
    data += bytes(data[vtable:vtable + size]) + bytes(max(0, 14 - size))
    data[new_vtable:new_vtable + 2] = max(14, size).to_bytes(2, "little")
    data[new_vtable + 12:new_vtable + 14] = (field - message).to_bytes(2, "little")
    data += bytes(-len(data) % 4)
    vector = len(data)
    data += (1).to_bytes(4, "little") + bytes(4)
    kv_vtable = len(data)
    data += b"".join(n.to_bytes(2, "little") for n in (8, 12, 4, 8))
    kv = len(data)
    data += (kv - kv_vtable).to_bytes(4, "little", signed=True) + bytes(8)
    key = len(data)
    data += _string(b"ARROW:experimental_compression")
    value = len(data)
    data += _string(codec.encode())
    data += bytes(-len(data) % 8)
    for at, target in ((field, vector), (vector + 4, kv), (kv + 4, key), (kv + 8, value)):
        data[at:at + 4] = (target - at).to_bytes(4, "little")
    data[message:message + 4] = (message - new_vtable).to_bytes(4, "little", signed=True)
    return bytes(data)


def old_form_journal(codec: str) -> tuple[bytes, int, pa.RecordBatch]:
    """A journal of a dictionary batch as the sink's reader accepts it, then one (its dictionary and record batch)
    compressed with ``codec`` in the old form; where the latter starts, and the batch pyarrow decodes from it."""
    plain = stream(DICT_SCHEMA, [dict_batch(0, ["v1", "v2"])], None)
    compressed = dict_batch(2, ["v3" * 1000] * 1000)
    found = messages(stream(DICT_SCHEMA, [compressed], codec, pa.ipc.MetadataVersion.V4))[1:]
    later = b"".join(_message(in_the_old_form(m.metadata.to_pybytes(), codec), m.body.to_pybytes()) for m in found)
    return plain + later, len(plain), compressed


def _message(metadata: bytes, body: bytes) -> bytes:
    return b"\xff\xff\xff\xff" + len(metadata).to_bytes(4, "little") + metadata + body


@pytest.mark.parametrize("codec", CODECS)
def test_pyarrow_decodes_a_batch_compressed_in_the_old_form_which_the_compression_field_does_not_show(
        codec: str) -> None:
    """What the version rule is for: the journal built here is one pyarrow decodes whole, its dictionary included,
    though no compression field of it says it is compressed."""
    data, _, compressed = old_form_journal(codec)
    assert pa.ipc.open_stream(data).read_all().to_batches()[1].equals(compressed)
    later = [journal_module._message_header(m.metadata.to_pybytes()) for m in messages(data)[3:]]
    assert [(h.kind, h.compressed, h.version) for h in later if h is not None] == [
        (KINDS["dictionary"], False, pa.ipc.MetadataVersion.V4), (KINDS["record batch"], False, 3)]


@pytest.mark.parametrize("codec", CODECS)
def test_a_dictionary_batch_compressed_in_the_old_form_is_refused_unread_by_its_metadata_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, codec: str) -> None:
    data, start, _ = old_form_journal(codec)
    path = journal_at(tmp_path, data)
    reads = Reads(monkeypatch)
    reader, batches = read_journal(path)
    assert len(batches) == 1 and batches[0].equals(dict_batch(0, ["v1", "v2"]))
    assert reader.invalid.startswith("a dictionary batch of IPC metadata version V4 (pre-1.0), which the sink never")
    assert "compressed in the old form" in reader.invalid
    assert reader.torn_bytes == len(data) - start and reads.furthest() <= start


def old_form_record_batch_journal(codec: str) -> tuple[bytes, int]:
    """The sink's schema and two of its batches, one compressed with ``codec`` in the old form, then one more; and
    where the compressed one starts."""
    head = SCHEMA.serialize().to_pybytes() + good_batch(0).serialize().to_pybytes()
    [message] = messages(stream(SCHEMA, [good_batch(100, rows=1000)], codec, pa.ipc.MetadataVersion.V4))[1:]
    compressed = _message(in_the_old_form(message.metadata.to_pybytes(), codec), message.body.to_pybytes())
    return head + compressed + good_batch(2).serialize().to_pybytes(), len(head)


@pytest.mark.parametrize("codec", CODECS)
def test_a_starting_sink_refuses_a_record_batch_compressed_in_the_old_form_unread_and_keeps_the_batches_before_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, codec: str) -> None:
    data, start = old_form_record_batch_journal(codec)
    assert pa.ipc.open_stream(data).read_all().num_rows == 1004  # pyarrow decodes it
    path = journal_at(tmp_path, data)
    reads = Reads(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        sink = ParquetSink(tmp_path)
    assert {k: v for k, v in sink.recovery.files.items() if v} == {"set_aside": 1} and not path.exists()
    assert pq.read_table(sink.recovered[0]).column("request_id").to_pylist() == ["r0", "r1"]
    assert reads.furthest() <= start
    [record] = [r for r in caplog.records if "is not valid" in r.getMessage()]
    assert "is not valid (a record batch of IPC metadata version V4 (pre-1.0)" in record.getMessage()
    assert f"{len(data) - start} bytes from it on not read" in record.getMessage()


def test_a_v5_batch_naming_a_codec_in_its_custom_metadata_is_read_as_plain(tmp_path: Path) -> None:
    """pyarrow looks for the old form in a batch of version V4 only: a V5 one with the key (custom metadata is
    anyone's) is read uncompressed, as pyarrow reads it, and kept."""
    head = SCHEMA.serialize().to_pybytes() + good_batch(0).serialize().to_pybytes()
    out = pa.BufferOutputStream()
    with pa.ipc.new_stream(out, SCHEMA) as writer:
        writer.write_batch(good_batch(2), custom_metadata={"ARROW:experimental_compression": "zstd"})
    [message] = messages(out.getvalue().to_pybytes())[1:]
    assert b"ARROW:experimental_compression" in message.metadata.to_pybytes()
    assert message.metadata_version == pa.ipc.MetadataVersion.V5
    data = head + message.serialize().to_pybytes()
    assert [b.equals(e) for b, e in zip(pa.ipc.open_stream(data), [good_batch(0), good_batch(2)], strict=True)] == [
        True, True]
    reader, batches = read_journal(journal_at(tmp_path, data))
    assert reader.invalid == "" and reader.torn_bytes == 0
    assert [b.equals(e) for b, e in zip(batches, [good_batch(0), good_batch(2)], strict=True)] == [True, True]


@pytest.mark.parametrize("version", [0, 2, 3, 5, -1])
def test_a_record_batch_of_any_metadata_version_but_v5_is_refused_unread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int) -> None:
    """Uncompressed: the version alone refuses it (V1 to V3 pyarrow refuses too, a later one it does not know)."""
    head = SCHEMA.serialize().to_pybytes() + good_batch(0).serialize().to_pybytes()
    [message] = messages(good_batch(2).serialize().to_pybytes())
    metadata = bytearray(message.metadata.to_pybytes())
    table, vtable = _table_at(metadata, 0)
    at = table + _u16(metadata, vtable + 4)
    metadata[at:at + 2] = version.to_bytes(2, "little", signed=True)
    path = journal_at(tmp_path, head + _message(bytes(metadata), message.body.to_pybytes()))
    reads = Reads(monkeypatch)
    reader, batches = read_journal(path)
    assert len(batches) == 1 and reads.furthest() <= len(head)
    name = f"V{version + 1} (pre-1.0)" if 0 <= version < 4 else f"{version} (unknown)"
    assert reader.invalid.startswith(f"a record batch of IPC metadata version {name}, which the sink never writes")


@pytest.mark.parametrize("length", [-8, journal_module.MAX_METADATA_BYTES + 8])
def test_a_damaged_metadata_length_after_a_dictionary_batch_is_the_torn_end_before_the_dictionary_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, length: int) -> None:
    """pyarrow reads a replacement dictionary and the message after it in one call: a damaged length there (as
    ``_too_long`` judges the first) ends the journal, torn, before pyarrow is handed either."""
    plain = stream(DICT_SCHEMA, [dict_batch(0, ["v1", "v2"])], None)
    [dictionary] = [m for m in messages(stream(DICT_SCHEMA, [dict_batch(2, ["v3"])], None)) if m.type == "dictionary"]
    later = dictionary.serialize().to_pybytes() + b"\xff\xff\xff\xff" + length.to_bytes(4, "little", signed=True)
    later += stream(DICT_SCHEMA, [dict_batch(2, ["v3"])], None)[len(DICT_SCHEMA.serialize().to_pybytes()):]
    path = journal_at(tmp_path, plain + later)
    reads = Reads(monkeypatch)
    reader, batches = read_journal(path)
    assert len(batches) == 1 and batches[0].equals(dict_batch(0, ["v1", "v2"]))
    assert reader.invalid == "" and reader.torn_bytes == len(later)
    assert reads.furthest() <= len(plain)
