"""`aiwatch drift` and `aiwatch profile build` over a directory or glob of Parquet files (a prediction log): the
time range pushed down (--since/--until), only the profile's columns read, the log's own columns not reported as
unknown, batches no larger than the chunk size, half-written files skipped, errors as exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aiwatch.cli import main
from aiwatch.drift.batch import compare_file, compare_source, profile_source
from aiwatch.drift.columns import is_text_type
from aiwatch.drift.datasets import open_dataset, parse_time, read_as_text, scan_chunks, time_filter
from aiwatch.drift.errors import ProfileError
from aiwatch.drift.profile import NumericalFeature, ReferenceProfile
from aiwatch.feedback import ParquetSink

HOUR = 3600.0
T0 = 1_790_002_800.0  # 2026-09-21T15:00:00Z
SALE = "2026-09-21T17:00Z"  # the third hour
PER_HOUR = 1500


def log_rows(rng: np.random.Generator, start: float, n: int, sale: bool) -> list[dict[str, object]]:
    basket = rng.normal(80 if sale else 50, 10, n)
    country = rng.choice(["FR", "DE", "ES"], n, p=[0.2, 0.2, 0.6] if sale else [0.5, 0.3, 0.2])
    return [{"request_id": f"{start}-{i}", "timestamp": start + i * HOUR / n, "model": "ranker",
             "model_version": "v1", "trace_id": None, "latency_seconds": 0.03, "error": False, "sample_rate": 1.0,
             "basket_value": float(b), "country": str(c), "user_segment": "new", "output.score": float(b) / 100}
            for i, (b, c) in enumerate(zip(basket, country, strict=True))]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = np.random.default_rng(16)
    tmp = tmp_path_factory.mktemp("drift-datasets")
    training = tmp / "training.parquet"
    pq.write_table(pa.table({"basket_value": rng.normal(50, 10, 4000),
                             "country": rng.choice(["FR", "DE", "ES"], 4000, p=[0.5, 0.3, 0.2])}), training)
    log = tmp / "log"
    sink = ParquetSink(log, max_rows=500)
    for hour in range(3):
        sink.write(log_rows(rng, T0 + hour * HOUR, PER_HOUR, sale=hour == 2))
    sink.close()
    profile = tmp / "profile.json"
    assert main(["profile", "build", str(training), "-o", str(profile)]) == 0
    return {"training": training, "log": log, "profile": profile, "tmp": tmp}


def drift_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(["drift", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def counts(report: dict[str, object]) -> dict[str, int]:
    return {f["feature"]: f["current_count"] for f in report["features"]}  # type: ignore[attr-defined, index]


def test_the_sale_hour_drifts_and_the_hours_before_do_not(data: dict[str, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, before = drift_json(capsys, str(data["profile"]), str(data["log"]), "--until", SALE)
    assert code == 0 and counts(before) == {"basket_value": 2 * PER_HOUR, "country": 2 * PER_HOUR}
    code, sale = drift_json(capsys, str(data["profile"]), str(data["log"]), "--since", SALE)
    assert code == 1 and counts(sale) == {"basket_value": PER_HOUR, "country": PER_HOUR}
    assert {f["feature"] for f in sale["features"] if f["drifted"]} == {"basket_value", "country"}  # type: ignore


def test_a_window_inside_an_hour_is_exact(data: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # 15:30 to 16:15: the second half of hour 0 and the first quarter of hour 1
    code, report = drift_json(capsys, str(data["profile"]), str(data["log"]), "--since", "2026-09-21T15:30",
                              "--until", "2026-09-21T16:15:00+00:00")
    assert code == 0 and counts(report)["basket_value"] == PER_HOUR // 2 + PER_HOUR // 4


def test_only_inputs_outside_the_profile_are_reported_unknown(data: dict[str, Path],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    _, report = drift_json(capsys, str(data["profile"]), str(data["log"]))
    assert report["unknown_features"] == ["output.score", "user_segment"]


def test_a_glob_reads_the_same_rows_as_the_directory(data: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pattern = str(data["log"] / "model=ranker" / "*" / "*.parquet")
    code, report = drift_json(capsys, str(data["profile"]), pattern, "--since", SALE)
    assert code == 1 and counts(report)["basket_value"] == PER_HOUR


def test_the_dataset_path_counts_what_the_single_file_path_counts(data: dict[str, Path]) -> None:
    profile = ReferenceProfile.load(data["profile"])
    whole = data["tmp"] / "whole.parquet"
    pq.write_table(open_dataset(data["log"]).to_table(columns=["basket_value", "country"]), whole)
    by_file = compare_file(profile, whole)
    by_dataset = compare_source(profile, data["log"])
    for name in profile.features:
        assert by_dataset.features[name].current_count == by_file.features[name].current_count == 3 * PER_HOUR
        if name == "country":  # bin-based: exactly the same statistic
            assert by_dataset.features[name].statistic == pytest.approx(by_file.features[name].statistic)


def test_batches_are_no_larger_than_the_chunk_size(data: dict[str, Path]) -> None:
    dataset = open_dataset(data["log"])
    sizes = [len(c["basket_value"]) for c in scan_chunks(dataset, ["basket_value", "nope"], chunk_rows=128)]
    assert sum(sizes) == 3 * PER_HOUR and max(sizes) <= 128
    assert set(next(iter(scan_chunks(dataset, ["basket_value", "nope"], chunk_rows=128)))) == {"basket_value"}


def test_profile_build_from_the_log_then_drift(data: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    profile = data["tmp"] / "from-log.json"
    assert main(["profile", "build", str(data["log"]), "-o", str(profile), "--until", SALE]) == 0
    assert "4 features (2 numerical, 2 categorical)" in capsys.readouterr().out  # not the log's own columns
    assert set(ReferenceProfile.load(profile).features) == {"basket_value", "country", "user_segment",
                                                            "output.score"}
    code, report = drift_json(capsys, str(profile), str(data["log"]), "--since", SALE)
    assert code == 1 and counts(report)["output.score"] == PER_HOUR  # prediction drift: outputs vs reference


def test_files_still_being_written_are_skipped(tmp_path: Path, data: dict[str, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    sink = ParquetSink(tmp_path)
    sink.write(log_rows(np.random.default_rng(1), T0, 200, sale=False))
    sink.close()
    open_sink = ParquetSink(tmp_path)
    open_sink.write(log_rows(np.random.default_rng(2), T0, 300, sale=True))  # not rotated: a hidden temp file
    _, report = drift_json(capsys, str(data["profile"]), str(tmp_path))
    assert counts(report)["basket_value"] == 200, report


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "yesterday"], "not an ISO 8601"),
    (["--since", "2026-09-21T18:00", "--until", "2026-09-21T17:00"], "must be before --until"),
    (["--since", "2026-09-21", "--time-column", "country"], "not a timestamp"),
    (["--since", "2026-09-21", "--time-column", "ts"], "need a 'ts' column"),
])
def test_bad_time_ranges_exit_2(data: dict[str, Path], capsys: pytest.CaptureFixture[str], args: list[str],
                                message: str) -> None:
    assert main(["drift", str(data["profile"]), str(data["log"]), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unreadable_datasets_exit_2(tmp_path: Path, data: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["drift", str(data["profile"]), str(tmp_path / "empty")]) == 2
    assert "no Parquet file" in capsys.readouterr().err
    assert main(["drift", str(data["profile"]), str(tmp_path / "nothing-*.parquet")]) == 2
    assert "no file matches" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.parquet").write_bytes(b"not parquet at all")
    assert main(["drift", str(data["profile"]), str(tmp_path / "bad")]) == 2
    assert "cannot read Parquet data" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["drift", "profile"])
@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_a_time_range_on_a_text_file_is_refused_by_name(tmp_path: Path, data: dict[str, Path],
                                                        capsys: pytest.CaptureFixture[str], command: str,
                                                        suffix: str) -> None:
    # it was "cannot read Parquet data 'x.csv': ... Parquet magic bytes not found in footer"; with --dask it was
    # filtered on the cluster, so the same command gave an answer or an error by where it ran
    text = tmp_path / f"rows{suffix}"
    text.write_text("basket_value,timestamp\n50.0,1790002800\n")
    args = (["drift", str(data["profile"]), str(text)] if command == "drift"
            else ["profile", "build", str(text), "-o", str(tmp_path / "p.json")])
    for where in ([], ["--dask", "tcp://127.0.0.1:9"]):  # refused before a scheduler is asked
        assert main([*args, "--since", "2026-09-21T17:00Z", *where]) == 2
        err = capsys.readouterr().err
        assert f"--since/--until select rows of Parquet data (a prediction log, a dataset); {str(text)!r} is a " \
               "text file" in err and "Traceback" not in err
    with pytest.raises(ProfileError, match=r"is a text file; a time range .* need Parquet data"):
        profile_source(text, columns=["basket_value"])


def test_profile_build_opens_the_log_once(data: dict[str, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # it read every file's footer twice: once to list the log's feature columns, once to profile them
    opened = count_opens(monkeypatch)
    assert main(["profile", "build", str(data["log"]), "-o", str(tmp_path / "p.json")]) == 0
    assert opened == [str(data["log"])]
    assert set(ReferenceProfile.load(tmp_path / "p.json").features) == {
        "basket_value", "country", "user_segment", "output.score"}


def count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sources :func:`open_dataset` is called with from now on, under every name a module of aiwatch holds it."""
    opened: list[str] = []

    def counting(source: object) -> object:
        opened.append(str(source))
        return open_dataset(source)  # type: ignore[arg-type]

    for module in [m for name, m in sys.modules.items() if name.startswith("aiwatch")]:
        if getattr(module, "open_dataset", None) is open_dataset:
            monkeypatch.setattr(module, "open_dataset", counting)
    return opened


