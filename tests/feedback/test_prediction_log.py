"""PredictionLog: sampling (raised for slow and failed requests), the bounded queue that drops and counts instead of
blocking, the field policy (allow/deny, keyed hashing), and what reaches the sink."""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import math
import random
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as ds
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch.feedback import FieldPolicy, ParquetSink, PredictionLog, PredictionSink, RowsLost, SamplingPolicy
from aiwatch.feedback.schema import normalise, unix_seconds
from aiwatch.metrics import Metrics
from tests.hostile_numbers import BAD_SECONDS, OTHER_SECONDS
from tests.servers import wait_until

#: No test here should wait anywhere near this long: it only turns a hang (the bug) into a failure.
HANG = 30.0


class ListSink:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.flushes = 0
        self.closed = False

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


class BlockedSink(ListSink):
    """A sink stuck on its first batch until released: the queue behind it fills up."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        self.entered.set()
        self.release.wait(30)
        super().write(rows)


class FailingSink(ListSink):
    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        raise OSError("disk full")


def records(registry: CollectorRegistry, result: str, log: str = "predictions") -> float:
    return registry.get_sample_value("aiwatch_prediction_log_records_total", {"log": log, "result": result}) or 0.0


def test_public_names_and_the_sink_protocol() -> None:
    assert aiwatch.PredictionLog is PredictionLog
    assert isinstance(ListSink(), PredictionSink)
    assert isinstance(aiwatch.ParquetSink.__new__(aiwatch.ParquetSink), PredictionSink)


def test_a_logged_request_reaches_the_sink_with_the_schema_columns(registry: CollectorRegistry) -> None:
    sink = ListSink()
    with PredictionLog(sink, registry=registry) as log:
        rid = log.log("ranker", {"basket_value": 3, "country": "FR"}, {"score": 0.25, "label": 1}, version="v7",
                      latency=0.031, trace_id="ab" * 16)
    assert sink.closed
    [row] = sink.rows
    assert row["request_id"] == rid and isinstance(rid, str)
    assert row["model"] == "ranker" and row["model_version"] == "v7" and row["trace_id"] == "ab" * 16
    assert row["latency_seconds"] == 0.031 and row["error"] is False and row["sample_rate"] == 1.0
    assert row["basket_value"] == 3.0 and row["country"] == "FR"
    assert row["output.score"] == 0.25 and row["output.label"] == 1.0
    assert records(registry, "queued") == 1 and records(registry, "written") == 1


def test_an_input_named_like_a_log_column_is_prefixed(registry: CollectorRegistry) -> None:
    sink = ListSink()
    with PredictionLog(sink, registry=registry) as log:
        log.log("m", {"model": "user-supplied", "error": 0.5}, 1.0, request_id="r1")
    [row] = sink.rows
    assert row["model"] == "m" and row["input.model"] == "user-supplied" and row["input.error"] == 0.5
    assert row["output"] == 1.0 and row["request_id"] == "r1"


@pytest.mark.parametrize("inputs", [{"input.model": "a", "model": "b"}, {"model": "b", "input.model": "a"}])
def test_an_input_named_with_the_prefix_is_prefixed_too(registry: CollectorRegistry, inputs: dict[str, str]) -> None:
    # "model" is written as input.model: an input named input.model was one column with it, the last one's value
    sink = ListSink()
    with PredictionLog(sink, registry=registry) as log:
        log.log("m", inputs, 1.0, request_id="r1")
    [row] = sink.rows
    assert (row["input.model"], row["input.input.model"]) == ("b", "a")


def test_sample_rate_zero_keeps_nothing_but_failed_and_slow_requests(registry: CollectorRegistry) -> None:
    sink = ListSink()
    with PredictionLog(sink, sample_rate=0.0, slow_seconds=0.5, registry=registry) as log:
        assert log.log("m", {"x": 1}, latency=0.1) is None
        slow = log.log("m", {"x": 2}, latency=0.9)
        failed = log.log("m", {"x": 3}, latency=0.1, error=True)
    assert slow and failed
    assert [r["x"] for r in sink.rows] == [2.0, 3.0]
    assert [r["sample_rate"] for r in sink.rows] == [1.0, 1.0]
    assert records(registry, "sampled_out") == 1


def test_the_base_rate_keeps_about_that_share() -> None:
    policy = SamplingPolicy(rate=0.2)
    kept = sum(policy.keep(policy.rate_for(0.01, False)) for _ in range(20_000))
    assert 3_600 < kept < 4_400  # 4000 expected; sd ~57


def test_sampling_leaves_the_apps_random_sequence_alone() -> None:
    # the draws used the random module's shared state: an app that seeds it for a reproducible sequence got
    # another sequence as soon as the log sampled a request
    policy = SamplingPolicy(rate=0.5)
    random.seed(17)
    expected = [random.random() for _ in range(3)]
    random.seed(17)
    kept = [policy.keep(policy.rate) for _ in range(200)]
    assert [random.random() for _ in range(3)] == expected
    assert 0 < sum(kept) < 200  # and it did draw


def test_rates_outside_0_1_are_refused() -> None:
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError):
            SamplingPolicy(rate=bad)
    for bad_seconds in (float("inf"), -1.0, True, "1"):  # True was accepted as 1 s
        with pytest.raises(ValueError, match="slow_seconds must be"):
            SamplingPolicy(slow_seconds=bad_seconds)  # type: ignore[arg-type]


def test_a_full_queue_drops_and_counts_without_blocking(registry: CollectorRegistry) -> None:
    sink = BlockedSink()
    log = PredictionLog(sink, queue_size=5, batch_size=1, flush_seconds=0.05, registry=registry)
    try:
        log.log("m", {"x": 0})
        assert sink.entered.wait(10), "the writer never took the first record"
        kept = [log.log("m", {"x": i}) for i in range(1, 21)]
        assert sum(k is not None for k in kept) == 5
        assert records(registry, "dropped") == 15
        assert records(registry, "queued") == 6
    finally:
        sink.release.set()
        log.close()
    assert len(sink.rows) == 6 and records(registry, "written") == 6


def test_a_failing_sink_is_counted_and_never_raises_into_the_caller(registry: CollectorRegistry) -> None:
    with PredictionLog(FailingSink(), registry=registry) as log:
        assert log.log("m", {"x": 1}) is not None
        assert log.flush()
    assert records(registry, "failed") == 1
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "prediction_log"}) == 1


class PartlyFailingSink(ListSink):
    """Says it stored all but 2 rows of a batch and lost 7 rows written before; loses 3 more when closed."""

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        raise RowsLost(2, 7) from OSError(28, "No space left on device")

    def close(self) -> None:
        raise RowsLost(0, 3)


def test_a_sink_that_raises_rows_lost_has_its_rows_counted_exactly(registry: CollectorRegistry) -> None:
    with PredictionLog(PartlyFailingSink(), registry=registry, flush_seconds=3600) as log:
        for i in range(5):
            log.log("ranker", {"basket_value": i})
        assert log.flush()
    assert (records(registry, "written"), records(registry, "failed"), records(registry, "lost")) == (3, 2, 10)


class _NoInit(RowsLost):
    def __init__(self) -> None:  # a sink's own subclass that never calls RowsLost.__init__: no counts at all
        Exception.__init__(self, "lost some")


class MiscountingSink(ListSink):
    """Raises a RowsLost whose counts are no counts of its batch on each of its first writes and flushes, then
    stores what it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.wrong: list[Exception] = [RowsLost(6, 0), RowsLost(-1, -2, recoverable=-3), _NoInit(),
                                       RowsLost(2.5, 0)]  # type: ignore[arg-type]
        self.flush_wrong: list[Exception] = [RowsLost(0, -4), _NoInit()]

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        if self.wrong:
            raise self.wrong.pop(0)
        super().write(rows)

    def flush(self) -> None:
        if self.flush_wrong:
            raise self.flush_wrong.pop(0)
        super().flush()


