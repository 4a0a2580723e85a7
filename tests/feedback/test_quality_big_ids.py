"""Request ids (and classes) that a double cannot hold exactly: an int from 2**53 on against a double. A log whose
files hold ``request_id`` as ints in some and doubles in others is joined exactly (each int by its digits, each double
that is a whole number below 2**53 by its int); a double id from 2**53 on, a fraction or infinity is an error naming
the column and the value, on either side; never Arrow's raw "Integer value ... not in range", never a silent loss
(a double id ``1e15`` read as the text ``1e+15``) and never two distinct int ids matched by one double."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aiwatch.cli import main
from aiwatch.feedback.outcomes import quality_report

T0 = 1_790_002_800.0  # 2026-09-21T15:00:00Z, on the hour
BIG = 2 ** 53 + 1  # no double holds it: float(BIG) == 2**53


def _log(tmp_path: Path, *parts: tuple[str, list[object], pa.DataType]) -> Path:
    """A log of one file per part (a relative path, its ids and their type), every prediction the class 1."""
    for i, (name, ids, kind) in enumerate(parts):
        path = tmp_path / "log" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"request_id": pa.array(ids, kind),
                                 "timestamp": pa.array([T0 + i + j for j in range(len(ids))], pa.float64()),
                                 "output": pa.array([1] * len(ids), pa.int64())}), path)
    return tmp_path / "log"


def _labels(tmp_path: Path, ids: list[object], kind: pa.DataType) -> Path:
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": pa.array(ids, kind), "outcome": pa.array([1] * len(ids), pa.int64())}),
                   path)
    return path


def _labelled(log: Path, labels: Path) -> int:
    return sum(w.labelled for w in quality_report(log, labels).windows)


def test_int_ids_past_2_53_in_some_files_and_double_ids_in_others_join_exactly(tmp_path: Path) -> None:
    # Arrow reads such a column as double and refused the int file: "Integer value 9007199254740993 not in range"
    log = _log(tmp_path, ("a.parquet", [BIG, 2 ** 53, 7], pa.int64()),
               ("b.parquet", [8.0, -0.0, 1e15], pa.float64()))
    assert _labelled(log, _labels(tmp_path, [BIG, 7, 8, 0, 10 ** 15], pa.int64())) == 5
    # 2**53 + 1 matches itself only: not the logged 2**53, which has no label
    assert _labelled(log, _labels(tmp_path, [BIG], pa.int64())) == 1


def test_a_log_of_int_and_double_files_keeps_its_model_directories(tmp_path: Path) -> None:
    log = _log(tmp_path, ("model=a/part-0.parquet", [BIG], pa.int64()),
               ("model=b/part-0.parquet", [8.0], pa.float64()))
    report = quality_report(log, _labels(tmp_path, [BIG, 8], pa.int64()))
    assert sorted((w.model, w.labelled) for w in report.windows) == [("a", 1), ("b", 1)]


@pytest.mark.parametrize("bad, shown", [(float(2 ** 53), "9007199254740992.0"), (9.5, "9.5"),
                                        (float("inf"), "inf")])
def test_a_double_id_that_is_no_exact_int_in_a_log_of_int_and_double_files_is_an_error_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: float, shown: str) -> None:
    log = _log(tmp_path, ("a.parquet", [BIG, 2 ** 53], pa.int64()), ("b.parquet", [bad], pa.float64()))
    labels = _labels(tmp_path, [BIG, 2 ** 53], pa.int64())
    message = f"the log's 'request_id' column is ints in some files and doubles in others and holds {shown}"
    with pytest.raises(ValueError, match=re.escape(message)):
        quality_report(log, labels)
    assert main(["quality", str(log), str(labels), "--min-labelled", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and "2**53" in err and "not in range" not in err


@pytest.mark.parametrize("bad, shown", [(float(2 ** 53), "9007199254740992.0"), (float(2 ** 53 + 2),
                                        "9007199254740994.0"), (1e20, "1e+20"), (float("inf"), "inf")])
def test_a_double_log_id_from_2_53_on_is_an_error_not_a_silent_miss(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: float, shown: str) -> None:
    # read as Arrow's text "9.007199254740992e+15" it matched no label, silently; as an int it may be another's
    log = _log(tmp_path, ("a.parquet", [bad, 7.0], pa.float64()))
    labels = _labels(tmp_path, [2 ** 53, BIG, 2 ** 53 + 2, 7], pa.int64())
    message = f"the log's 'request_id' column is double and holds {shown}, which is not a request id"
    with pytest.raises(ValueError, match=re.escape(message)):
        quality_report(log, labels)
    assert main(["quality", str(log), str(labels), "--min-labelled", "1"]) == 2
    assert message in capsys.readouterr().err


def test_whole_double_log_ids_below_2_53_are_their_ints_and_a_nan_id_is_missing(tmp_path: Path) -> None:
    # Arrow's text of 1e15 is "1e+15" and of 123456789012.0 "1.23456789012e+11": neither matched its label
    log = _log(tmp_path, ("a.parquet", [1e15, 123456789012.0, -0.0, float("nan"), 2.0 ** 53 - 1], pa.float64()))
    labels = _labels(tmp_path, [10 ** 15, 123456789012, 0, 2 ** 53 - 1], pa.int64())
    report = quality_report(log, labels)
    assert [(w.logged, w.labelled) for w in report.windows] == [(5, 4)]


def test_a_double_label_id_from_2_53_on_against_int_log_ids_is_an_error(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # 2**53 and 2**53 + 1 logged: the double 2**53 stands for both, so it matches neither (already so: kept)
    log = _log(tmp_path, ("a.parquet", [2 ** 53, BIG], pa.int64()))
    labels = _labels(tmp_path, [float(BIG)], pa.float64())
    with pytest.raises(ValueError, match=re.escape("holds 9007199254740992.0, which is not a request id")):
        quality_report(log, labels)
    csv = tmp_path / "labels.csv"
    csv.write_text(f"request_id,outcome\n{float(BIG)},1\n")
    assert main(["quality", str(log), str(csv), "--min-labelled", "1"]) == 2
    assert "holds '9007199254740992.0', which is not a request id" in capsys.readouterr().err


def test_int_label_ids_past_2_53_join_int_log_ids_exactly(tmp_path: Path) -> None:
    log = _log(tmp_path, ("a.parquet", [2 ** 53, BIG, 2 ** 63 - 1], pa.int64()))
    csv = tmp_path / "labels.csv"
    csv.write_text(f"request_id,outcome\n{BIG},1\n{2 ** 63 - 1},1\n")
    assert _labelled(log, csv) == 2


def test_a_prediction_column_of_big_ints_in_some_files_and_doubles_in_others_is_an_error_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "log").mkdir()
    pq.write_table(pa.table({"request_id": ["a"], "timestamp": [T0], "output": pa.array([BIG], pa.int64())}),
                   tmp_path / "log" / "a.parquet")
    pq.write_table(pa.table({"request_id": ["b"], "timestamp": [T0], "output": pa.array([1.0], pa.float64())}),
                   tmp_path / "log" / "b.parquet")
    csv = tmp_path / "labels.csv"
    csv.write_text("request_id,outcome\na,1\nb,1\n")
    message = "cannot read the log's 'output' column: its files hold it as ints in some and doubles in others"
    with pytest.raises(ValueError, match=re.escape(message)):
        quality_report(tmp_path / "log", csv)
    assert main(["quality", str(tmp_path / "log"), str(csv), "--min-labelled", "1"]) == 2
    assert message in capsys.readouterr().err


def test_classes_past_2_53_compare_exactly_int_with_double(tmp_path: Path) -> None:
    # the double 2**53 equals the int 2**53 exactly, and not 2**53 + 1
    (tmp_path / "log").mkdir()
    pq.write_table(pa.table({"request_id": ["a", "b"], "timestamp": [T0, T0],
                             "output": pa.array([2 ** 53, BIG], pa.int64())}), tmp_path / "log" / "a.parquet")
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": ["a", "b"], "outcome": pa.array([2.0 ** 53] * 2, pa.float64())}), labels)
    [window] = quality_report(tmp_path / "log", labels).windows
    assert window.metrics["accuracy"] == 0.5


def test_a_log_of_int_and_double_id_files_whose_model_directories_are_also_columns(tmp_path: Path) -> None:
    # model=x/ directories over files that hold a model column in one file only: the file's column wins there
    for name, ids, kind, model in (("model=x/a.parquet", [BIG], pa.int64(), "a"),
                                   ("model=y/b.parquet", [8.0], pa.float64(), None)):
        path = tmp_path / "log" / name
        path.parent.mkdir(parents=True)
        columns = {"request_id": pa.array(ids, kind), "timestamp": [T0], "output": pa.array([1], pa.int64())}
        pq.write_table(pa.table(columns if model is None else {**columns, "model": [model]}), path)
    report = quality_report(tmp_path / "log", _labels(tmp_path, [BIG, 8], pa.int64()))
    assert sorted((w.model, w.labelled) for w in report.windows) == [("a", 1), ("y", 1)]


@pytest.mark.parametrize("ids", [([BIG], [8.0]), (["a"], ["b"])], ids=["int-and-double-ids", "text-ids"])
def test_the_error_names_the_column_of_signed_and_unsigned_ints_not_the_ids_read_as_text(
        tmp_path: Path, ids: tuple[list[object], list[object]]) -> None:
    # the ids, read as text, were named for the other column's failure (or no column was, with text ids)
    (tmp_path / "log").mkdir()
    for name, id_, output in (("a", ids[0], pa.array([2 ** 64 - 1], pa.uint64())),
                              ("b", ids[1], pa.array([1], pa.int64()))):
        pq.write_table(pa.table({"request_id": id_, "timestamp": [T0], "output": output}),
                       tmp_path / "log" / f"{name}.parquet")
    message = ("cannot read the log's 'output' column: its files hold it as signed ints in some and unsigned in "
               "others")
    with pytest.raises(ValueError, match=re.escape(message)):
        quality_report(tmp_path / "log", _labels(tmp_path, [1], pa.int64()))


def test_a_log_of_uint64_and_int64_id_files_joins_exactly(tmp_path: Path) -> None:
    # Arrow reads such a column as int64 and refused the uint64 file: "Integer value 18446744073709551615 not in range"
    log = _log(tmp_path, ("a.parquet", [2 ** 64 - 1, 2 ** 63], pa.uint64()), ("b.parquet", [7, -1], pa.int64()))
    assert _labelled(log, _labels(tmp_path, [2 ** 64 - 1, 7], pa.uint64())) == 2
    assert _labelled(log, _labels(tmp_path, ["-1", str(2 ** 63)], pa.string())) == 2


@pytest.mark.parametrize(("kind", "past", "below"), [
    (pa.float32(), 2 ** 24 + 1, 2 ** 24 - 1),
    pytest.param(pa.float16(), 2 ** 11 + 1, 2 ** 11 - 1,
                 marks=pytest.mark.skipif(int(pa.__version__.split(".")[0]) < 15,
                                          reason="pyarrow < 15 writes no float16 to Parquet"))])
@pytest.mark.parametrize("with_int_file", [False, True], ids=["alone", "with-an-int-file"])
def test_a_narrow_float_id_is_exact_only_below_its_own_bound_in_the_log_and_the_labels(
        tmp_path: Path, kind: pa.DataType, past: int, below: int, with_int_file: bool) -> None:
    # a float32 holds 2**24 + 1 as 2**24, which silently matched the label 2**24 (the bound was 2**53 for all floats)
    stored = np.array([past], dtype=kind.to_pandas_dtype())
    assert int(stored[0]) == past - 1
    ints = [("i.parquet", [5], pa.int64())] if with_int_file else []
    log = _log(tmp_path, *ints, ("f.parquet", pa.array(stored).to_pylist(), kind))
    with pytest.raises(ValueError, match=re.escape(f"holds {float(past - 1)!r}, which is not a request id")):
        _labelled(log, _labels(tmp_path, [past - 1], pa.int64()))
    exact = _log(tmp_path, *ints, ("f.parquet", [float(below)], kind))
    assert _labelled(exact, _labels(tmp_path, [below], pa.int64())) == 1
    labels = tmp_path / "float-labels.parquet"
    pq.write_table(pa.table({"request_id": pa.array(stored), "outcome": [1]}), labels)
    with pytest.raises(ValueError, match=re.escape(f"holds {float(past - 1)!r}, which is not a request id")):
        _labelled(_log(tmp_path, ("f.parquet", [past - 1], pa.int64())), labels)


def test_double_id_files_beside_text_id_files_are_held_to_the_whole_number_rule(tmp_path: Path) -> None:
    # read as text, the double 1e15 was Arrow's text "1e+15" (no match for the id 1000000000000000) and the double
    # 2**53, which stands for 2**53 + 1 too, matched nothing instead of being refused
    log = _log(tmp_path, ("model=a/t.parquet", ["5", "1e15"], pa.string()),
               ("model=b/d.parquet", [1e15, 7.0], pa.float64()), ("model=c/i.parquet", [BIG], pa.int64()),
               ("model=d/f.parquet", [3.0], pa.float32()))
    report = quality_report(log, _labels(tmp_path, ["5", "1e15", str(10 ** 15), "7", str(BIG), "3"], pa.string()))
    assert sorted((w.model, w.labelled) for w in report.windows) == [("a", 2), ("b", 2), ("c", 1), ("d", 1)]
    bad = _log(tmp_path / "bad", ("t.parquet", ["5"], pa.string()), ("d.parquet", [2.0 ** 53], pa.float64()))
    with pytest.raises(ValueError, match=re.escape("holds 9007199254740992.0, which is not a request id")):
        _labelled(bad, _labels(tmp_path, [2 ** 53, BIG], pa.int64()))


def test_a_repeated_request_in_text_and_double_id_files_keeps_the_row_stored_last(tmp_path: Path) -> None:
    """Files a (text), b (double 7.0), c (text "7"), one timestamp: the tie is broken as stored, so request 7 counts to
    c's version, as in a log of text ids alone."""
    root = tmp_path / "log"
    root.mkdir()
    for name, ids, version in (("a.parquet", pa.array(["1"]), "va"), ("b.parquet", pa.array([7.0]), "vb"),
                               ("c.parquet", pa.array(["7"]), "vc")):
        pq.write_table(pa.table({"request_id": ids, "timestamp": pa.array([T0]), "output": pa.array([1]),
                                 "model_version": pa.array([version])}), root / name)
    report = quality_report(root, _labels(tmp_path, [7], pa.int64()), by_version=True)
    assert {w.model_version: w.labelled for w in report.windows if w.labelled} == {"vc": 1}
    assert report.duplicates == 1