def test_parse_time_defaults_to_utc() -> None:
    assert parse_time("2026-09-21T17:00").isoformat() == "2026-09-21T17:00:00+00:00"
    assert parse_time("2026-09-21T19:00+02:00").timestamp() == parse_time("2026-09-21T17:00Z").timestamp()


def test_a_log_whose_files_disagree_on_a_columns_type_is_read_with_its_numbers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # one client sent "unknown" for a number: the sink wrote that batch's column as text (a file of its own), and
    # every later read of the log failed: "Unable to merge: Field age has incompatible types: double vs string"
    rng = np.random.default_rng(41)
    ages = rng.normal(40, 10, 600)
    rows = [{"request_id": f"r{i}", "timestamp": 1_790_000_000.0 + i, "model": "m", "age": float(a),
             "plan": str(rng.choice(["free", "pro"]))} for i, a in enumerate(ages)]
    rows[301]["age"] = "unknown"
    sink = ParquetSink(tmp_path / "log")
    for start in range(0, 600, 100):
        sink.write(rows[start:start + 100])
    sink.close()
    types = {str(pq.read_schema(f).field("age").type) for f in (tmp_path / "log").rglob("*.parquet")}
    assert types == {"double", "string"}
    assert main(["profile", "build", str(tmp_path / "log"), "-o", str(tmp_path / "p.json")]) == 0
    age = ReferenceProfile.load(tmp_path / "p.json").features["age"]
    kept = np.delete(ages, 301)
    assert (age.kind, age.count, age.missing, age.invalid) == ("numerical", 599, 0, 1)  # "unknown" is no number
    assert isinstance(age, NumericalFeature)
    assert np.array_equal(np.sort(np.asarray(age.sample)), np.sort(kept))  # each number read back bit for bit
    capsys.readouterr()
    assert main(["drift", str(tmp_path / "p.json"), str(tmp_path / "log"), "--json"]) == 0
    checked = {f["feature"]: f for f in json.loads(capsys.readouterr().out)["features"]}["age"]
    assert (checked["current_count"], checked["missing"], checked["invalid"]) == (599, 0, 1)


