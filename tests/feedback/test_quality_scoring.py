"""Realised quality scores what was logged as what it is: bool classes against 0/1 labels, a log whose files disagree
on the prediction's type, missing text labels, a request logged twice, model directories that look like numbers,
rows without a timestamp, label ids that are floats, and naive --since/--until times."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aiwatch.cli import main
from aiwatch.feedback import outcomes
from aiwatch.feedback.outcomes import drop_unusable, read_labels, realised_quality
from tests.feedback.quality_files import labels_csv, sink_log

T0 = 1_790_002_800.0  # 2026-09-21T15:00:00Z, on the hour


def _table_log(tmp_path: Path, *tables: pa.Table) -> Path:
    directory = tmp_path / "log"
    directory.mkdir()
    for i, table in enumerate(tables):
        pq.write_table(table, directory / f"part-{i}.parquet")
    return directory


@pytest.fixture()
def bool_classifier(tmp_path: Path) -> Path:
    """A fraud classifier that logs a bool, right every time."""
    return sink_log(tmp_path, [{"request_id": f"tx{i}", "timestamp": T0 + i, "model": "fraud",
                                 "output.is_fraud": i % 10 == 0} for i in range(40)])


@pytest.mark.parametrize("labels", ["01", "truefalse"])
@pytest.mark.parametrize("positive", [1, "1", "true", "True", True])
def test_a_bool_prediction_is_the_class_1_or_0_and_so_is_a_positive_written_true(
        bool_classifier: Path, tmp_path: Path, labels: str, positive: object) -> None:
    outcomes = {"01": ("1", "0"), "truefalse": ("true", "false")}[labels]
    path = labels_csv(tmp_path, [(f"tx{i}", outcomes[i % 10 != 0]) for i in range(40)])
    [window] = realised_quality(bool_classifier, path, prediction="output.is_fraud", positive=positive)
    assert window.labelled == 40
    assert window.metrics == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0}


def test_cli_a_perfect_bool_classifier_meets_its_objective(bool_classifier: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = labels_csv(tmp_path, [(f"tx{i}", int(i % 10 == 0)) for i in range(40)])
    code = main(["quality", str(bool_classifier), str(path), "--prediction", "output.is_fraud",
                 "--objective", "accuracy=0.9", "--min-labelled", "1", "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["windows"][0]["metrics"]["accuracy"] == 1.0


def test_numbers_written_as_text_in_one_file_are_the_classes_the_others_hold_as_doubles(tmp_path: Path) -> None:
    log = _table_log(
        tmp_path,
        pa.table({"request_id": ["a0", "a1"], "timestamp": [T0, T0], "output": [1.0, 0.0]}),
        pa.table({"request_id": ["b0", "b1", "b2"], "timestamp": [T0, T0, T0], "output": ["1.0", "1", "unknown"]}))
    path = labels_csv(tmp_path, [(rid, 1) for rid in ("a0", "a1", "b0", "b1", "b2")])
    [window] = realised_quality(log, path)
    assert window.labelled == 5 and window.metrics["accuracy"] == pytest.approx(3 / 5)


def test_missing_text_labels_are_left_out_not_scored_as_classes(tmp_path: Path) -> None:
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output.label": "spam"}
                               for i in range(8)])
    path = labels_csv(tmp_path, [("r0", "spam"), ("r1", "spam"), ("r2", "spam"), ("r3", "ham"), ("r4", ""),
                              ("r5", "NA"), ("r6", "NaN"), ("r7", "null")])
    kept, left_out = drop_unusable(read_labels(path), "classifier")
    assert kept.column("outcome").to_pylist() == ["spam", "spam", "spam", "ham"] and left_out == 4
    [window] = realised_quality(log, path, prediction="output.label", positive="spam")
    assert window.labelled == 4 and window.metrics["accuracy"] == 0.75


def test_a_request_logged_twice_counts_its_label_once_with_its_latest_prediction(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = sink_log(tmp_path, [
        {"request_id": "a", "timestamp": T0 + 1, "model": "m", "output": 1.0},
        {"request_id": "a", "timestamp": T0, "model": "m", "output": 0.0},  # the first try, stored after
        {"request_id": "b", "timestamp": T0, "model": "m", "output": 0.0},
        {"request_id": "a", "timestamp": T0, "model": "other", "output": 0.0}])  # another model's request
    path = labels_csv(tmp_path, [("a", 1), ("b", 0)])
    report = outcomes.quality_report(log, path)
    assert report.duplicates == 1
    assert [(w.model, w.logged, w.labelled, w.metrics["accuracy"]) for w in report.windows] == [
        ("m", 2, 2, 1.0), ("other", 1, 1, 0.0)]
    assert main(["quality", str(log), str(path), "--min-labelled", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["logged_duplicates_left_out"] == 1
    assert "1 logged row left out: a request logged again" in captured.err


def test_model_directories_that_read_as_the_same_number_stay_two_models(tmp_path: Path) -> None:
    log = sink_log(tmp_path, [{"request_id": f"a{i}", "timestamp": T0, "model": "007", "output": 1.0}
                               for i in range(3)] + [{"request_id": f"b{i}", "timestamp": T0, "model": "7",
                                                      "output": 0.0} for i in range(3)])
    path = labels_csv(tmp_path, [(f"{p}{i}", 1) for p in "ab" for i in range(3)])
    assert [(w.model, w.labelled, w.metrics["accuracy"]) for w in realised_quality(log, path)] == [
        ("007", 3, 1.0), ("7", 3, 0.0)]


def test_rows_without_a_timestamp_are_left_out_and_counted_and_a_null_model_is_the_empty_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _table_log(tmp_path, pa.table({
        "request_id": ["a", "b", "c", "d", "e"],
        "timestamp": pa.array([T0, None, float("nan"), T0, T0], pa.float64()),
        "model": ["m", "m", "m", None, "m"], "output": [1.0, 1.0, 1.0, 1.0, 0.0]}))
    path = labels_csv(tmp_path, [(rid, 1) for rid in "abcde"])
    report = outcomes.quality_report(log, path)
    assert report.untimed == 2
    assert [(w.model, w.start, w.logged, w.labelled) for w in report.windows] == [("", T0, 1, 1), ("m", T0, 2, 2)]
    assert main(["quality", str(log), str(path), "--min-labelled", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["logged_untimed_left_out"] == 2
    assert "2 logged rows left out: a missing or non-finite timestamp" in captured.err


@pytest.mark.parametrize("ids", [pa.array([7.5, 8.0]), pa.array([7.0, 2.0 ** 60]), pa.array([7.0, 2.0 ** 53]),
                                 pa.array([7.0, float("inf")]),
                                 pa.array([Decimal("7.5"), Decimal("8")], type=pa.decimal128(22, 2)),
                                 pa.array([b"7", b"8"])])
def test_label_ids_that_are_not_text_or_whole_numbers_are_refused_naming_the_column_and_file(
        tmp_path: Path, ids: pa.Array) -> None:
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"tx": ids, "outcome": [1, 0]}), path)
    with pytest.raises(ValueError, match=rf"labels '{path}': the id column 'tx' is "):
        read_labels(path, id_column="tx")


@pytest.mark.parametrize("ids", [pa.array([7.0, None, 12345678.0, 2.0 ** 53 - 1]),
                                 pa.array([7, None, 12345678, 2 ** 53 - 1]).cast(pa.decimal128(22, 2))])
def test_float_or_decimal_label_ids_that_are_whole_numbers_are_read_as_their_int_text(
        tmp_path: Path, ids: pa.Array) -> None:
    # pandas writes int ids with a gap as float64: 7.0 is the logged request "7"
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": ids, "outcome": [1, 0, 1, 0]}), path)
    assert read_labels(path).column("request_id").to_pylist() == ["7", None, "12345678", str(2 ** 53 - 1)]
    log = sink_log(tmp_path, [{"request_id": "7", "timestamp": T0, "model": "m", "output": 1.0}])
    [window] = realised_quality(log, path)
    assert window.labelled == 1 and window.metrics["accuracy"] == 1.0


def test_a_nan_float_label_id_is_a_missing_id_left_out_and_counted(tmp_path: Path) -> None:
    # pandas writes a missing id as NaN: it was refused with the whole file, while a null id is left out and counted
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": [7.0, float("nan"), None], "outcome": [1, 0, 1]}), path)
    labels = read_labels(path)
    assert labels.column("request_id").to_pylist() == ["7", None, None]
    assert drop_unusable(labels)[1] == 2


def test_float_label_ids_from_2_to_the_53_are_refused_as_they_stand_for_several_ints(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": [float(2 ** 53 + 1)], "outcome": [1]}), path)  # read back as 2**53
    with pytest.raises(ValueError, match=r"holds 9007199254740992\.0, .*below 2\*\*53 for a double"):
        read_labels(path)


def test_csv_ids_written_as_whole_number_decimals_are_their_int_text_and_an_empty_id_is_missing(
        tmp_path: Path) -> None:
    # pandas' df.to_csv of int ids with a gap writes 7.0 and an empty field: they matched nothing, and "" was an id
    path = tmp_path / "labels.csv"
    path.write_text("request_id,outcome\n7.0,1\n,0\n8.00,0\n-0.0,1\n007,1\n7.5,0\n007.0,1\nabc,0\n")
    labels = read_labels(path)
    assert labels.column("request_id").to_pylist() == ["7", None, "8", "0", "007", "7.5", "007.0", "abc"]
    assert drop_unusable(labels)[1] == 1
    log = sink_log(tmp_path, [{"request_id": rid, "timestamp": T0, "model": "m", "output": 1.0}
                               for rid in ("7", "8")])
    [window] = realised_quality(log, path)
    assert (window.logged, window.labelled, window.metrics["accuracy"]) == (2, 2, 0.5)


@pytest.mark.parametrize("big", ["9007199254740992.0", "-9007199254740993.00", "12345678901234567.0"])
def test_a_csv_id_written_as_a_whole_number_decimal_from_2_53_on_is_refused_as_a_parquet_float_id_is(
        tmp_path: Path, big: str) -> None:
    # pandas writes the float64 of 2**53 + 1 as 9007199254740992.0: read as the int text, it was another request's id
    path = tmp_path / "labels.csv"
    path.write_text(f"request_id,outcome\n7.0,1\n{big},0\n")
    with pytest.raises(ValueError, match=rf"'request_id' holds '{re.escape(big)}', which is not a request id"):
        read_labels(path)


@pytest.mark.parametrize("written", ["9007199254740991.0", "-9007199254740991.0", "9007199254740992",
                                     "900719925474099.0"])
def test_a_csv_id_below_2_53_or_written_as_an_int_is_read(tmp_path: Path, written: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(f"request_id,outcome\n{written},0\n")
    assert read_labels(path).column("request_id").to_pylist() == [written.removesuffix(".0")]


@pytest.mark.parametrize(("written", "positive"), [
    (("1", "0"), True), (("1", "0"), "True"), (("1", "0"), "true"), (("1", "0"), 1), (("1", "0"), "1"),
    (("true", "false"), "1"), (("true", "false"), 1), (("true", "false"), 1.0), (("true", "false"), True),
    (("True", "False"), "1"), (("True", "False"), "true"), (("1", "0"), False), (("true", "false"), "0")])
def test_positive_1_true_and_true_name_one_class_whichever_way_text_classes_are_written(
        tmp_path: Path, written: tuple[str, str], positive: object) -> None:
    """Predictions and labels both text (compared as written): the positive ``1``, ``true``, ``True`` (or ``0``,
    ``false``, ``False``) names the class written as that bool or number. It named none: precision and recall NaN."""
    yes, no = written
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output.label": p}
                               for i, p in enumerate([yes, no, yes, no, yes])])
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": [f"r{i}" for i in range(5)], "outcome": [yes, yes, no, no, yes]}), path)
    report = outcomes.quality_report(log, path, prediction="output.label", positive=positive)
    # positive class yes: predicted r0 r2 r4, actual r0 r1 r4; the class no: predicted r1 r3, actual r2 r3
    expected = (2 / 3, 2 / 3) if outcomes._class_number(positive) == 1.0 else (0.5, 0.5)
    assert (report.windows[0].metrics["precision"], report.windows[0].metrics["recall"]) == \
        pytest.approx(expected)
    assert report.positive_found is True


def test_a_positive_that_names_no_class_is_said_on_stderr_and_in_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output.label": p}
                               for i, p in enumerate(["spam", "ham"])])
    path = labels_csv(tmp_path, [("r0", "spam"), ("r1", "spam")])
    report = outcomes.quality_report(log, path, prediction="output.label", positive="Spam")
    assert (report.positive_found, report.classes) == (False, ["ham", "spam"])
    assert outcomes.quality_report(log, path, prediction="output.label", positive="spam").positive_found is True
    assert main(["quality", str(log), str(path), "--prediction", "output.label", "--min-labelled", "1",
                 "--json"]) == 0  # the default --positive 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["positive_found"] is False
    assert ("aiwatch quality: --positive '1' is no class of the labelled requests' predictions or outcomes (their "
            "classes: 'ham', 'spam'): precision and recall are NaN") in captured.err
    assert main(["quality", str(log), str(path), "--prediction", "output.label", "--min-labelled", "1",
                 "--positive", "spam", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["positive_found"] is True and "--positive" not in captured.err


@pytest.mark.parametrize(("predicted", "outcomes", "positive", "accuracy"), [
    (["007", "7", "007", "7"], ["007", "007", "7", "7"], "007", 0.5),
    (["1.1", "1.10", "1.1", "1.10"], ["1.1", "1.1", "1.10", "1.10"], "1.1", 0.5),
    (["True", "true", "TRUE", "1"], ["true", "True", "1", "TRUE"], "True", 0.0)])
def test_text_classes_on_both_sides_are_compared_as_written(
        tmp_path: Path, predicted: list[str], outcomes: list[str], positive: str, accuracy: float) -> None:
    # both sides text: classes are codes ("007" is not "7"); only a side typed as numbers makes text read as numbers
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output.label": p}
                               for i, p in enumerate(predicted)])
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": [f"r{i}" for i in range(4)], "outcome": outcomes}), path)
    [window] = realised_quality(log, path, prediction="output.label", positive=positive)
    assert window.labelled == 4 and window.metrics["accuracy"] == accuracy


def test_a_request_answered_by_two_versions_of_its_model_counts_its_label_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The quality is per model: one label is one request, whichever versions answered it (a retry that crossed
    A/B arms); its latest row is scored. Scored per version, 2 labels were counted labelled 3 or 4 times."""
    log = sink_log(tmp_path, [
        {"request_id": rid, "timestamp": T0 + i, "model": "m", "model_version": version, "output": output}
        for i, (rid, version, output) in enumerate([("a", "v1", 0.0), ("a", "v2", 1.0), ("b", "v1", 1.0),
                                                     ("b", "v2", 1.0), ("b", "v2", 0.0)])])  # b's v2 retried
    path = labels_csv(tmp_path, [("a", 1), ("b", 1)])
    report = outcomes.quality_report(log, path)
    assert report.duplicates == 3
    assert [(w.logged, w.labelled, w.metrics["accuracy"]) for w in report.windows] == [(2, 2, 0.5)]
    assert main(["quality", str(log), str(path), "--min-labelled", "1"]) == 0
    assert ("3 logged rows left out: a request logged again under the same model and request id, whatever its "
            "model_version") in capsys.readouterr().err


