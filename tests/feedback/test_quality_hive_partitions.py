"""A prediction log another tool wrote Hive-partitioned by ``model=`` and ``model_version=`` directories: their
values are read as text as written (Hypothesis), so ``model_version=07`` is the version ``07`` and stays apart from
``model_version=7``, as ``model=007`` stays apart from ``model=7``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aiwatch.cli import main
from aiwatch.feedback.outcomes import quality_report
from tests.feedback.quality_files import labels_csv

T0 = 1_790_002_800.0  # 2026-09-21T15:00:00Z


def _hive_log(folder: Path, parts: list[tuple[str, str, int]]) -> tuple[Path, Path]:
    """``parts`` of (model, version, requests) as ``model=M/model_version=V/part.parquet`` files under
    ``folder``/log (the files hold neither column), each request labelled 1 and predicted 1; the log and labels."""
    ids = []
    for n, (model, version, count) in enumerate(parts):
        directory = folder / "log" / f"model={model}" / f"model_version={version}"
        directory.mkdir(parents=True)
        part = [f"p{n}-{i}" for i in range(count)]
        pq.write_table(pa.table({"request_id": part, "timestamp": [T0] * count, "output": [1.0] * count}),
                       directory / "part.parquet")
        ids += part
    return folder / "log", labels_csv(folder, [(rid, 1) for rid in ids])


#: Text that a partition discovery may read as a number: digits with leading zeros, a sign, a decimal point.
number_like = st.from_regex(r"[+-]?[0-9]{1,3}(\.[0-9]{1,2})?", fullmatch=True)


@settings(max_examples=40, deadline=None)
@given(parts=st.lists(st.tuples(number_like, number_like, st.integers(1, 3)), min_size=1, max_size=4,
                      unique_by=lambda p: (p[0], p[1])))
@example(parts=[("a", "07", 2), ("a", "7", 3)])  # read as the one int 7: 5 requests of one version
@example(parts=[("m", "-0", 1), ("m", "0", 2)])
@example(parts=[("m", "1.1", 1), ("m", "1.10", 2)])
@example(parts=[("007", "3", 1)])
def test_partition_values_are_read_as_text_as_written(parts: list[tuple[str, str, int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        log, labels = _hive_log(Path(folder), parts)
        report = quality_report(log, labels, by_version=True)
    assert [(w.model, w.model_version, w.logged, w.labelled) for w in report.windows] == sorted(
        (model, version, count, count) for model, version, count in parts)
    assert report.unversioned == 0


def test_the_command_shows_version_07_apart_from_7(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, labels = _hive_log(tmp_path, [("a", "07", 2), ("a", "7", 3)])
    assert main(["quality", str(log), str(labels), "--min-labelled", "1", "--by-version", "--json"]) == 0
    windows = json.loads(capsys.readouterr().out)["windows"]
    assert [(w["model"], w["model_version"], w["logged"]) for w in windows] == [("a", "07", 2), ("a", "7", 3)]


def test_a_flat_log_whose_files_hold_model_and_version_as_ints_is_read(tmp_path: Path) -> None:
    """No ``key=value`` directory: discovery's partition schema is then the files' own, whose int ``model`` and
    ``model_version`` columns are no partition keys to read as text (the log could not be opened)."""
    (tmp_path / "log").mkdir()
    pq.write_table(pa.table({"request_id": ["a", "b", "c"], "timestamp": [T0] * 3, "model": [7, 7, 8],
                             "model_version": [1, 2, 1], "output": [1.0, 0.0, 1.0]}), tmp_path / "log" / "p.parquet")
    labels = labels_csv(tmp_path, [("a", 1), ("b", 1), ("c", 1)])
    report = quality_report(tmp_path / "log", labels, by_version=True)
    assert [(w.model, w.model_version, w.labelled, w.metrics["accuracy"]) for w in report.windows] == [
        ("7", "1", 1, 1.0), ("7", "2", 1, 0.0), ("8", "1", 1, 1.0)]