NO_STRING_VIEW = pytest.mark.skipif(not hasattr(pa, "string_view"), reason="pyarrow < 16 has no string_view")


@NO_STRING_VIEW
def test_every_arrow_string_type_is_text() -> None:
    assert all(is_text_type(t) for t in (pa.string(), pa.large_string(), pa.string_view()))
    assert not any(is_text_type(t) for t in (pa.binary(), pa.binary_view(), pa.null(), pa.int64(), pa.float64(),
                                             pa.dictionary(pa.int32(), pa.string()), pa.list_(pa.string())))


@NO_STRING_VIEW
def test_a_column_that_is_text_in_every_file_is_read_as_it_is_whichever_string_type_holds_it(tmp_path: Path) -> None:
    # a file written from a string_view column (Polars' strings) keeps it in its Arrow schema, and Arrow merges no
    # string with a string_view: such a log was refused ("the types string, string_view ... cannot be read as one")
    (tmp_path / "log").mkdir()
    pq.write_table(pa.table({"plan": pa.array(["1", "pro"], type=pa.string_view()), "age": [30.0, 40.0]}),
                   tmp_path / "log" / "a.parquet")
    pq.write_table(pa.table({"plan": pa.array(["free", None]), "age": pa.array(["41", "unknown"],
                                                                               type=pa.string_view())}),
                   tmp_path / "log" / "b.parquet")
    assert str(pq.read_schema(tmp_path / "log" / "a.parquet").field("plan").type) == "string_view"
    dataset = open_dataset(tmp_path / "log")
    assert str(dataset.schema.field("plan").type) == "string"
    assert read_as_text(dataset) == {"age"}  # text in one file, numbers in the other: its numbers read as numbers
    chunks = list(scan_chunks(dataset, ["plan", "age"]))
    assert [v for c in chunks for v in c["plan"].tolist()] == ["1", "pro", "free", None]  # "1" stays text
    assert [v for c in chunks for v in c["age"].tolist()] == [30.0, 40.0, 41.0, "unknown"]