def test_a_sink_that_miscounts_its_failed_rows_fails_its_batch_and_the_writer_goes_on(
        registry: CollectorRegistry) -> None:
    """A RowsLost naming more failed rows than its batch held made the written counter go negative, which
    prometheus_client refuses (as it refuses a negative count, or a subclass's missing one): the exception left the
    writer thread, which died, and every record after it stayed queued (then dropped) and was never written."""
    sink = MiscountingSink()
    sink.flush_wrong.clear()
    with PredictionLog(sink, registry=registry, batch_size=5, flush_seconds=3600) as log:
        for batch in range(5):
            for i in range(5):
                log.log("ranker", {"batch": batch, "i": i})
            assert log.flush(timeout=HANG)
    assert [row["batch"] for row in sink.rows] == [4.0] * 5
    assert (records(registry, "written"), records(registry, "failed")) == (5, 20)
    assert (records(registry, "lost"), records(registry, "recoverable")) == (0, 0)
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "prediction_log"}) == 4


def test_a_sink_whose_flush_miscounts_its_lost_rows_is_counted_and_the_writer_goes_on(
        registry: CollectorRegistry) -> None:
    sink = MiscountingSink()
    sink.wrong.clear()
    with PredictionLog(sink, registry=registry, flush_seconds=0.05) as log:
        wait_until(lambda: sink.flushes > 0, HANG, what="a flush after the two that raised")
        assert log.log("ranker", {"x": 1}) is not None
        assert log.flush(timeout=HANG)
    assert [row["x"] for row in sink.rows] == [1.0]
    assert (records(registry, "written"), records(registry, "lost")) == (1, 0)
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "prediction_log"}) == 2


