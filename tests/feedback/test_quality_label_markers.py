"""A labels CSV's missing-value markers (pyarrow's: NA, N/A, NaN, null, #N/A...): in a column of text labels they are
classes as written (a class NA: Namibia, not applicable) and only an empty field is missing (Hypothesis); in a
column of numbers or true / false they are missing outcomes, as an empty field is."""

from __future__ import annotations

import csv
import string
import tempfile
from pathlib import Path

import pyarrow.csv
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aiwatch.cli import main
from aiwatch.feedback.outcomes import drop_unusable, read_labels
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


@settings(max_examples=60, deadline=None)
@given(outcomes=st.lists(st.one_of(st.sampled_from(MARKERS), words), min_size=1, max_size=12))
@example(outcomes=["NA", "ZA", ""])  # Namibia and South Africa
@example(outcomes=["NA", "NA"])  # nothing but markers: pyarrow types the column as nulls
@example(outcomes=["N/A", "null", "NaN", "#N/A", "nan", "NULL"])
def test_text_labels_are_read_as_written_and_only_an_empty_one_is_missing(outcomes: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["request_id", "outcome"])
            writer.writerows([f"r{i}", outcome] for i, outcome in enumerate(outcomes))
        labels = read_labels(path)
    assert labels.column("outcome").to_pylist() == [outcome or None for outcome in outcomes]
    kept, left_out = drop_unusable(labels, "classifier")
    assert (kept.num_rows, left_out) == (sum(map(bool, outcomes)), outcomes.count(""))


@pytest.mark.parametrize("written, read", [
    (["1", "0", "NA", "", "N/A"], [1, 0, None, None, None]),
    (["true", "NA", "false", "null"], [True, None, False, None]),
    (["0.5", "NaN", "1e3"], [0.5, None, 1000.0]),
])
def test_markers_in_a_column_of_numbers_are_missing_outcomes(
        tmp_path: Path, written: list[str], read: list[object]) -> None:
    path = labels_csv(tmp_path, [(f"r{i}", outcome) for i, outcome in enumerate(written)])
    assert read_labels(path).column("outcome").to_pylist() == read


def test_a_class_na_is_scored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Countries predicted as ISO codes: Namibia's NA is a class, right or wrong like ZA."""
    predicted = ["NA", "NA", "ZA", "ZA"]
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output.label": country}
                               for i, country in enumerate(predicted)])
    labels = labels_csv(tmp_path, [("r0", "NA"), ("r1", "ZA"), ("r2", "ZA"), ("r3", "NA")])
    args = ["quality", str(log), str(labels), "--prediction", "output.label", "--positive", "NA",
            "--min-labelled", "1"]
    assert main(args) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[1].split()[-3:] == ["0.5", "0.5", "0.5"]  # accuracy, precision, recall of NA
    assert "left out" not in out.err
