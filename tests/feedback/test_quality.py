"""Realised quality: delayed labels joined to the prediction log per window (accuracy / precision / recall, MAE /
RMSE), the gauges, and `aiwatch quality`'s exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from aiwatch.cli import main
from aiwatch.feedback import ParquetSink
from aiwatch.feedback.outcomes import export_quality, realised_quality
from aiwatch.metrics import Metrics
from tests.servers import python_env

T0 = 1_790_002_800.0  # 2026-09-21T15:00:00Z, on the hour


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Two hours of a binary classifier: right 90% of the time in the first hour, 60% in the second; the last 20
    requests of each hour have no label yet."""
    rng = np.random.default_rng(4)
    tmp = tmp_path_factory.mktemp("quality")
    sink = ParquetSink(tmp / "log")
    ids, outcomes, truth = [], [], []
    for hour, right in ((0, 0.9), (1, 0.6)):
        actual = rng.integers(0, 2, 200)
        predicted = np.where(rng.random(200) < right, actual, 1 - actual)
        rows = [{"request_id": f"h{hour}-{i}", "timestamp": T0 + hour * 3600 + i, "model": "churn",
                 "output.label": float(predicted[i]), "output.score": float(predicted[i]) * 0.8 + 0.1}
                for i in range(200)]
        sink.write(rows)
        ids += [r["request_id"] for r in rows[:180]]
        outcomes += actual[:180].tolist()
        truth.append((predicted[:180], actual[:180]))
    sink.close()
    labels = tmp / "labels.csv"
    pacsv.write_csv(pa.table({"request_id": ids, "outcome": outcomes}), labels)
    return {"log": tmp / "log", "labels": labels, "truth": truth, "tmp": tmp}