def test_files_whose_column_types_cannot_be_read_as_one_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"x": [1.0, 2.0]}), tmp_path / "data" / "a.parquet")
    pq.write_table(pa.table({"x": [[1], [2]]}), tmp_path / "data" / "b.parquet")
    from aiwatch.drift.errors import ProfileError

    refused = r"column 'x' has the types double, list<.*> in different files, which cannot be read as one"
    with pytest.raises(ProfileError, match=refused):
        open_dataset(tmp_path / "data")
    # numbers that only widen (an int column, then a float one) are read as the wider type, not as text
    pq.write_table(pa.table({"y": [1, 2]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"y": [0.5]}), tmp_path / "b.parquet")
    widened = open_dataset(str(tmp_path / "*.parquet"))
    assert str(widened.schema.field("y").type) == "double"
    assert [v for chunk in scan_chunks(widened, ["y"]) for v in chunk["y"].tolist()] == [1.0, 2.0, 0.5]


def _rows_in(source: Path, **window: object) -> list[int]:
    """The ``row`` values the dataset reader keeps for ``window`` (``since`` / ``until`` / ``time_column``)."""
    from aiwatch.drift.datasets import time_filter

    dataset = open_dataset(source)
    predicate = time_filter(dataset, window.get("since"), window.get("until"),  # type: ignore[arg-type]
                            str(window.get("time_column", "timestamp")))
    return sorted(int(v) for chunk in scan_chunks(dataset, ["row"], predicate=predicate) for v in chunk["row"])


@pytest.mark.parametrize("kind", [pa.int64(), pa.int32(), pa.timestamp("s", tz="UTC"), pa.timestamp("ms"),
                                  pa.timestamp("us", tz="UTC"), pa.timestamp("ns"), pa.float64()])
