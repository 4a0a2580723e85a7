"""A labels CSV's missing-value markers (pyarrow's: NA, N/A, NaN, null, #N/A...). In a column of text labels they
are missing labels by default, as pandas and R read them (R's write.csv writes a missing label as NA), and classes as
written with --na-labels class (a class NA: Namibia, not applicable), where only an empty field is missing
(Hypothesis, both settings). In a column of numbers or true / false they are missing outcomes either way, and a
column of nothing but markers holds no label either way: the run says no window has enough labels (exit 2)."""

from __future__ import annotations

import csv
import json
import string
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aiwatch.cli import main
from aiwatch.feedback.outcomes import NaLabels, drop_unusable, read_labels
from tests.feedback.quality_files import labels_csv, sink_log

T0 = 1_790_002_800.0  # 2026-09-21T15:00:00Z
MARKERS = list(pyarrow.csv.ConvertOptions().null_values)  # "" among them


def _number_or_bool(text: str) -> bool:
    """Whether a CSV reader may type a column holding ``text`` as numbers or bools."""
    try:
        float(text)
    except ValueError:
        return text.strip().lower() in ("true", "false")
    return True


words = st.text(alphabet=string.ascii_letters + " /#-_é", min_size=1, max_size=8).filter(
    lambda w: not _number_or_bool(w))


def _expected(outcomes: list[str], na_labels: NaLabels) -> list[str | None]:
    """The outcomes read: in a column of text (one of nothing but markers too, which pyarrow types as nulls) an
    empty field is missing, and so is a marker unless ``na_labels`` is ``class``."""
    return [None if outcome == "" or (na_labels == "missing" and outcome in MARKERS) else outcome
            for outcome in outcomes]


@pytest.mark.parametrize("na_labels", ["missing", "class"])
@settings(max_examples=60, deadline=None)
@given(outcomes=st.lists(st.one_of(st.sampled_from(MARKERS), words), min_size=1, max_size=12))
@example(outcomes=["NA", "ZA", ""])  # Namibia and South Africa
@example(outcomes=["NA", "NA"])  # nothing but markers: pyarrow types the column as nulls
@example(outcomes=["N/A", "null", "NaN", "#N/A", "nan", "NULL", "spam"])
def test_markers_in_text_labels_are_missing_or_classes_as_na_labels_says_and_an_empty_one_is_missing(
        na_labels: NaLabels, outcomes: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["request_id", "outcome"])
            writer.writerows([f"r{i}", outcome] for i, outcome in enumerate(outcomes))
        labels = read_labels(path, na_labels=na_labels)
    expected = _expected(outcomes, na_labels)
    assert labels.column("outcome").to_pylist() == expected
    kept, left_out = drop_unusable(labels, "classifier")
    assert (kept.num_rows, left_out) == (len(expected) - expected.count(None), expected.count(None))


def test_read_labels_reads_markers_in_text_as_missing_labels_by_default(tmp_path: Path) -> None:
    """Python callers keep the old default: R's NA, pandas' NaN, a database's null are labels not known yet."""
    path = labels_csv(tmp_path, [("r0", "spam"), ("r1", "NA"), ("r2", "ham"), ("r3", "null"), ("r4", "NaN"),
                                 ("r5", ""), ("r6", "N/A")])
    assert read_labels(path).column("outcome").to_pylist() == ["spam", None, "ham", None, None, None, None]
    assert read_labels(path, na_labels="class").column("outcome").to_pylist() == [
        "spam", "NA", "ham", "null", "NaN", None, "N/A"]


@pytest.mark.parametrize("na_labels", ["missing", "class"])
@pytest.mark.parametrize("written, read", [
    (["1", "0", "NA", "", "N/A"], [1, 0, None, None, None]),
    (["true", "NA", "false", "null"], [True, None, False, None]),
    (["0.5", "NaN", "1e3"], [0.5, None, 1000.0]),
])
def test_markers_in_a_column_of_numbers_are_missing_outcomes(
        tmp_path: Path, written: list[str], read: list[object], na_labels: NaLabels) -> None:
    path = labels_csv(tmp_path, [(f"r{i}", outcome) for i, outcome in enumerate(written)])
    assert read_labels(path, na_labels=na_labels).column("outcome").to_pylist() == read


def test_a_class_na_is_scored_with_na_labels_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Countries predicted as ISO codes: Namibia's NA is a class, right or wrong like ZA."""
    predicted = ["NA", "NA", "ZA", "ZA"]
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output.label": country}
                              for i, country in enumerate(predicted)])
    labels = labels_csv(tmp_path, [("r0", "NA"), ("r1", "ZA"), ("r2", "ZA"), ("r3", "NA")])
    args = ["quality", str(log), str(labels), "--prediction", "output.label", "--positive", "NA",
            "--min-labelled", "1", "--na-labels", "class"]
    assert main(args) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[1].split()[-3:] == ["0.5", "0.5", "0.5"]  # accuracy, precision, recall of NA
    assert "left out" not in out.err


def _ints_with_a_stray_word(tmp_path: Path) -> tuple[Path, Path]:
    """20 requests predicted 1, labelled 1 sixteen times, NA (R's missing label) three times and once ``unknown``:
    the one word makes pyarrow type the column as text."""
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output": 1}
                              for i in range(20)])
    labels = labels_csv(tmp_path, [(f"r{i}", outcome) for i, outcome in
                                   enumerate(["1"] * 16 + ["NA"] * 3 + ["unknown"])])
    return log, labels


