"""``aiwatch quality --json`` counts the labels left out as missing-value markers (``labels_markers_left_out``), and
``quality_report(path, ..., na_labels=...)`` chooses how a labels CSV reads them, as ``--na-labels`` does, the
markers left out counted in ``QualityReport.label_markers``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aiwatch.cli import main
from aiwatch.feedback.outcomes import quality_report, read_labels, realised_quality
from tests.feedback.quality_files import labels_csv, sink_log

T0 = 1_790_002_800.0  # 2026-09-21T15:00:00Z


def _countries(tmp_path: Path) -> tuple[Path, Path]:
    """Countries predicted as ISO codes, Namibia's NA among them; labelled NA twice, ZA twice, and one empty
    field (a label not known yet)."""
    predicted = ["NA", "NA", "ZA", "ZA", "ZA"]
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output": country}
                              for i, country in enumerate(predicted)])
    labels = labels_csv(tmp_path, [("r0", "NA"), ("r1", "ZA"), ("r2", "ZA"), ("r3", "NA"), ("r4", "")])
    return log, labels


def _json(capsys: pytest.CaptureFixture[str], args: list[str]) -> dict[str, Any]:
    assert main(args) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


@pytest.mark.parametrize(("na_labels", "markers", "left_out", "labelled"),
                         [("missing", 2, 3, 2), ("class", 0, 1, 4)])
def test_the_json_counts_the_labels_left_out_as_markers(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        na_labels: str, markers: int, left_out: int,
                                                        labelled: int) -> None:
    log, labels = _countries(tmp_path)
    out = _json(capsys, ["quality", str(log), str(labels), "--positive", "ZA", "--min-labelled", "1", "--json",
                         "--na-labels", na_labels])
    assert out["labels_markers_left_out"] == markers
    assert out["labels_left_out"] == left_out  # the empty field is left out either way, and is no marker
    assert out["windows"][0]["labelled"] == labelled


def test_the_json_counts_no_marker_for_a_parquet_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Parquet file's text is read as written: its NA is a class, not a marker left out."""
    log, _ = _countries(tmp_path)
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": ["r0", "r1"], "outcome": ["NA", None]}), labels)
    out = _json(capsys, ["quality", str(log), str(labels), "--positive", "ZA", "--min-labelled", "1", "--json"])
    assert (out["labels_left_out"], out["labels_markers_left_out"]) == (1, 0)


def test_the_json_field_is_documented() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "prediction-log.md").read_text(encoding="utf-8")
    assert "`labels_markers_left_out`" in docs


@pytest.mark.parametrize(("na_labels", "markers", "accuracy"), [("missing", 2, 0.5), ("class", 0, 0.5)])
def test_quality_report_reads_a_labels_path_as_na_labels_says(tmp_path: Path, na_labels: Any, markers: int,
                                                              accuracy: float) -> None:
    log, labels = _countries(tmp_path)
    report = quality_report(log, labels, positive="ZA", na_labels=na_labels)
    [window] = report.windows
    assert (window.labelled, report.label_markers) == ((2, 2) if na_labels == "missing" else (4, 0))
    assert window.metrics["accuracy"] == accuracy
    # as the command reads it, and as realised_quality does
    assert [w.labelled for w in realised_quality(log, labels, positive="ZA", na_labels=na_labels)] == [
        window.labelled]


def test_quality_report_defaults_to_markers_as_missing_labels_as_the_command_does(tmp_path: Path) -> None:
    log, labels = _countries(tmp_path)
    report = quality_report(log, labels, positive="ZA")
    assert (report.windows[0].labelled, report.label_markers) == (2, 2)


def test_a_table_is_taken_as_read(tmp_path: Path) -> None:
    """``na_labels`` applies to a path; a table was read already (with its own ``na_labels``): no marker is
    counted, and the table's labels are scored as they are."""
    log, labels = _countries(tmp_path)
    table = read_labels(labels, na_labels="class")
    report = quality_report(log, table, positive="ZA", na_labels="missing")
    assert (report.windows[0].labelled, report.label_markers) == (4, 0)


@pytest.mark.parametrize("bad", ["Missing", "classes", "", "na", None, 1, True, ["missing"]])
def test_a_bad_na_labels_is_a_value_error_naming_it(tmp_path: Path, bad: Any) -> None:
    log, labels = _countries(tmp_path)
    with pytest.raises(ValueError, match=r"na_labels must be 'missing' or 'class', got " + repr(repr(bad))[1:-1]
                       .replace("[", r"\[").replace("]", r"\]")):
        quality_report(log, labels, na_labels=bad)
    table = read_labels(labels)
    with pytest.raises(ValueError, match="na_labels must be"):  # refused for a table too: a typo is no choice
        quality_report(log, table, na_labels=bad)


def test_the_json_counts_a_regressors_markers_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A regressor's NA is no number either way (stderr names no option), but the count is a fact of the file."""
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "output": 1.0}
                              for i in range(4)])
    labels = labels_csv(tmp_path, [("r0", "1.5"), ("r1", "NA"), ("r2", "unknown"), ("r3", "2")])
    out = _json(capsys, ["quality", str(log), str(labels), "--kind", "regressor", "--min-labelled", "1", "--json"])
    assert (out["labels_left_out"], out["labels_markers_left_out"]) == (2, 1)