def test_a_record_that_cannot_be_read_fails_alone(registry: CollectorRegistry) -> None:
    class Hostile(dict[str, Any]):
        def items(self) -> Any:
            raise RuntimeError("boom")

    sink = ListSink()
    with PredictionLog(sink, registry=registry) as log:
        log.log("m", Hostile(x=1))
        log.log("m", {"x": 2})
    assert [r["x"] for r in sink.rows] == [2.0]
    assert records(registry, "failed") == 1 and records(registry, "written") == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1e300, "soon", [1]])
def test_a_record_with_an_unusable_timestamp_fails_alone_in_a_real_sink(
        bad: object, tmp_path: Path, registry: CollectorRegistry) -> None:
    # the Parquet sink writes a batch at once: before the check, one such timestamp lost every record beside it
    with PredictionLog(ParquetSink(tmp_path), registry=registry) as log:
        log.log("m", {"x": 1.0}, timestamp=1_790_000_000)
        log.log("m", {"x": 2.0}, timestamp=bad)  # type: ignore[arg-type]
        log.log("m", {"x": 3.0}, timestamp=1_790_000_001.5)
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("x").to_pylist()) == [1.0, 3.0]
    assert records(registry, "failed") == 1 and records(registry, "written") == 2
    # what the (rate-limited) log line says about it
    with pytest.raises(ValueError, match=re.escape(f"between the years 1 and 9999, got {bad!r}")):
        unix_seconds(bad)


TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736