def test_a_window_of_fractional_seconds_keeps_exactly_the_rows_in_it(tmp_path: Path, kind: pa.DataType) -> None:
    """Unix seconds as whole numbers, a window from 100.5 s to 300.5 s past a whole minute: rows 101..300. The bound
    was cast to the column's type, which truncated 100.5 to 100: a row before --since kept, one before --until left
    out (on one machine; Dask compares the exact times)."""
    base = 1_768_608_000
    seconds = np.arange(base, base + 400, dtype=np.int64)
    times = pa.array(seconds, pa.int64()).cast(pa.timestamp("s", tz="UTC")).cast(kind) \
        if pa.types.is_timestamp(kind) else pa.array(seconds).cast(kind)
    pq.write_table(pa.table({"row": np.arange(400), "timestamp": times}), tmp_path / "t.parquet")
    since, until = parse_time("2026-01-17T00:01:40.5Z"), parse_time("2026-01-17T00:05:00.5Z")
    assert _rows_in(tmp_path / "t.parquet", since=since, until=until) == list(range(101, 301))


def test_the_hour_partition_prunes_only_by_its_own_timestamp(tmp_path: Path) -> None:
    """ParquetSink's hour= directories are of its timestamp column; a window on another time column (an event's
    own time, 3 h before it was logged) was pruned by hour too, and dropped every row in it."""
    base = 1_768_608_000  # 2026-01-17T00:00:00Z
    for hour in range(6):
        logged = base + 3600 * hour + np.arange(0, 3600, 60)
        part = tmp_path / f"hour=2026-01-17T{hour:02d}"
        part.mkdir()
        pq.write_table(pa.table({"row": logged - base, "timestamp": logged.astype(float),
                                 "event_time": (logged - 3 * 3600).astype(float)}), part / "p.parquet")
    since, until = parse_time("2026-01-17T00:00Z"), parse_time("2026-01-17T01:00Z")
    assert _rows_in(tmp_path, since=since, until=until, time_column="event_time") == \
        list(range(3 * 3600, 4 * 3600, 60))
    assert _rows_in(tmp_path, since=since, until=until) == list(range(0, 3600, 60))


@pytest.mark.parametrize("kind", [pa.int16(), pa.int32(), pa.uint32(), pa.int64(), pa.uint64()])
@pytest.mark.parametrize("since, until, rows", [
    ("1900-01-01T00:00Z", None, [0, 1, 2]), (None, "1900-01-01T00:00Z", []),
    ("2100-01-01T00:00Z", None, []), (None, "2100-01-01T00:00Z", [0, 1, 2]),
    ("1969-12-31T23:58Z", "1970-01-01T00:00:01Z", [0])])
def test_a_bound_past_an_int_columns_range_selects_as_the_times_say(
        tmp_path: Path, kind: pa.DataType, since: str | None, until: str | None, rows: list[int]) -> None:
    """Unix seconds 0, 100 and 20 000 in an int16..uint64 column: a bound cast to the column's type wrapped (an
    int32 --since 1900 selected nothing, --until 2100 nothing, a uint32 bound before 1970 everything)."""
    pq.write_table(pa.table({"row": [0, 1, 2], "timestamp": pa.array([0, 100, 20_000], kind)}), tmp_path / "t.parquet")
    window = {"since": since and parse_time(since), "until": until and parse_time(until)}
    assert _rows_in(tmp_path / "t.parquet", **window) == rows


@pytest.mark.parametrize("odd", ["zz.parquet", "aa.parquet"])
def test_a_file_beside_the_hour_directories_is_filtered_by_its_timestamp(tmp_path: Path, odd: str) -> None:
    """A file under the log but under no ``hour=`` directory (``model=a/zz.parquet`` beside ``model=a/hour=.../``)
    has a null hour: with the hour= predicate taken from the first file's directories, its rows in the window were
    all left out (kept [1] of [1, 9]) when it sorted after the sink's files; sorted first, no hour= predicate. The
    out-of-window hour directory is still pruned where the first file is under one."""
    def write(relative: str, hour: int, x: int) -> None:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = pa.array([1_796_032_800 + 3600 * (hour - 10) + 300], pa.int64()).cast(pa.timestamp("s", tz="UTC"))
        pq.write_table(pa.table({"x": [x], "timestamp": stamp.cast(pa.timestamp("us", tz="UTC"))}), path)
    write("model=a/hour=2026-11-30T10/p1.parquet", 10, 1)
    write("model=a/hour=2026-11-30T12/p2.parquet", 12, 2)
    write(f"model=a/{odd}", 10, 9)
    write(f"model=a/late-{odd}", 12, 8)  # outside the window: left out by its timestamp
    dataset = open_dataset(tmp_path)
    window = time_filter(dataset, parse_time("2026-11-30T10:00Z"), parse_time("2026-11-30T11:00Z"))
    assert sorted(dataset.to_table(filter=window).column("x").to_pylist()) == [1, 9]
    if odd == "zz.parquet":  # the first file is under hour=: its directories prune (not so for aa.parquet's)
        read = {Path(f.path).relative_to(tmp_path).as_posix() for f in dataset.get_fragments(filter=window)}
        assert read == {"model=a/hour=2026-11-30T10/p1.parquet", "model=a/zz.parquet", "model=a/late-zz.parquet"}


