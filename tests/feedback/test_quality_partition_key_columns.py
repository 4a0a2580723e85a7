"""A Hive partition key that is also a column of the log's files (``log/model=ranker/part-0.parquet`` whose files
hold a ``model`` column, ``model_version=3/`` over an int ``model_version`` column, a ParquetSink log with an input
named ``hour``): the log opens, and the column in a file is the data, winning over the directory's name for that
file's rows; the directory's value is the column's only in the files without it. Types are unified as files that
disagree are (an int in the files, text in the directories: read as text)."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiwatch.cli import main
from aiwatch.drift.datasets import open_dataset, partition_columns, partition_keys_in_files, scan_chunks, time_filter
from aiwatch.drift.errors import ProfileError
from aiwatch.feedback.outcomes import quality_report
from tests.feedback.quality_files import labels_csv, sink_log

T0 = 1_790_002_800.0  # 2026-09-21T15:00:00Z


def _log(tmp_path: Path, files: dict[str, dict[str, list[Any]]]) -> tuple[Path, Path]:
    """``files`` (a path under log/ -> its columns besides request_id, timestamp and output) written by pyarrow,
    each request labelled 1 and predicted 1; the log and the labels."""
    ids = []
    for n, (relative, columns) in enumerate(files.items()):
        rows = len(next(iter(columns.values()))) if columns else 1
        part = [f"f{n}-{i}" for i in range(rows)]
        path = tmp_path / "log" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"request_id": part, "timestamp": [T0] * rows, "output": [1.0] * rows, **columns}),
                       path)
        ids += part
    return tmp_path / "log", labels_csv(tmp_path, [(rid, 1) for rid in ids])


def _groups(log: Path, labels: Path, **options: Any) -> list[tuple[str, str | None, int]]:
    report = quality_report(log, labels, by_version=True, **options)
    return [(w.model, w.model_version, w.labelled) for w in report.windows]


def test_a_model_column_of_the_same_type_as_its_directory_is_the_data(tmp_path: Path) -> None:
    """Text in both: pyarrow opened it, but the directory's name replaced the file's values."""
    log, labels = _log(tmp_path, {"model=ranker/part-0.parquet": {"model": ["ranker", "ranker"]},
                                  "model=ranker/part-1.parquet": {"model": ["reranker", "reranker", "reranker"]}})
    assert _groups(log, labels) == [("ranker", "", 2), ("reranker", "", 3)]


def test_an_int_column_under_text_directories_opens(tmp_path: Path) -> None:
    """``model_version=3/`` (read as text) over an int64 column: pyarrow's merge failed (int64 vs int32)."""
    log, labels = _log(tmp_path, {"model=m/model_version=3/part-0.parquet": {"model_version": [3, 3]},
                                  "model=m/model_version=4/part-0.parquet": {"model_version": [4]}})
    assert _groups(log, labels) == [("m", "3", 2), ("m", "4", 1)]


def test_an_int_model_column_under_a_text_directory_is_the_data(tmp_path: Path) -> None:
    log, labels = _log(tmp_path, {"model=ranker/part-0.parquet": {"model": [7, 7]}})
    assert _groups(log, labels) == [("7", "", 2)]


def test_a_key_in_some_files_only_is_the_directorys_value_in_the_others(tmp_path: Path) -> None:
    """The file with an int model_version column is its own; the file without it gets its directory's text: the
    column is read as text (an int and text), ``1`` and ``v2``."""
    log, labels = _log(tmp_path, {"model=m/model_version=v1/part-0.parquet": {"model_version": [1, 1]},
                                  "model=m/model_version=v2/part-1.parquet": {"unrelated": [0.5]}})
    assert _groups(log, labels) == [("m", "1", 2), ("m", "v2", 1)]
    dataset = open_dataset(log)
    assert partition_keys_in_files(dataset) == {"model_version"}
    assert "model_version" not in partition_columns(dataset) and "model" in partition_columns(dataset)


def test_a_key_in_the_files_and_in_no_directory_of_some_files(tmp_path: Path) -> None:
    """A file's model column, and a file whose directory has no model= at all: its rows are the model ``""``."""
    log, labels = _log(tmp_path, {"model=a/part-0.parquet": {"model": ["b"]},
                                  "model=a/part-1.parquet": {"x": [1.0, 2.0]}})
    assert _groups(log, labels) == [("a", "", 2), ("b", "", 1)]


