"""`aiwatch quality` with predictions that cannot be scored: a regressor's prediction held as text (a log whose files
disagree on the column's type is read as text; one "unknown" failed the whole run), a NaN, infinite or missing one
(it made its window's MAE and RMSE NaN), a classifier's missing one (it counted as a miss). Each is left out of its
window's metrics and counted (`unscored`). Text predictions are read bit for bit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from aiwatch.cli import main
from aiwatch.feedback import ParquetSink
from aiwatch.feedback.outcomes import (
    WindowQuality,
    export_quality,
    latest_per_model,
    realised_quality,
    regressor_metrics,
)
from aiwatch.metrics import Metrics

T0 = 1_790_002_800.0  # 2026-09-21T15:00:00Z, on the hour
OFF_BY_ONE_ULP = 0.000345584192064786  # pandas.to_numeric reads its repr() one ulp off
# A prediction's error, and an outcome, are powers of two: sums are exact in any order, so the metrics of the scored
# requests are exact whatever order the join gives them in.
ERRORS = [0.5, 1.0, 2.0, 4.0, 0.25, 1.0, 0.5, 2.0]


def write_log(folder: Path, batches: list[list[object]], column: str = "output.score") -> Path:
    """A log written by aiwatch's sink, one file per batch: request ``r<i>`` at ``T0 + 600 i`` (windows of an
    hour: six requests each) predicted the i-th value."""
    sink = ParquetSink(folder)
    i = 0
    for batch in batches:
        rows = []
        for value in batch:
            rows.append({"request_id": f"r{i}", "timestamp": T0 + 600 * i, "model": "eta", column: value})
            i += 1
        sink.write(rows)
    sink.close()
    return folder


def labels_for(n: int, outcomes: list[float] | None = None) -> pa.Table:
    return pa.table({"request_id": [f"r{i}" for i in range(n)],
                     "outcome": outcomes if outcomes is not None else [10.0] * n})


def test_a_nan_infinite_or_missing_prediction_is_left_out_of_its_window_and_counted(tmp_path: Path) -> None:
    predictions: list[object] = [10.0 + e for e in ERRORS]
    predictions[1], predictions[2], predictions[3] = math.nan, math.inf, None  # a model that emitted NaN once...
    log = write_log(tmp_path / "log", [predictions])
    windows = realised_quality(log, labels_for(len(predictions)), kind="regressor", prediction="output.score")
    first = np.array([ERRORS[0], ERRORS[4], ERRORS[5]])
    assert windows[0].metrics == regressor_metrics(first, np.zeros(3))  # not NaN: the three others left out
    assert windows[1].metrics == regressor_metrics(np.array(ERRORS[6:]), np.zeros(2))
    assert [(w.labelled, w.unscored, w.scored) for w in windows] == [(6, 3, 3), (2, 0, 2)]


def text_log(folder: Path) -> tuple[Path, list[object]]:
    """A log whose ``output.score`` is a double in one file and text in the other: one batch held "unknown", so the
    sink wrote that batch's column as text, its numbers included."""
    predictions: list[object] = [10.0 + e for e in ERRORS]
    predictions[5] = "unknown"
    write_log(folder, [predictions[:4], predictions[4:]])
    types = {str(pq.read_schema(f).field("output.score").type) for f in folder.rglob("*.parquet")}
    assert types == {"double", "string"}
    return folder, predictions


def test_a_regressors_prediction_written_as_text_is_read_as_a_number_and_one_that_is_not_is_counted(
        tmp_path: Path) -> None:
    log, _ = text_log(tmp_path / "log")
    windows = realised_quality(log, labels_for(len(ERRORS)), kind="regressor", prediction="output.score")
    assert [(w.labelled, w.unscored) for w in windows] == [(6, 1), (2, 0)]
    assert windows[0].metrics == regressor_metrics(np.array(ERRORS[:5]), np.zeros(5))
    assert windows[1].metrics == regressor_metrics(np.array(ERRORS[6:]), np.zeros(2))
    assert windows[0].to_dict()["unscored"] == 1


def test_numbers_after_a_run_of_text_predictions_are_scored(tmp_path: Path) -> None:
    # a model broken for a while answered "error" 150 times: its later numbers are still numbers
    predictions: list[object] = ["error"] * 150 + [10.5, 11.0]
    write_log(tmp_path / "log", [predictions])
    windows = realised_quality(tmp_path / "log", labels_for(len(predictions)), kind="regressor",
                               prediction="output.score", window_seconds=600)  # a window per request
    assert [(w.labelled, w.unscored) for w in windows] == [(1, 1)] * 150 + [(1, 0)] * 2
    assert [w.metrics["mae"] for w in windows[150:]] == [0.5, 1.0]