@pytest.mark.parametrize(("given", "column", "stored"), [
    ({"request_id": 123}, "request_id", "123"),  # a client's numeric id, passed through
    ({"version": 3}, "model_version", "3"),  # a model registry's version number
    ({"trace_id": TRACE}, "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),  # OpenTelemetry's int, as W3C writes it
    ({"trace_id": 1}, "trace_id", "0" * 31 + "1"),
    ({"trace_id": TRACE.to_bytes(16, "big")}, "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),  # OTLP's binary id
    ({"trace_id": b"4bf92f3577b34da6a3ce929d0e0e4736"}, "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),  # a raw header
    ({"request_id": b"req-9"}, "request_id", "req-9"),
])
def test_a_non_text_id_is_stored_as_text_and_its_batch_kept_in_a_real_sink(
        given: dict[str, Any], column: str, stored: str, tmp_path: Path, registry: CollectorRegistry) -> None:
    # one such value made pyarrow refuse the string column: the whole batch (every other user's rows) failed
    with PredictionLog(ParquetSink(tmp_path), registry=registry, batch_size=100) as log:
        for i in range(5):
            log.log("m", {"x": float(i)}, 0.5, request_id=f"good-{i}", trace_id="ab" * 16)
        log.log("m", {"x": 5.0}, 0.5, **{"request_id": "odd", "trace_id": "ab" * 16, **given})
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    rows = sorted(table.to_pylist(), key=lambda r: r["x"])
    assert [r["x"] for r in rows] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert rows[-1][column] == stored
    assert records(registry, "failed") == 0 and records(registry, "written") == 6


@pytest.mark.parametrize("given", [0, 0.0, np.int64(0), False])
def test_a_falsy_request_id_of_the_callers_is_its_request_id(given: Any, registry: CollectorRegistry) -> None:
    """``request_id or <a new id>`` took a client's id 0 for no id: its row got a generated id, and its label, joined
    on ``request_id``, never matched it."""
    sink = ListSink()
    with PredictionLog(sink, registry=registry) as log:
        assert log.log("m", {"x": 1.0}, request_id=given) is given
        generated = log.log("m", {"x": 2.0}, request_id="")  # no id: one is made, as for None
    assert [row["request_id"] for row in sink.rows] == [str(given), generated]
    assert generated and len(generated) == 28


def test_a_value_whose_text_cannot_be_made_fails_alone_in_a_real_sink(tmp_path: Path,
                                                                         registry: CollectorRegistry) -> None:
    class NoText:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    with PredictionLog(ParquetSink(tmp_path), registry=registry) as log:
        log.log("m", {"x": 1.0})
        log.log("m", {"x": 2.0}, request_id=NoText())  # type: ignore[arg-type]
        log.log("m", {"x": 3.0})
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert sorted(table.column("x").to_pylist()) == [1.0, 3.0]
    assert records(registry, "failed") == 1 and records(registry, "written") == 2


def test_the_callers_mappings_are_copied_when_logged(registry: CollectorRegistry) -> None:
    # rows are built on the writer thread: a dict reused or changed after log() used to give the rows its later
    # contents (and a field the app added after logging, PII included, reached the log)
    sink = BlockedSink()
    log = PredictionLog(sink, batch_size=1, flush_seconds=0.05, registry=registry)
    try:
        log.log("m", {"x": -1.0})
        assert sink.entered.wait(HANG), "the writer never took the first record"
        features: dict[str, Any] = {}
        outputs: dict[str, Any] = {}
        for i in range(3):
            features.clear()
            features["x"] = float(i)
            outputs["score"] = i / 10
            log.log("m", features, outputs)
        features["email"] = "a@b.c"
        outputs["secret"] = "s"
    finally:
        sink.release.set()
        log.close()
    assert [(r["x"], r.get("output.score")) for r in sink.rows] == [(-1.0, None), (0.0, 0.0), (1.0, 0.1),
                                                                    (2.0, 0.2)]
    assert not any("email" in r or "output.secret" in r for r in sink.rows)
    assert records(registry, "written") == 4


def test_a_mapping_that_cannot_be_copied_fails_alone_without_raising(registry: CollectorRegistry) -> None:
    class Unreadable(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise KeyError(key)

        def __iter__(self) -> Iterator[str]:
            raise RuntimeError("boom")

        def __len__(self) -> int:
            return 1

    sink = ListSink()
    with PredictionLog(sink, registry=registry) as log:
        assert log.log("m", Unreadable()) is None
        assert log.log("m", {"x": 1.0}, Unreadable()) is None
        assert log.log("m", {"x": 2.0}) is not None
    assert [r["x"] for r in sink.rows] == [2.0]
    assert records(registry, "failed") == 2 and records(registry, "written") == 1


def test_an_int_past_float64_is_logged_as_infinite_with_the_rest_of_its_record(
        tmp_path: Path, registry: CollectorRegistry) -> None:
    # float(10**400) raises: the record failed whole; as a float it is infinite (drift reads that as missing)
    with PredictionLog(ParquetSink(tmp_path), registry=registry) as log:
        log.log("m", {"x": 10**400, "y": 1}, {"score": -(10**400)})
        log.log("m", {"x": 2.0, "y": Fraction(-(10**400), 3)}, {"score": 0.5})
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    rows = sorted(table.select(["x", "y", "output.score"]).to_pylist(), key=lambda r: r["x"])
    assert rows == [{"x": 2.0, "y": -math.inf, "output.score": 0.5},
                    {"x": math.inf, "y": 1.0, "output.score": -math.inf}]
    assert records(registry, "failed") == 0 and records(registry, "written") == 2


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(10**400), max_value=10**400) | st.fractions()
       | st.sampled_from([2**1024 - 2**970 - 1, 2**1024 - 2**970, -(2**1024) + 2**970 + 1, -(2**1024) + 2**970]))
def test_every_int_and_fraction_is_logged_as_a_float(value: int | Fraction) -> None:
    logged = normalise(value)
    assert type(logged) is float
    # below 2**1024 - 2**970 (half an ulp past the largest float) it rounds to a finite float, from there on to inf
    if abs(value) < 2**1024 - 2**970:
        assert logged == float(value)
    else:
        assert math.isinf(logged) and (logged > 0) == (value > 0)


def test_a_lone_surrogate_is_written_out_and_the_batch_around_it_kept(tmp_path: Path,
                                                                      registry: CollectorRegistry) -> None:
    # json.loads('"\\ud800"') gives a str Parquet (UTF-8) cannot store: the whole batch around it was lost
    bad = json.loads('"a\\ud800b"')
    with PredictionLog(ParquetSink(tmp_path), registry=registry) as log:
        log.log("m", {"x": 1.0, "text": "fine"}, request_id="r1")
        log.log("m", {"x": 2.0, "text": bad, bad: 5}, {bad: bad}, request_id=bad, version=bad)
        log.log("m", {"x": 3.0, "text": "é"}, request_id="r3")
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    rows = sorted(table.to_pylist(), key=lambda r: r["x"])
    written = "a\\ud800b"  # the surrogate as the six characters of its escape
    assert [r["text"] for r in rows] == ["fine", written, "é"]
    assert (rows[1]["request_id"], rows[1]["model_version"], rows[1][written], rows[1]["output." + written]) == \
        (written, written, 5.0, written)
    assert records(registry, "failed") == 0 and records(registry, "written") == 3


def test_an_array_input_is_logged_as_json_text(tmp_path: Path, registry: CollectorRegistry) -> None:
    # .item() of an embedding raised, and the record failed
    with PredictionLog(ParquetSink(tmp_path), registry=registry) as log:
        log.log("m", {"embedding": np.array([0.5, -1.0]), "one": np.array([7]), "scalar": np.float32(2.5)})
    [row] = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table().to_pylist()
    assert (row["embedding"], row["one"], row["scalar"]) == ("[0.5, -1.0]", 7.0, 2.5)
    assert records(registry, "failed") == 0


any_text = st.text(st.characters(categories=["Cs", "Ll", "Lo", "Nd", "Zs", "So", "Cc"]), max_size=6)


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(any_text, min_size=1, max_size=6))
def test_any_text_is_written_to_parquet_as_utf8(texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = tmp_path_factory.mktemp("log")
    registry = CollectorRegistry()
    with PredictionLog(ParquetSink(directory), registry=registry) as log:
        for i, text in enumerate(texts):
            log.log("m", {"i": i, "text": text, f"name {text}": 1})
    rows = sorted(ds.dataset(directory, format="parquet", partitioning="hive").to_table().to_pylist(),
                  key=lambda r: r["i"])
    assert records(registry, "written") == len(texts) and records(registry, "failed") == 0
    # unchanged where UTF-8 can encode it, the escapes of lone surrogates otherwise
    assert [r["text"] for r in rows] == [t.encode("utf-8", "backslashreplace").decode("utf-8") for t in texts]


@settings(max_examples=300, deadline=None)
@given(st.floats() | st.integers() | st.text(max_size=12) | st.none() | st.booleans() | st.decimals())
def test_a_timestamp_is_a_time_a_datetime_holds_or_refused_by_name(value: object) -> None:
    try:
        seconds = unix_seconds(value)
    except ValueError as exc:
        assert str(exc).startswith("timestamp must be Unix seconds between the years 1 and 9999, got ")
    else:
        assert type(seconds) is float
        assert datetime.fromtimestamp(seconds, UTC).year in range(1, 10000)


@pytest.mark.parametrize("value", [True, False, "1790000000", b"1790000000", 10**400, -(10**400)],
                         ids=["True", "False", "text", "bytes", "10**400", "-10**400"])
def test_a_timestamp_that_is_no_number_of_seconds_is_refused_by_name(value: object) -> None:
    # True was 1 s past 1970 and the text "1790000000" a time; 10**400 raised OverflowError, not the named error
    with pytest.raises(ValueError, match=r"^timestamp must be Unix seconds between the years 1 and 9999, got "):
        unix_seconds(value)


def test_a_timestamp_reaches_the_sink_as_float_seconds(registry: CollectorRegistry) -> None:
    sink = ListSink()
    with PredictionLog(sink, registry=registry) as log:
        log.log("m", {"x": 1.0}, timestamp=1_790_000_000)
    assert [type(r["timestamp"]) for r in sink.rows] == [float]


def test_logging_after_close_is_dropped_and_counted(registry: CollectorRegistry) -> None:
    log = PredictionLog(ListSink(), registry=registry)
    log.close()
    assert log.log("m", {"x": 1}) is None
    assert records(registry, "dropped") == 1


class SlowInputs(Mapping[str, Any]):
    """A caller's mapping whose copy takes a while (a thread switched out while log() copies it), until released."""

    def __init__(self) -> None:
        self.copying = threading.Event()
        self.release = threading.Event()

    def __getitem__(self, key: str) -> Any:
        return {"x": 1}[key]

    def __iter__(self) -> Iterator[str]:
        return iter(["x"])

    def __len__(self) -> int:
        return 1

    def items(self) -> Any:
        self.copying.set()
        self.release.wait(HANG)
        return {"x": 1}.items()


def test_a_record_logged_while_the_log_closes_is_written_or_counted_as_dropped(registry: CollectorRegistry) -> None:
    # log() was past its closed check when close() ran: the record it appended afterwards was counted as queued and
    # then neither written (the writer was gone) nor counted as dropped, and stayed in the queue for good
    sink = ListSink()
    log = PredictionLog(sink, registry=registry)
    inputs = SlowInputs()
    logging_thread = threading.Thread(target=log.log, args=("m", inputs))
    logging_thread.start()
    assert inputs.copying.wait(HANG)
    log.close()
    inputs.release.set()
    logging_thread.join(HANG)
    assert records(registry, "queued") == 1
    assert len(sink.rows) + records(registry, "dropped") == 1
    assert log.pending() == 0


def test_the_queue_bound_holds_for_records_logged_at_once_by_many_threads(registry: CollectorRegistry) -> None:
    # the bound was checked before the record's mappings were copied and the record appended after: threads that
    # passed the check together all appended (32 threads against a queue_size of 10 held 11-12)
    log = PredictionLog(ListSink(), queue_size=2, batch_size=1000, flush_seconds=60, registry=registry)
    try:
        inputs = [SlowInputs() for _ in range(4)]
        threads = [threading.Thread(target=log.log, args=("m", each)) for each in inputs]
        for thread in threads:
            thread.start()
        assert all(each.copying.wait(HANG) for each in inputs)  # all four past the bound's check, the queue empty
        for each in inputs:
            each.release.set()
        for thread in threads:
            thread.join(HANG)
        assert log.pending() == 2
        assert records(registry, "queued") == 2 and records(registry, "dropped") == 2
    finally:
        log.close()


def test_flush_hands_everything_queued_to_the_sink(registry: CollectorRegistry) -> None:
    sink = ListSink()
    log = PredictionLog(sink, flush_seconds=60, batch_size=1000, registry=registry)
    try:
        for i in range(10):
            log.log("m", {"x": i})
        assert log.flush()
        assert len(sink.rows) == 10 and log.pending() == 0
    finally:
        log.close()


class TrafficSink(ListSink):
    """A sink under steady traffic: a new record is logged while each batch is written, so the queue never empties."""

    def __init__(self) -> None:
        super().__init__()
        self.log: PredictionLog | None = None
        self.traffic = True

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        super().write(rows)
        if self.traffic and self.log is not None:
            self.log.log("m", {"x": -1})


def test_flush_under_steady_traffic_returns_once_what_was_queued_before_it_is_written(
        registry: CollectorRegistry) -> None:
    # flush() waited for no record pending at all, which steady traffic never gives: it returned False after its whole
    # timeout, every record queued before the call long written
    sink = TrafficSink()
    log = PredictionLog(sink, flush_seconds=60, batch_size=2, registry=registry)
    sink.log = log
    try:
        ids = [log.log("m", {"x": i}) for i in range(10)]
        assert log.flush(timeout=HANG)
        assert {row["request_id"] for row in sink.rows} >= set(ids)
    finally:
        sink.traffic = False
        log.close()


def test_allow_and_deny_lists_keep_pii_out() -> None:
    sink = ListSink()
    fields = FieldPolicy(allow={"basket_value", "email", "output.score"}, deny={"email"})
    with PredictionLog(sink, fields=fields, registry=CollectorRegistry()) as log:
        log.log("m", {"basket_value": 1, "email": "a@b.c", "phone": "555"}, {"score": 0.1, "debug": "x"})
    [row] = sink.rows
    assert row["basket_value"] == 1.0 and row["output.score"] == 0.1
    assert "email" not in row and "phone" not in row and "output.debug" not in row
    assert row["model"] == "m"  # the log's own columns are always written


def test_hashed_fields_are_hmac_sha256_under_the_key() -> None:
    sink = ListSink()
    with PredictionLog(sink, hash_fields={"user_id", "email"}, hash_key="s3cret",
                       registry=CollectorRegistry()) as log:
        log.log("m", {"user_id": 42, "email": "a@b.c", "basket_value": 5})
        log.log("m", {"user_id": 42, "email": None})
    first, second = sink.rows
    assert first["email"] == hmac.new(b"s3cret", b"a@b.c", hashlib.sha256).hexdigest()
    assert first["email"] != hashlib.sha256(b"a@b.c").hexdigest()
    assert first["user_id"] == second["user_id"] != 42  # the same value hashes the same: joins still work
    assert second["email"] is None and first["basket_value"] == 5.0


def test_hashing_without_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="hash_key"):
        FieldPolicy(hash={"user_id"})
    with pytest.raises(TypeError):
        FieldPolicy(deny="email")


def test_latency_and_trace_id_come_from_the_current_request(metrics: Metrics) -> None:
    from aiwatch.timing import RequestRecorder

    sink = ListSink()
    recorder = RequestRecorder(metrics, service="svc")

    outer: list[float] = []

    def in_a_request(log: PredictionLog) -> None:
        before = time.perf_counter()
        tl = recorder.begin()
        tl.trace_id = "cd" * 16
        time.sleep(0.005)  # sleeps at least this long: a lower bound that load cannot break
        log.log("m", {"x": 1})
        outer.append(time.perf_counter() - before)

    with PredictionLog(sink, metrics=metrics) as log:
        contextvars.copy_context().run(in_a_request, log)
    [row] = sink.rows
    assert row["trace_id"] == "cd" * 16
    # the request's time so far: at least the sleep, at most the time measured around the whole request
    assert 0.005 <= row["latency_seconds"] <= outer[0]


def test_the_log_says_whether_the_trace_id_it_writes_leads_to_a_stored_trace(tmp_path: Path) -> None:
    """An unsampled trace's id still correlates the request's logs, but the tracing backend never stored its trace:
    a link from the row to it is a dead end for on-call. ``trace_sampled`` says which (OpenTelemetry's trace flags),
    null where it is not known: no trace, or an id the caller passed without the flag."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    from aiwatch.timing import RequestRecorder

    registry = CollectorRegistry()
    recorder = RequestRecorder(Metrics(registry=CollectorRegistry()), service="svc")
    ids = {}
    with PredictionLog(ParquetSink(tmp_path), registry=registry) as log:
        for name, sampler in (("sampled", ALWAYS_ON), ("unsampled", ALWAYS_OFF)):
            with TracerProvider(sampler=sampler).get_tracer("t").start_as_current_span("predict") as span:
                ids[name] = format(span.get_span_context().trace_id, "032x")
                log.log("m", {"x": 1.0}, request_id=name)

        def in_a_request() -> None:  # aiwatch's request keeps its sampled span's id
            recorder.begin().trace_id = "cd" * 16
            log.log("m", {"x": 1.0}, request_id="aiwatch")

        contextvars.copy_context().run(in_a_request)
        log.log("m", {"x": 1.0}, request_id="untraced")
        log.log("m", {"x": 1.0}, request_id="given", trace_id="ab" * 16)
        log.log("m", {"x": 1.0}, request_id="given, unsampled", trace_id="ef" * 16, trace_sampled=False)
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert str(table.schema.field("trace_sampled").type) == "bool"
    rows = {r["request_id"]: (r["trace_id"], r["trace_sampled"]) for r in table.to_pylist()}
    assert rows == {"sampled": (ids["sampled"], True), "unsampled": (ids["unsampled"], False),
                    "aiwatch": ("cd" * 16, True), "untraced": (None, None), "given": ("ab" * 16, None),
                    "given, unsampled": ("ef" * 16, False)}


def test_bad_sizes_are_refused() -> None:
    for kwargs in ({"queue_size": 0}, {"batch_size": True}, {"flush_seconds": 0}):
        with pytest.raises(ValueError):
            PredictionLog(ListSink(), registry=CollectorRegistry(), **kwargs)


@pytest.mark.parametrize("bad", BAD_SECONDS)
def test_a_flush_interval_that_is_no_number_of_seconds_is_a_value_error_naming_it(bad: Any) -> None:
    # before: inf, 10**400, 2**53+1 and Decimal("1e400") were accepted and the writer thread died on its first wait
    # (OverflowError in Event.wait, counted nowhere): every record stayed queued, flush() returned False, the queue
    # filled and dropped; True and a Unix timestamp were accepted; a string or None raised TypeError, a Decimal NaN
    # decimal.InvalidOperation
    with pytest.raises(ValueError, match=r"^flush_seconds must be a number of seconds above 0 and at most 1e9, got "):
        PredictionLog(ListSink(), registry=CollectorRegistry(), flush_seconds=bad)


@pytest.mark.parametrize("other", OTHER_SECONDS)
def test_a_flush_interval_of_another_numeric_type_keeps_the_writer_running(registry: CollectorRegistry,
                                                                          other: Any) -> None:
    # before: a numpy float32, a Decimal or a Fraction killed the writer thread (TypeError in Event.wait)
    sink = ListSink()
    log = PredictionLog(sink, registry=registry, flush_seconds=other)
    try:
        log.log("m", {"x": 1})
        assert log.flush(HANG)
        assert len(sink.rows) == 1 and records(registry, "written") == 1
    finally:
        log.close()


@pytest.mark.parametrize("bad", [pytest.param(math.nan, id="nan"), pytest.param(math.inf, id="inf"),
                                 pytest.param(10**400, id="10**400"), pytest.param("1", id="str"),
                                 pytest.param(None, id="None")])
def test_close_with_a_timeout_that_is_no_number_never_raises(registry: CollectorRegistry, bad: Any) -> None:
    # before: close(), documented never to raise, raised ValueError (NaN), OverflowError (inf, 10**400) or TypeError
    sink = ListSink()
    log = PredictionLog(sink, registry=registry)
    log.log("m", {"x": 1})
    log.close(bad)
    assert sink.closed and len(sink.rows) == 1
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "prediction_log"}) == 1
    with pytest.raises(ValueError, match="timeout must be a number of seconds"):
        log.flush(bad)


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_lists_and_dicts_are_stored_as_strict_json_in_a_real_sink(tmp_path: Path, registry: CollectorRegistry) -> None:
    # json.dumps wrote a bare NaN / Infinity inside a list, which Go's, JavaScript's and SQL engines' parsers refuse,
    # and bytes inside as the text of their repr
    with PredictionLog(ParquetSink(tmp_path), registry=registry) as log:
        log.log("m", {"x": 1.0, "embedding": [0.5, float("nan"), float("-inf")],
                      "meta": {"w": np.float64("inf"), "tag": b"blue", "ok": 2},
                      "scores32": [np.float32("nan"), np.float32(0.5)], "nested": {"emb": np.array([0.25, np.inf])},
                      "mixed_keys": {1: "a", "b": 2}},
                {"scores": np.array([0.25, np.nan])}, request_id="r1")
    row = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table().to_pylist()[0]
    assert _strict_json(row["embedding"]) == [0.5, None, None]
    assert _strict_json(row["meta"]) == {"ok": 2, "tag": "blue", "w": None}
    assert _strict_json(row["output.scores"]) == [0.25, None]
    # numpy numbers inside a list or dict (a float32 is no float): were written as their Python repr, not JSON
    assert _strict_json(row["scores32"]) == [None, 0.5]
    assert _strict_json(row["nested"]) == {"emb": [0.25, None]}
    assert _strict_json(row["mixed_keys"]) == {"1": "a", "b": 2}  # keys JSON cannot sort: as they come
    assert records(registry, "written") == 1


def test_bytes_are_stored_as_the_text_they_hold(tmp_path: Path, registry: CollectorRegistry) -> None:
    with PredictionLog(ParquetSink(tmp_path), registry=registry) as log:
        log.log("m", {"x": 1.0, "header": b"gzip, br", "blob": b"\xff\x00"}, request_id="r1")
    row = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table().to_pylist()[0]
    assert row["header"] == "gzip, br"
    assert row["blob"] == "b'\\xff\\x00'"  # not UTF-8: its repr, which ast.literal_eval reads back