def test_an_int_key_that_is_an_int_column_keeps_numbers(tmp_path: Path) -> None:
    """``shard=1/`` (an int32 partition) over an int64 ``shard`` column, and a file without it: numbers, not
    text (the log opens; pyarrow's merge failed on int64 vs int32)."""
    log, _ = _log(tmp_path, {"shard=1/part-0.parquet": {"shard": [5, 6]}, "shard=2/part-1.parquet": {"x": [0.0]}})
    dataset = open_dataset(log)
    assert pa.types.is_integer(dataset.schema.field("shard").type)
    assert sorted(dataset.to_table(columns=["shard"]).column("shard").to_pylist()) == [2, 5, 6]


@pytest.mark.parametrize(("directory", "without", "with_column"), [
    ("model=", "", "file"),  # an empty value
    ("model=__HIVE_DEFAULT_PARTITION__", "", "file"),  # Hive's null
    ("model=a%2Fb", "a/b", "file"),  # URL-encoded, as ParquetSink writes a model named a/b
    ("model=%ZZ", "%ZZ", "file"),  # not valid URL encoding: as written
    ("model=%E2%82%AC", "\N{EURO SIGN}", "file"),
])
def test_hostile_directory_values(tmp_path: Path, directory: str, without: str, with_column: str) -> None:
    log, labels = _log(tmp_path, {f"{directory}/part-0.parquet": {"x": [1.0]},
                                  f"{directory}/part-1.parquet": {"model": [with_column, with_column]}})
    assert _groups(log, labels) == sorted([(without, "", 1), (with_column, "", 2)])


def test_a_null_in_the_files_column_stays_null_not_the_directorys_name(tmp_path: Path) -> None:
    log, labels = _log(tmp_path, {"model=ranker/part-0.parquet": {"model": ["ranker", None]}})
    assert _groups(log, labels) == [("", "", 1), ("ranker", "", 1)]


def test_mixed_types_across_files_and_directories_are_read_as_text(tmp_path: Path) -> None:
    """An int column in one file, text in another, a float in a third, and the directories' text in a fourth."""
    log, labels = _log(tmp_path, {"model=m/model_version=a/part-0.parquet": {"model_version": [7]},
                                  "model=m/model_version=b/part-1.parquet": {"model_version": ["07"]},
                                  "model=m/model_version=c/part-2.parquet": {"model_version": [1.5]},
                                  "model=m/model_version=d/part-3.parquet": {"x": [0.0]}})
    assert _groups(log, labels) == [("m", "07", 1), ("m", "1.5", 1), ("m", "7", 1), ("m", "d", 1)]


@pytest.mark.parametrize("column", [
    pa.array([[1], [2]], type=pa.list_(pa.int64())),
    pa.array([{"a": 1}, {"a": 2}]),
])
def test_a_column_that_cannot_be_read_with_the_directorys_text_is_an_error_naming_it(
        tmp_path: Path, column: Any, capsys: pytest.CaptureFixture[str]) -> None:
    log, labels = _log(tmp_path, {"model=m/model_version=v1/part-0.parquet": {"model_version": column},
                                  "model=m/model_version=v2/part-1.parquet": {"x": [0.0]}})
    with pytest.raises(ProfileError, match=r"column 'model_version' has the types .*, string in different files, "
                       r"which cannot be read as one \(counting the model_version= directories"):
        quality_report(log, labels, by_version=True)
    assert main(["quality", str(log), str(labels), "--min-labelled", "1", "--by-version"]) == 2
    err = capsys.readouterr().err
    assert "column 'model_version' has the types" in err and "Traceback" not in err


def test_a_glob_of_such_files_opens_too(tmp_path: Path) -> None:
    log, labels = _log(tmp_path, {"model=m/model_version=3/part-0.parquet": {"model_version": [3]}})
    assert _groups(Path(f"{log}/model=*/*/*.parquet"), labels) == [("m", "3", 1)]


def test_the_command_reads_such_a_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, labels = _log(tmp_path, {"model=m/model_version=3/part-0.parquet": {"model_version": [3, 3]}})
    assert main(["quality", str(log), str(labels), "--min-labelled", "1", "--by-version", "--json"]) == 0
    windows = json.loads(capsys.readouterr().out)["windows"]
    assert [(w["model"], w["model_version"], w["labelled"]) for w in windows] == [("m", "3", 2)]


# ParquetSink's own layout: model=M/hour=YYYY-MM-DDTHH, with an input named hour in the files


def _sink_log_with_an_hour_input(tmp_path: Path, hours: list[Any]) -> tuple[Path, Path]:
    rows = [{"request_id": f"r{i}", "timestamp": T0 + i, "model": "m", "model_version": "v1", "hour": hour,
             "output": 1.0} for i, hour in enumerate(hours)]
    return sink_log(tmp_path, rows), labels_csv(tmp_path, [(f"r{i}", 1) for i in range(len(hours))])