def test_a_classifiers_missing_prediction_is_counted_not_a_miss(tmp_path: Path) -> None:
    labels = pa.table({"request_id": [f"r{i}" for i in range(6)], "outcome": ["yes", "no", "None", "yes", "no", "1"]})
    write_log(tmp_path / "text", [["yes", "no", None, "yes", "no", "1"]], column="output.label")
    text = realised_quality(tmp_path / "text", labels, prediction="output.label", positive="yes")
    assert text[0].metrics == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0}  # the None was a miss: 5 / 6
    assert [(w.labelled, w.unscored) for w in text] == [(6, 1)]
    numbers = pa.table({"request_id": [f"r{i}" for i in range(6)], "outcome": [1, 0, 0, 1, 0, 1]})
    write_log(tmp_path / "numbers", [[1.0, 0.0, None, 1.0, math.nan, 1.0]], column="output.label")
    scored = realised_quality(tmp_path / "numbers", numbers, prediction="output.label")
    assert scored[0].metrics == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0}  # a miss each: 4 / 6
    assert [(w.labelled, w.unscored) for w in scored] == [(6, 2)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(x=OFF_BY_ONE_ULP)
@given(x=st.floats(allow_nan=False, allow_infinity=False))
def test_any_double_written_as_text_comes_back_bit_for_bit_as_a_prediction(
        tmp_path_factory: pytest.TempPathFactory, x: float) -> None:
    folder = tmp_path_factory.mktemp("text-prediction")
    # files that disagree on the prediction's type: read as text; "u" is not a number
    pq.write_table(pa.table({"request_id": ["p", "u"], "timestamp": [T0, T0 + 1.0], "output": [repr(x), "unknown"]}),
                   folder / "text.parquet")
    pq.write_table(pa.table({"request_id": ["d"], "timestamp": [T0 + 2.0], "output": [0.0]}),
                   folder / "double.parquet")
    labels = pa.table({"request_id": ["p", "u"], "outcome": [0.0, 1.0]})
    [window] = realised_quality(folder, labels, kind="regressor")
    assert (window.logged, window.labelled, window.unscored) == (3, 2, 1)
    assert np.float64(window.metrics["mae"]).tobytes() == np.float64(abs(x)).tobytes()  # the mean of |x - 0|


def test_a_regressors_integer_outcome_past_2_to_the_53_is_a_number(tmp_path: Path) -> None:
    # a safe cast to double refused it: "a regressor's predictions and outcomes must be numbers"
    write_log(tmp_path / "log", [[2.0 ** 60]])
    [window] = realised_quality(tmp_path / "log", pa.table({"request_id": ["r0"], "outcome": [2 ** 60 + 1]}),
                                kind="regressor", prediction="output.score")
    assert window.metrics == {"mae": 0.0, "rmse": 0.0}  # 2**60 + 1 is 2**60 as a double


def test_a_regressors_prediction_that_is_neither_number_nor_text_is_an_error_naming_the_column(
        tmp_path: Path) -> None:
    pq.write_table(pa.table({"request_id": ["a"], "timestamp": [T0], "output": [[1.0, 2.0]]}),
                   tmp_path / "log.parquet")
    with pytest.raises(ValueError, match=r"predictions \(the log's 'output' column\) must be numbers, not list"):
        realised_quality(tmp_path / "log.parquet", labels_for(1), kind="regressor")


def test_min_labelled_counts_the_requests_the_metrics_rest_on() -> None:
    scored = WindowQuality("eta", T0, T0 + 3600, 40, 30, {"mae": 1.0})
    mostly_unscored = WindowQuality("eta", T0 + 3600, T0 + 7200, 40, 30, {"mae": 9.0}, unscored=25)
    assert latest_per_model([scored, mostly_unscored], min_labelled=30) == {"eta": scored}
    assert latest_per_model([scored, mostly_unscored], min_labelled=5) == {"eta": mostly_unscored}


def test_the_labelled_gauge_is_the_number_the_quality_rests_on(tmp_path: Path) -> None:
    # the alert's description reads it as "(N labelled requests)" next to the quality it computed
    metrics = Metrics(CollectorRegistry())
    window = WindowQuality("eta", T0, T0 + 3600, 40, 30, {"mae": 1.0}, unscored=4)
    assert export_quality([window], metrics) == {"eta": window}
    assert metrics.registry.get_sample_value("aiwatch_model_quality_labelled", {"model": "eta"}) == 26


def test_cli_shows_the_unscored_requests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, _ = text_log(tmp_path / "log")
    labels = tmp_path / "labels.parquet"
    pq.write_table(labels_for(len(ERRORS)), labels)
    args = ["quality", str(log), str(labels), "--kind", "regressor", "--prediction", "output.score",
            "--min-labelled", "2"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    header, first, second = out.splitlines()[:3]
    assert header.split()[:6] == ["model", "window", "(UTC)", "logged", "labelled", "unscored"]
    assert first.split()[3:6] == ["6", "6", "1"] and second.split()[3:6] == ["2", "2", "0"]
    assert "aiwatch quality: 1 labelled request not scored: a prediction that is missing, NaN, infinite or not a " \
           "number" in err
    assert main([*args, "--json"]) == 0
    assert [w["unscored"] for w in json.loads(capsys.readouterr().out)["windows"]] == [1, 0]
    # --min-labelled 6: the first window has 6 labelled requests, but 5 scored ones
    assert main([*args[:-1], "6"]) == 2
    assert "no window has 6 labelled requests or more with a prediction that can be scored (8 labelled of 8 " \
           "logged, 1 not scored)" in capsys.readouterr().err