def test_na_among_int_labels_typed_as_text_by_a_stray_word_is_left_out_by_default(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """R users' missing labels are not scored as a class NA (wrong accuracy, a page); stderr counts them and names
    the option that would read them as classes."""
    log, labels = _ints_with_a_stray_word(tmp_path)
    assert main(["quality", str(log), str(labels), "--min-labelled", "1", "--objective", "accuracy=0.9"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[1].split()[3:5] == ["20", "17"]  # logged, labelled
    assert out.out.splitlines()[1].split()[-3] == "0.9412"  # 16 of 17: only unknown is wrong
    assert ("aiwatch quality: 3 labels left out: no request id, or a missing, NaN or infinite outcome (3 of them NA, "
            "null or another missing-value marker in a column of text: --na-labels class reads them as classes)"
            in out.err)


def test_na_among_int_labels_typed_as_text_is_a_class_with_na_labels_class(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, labels = _ints_with_a_stray_word(tmp_path)
    assert main(["quality", str(log), str(labels), "--min-labelled", "1", "--objective", "accuracy=0.9",
                 "--na-labels", "class"]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines()[1].split()[3:5] == ["20", "20"]
    assert out.out.splitlines()[1].split()[-3] == "0.8"
    assert "left out" not in out.err


@pytest.mark.parametrize("outcomes", [["NA"] * 4, ["", "NA", "", ""], ["null", "N/A", "NaN", "#N/A"]])
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_a_column_of_nothing_but_markers_has_no_label_by_default(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], outcomes: list[str], kind: str) -> None:
    """pyarrow types such a column as nulls, which Arrow's join refused ("Data type null is not supported in join
    non-key field outcome"): the run says no window has enough labels, after the line counting them left out."""
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output": 1.0}
                              for i in range(4)])
    labels = labels_csv(tmp_path, [(f"r{i}", outcome) for i, outcome in enumerate(outcomes)])
    assert main(["quality", str(log), str(labels), "--kind", kind, "--min-labelled", "1"]) == 2
    err = capsys.readouterr().err
    assert "error: no window has 1 labelled requests or more (0 labelled of 4 logged)" in err
    assert "join" not in err
    markers = sum(outcome != "" for outcome in outcomes)
    assert err.startswith("aiwatch quality: 4 labels left out: ")
    assert (f"({markers} of them NA, null or another missing-value marker" in err) == (kind == "classifier")


def test_a_file_of_nothing_but_the_class_na_is_scored_with_na_labels_class(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A day's labels file may hold one class only: under --na-labels class, a file of nothing but NA (which
    pyarrow types as nulls) is read as text like any other, not as a file without labels."""
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output": out}
                              for i, out in enumerate(["NA", "NA", "ZA"])])
    labels = labels_csv(tmp_path, [(f"r{i}", "NA") for i in range(3)])
    assert read_labels(labels, na_labels="class").column("outcome").to_pylist() == ["NA", "NA", "NA"]
    assert main(["quality", str(log), str(labels), "--min-labelled", "1", "--positive", "NA",
                 "--na-labels", "class", "--json"]) == 0
    window = json.loads(capsys.readouterr().out)["windows"][0]
    assert (window["labelled"], window["metrics"]["accuracy"]) == (3, pytest.approx(2 / 3))


def test_the_markers_left_out_are_counted_when_too_few_labels_remain(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The hint matters most when the markers are why no window has enough labels: it comes before the error."""
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output": "ZA"}
                              for i in range(5)])
    labels = labels_csv(tmp_path, [(f"r{i}", outcome) for i, outcome in enumerate(["ZA", "ZA", "NA", "NA", "NA"])])
    assert main(["quality", str(log), str(labels), "--min-labelled", "3"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("aiwatch quality: 3 labels left out: ")
    assert err[0].endswith("(3 of them NA, null or another missing-value marker in a column of text: --na-labels "
                           "class reads them as classes)")
    assert "error: no window has 3 labelled requests or more" in err[1]


def test_a_parquet_outcome_column_of_type_null_has_no_label(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """pandas writes a column of nothing but None as Parquet type null."""
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output": 1}
                              for i in range(2)])
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": ["r0", "r1"], "outcome": pa.nulls(2)}), labels)
    assert read_labels(labels).schema.field("outcome").type == pa.string()
    assert main(["quality", str(log), str(labels), "--min-labelled", "1"]) == 2
    err = capsys.readouterr().err
    assert "error: no window has 1 labelled requests or more (0 labelled of 2 logged)" in err


def test_a_regressors_left_out_na_names_no_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A regressor's NA is no number under either setting: the stderr line does not offer --na-labels class."""
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output": 1.0}
                              for i in range(4)])
    labels = labels_csv(tmp_path, [("r0", "1.0"), ("r1", "2.0"), ("r2", "unknown"), ("r3", "NA")])
    assert main(["quality", str(log), str(labels), "--kind", "regressor", "--min-labelled", "1"]) == 0
    err = capsys.readouterr().err
    assert ("aiwatch quality: 2 labels left out: no request id, or a missing, NaN or infinite outcome or one that "
            "is not a number\n") in err


def test_a_table_whose_outcome_column_is_of_type_null_has_no_label(tmp_path: Path) -> None:
    """A Python caller's own table (a pandas column of nothing but None): no label, not Arrow's join error."""
    from aiwatch.feedback.outcomes import quality_report

    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output": 1}
                              for i in range(2)])
    report = quality_report(str(log), pa.table({"request_id": ["r0", "r1"], "outcome": pa.nulls(2)}))
    assert [(w.logged, w.labelled) for w in report.windows] == [(2, 0)]