def test_a_parquet_sink_log_with_a_number_input_named_hour_opens(tmp_path: Path) -> None:
    """The sink writes the input as a double column under hour=2026-09-21T15/: pyarrow's merge failed (double vs
    string). The column read is the input's."""
    log, labels = _sink_log_with_an_hour_input(tmp_path, [13.0, 14.0, 15.0])
    assert _groups(log, labels) == [("m", "v1", 3)]
    assert open_dataset(log).to_table(columns=["hour"]).column("hour").to_pylist() == [13.0, 14.0, 15.0]


def test_a_text_input_named_hour_is_no_partition_to_prune_by(tmp_path: Path) -> None:
    """A text input ``hour`` (``morning``): the log opened with the directory's hour replacing it, and --since
    compared the input's values with 2026-09-21T15, leaving out every row (no window had a label)."""
    log, labels = _sink_log_with_an_hour_input(tmp_path, ["morning", "evening"])
    since = datetime.fromtimestamp(T0 - 60, tz=UTC)
    assert _groups(log, labels, since=since) == [("m", "v1", 2)]
    assert open_dataset(log).to_table(columns=["hour"]).column("hour").to_pylist() == ["morning", "evening"]


def test_the_sinks_hour_directories_still_prune_without_such_an_input(tmp_path: Path) -> None:
    """Without an input named hour, the hour= directories are a partition column as before."""
    log = sink_log(tmp_path, [{"request_id": "r0", "timestamp": T0, "model": "m", "output": 1.0}])
    dataset = open_dataset(log)
    assert partition_keys_in_files(dataset) == set() and partition_columns(dataset) == {"model", "hour"}


@pytest.mark.parametrize("under", ["", "model=m/"])
def test_a_model_column_that_is_not_text_or_numbers_is_an_error_naming_it(tmp_path: Path, under: str) -> None:
    """A list column ``model`` (a foreign log's; under model= directories it is the data): a ValueError naming the
    column and its type, not pyarrow's cast error."""
    log, labels = _log(tmp_path, {f"{under}part-0.parquet": {"model": pa.array([[1], [2]])}})
    with pytest.raises(ValueError, match=r"the log's 'model' column is list<.*>, not text or numbers"):
        quality_report(log, labels)


def test_one_file_of_such_a_log_opens(tmp_path: Path) -> None:
    """A single file under ``model_version=v1/`` holding an int ``model_version`` column: pyarrow reads the keys
    on a file's path too, and failed to merge them."""
    log, labels = _log(tmp_path, {"model=m/model_version=v1/part-0.parquet": {"model_version": [1, 1]}})
    assert _groups(log / "model=m" / "model_version=v1" / "part-0.parquet", labels) == [("m", "1", 2)]


def test_the_drift_reader_reads_the_files_column_and_the_directorys_value(tmp_path: Path) -> None:
    """scan_chunks (aiwatch drift's reader) row group by row group: the file's ints as numbers, the directory's
    value in the file without the column, and the hour= directories still pruning by --since."""
    log, _ = _log(tmp_path, {"model=m/model_version=v1/hour=2026-09-21T15/a.parquet": {"model_version": [1]},
                             "model=m/model_version=v2/hour=2026-09-21T15/b.parquet": {"x": [2.0]},
                             "model=m/model_version=v2/hour=2026-09-21T10/c.parquet": {"x": [3.0]}})
    dataset = open_dataset(log)
    since = datetime.fromtimestamp(T0 - 60, tz=UTC)
    read = [value for chunk in scan_chunks(dataset, ["model_version"], predicate=time_filter(dataset, since, None))
            for value in chunk["model_version"].tolist()]
    # c.parquet's hour=2026-09-21T10 directory is pruned (its row's timestamp would be kept: the prune is the proof)
    assert sorted(map(str, read)) == ["1.0", "v2"]
    kept = [fragment.path for fragment in dataset.get_fragments(filter=time_filter(dataset, since, None))]
    assert len(kept) == 2 and partition_columns(dataset) == {"model", "hour"}


model_names = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=6).filter(
    lambda name: name != "__HIVE_DEFAULT_PARTITION__")


@settings(max_examples=40, deadline=None)
@given(files=st.lists(st.tuples(model_names, st.one_of(st.none(), model_names, st.integers(-5, 5))),
                      min_size=1, max_size=5))