def test_a_request_labelled_twice_keeps_its_last_label_and_labels_without_an_id_all_stay(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": ["a", "b", "a", None, None, "c", "b"], "outcome": [1, 2, 3, 4, 5, 6, 7]}),
                   path)
    assert read_labels(path).to_pylist() == [
        {"request_id": "a", "outcome": 3}, {"request_id": None, "outcome": 4}, {"request_id": None, "outcome": 5},
        {"request_id": "c", "outcome": 6}, {"request_id": "b", "outcome": 7}]


@pytest.fixture()
def new_york() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.mark.parametrize("stamp", [pa.array([T0 + 60], pa.float64()),
                                   pa.array([int((T0 + 60) * 1e6)], pa.timestamp("us", tz="UTC"))])
def test_a_naive_since_and_until_are_utc_on_a_unix_seconds_column_as_on_a_timestamp_one(
        tmp_path: Path, new_york: None, stamp: pa.Array) -> None:
    log = _table_log(tmp_path, pa.table({"request_id": ["a"], "timestamp": stamp, "output": [1.0]}))
    path = labels_csv(tmp_path, [("a", 1)])
    windows = realised_quality(log, path, since=datetime(2026, 9, 21, 15), until=datetime(2026, 9, 21, 16))
    assert [(w.start, w.logged) for w in windows] == [(T0, 1)]