@pytest.mark.parametrize("bound, since_rows, until_rows", [("0500-01-01T00:00Z", 3 * PER_HOUR, 0),
                                                          ("9999-12-31T23:00Z", 0, 3 * PER_HOUR)])
def test_the_hour_partition_compares_bounds_of_any_year(data: dict[str, Path], bound: str, since_rows: int,
                                                        until_rows: int) -> None:
    """The hour= key of a bound was written with strftime("%Y"): year 500 as "500-01-01T00", which sorts after
    "2026-09-21T15", so --since 0500 pruned every directory of the log."""
    window = parse_time(bound)
    assert len(_rows_in_log(data["log"], since=window)) == since_rows
    assert len(_rows_in_log(data["log"], until=window)) == until_rows


def _rows_in_log(log: Path, **window: object) -> list[str]:
    from aiwatch.drift.datasets import time_filter

    dataset = open_dataset(log)
    predicate = time_filter(dataset, window.get("since"), window.get("until"))  # type: ignore[arg-type]
    return [str(v) for chunk in scan_chunks(dataset, ["request_id"], predicate=predicate) for v in chunk["request_id"]]


def no_row_sources(tmp_path: Path) -> dict[str, tuple[Path, list[str]]]:
    """Current data with the reference's columns x and c (and y, which the reference lacks) but no row read: a CSV
    of a header only, a Parquet file or dataset of no rows, a window that selects no row. (Path, extra CLI args.)"""
    (tmp_path / "header.csv").write_text("x,c,y\n")
    empty = pa.table({"x": pa.array([], pa.float64()), "c": pa.array([], pa.string()), "y": pa.array([], pa.int64())})
    pq.write_table(empty, tmp_path / "empty.parquet")
    (tmp_path / "empty").mkdir()
    pq.write_table(empty, tmp_path / "empty" / "part-0.parquet")
    pq.write_table(pa.table({"timestamp": pa.array([1767225600 * 10**9], pa.timestamp("ns", tz="UTC")),
                             "x": [0.5], "c": ["a"], "y": [1]}), tmp_path / "one.parquet")
    return {"header-only csv": (tmp_path / "header.csv", []), "parquet file": (tmp_path / "empty.parquet", []),
            "parquet dataset": (tmp_path / "empty", []),
            "window": (tmp_path / "one.parquet", ["--since", "2030-01-01"])}


def reference_x_c_z(tmp_path: Path) -> Path:
    rng = np.random.default_rng(11)
    path = tmp_path / "ref.parquet"
    pq.write_table(pa.table({"x": rng.normal(size=300), "c": rng.choice(["a", "b"], 300),
                             "z": rng.normal(size=300)}), path)
    return path


NO_ROW_CASES = ["header-only csv", "parquet file", "parquet dataset", "window"]