def expected(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    tp = int(((predicted == 1) & (actual == 1)).sum())
    return {"accuracy": float((predicted == actual).mean()), "precision": tp / int((predicted == 1).sum()),
            "recall": tp / int((actual == 1).sum())}


def test_classifier_quality_per_hour(log: dict[str, object]) -> None:
    windows = realised_quality(log["log"], log["labels"], prediction="output.label")  # type: ignore[arg-type]
    assert [(w.model, w.start, w.logged, w.labelled) for w in windows] == [("churn", T0, 200, 180),
                                                                            ("churn", T0 + 3600, 200, 180)]
    for window, (predicted, actual) in zip(windows, log["truth"], strict=True):  # type: ignore[call-overload]
        assert window.metrics == pytest.approx(expected(predicted, actual))
    assert windows[0].metrics["accuracy"] > 0.8 > windows[1].metrics["accuracy"]


def test_regressor_quality(log: dict[str, object]) -> None:
    tmp = log["tmp"]
    assert isinstance(tmp, Path)
    labels = tmp / "scores.parquet"
    pq.write_table(pa.table({"request_id": ["h0-0", "h0-1", "h1-0"], "outcome": [0.5, 1.0, 0.0]}), labels)
    windows = realised_quality(log["log"], labels, kind="regressor", prediction="output.score")  # type: ignore
    scores = pq.read_table(str(log["log"]), columns=["request_id", "output.score"]).to_pydict()  # type: ignore
    by_id = dict(zip(scores["request_id"], scores["output.score"], strict=True))
    first = np.array([by_id["h0-0"] - 0.5, by_id["h0-1"] - 1.0])
    assert windows[0].metrics["mae"] == pytest.approx(np.abs(first).mean())
    assert windows[0].metrics["rmse"] == pytest.approx(math.sqrt((first ** 2).mean()))
    assert windows[1].labelled == 1 and windows[1].metrics["mae"] == pytest.approx(by_id["h1-0"])


def test_the_latest_labelled_window_becomes_gauges(log: dict[str, object]) -> None:
    windows = realised_quality(log["log"], log["labels"], prediction="output.label")  # type: ignore[arg-type]
    metrics = Metrics(CollectorRegistry())
    export_quality(windows, metrics, {"accuracy": 0.8})
    get = metrics.registry.get_sample_value
    assert get("aiwatch_model_quality", {"model": "churn", "metric": "accuracy"}) == pytest.approx(
        windows[1].metrics["accuracy"])
    assert get("aiwatch_model_quality_objective", {"model": "churn", "metric": "accuracy"}) == 0.8
    assert get("aiwatch_model_quality_labelled", {"model": "churn"}) == 180


def test_cli_exit_codes_and_textfile(log: dict[str, object], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["quality", str(log["log"]), str(log["labels"]), "--prediction", "output.label"]
    assert main([*args, "--objective", "accuracy=0.5"]) == 0
    assert "churn" in capsys.readouterr().out
    textfile = Path(str(log["tmp"])) / "quality.prom"
    assert main([*args, "--objective", "accuracy=0.8", "--textfile", str(textfile), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["below_objective"] == {"churn": ["accuracy"]} and len(out["windows"]) == 2
    text = textfile.read_text()
    assert 'aiwatch_model_quality{metric="accuracy",model="churn"}' in text
    assert 'aiwatch_model_quality_objective{metric="accuracy",model="churn"} 0.8' in text
    # only the first hour: above the objective
    assert main([*args, "--objective", "accuracy=0.8", "--until", "2026-09-21T16:00Z"]) == 0
    capsys.readouterr()


def test_the_textfile_holds_the_quality_gauges_only(log: dict[str, object], tmp_path: Path) -> None:
    """docs/prediction-log.md: ``--textfile`` writes aiwatch_model_quality, its objective and its labelled count.
    It wrote every family of the metric contract too, with the 24 series of aiwatch_instrumentation_errors_total
    and their ``_created`` gauges: two quality jobs' files in node_exporter's textfile directory (one per model)
    then held the same series twice, which node_exporter reports as a gathering error on every scrape."""
    textfile = tmp_path / "quality.prom"
    assert main(["quality", str(log["log"]), str(log["labels"]), "--prediction", "output.label",
                 "--objective", "accuracy=0.8", "--textfile", str(textfile)]) == 1
    families = {family.name: [s.labels for s in family.samples]
                for family in text_string_to_metric_families(textfile.read_text())}
    assert families == {
        "aiwatch_model_quality": [{"metric": m, "model": "churn"} for m in ("accuracy", "precision", "recall")],
        "aiwatch_model_quality_objective": [{"metric": "accuracy", "model": "churn"}],
        "aiwatch_model_quality_labelled": [{"model": "churn"}],
    }


def test_cli_run_in_the_apps_multiprocess_environment_writes_nothing_into_its_directory(
        log: dict[str, object], tmp_path: Path) -> None:
    """Run where the app runs (PROMETHEUS_MULTIPROC_DIR set for its gunicorn workers), the command wrote its gauges
    into the workers' directory under its own pid: every worker's /metrics served them until the next cleanup."""
    directory, here, there = tmp_path / "multiproc", tmp_path / "here.prom", tmp_path / "there.prom"
    directory.mkdir()
    args = ["quality", str(log["log"]), str(log["labels"]), "--prediction", "output.label",
            "--objective", "accuracy=0.8", "--textfile"]
    assert main([*args, str(here)]) == 1
    done = subprocess.run([sys.executable, "-m", "aiwatch", *args, str(there)], capture_output=True, text=True,
                          timeout=120, env=python_env(PROMETHEUS_MULTIPROC_DIR=str(directory)))
    assert done.returncode == 1, done.stderr
    assert sorted(p.name for p in directory.iterdir()) == []

    def samples(path: Path) -> list[str]:  # creation times differ from run to run
        return [line for line in path.read_text().splitlines() if "_created" not in line]

    assert samples(there) == samples(here)
    assert 'aiwatch_model_quality_objective{metric="accuracy",model="churn"} 0.8' in samples(there)


@pytest.mark.parametrize(("extra", "message"), [
    (["--objective", "mae=1"], "a classifier has accuracy"),
    (["--objective", "accuracy=high"], "METRIC=NUMBER"),
    (["--prediction", "output.nope"], "no 'output.nope' column"),
    (["--min-labelled", "1000"], "no window has 1000 labelled"),
])
def test_cli_errors_exit_2(log: dict[str, object], capsys: pytest.CaptureFixture[str], extra: list[str],
                           message: str) -> None:
    assert main(["quality", str(log["log"]), str(log["labels"]), "--prediction", "output.label", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_labels_for_other_requests_are_an_error(log: dict[str, object], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "other.csv"
    labels.write_text("request_id,outcome\nnot-logged,1\n")
    assert main(["quality", str(log["log"]), str(labels), "--prediction", "output.label"]) == 2
    assert "0 labelled of 400 logged" in capsys.readouterr().err


def test_regressor_errors_near_the_float_limit_give_their_finite_mae_and_rmse_without_overflow() -> None:
    import warnings

    from aiwatch.feedback.outcomes import regressor_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # squares of 1e200 and sums of 1.7e308 overflowed, with a RuntimeWarning
        huge = regressor_metrics(np.array([1e200, -1e200]), np.array([0.0, 0.0]))
        edge = regressor_metrics(np.array([1.7e308, 1.7e308]), np.array([0.0, 0.0]))
    assert huge["mae"] == pytest.approx(1e200) and huge["rmse"] == pytest.approx(1e200)
    assert edge["mae"] == pytest.approx(1.7e308) and edge["rmse"] == pytest.approx(1.7e308)
    ordinary = regressor_metrics(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 3.0]))
    assert ordinary["mae"] == pytest.approx(1.0) and ordinary["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert regressor_metrics(np.array([1.0]), np.array([1.0])) == {"mae": 0.0, "rmse": 0.0}
    assert math.isnan(regressor_metrics(np.array([np.nan]), np.array([1.0]))["rmse"])


@pytest.mark.parametrize("window", [0, -3600, math.inf, math.nan, 10**400, "3600"])
def test_a_window_that_is_no_number_of_seconds_above_0_is_a_value_error_naming_it(log: dict[str, object],
                                                                                  window: object) -> None:
    # before: inf was accepted and made every window start at NaN (floor(t / inf) * inf), a string a TypeError
    with pytest.raises(ValueError, match=r"^window_seconds must be a number of seconds above 0 and at most 1e9, "):
        realised_quality(log["log"], log["labels"], prediction="output.label", window_seconds=window)  # type: ignore[arg-type]


def _write_labels(path: Path, content: str) -> None:
    if content == "parquet":
        pq.write_table(pa.table({"request_id": ["a"], "outcome": [1]}), path)
    elif content == "truncated parquet":
        pq.write_table(pa.table({"request_id": ["a"], "outcome": [1]}), path)
        path.write_bytes(path.read_bytes()[:40])
    elif content == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    else:
        path.write_text(content)


@pytest.mark.parametrize(("name", "content", "extra", "message"), [
    ("labels.parquet", "parquet", ["--outcome-column", "label"],
     "labels {path!r} have no 'label' column (its columns: request_id, outcome); name the columns with --id-column "
     "and --outcome-column"),
    ("labels.parquet", "parquet", ["--id-column", "id"], "labels {path!r} have no 'id' column"),
    ("labels.csv", "request_id,outcome\na,1\n", ["--id-column", "id", "--outcome-column", "label"],
     "labels {path!r} have no 'id', 'label' column (its columns: request_id, outcome)"),
    ("labels.csv", "id,label\na,1\n", [], "labels {path!r} have no 'request_id', 'outcome' column (its columns: id, "
                                          "label)"),
    ("labels.csv", "", [], "cannot read labels {path!r}: Empty CSV file"),
    ("labels.parquet", "", [], "cannot read labels {path!r}: "),
    ("labels.parquet", "truncated parquet", [], "cannot read labels {path!r}: "),
    ("labels.parquet", "request_id,outcome\na,1\n", [], "cannot read labels {path!r}: "),
    ("labels.csv", "binary", [], "cannot read labels {path!r}: "),
])
def test_labels_without_their_columns_or_unreadable_are_one_line_naming_the_file(
        log: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str,
        extra: list[str], message: str) -> None:
    # a Parquet file without the column was a 7-line pyarrow message listing its internal fields; a CSV's an
    # "ArrowKeyError: Column ... in include_columns" and an empty one "Empty CSV file", neither naming the file
    path = tmp_path / name
    _write_labels(path, content)
    assert main(["quality", str(log["log"]), str(path), "--prediction", "output.label", *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("aiwatch quality: error: " + message.format(path=str(path))), err


@pytest.mark.parametrize(("kind", "objective", "message"), [
    ("classifier", "accuracy=95", "--objective 'accuracy=95': accuracy is a share from 0 to 1 (95% is 0.95)"),
    ("classifier", "precision=1.01", "--objective 'precision=1.01': precision is a share from 0 to 1"),
    ("classifier", "recall=-0.5", "--objective 'recall=-0.5': recall is a share from 0 to 1"),
    ("regressor", "mae=-1", "--objective 'mae=-1': mae is an error, a number >= 0"),
    ("regressor", "rmse=-0.001", "--objective 'rmse=-0.001': rmse is an error, a number >= 0"),
])
def test_an_objective_that_no_quality_can_meet_or_miss_is_a_usage_error(
        log: dict[str, object], capsys: pytest.CaptureFixture[str], kind: str, objective: str, message: str) -> None:
    # accuracy=95 (a percentage) made every run "below objective" (exit 1), accuracy=-5 or mae=-1 every run pass or
    # fail whatever the model did
    prediction = "output.label" if kind == "classifier" else "output.score"
    assert main(["quality", str(log["log"]), str(log["labels"]), "--kind", kind, "--prediction", prediction,
                 "--objective", objective]) == 2
    assert capsys.readouterr().err == f"aiwatch quality: error: {message}\n"


@pytest.mark.parametrize("objective", ["accuracy=0", "accuracy=1", "recall=0.999"])
def test_objectives_at_the_ends_of_a_share_are_taken(objective: str) -> None:
    from aiwatch.commands.quality import objectives

    name, _, value = objective.partition("=")
    assert objectives([objective], "classifier") == {name: float(value)}


@pytest.mark.parametrize("where", ["missing-dir/quality.prom", "a-dir"])
def test_a_textfile_that_cannot_be_written_is_one_line_naming_the_option_and_path(
        log: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        where: str) -> None:
    # the message named prometheus_client's temporary file ('missing-dir/quality.prom.1234.5678'), not the option
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-dir").mkdir()
    assert main(["quality", str(log["log"]), str(log["labels"]), "--prediction", "output.label",
                 "--textfile", where]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aiwatch quality: error: cannot write --textfile {where!r}: "), err
    assert len(err.splitlines()) == 1 and f"{where}." not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-dir"]


def test_a_window_start_out_of_the_platforms_time_range_is_printed_as_its_exact_seconds_aligned(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """1e17 and the next double, 1e17 + 16: both read 1e+17 to 15 significant digits; each start is printed as
    the number it is, and the next column stays lined up."""
    (tmp_path / "log").mkdir()
    stamps = [-1e17, 1e17, 1e17 + 16]
    pq.write_table(pa.table({"request_id": ["a", "b", "c"], "timestamp": stamps, "model": ["m"] * 3,
                             "output": [1.0] * 3}), tmp_path / "log" / "part-0.parquet")
    (tmp_path / "labels.csv").write_text("request_id,outcome\na,1\nb,1\nc,1\n")
    windows = realised_quality(tmp_path / "log", tmp_path / "labels.csv", window_seconds=1)
    assert [w.start for w in windows] == stamps
    assert main(["quality", str(tmp_path / "log"), str(tmp_path / "labels.csv"), "--min-labelled", "1",
                 "--window", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [float(line.split()[1]) for line in lines[1:]] == [w.start for w in windows]
    assert {line.index(" 1 ") for line in lines[1:]} == {lines[0].index("logged") + len("logged") - 2}


@pytest.mark.parametrize(("window", "shown"), [
    ("30", ["2026-09-21 15:00:00", "2026-09-21 15:00:30"]),
    ("0.5", ["2026-09-21 15:00:00.0", "2026-09-21 15:00:00.5", "2026-09-21 15:00:30.0"]),
    ("90", ["2026-09-21 15:00:00"]),
    ("1m", ["2026-09-21 15:00"]),
])
def test_window_starts_are_shown_to_the_windows_resolution(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           window: str, shown: list[str]) -> None:
    """The table showed every start to the minute: windows of 30 s (or 0.5 s) in one minute all read 15:00."""
    (tmp_path / "log").mkdir()
    stamps = [T0, T0 + 0.25, T0 + 0.5, T0 + 30]
    pq.write_table(pa.table({"request_id": ["a", "b", "c", "d"], "timestamp": stamps, "model": ["m"] * 4,
                             "output": [1.0] * 4}), tmp_path / "log" / "part-0.parquet")
    (tmp_path / "labels.csv").write_text("request_id,outcome\na,1\nb,1\nc,1\nd,1\n")
    assert main(["quality", str(tmp_path / "log"), str(tmp_path / "labels.csv"), "--min-labelled", "1",
                 "--window", window]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [" ".join(row.split()[1:3]) for row in rows] == shown


def test_a_window_far_finer_than_a_huge_timestamp_is_the_timestamp_without_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """1e300 / 1e-10 overflows: the window starts at the timestamp (no window length is finer than a double there),
    and numpy's overflow warning stays inside."""
    import warnings

    (tmp_path / "log").mkdir()
    pq.write_table(pa.table({"request_id": ["a", "b"], "timestamp": [1e300, T0], "model": ["m", "m"],
                             "output": [1.0, 1.0]}), tmp_path / "log" / "part-0.parquet")
    (tmp_path / "labels.csv").write_text("request_id,outcome\na,1\nb,1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        windows = realised_quality(tmp_path / "log", tmp_path / "labels.csv", window_seconds=1e-10)
        assert main(["quality", str(tmp_path / "log"), str(tmp_path / "labels.csv"), "--min-labelled", "1",
                     "--window", "0.0000000001", "--json"]) == 0
    assert [(w.start, w.logged) for w in windows] == [(math.floor(T0 / 1e-10) * 1e-10, 1), (1e300, 1)]
    assert all(math.isfinite(w.start) and math.isfinite(w.end) for w in windows)
    assert [w["start"] for w in json.loads(capsys.readouterr().out)["windows"]] == [windows[0].start, 1e300]