def test_each_files_model_column_wins_and_its_directory_stands_in_where_there_is_none(
        files: list[tuple[str, str | int | None]]) -> None:
    """``model=<quoted name>/`` directories (as ParquetSink writes them), each file with its own ``model`` column (a
    name, or an int) or none: a file's column wins, the directory's decoded name stands in where there is none."""
    with tempfile.TemporaryDirectory() as folder:
        layout: dict[str, dict[str, list[Any]]] = {}
        expected: dict[str, int] = {}
        for n, (directory, column) in enumerate(files):
            layout[f"model={quote(directory, safe='')}/part-{n}.parquet"] = (
                {"x": [0.0]} if column is None else {"model": [column]})
            name = directory if column is None else str(column)
            expected[name] = expected.get(name, 0) + 1
        log, labels = _log(Path(folder), layout)
        report = quality_report(log, labels)
    assert [(w.model, w.labelled) for w in report.windows] == sorted(expected.items())


def test_a_key_whose_name_is_quoted_in_the_directory_is_applied_by_its_decoded_name(tmp_path: Path) -> None:
    """``my%20key=`` directories (pyarrow decodes the name to ``my key``), an int ``my key`` column in one file
    only: the fallback took the name raw, added an empty int32 ``my%20key`` column and never applied the key, so
    the file without the column lost its directory's value (5, None)."""
    for relative, columns in (("my%20key=x/a.parquet", {"id": [1], "my key": [5]}),
                              ("my%20key=y/b.parquet", {"id": [2]})):
        (tmp_path / "E" / relative).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), tmp_path / "E" / relative)
    dataset = open_dataset(tmp_path / "E")
    assert dataset.schema.names == ["id", "my key"] and str(dataset.schema.field("my key").type) == "string"
    assert dataset.to_table().sort_by("id").column("my key").to_pylist() == ["5", "y"]


@pytest.mark.parametrize("named", ["", "model=r/hour=2026-11-30T10", "model=r/hour=2026-11-30T10/*.parquet",
                                   "model=r/hour=2026-11-30T10/p.parquet"])
def test_a_text_hour_column_does_not_prune_however_the_log_is_named(tmp_path: Path, named: str) -> None:
    """A text ``hour`` column (``morning``) in files under ``hour=`` directories: named by its hour directory or
    a glob under it there is no ``hour=`` key above the files, and time_filter compared the column's values with
    ``2026-11-30T10``, every row left out ([] instead of [1, 2])."""
    ts = pa.array([datetime(2026, 11, 30, 10, 5, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))
    for name, n, value in (("p", 1, "morning"), ("q", 2, "evening")):
        path = tmp_path / "log" / "model=r" / "hour=2026-11-30T10" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": [n], "timestamp": ts, "hour": [value]}), path)
    dataset = open_dataset(str(tmp_path / "log" / named) if named else tmp_path / "log")
    since, until = datetime(2026, 11, 30, 10, tzinfo=UTC), datetime(2026, 11, 30, 11, tzinfo=UTC)
    kept = dataset.to_table(filter=time_filter(dataset, since, until)).column("id").to_pylist()
    assert sorted(kept) == ([1] if named.endswith("p.parquet") else [1, 2])


def test_the_sinks_hour_directories_are_in_the_time_filter(tmp_path: Path) -> None:
    """Without an input named hour, ``--since`` prunes by the sink's ``hour=`` directories."""
    log = sink_log(tmp_path, [{"request_id": "r0", "timestamp": T0, "model": "m", "output": 1.0}])
    dataset = open_dataset(log)
    assert "hour" in str(time_filter(dataset, datetime.fromtimestamp(T0 - 60, tz=UTC), None))


@pytest.mark.parametrize(("values", "read"), [(["a", "b"], ["a", "b", "asia"]), ([1, 2], [1, 2, "asia"])])
def test_a_dictionary_key_column_in_some_files_is_read_with_the_directorys_value(
        tmp_path: Path, values: list[Any], read: list[Any]) -> None:
    """A ``region`` column dictionary-encoded (pandas' category) in one file, ``region=asia/`` alone in the other:
    a dictionary of text was 'the types dictionary<values=string, ...>, string ... cannot be read as one'."""
    for relative, columns in (("region=eu/a.parquet", {"id": [1, 2], "region": pa.array(values).dictionary_encode()}),
                              ("region=asia/b.parquet", {"id": [3]})):
        (tmp_path / "D" / relative).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), tmp_path / "D" / relative)
    dataset = open_dataset(tmp_path / "D")
    assert dataset.to_table().sort_by("id").column("region").to_pylist() == [str(v) for v in read]
    rows = [(i, r) for chunk in scan_chunks(dataset, ["id", "region"])
            for i, r in zip(chunk["id"], chunk["region"], strict=True)]
    assert [r for _, r in sorted(rows, key=lambda row: int(row[0]))] == read