def test_label_ids_of_a_pandas_categorical_are_read_as_their_text(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": pa.array(["a", "b", "a"]).dictionary_encode(), "outcome": [1, 2, 3]}), path)
    assert read_labels(path).to_pylist() == [{"request_id": "b", "outcome": 2}, {"request_id": "a", "outcome": 3}]


def test_another_layouts_numeric_hour_partition_is_not_pruned_by_since_and_until(tmp_path: Path) -> None:
    folder = tmp_path / "log" / "model=7" / "hour=15"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"request_id": ["a"], "timestamp": [T0 + 60], "output": [1.0]}), folder / "p.parquet")
    windows = realised_quality(tmp_path / "log", labels_csv(tmp_path, [("a", 1)]),
                               since=datetime(2026, 9, 21, 15), until=datetime(2026, 9, 21, 16))
    assert [(w.model, w.logged, w.labelled) for w in windows] == [("7", 1, 1)]


def test_a_table_of_labels_that_holds_a_request_twice_counts_its_last_label_once(tmp_path: Path) -> None:
    log = _table_log(tmp_path, pa.table({"request_id": ["a", "b"], "timestamp": [T0, T0], "output": [1.0, 0.0]}))
    labels = pa.table({"request_id": ["a", "b", "a"], "outcome": [0, 0, 1]})
    [window] = realised_quality(log, labels)
    assert (window.labelled, window.metrics["accuracy"]) == (2, 1.0)


@pytest.mark.parametrize("report", [outcomes.quality_report, realised_quality])
def test_a_string_by_version_is_refused_not_read_as_true(tmp_path: Path, report: object) -> None:
    # "false" is true to Python: the windows were split per version, the operator having asked for them not to be
    with pytest.raises(TypeError, match=r"^by_version must be True or False, got 'false' of type str$"):
        report(tmp_path / "log", tmp_path / "labels.csv", by_version="false")  # type: ignore[operator]