@pytest.mark.parametrize("case", NO_ROW_CASES)
def test_with_no_row_read_the_features_present_are_listed_untested(tmp_path: Path, case: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # a Parquet file or dataset of no rows and an empty window listed the features the data has (x, c) neither in
    # "features" nor in "missing_features": --json did not say which features were there but untested; a CSV of a
    # header only listed them as insufficient_data, each with 0 values
    reference = reference_x_c_z(tmp_path)
    current, extra = no_row_sources(tmp_path)[case]
    assert main(["drift", str(reference), str(current), *extra, "--json"]) == 2
    out, err = capsys.readouterr()
    report = json.loads(out)
    reason = report["nothing_tested"]
    assert err == f"aiwatch drift: error: nothing was tested: {reason}\n"
    assert reason.startswith("the time window selected no row" if case == "window" else "the current data has no rows")
    assert [(f["feature"], f["status"], f["current_count"], f["missing"], f["invalid"]) for f in report["features"]] \
        == [("x", "insufficient_data", 0, 0, 0), ("c", "insufficient_data", 0, 0, 0)]
    assert (report["missing_features"], report["unknown_features"]) == (["z"], ["y"])


def pandas_index_sources(tmp_path: Path) -> dict[str, Path]:
    """Parquet written by pandas from filtered frames, whose index pandas stores as a column (``__index_level_0__``,
    or the index's name): a file and a dataset of rows, the same of no rows, a dataset whose files disagree on a
    column's type, and a file whose index is named."""
    import pandas as pd

    rng = np.random.default_rng(13)
    frame = pd.DataFrame({"x": rng.normal(size=600), "c": rng.choice(["a", "b"], 600)})

    def no_rows(part: Any) -> Any:
        # pandas 3 gives a filter that keeps no row a RangeIndex, which to_parquet stores in the metadata, as pandas 2
        # did not: the index is given back as pandas 2 gave it, so that it is stored as a column
        empty = part[part.x > 100]
        return empty.set_axis(pd.Index(empty.index.to_numpy()))
    for name in ("dataset", "empty dataset"):
        (tmp_path / name).mkdir()
    for i in range(2):
        part = frame.iloc[i * 300:(i + 1) * 300]
        part[part.c == "a"].to_parquet(tmp_path / "dataset" / f"part-{i}.parquet")
        no_rows(part).to_parquet(tmp_path / "empty dataset" / f"part-{i}.parquet")
    (tmp_path / "dataset of mixed types").mkdir()  # x: doubles in one file, text in the other (read as text)
    first, second = frame.iloc[:300], frame.iloc[300:]
    first[first.c == "a"].to_parquet(tmp_path / "dataset of mixed types" / "part-0.parquet")
    second[second.c == "a"].assign(x=second.x.map(repr)).to_parquet(
        tmp_path / "dataset of mixed types" / "part-1.parquet")
    frame[frame.c == "a"].to_parquet(tmp_path / "file.parquet")
    no_rows(frame).to_parquet(tmp_path / "empty file.parquet")
    frame[frame.c == "b"].rename_axis("row").to_parquet(tmp_path / "named index.parquet")
    return {name: tmp_path / (name if "dataset" in name else f"{name}.parquet")
            for name in PANDAS_INDEX_CASES}


PANDAS_INDEX_CASES = ["file", "empty file", "dataset", "empty dataset", "dataset of mixed types", "named index"]


@pytest.mark.parametrize("case", PANDAS_INDEX_CASES)
def test_pandas_stored_index_is_no_column_of_the_data(tmp_path: Path, case: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # a filtered pandas frame's to_parquet stores its index as a column (__index_level_0__, or its name): one machine
    # read it as data, an unknown column of the current data (a feature of a profile built from it, which then
    # drifted: the current rows' index is later), where Dask's read_parquet makes it the frame's index
    source = pandas_index_sources(tmp_path)[case]
    index = "row" if case == "named index" else "__index_level_0__"
    assert index in pq.read_schema(next(iter(sorted(source.glob("*.parquet")))) if source.is_dir() else source).names
    reference = reference_x_c_z(tmp_path)
    code, report = drift_json(capsys, str(reference), str(source))
    assert code == (2 if "empty" in case else 1)
    assert report["unknown_features"] == [] and report["missing_features"] == ["z"]
    assert [f["feature"] for f in report["features"]] == ["x", "c"]
    if "empty" not in case:  # a profile built from it
        profile = profile_source(source) if source.is_dir() else ReferenceProfile.from_file(source)
        assert sorted(profile.features) == ["c", "x"]
        assert sorted(profile_source(source, ignore=["c"]).features) == ["x"]


@pytest.mark.parametrize("index", ["z", "__index_level_0__"])
def test_a_feature_named_like_a_datasets_pandas_index_is_missing(tmp_path: Path, index: str) -> None:
    # a profile feature named like the pandas index a dataset's files store (set_index("z"), or a filtered frame's
    # __index_level_0__) is no column of the data: one machine read it all the same (and tested it), where Dask
    # finds it missing
    import pandas as pd

    rng = np.random.default_rng(17)
    frame = pd.DataFrame({"x": rng.normal(size=300), "c": rng.choice(["a", "b"], 300), "z": rng.normal(size=300)})
    (tmp_path / "dataset").mkdir()
    (frame.set_index("z") if index == "z" else frame[frame.c == "a"]).to_parquet(tmp_path / "dataset" / "a.parquet")
    reference = frame.assign(__index_level_0__=np.arange(300.0))
    profile = ReferenceProfile.build(reference)
    report = compare_source(profile, tmp_path / "dataset")
    assert index in report.missing_features
    assert index not in report.features


@pytest.mark.parametrize("case", ["first file without index", "hive key also a column", "same columns"])
def test_pandas_stored_index_of_any_file_is_no_column_of_the_data(tmp_path: Path, case: str) -> None:
    # only the first file's pandas metadata counted: a dataset whose first file has a RangeIndex (no column) and
    # whose later file is a filtered frame's (__index_level_0__) reported __index_level_0__ unknown, and a profile
    # built from it made it a feature; so did a dataset whose key= directories are also a column of its files,
    # whose schema lost the files' metadata; and files of the same columns, only one of which pandas wrote
    import pandas as pd

    rng = np.random.default_rng(19)
    frame = pd.DataFrame({"x": rng.normal(size=300), "c": rng.choice(["a", "b"], 300)})
    if case == "first file without index":
        (tmp_path / "data").mkdir()
        frame.to_parquet(tmp_path / "data" / "a.parquet")
        frame[frame.x > 0].to_parquet(tmp_path / "data" / "b.parquet")
    elif case == "hive key also a column":
        for key in "ab":
            (tmp_path / "data" / f"c={key}").mkdir(parents=True)
            frame[frame.c == key].to_parquet(tmp_path / "data" / f"c={key}" / "p.parquet")
    else:
        (tmp_path / "data").mkdir()
        part = frame[frame.x > 0]
        pq.write_table(pa.table({"x": part.x.to_numpy(), "c": part.c.to_numpy(),
                                 "__index_level_0__": part.index.to_numpy()}), tmp_path / "data" / "a.parquet")
        part.to_parquet(tmp_path / "data" / "b.parquet")
    assert "__index_level_0__" in pq.read_schema(next((tmp_path / "data").rglob("*.parquet"))).names
    report = compare_source(ReferenceProfile.build(frame), tmp_path / "data")
    assert report.unknown_features == [] and sorted(report.features) == ["c", "x"]
    assert sorted(profile_source(tmp_path / "data").features) == ["c", "x"]


@pytest.mark.parametrize("metadata", [b"{not json", b"[1, 2]", b"[" * 100_000 + b"]" * 100_000],
                         ids=["not json", "a list", "nested past the recursion limit"])
def test_pandas_metadata_no_json_object_lists_no_index(tmp_path: Path, metadata: bytes) -> None:
    # pandas metadata that is no JSON object lists no index pandas could read: the file is read without one. JSON
    # nested past Python's recursion limit raised RecursionError, which failed the file (and the dataset)
    rng = np.random.default_rng(23)
    table = pa.table({"x": rng.normal(size=300), "__index_level_0__": np.arange(300)})
    (tmp_path / "data").mkdir()
    pq.write_table(table.replace_schema_metadata({b"pandas": metadata}), tmp_path / "data" / "a.parquet")
    profile = ReferenceProfile.build({"x": rng.normal(size=300)})
    for source in (tmp_path / "data", tmp_path / "data" / "a.parquet"):
        report = compare_source(profile, source)
        assert report.unknown_features == ["__index_level_0__"] and report.features["x"].current_count == 300
