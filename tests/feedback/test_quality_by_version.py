"""`aiwatch quality --by-version` / `quality_report(by_version=True)`: a canary's version scored apart from the
stable one, the verdict naming the worse version, a request retried across versions counted once (for its latest
row's version), logs without a version, and the output without the flag as it was."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from aiwatch.cli import main
from aiwatch.feedback import ParquetSink, PredictionLog
from aiwatch.feedback.outcomes import quality_report, realised_quality
from tests.feedback.quality_files import labels_csv, sink_log

T0 = 1_790_002_800.0  # 2026-09-21T15:00:00Z, on the hour


@pytest.fixture()
def canary(tmp_path: Path) -> tuple[Path, Path]:
    """One hour of the model churn through aiwatch.PredictionLog: v6 and its canary v7, 50 requests each, the first
    40 of each labelled. Every label is 1; v6 predicts 0 for its requests 0-3 (36 of 40 right), v7 for its requests
    0-15 (24 of 40 right). The model as a whole: 60 of 80."""
    with PredictionLog(ParquetSink(tmp_path / "log"), registry=CollectorRegistry()) as log:
        for i in range(50):
            for version, wrong in (("v6", 4), ("v7", 16)):
                log.log("churn", {"x": i}, {"label": 0 if i < wrong else 1}, version=version,
                        request_id=f"{version}-{i}", timestamp=T0 + i)
    labels = labels_csv(tmp_path, [(f"{v}-{i}", 1) for v in ("v6", "v7") for i in range(40)])
    return tmp_path / "log", labels


def test_two_versions_are_scored_apart_as_counted_by_hand(canary: tuple[Path, Path]) -> None:
    log, labels = canary
    report = quality_report(log, labels, prediction="output.label", by_version=True)
    assert [(w.model, w.model_version, w.start, w.logged, w.labelled, w.unscored) for w in report.windows] == [
        ("churn", "v6", T0, 50, 40, 0), ("churn", "v7", T0, 50, 40, 0)]
    v6, v7 = report.windows
    # v6: 36 true positives, 4 false negatives, no false positive; v7: 24 and 16
    assert v6.metrics == {"accuracy": 36 / 40, "precision": 1.0, "recall": 36 / 40}
    assert v7.metrics == {"accuracy": 24 / 40, "precision": 1.0, "recall": 24 / 40}
    [whole] = report.model_windows  # the gauges' windows: the model as without by_version
    assert (whole.model_version, whole.logged, whole.labelled, whole.metrics["accuracy"]) == (None, 100, 80, 0.75)
    assert realised_quality(log, labels, prediction="output.label") == report.model_windows
    assert realised_quality(log, labels, prediction="output.label", by_version=True) == report.windows
    assert v7.to_dict()["model_version"] == "v7" and "model_version" not in whole.to_dict()
    assert report.unversioned == 0


def test_the_verdict_names_the_worse_version(canary: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    log, labels = canary
    args = ["quality", str(log), str(labels), "--prediction", "output.label", "--objective", "accuracy=0.8"]
    assert main([*args, "--by-version"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["model", "version"]
    assert [line.split()[:2] for line in out[1:3]] == [["churn", "v6"], ["churn", "v7"]]
    assert out[3:] == ["churn: below objective: accuracy 0.75 (objective 0.8)",  # the model's, as without the flag
                       "churn version v7: below objective: accuracy 0.6 (objective 0.8)"]
    assert main([*args, "--by-version", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["below_objective"] == {"churn": {"v7": ["accuracy"]}}
    assert [(w["model_version"], w["metrics"]["accuracy"]) for w in result["windows"]] == [("v6", 0.9), ("v7", 0.6)]
    # on the objective is not below it: v7's 0.6 meets accuracy=0.6
    assert main([*args[:-2], "--by-version", "--objective", "accuracy=0.6"]) == 0
    capsys.readouterr()


def test_latest_per_version_keeps_each_versions_latest_window_with_enough_labels(tmp_path: Path) -> None:
    from aiwatch.feedback.outcomes import latest_per_version  # here: the other tests run on code without it

    # v1 in two hours (its latest has 1 label), v2 in the second hour only
    rows = [("a", T0, "v1", 1.0), ("b", T0 + 1, "v1", 1.0), ("c", T0 + 3600, "v1", 0.0), ("d", T0 + 3600, "v2", 1.0)]
    log = sink_log(tmp_path, [{"request_id": r, "timestamp": t, "model": "m", "model_version": v, "output": o}
                               for r, t, v, o in rows])
    windows = realised_quality(log, labels_csv(tmp_path, [(r, 1) for r, *_ in rows]), by_version=True)
    latest = latest_per_version(windows, min_labelled=2)
    assert {k: (q.start, q.labelled) for k, q in latest.items()} == {("m", "v1"): (T0, 2)}
    assert {k: q.start for k, q in latest_per_version(windows).items()} == {("m", "v1"): T0 + 3600,
                                                                           ("m", "v2"): T0 + 3600}


def test_a_request_retried_across_versions_counts_once_for_its_latest_rows_version(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a: v1 then v2 (counts for v2); b: v2 then v1 (counts for v1); c: v1 only. All labelled 1.
    log = sink_log(tmp_path, [
        {"request_id": rid, "timestamp": T0 + i, "model": "m", "model_version": version, "output": output}
        for i, (rid, version, output) in enumerate([("a", "v1", 0.0), ("b", "v2", 0.0), ("a", "v2", 1.0),
                                                     ("b", "v1", 0.0), ("c", "v1", 1.0)])])
    labels = labels_csv(tmp_path, [("a", 1), ("b", 1), ("c", 1)])
    report = quality_report(log, labels, by_version=True)
    assert report.duplicates == 2
    assert [(w.model_version, w.logged, w.labelled, w.metrics["accuracy"]) for w in report.windows] == [
        ("v1", 2, 2, 0.5), ("v2", 1, 1, 1.0)]
    assert sum(w.labelled for w in report.windows) == 3  # one per label
    assert main(["quality", str(log), str(labels), "--min-labelled", "1", "--by-version"]) == 0
    assert ("2 logged rows left out: a request logged again under the same model and request id, whatever its "
            "model_version (its latest row is scored, for its model_version)") in capsys.readouterr().err


def test_a_null_or_empty_version_is_shown_as_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = sink_log(tmp_path, [
        {"request_id": rid, "timestamp": T0, "model": "m", "model_version": version, "output": 1.0}
        for rid, version in (("a", None), ("b", ""), ("c", "v1"))])
    labels = labels_csv(tmp_path, [("a", 1), ("b", 1), ("c", 0)])
    report = quality_report(log, labels, by_version=True)
    assert [(w.model_version, w.labelled) for w in report.windows] == [("", 2), ("v1", 1)]
    assert report.unversioned == 2
    assert main(["quality", str(log), str(labels), "--min-labelled", "1", "--by-version"]) == 0
    captured = capsys.readouterr()
    assert [line.split()[:2] for line in captured.out.splitlines()[1:]] == [["m", "(none)"], ["m", "v1"]]
    assert "2 logged rows without a model_version (empty, null, or no such column in the log)" in captured.err
    assert main(["quality", str(log), str(labels), "--min-labelled", "1", "--by-version", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [w["model_version"] for w in result["windows"]] == ["", "v1"] and result["logged_unversioned"] == 2


def test_a_log_without_a_model_version_column_is_one_version_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "log").mkdir()
    pq.write_table(pa.table({"request_id": ["a", "b"], "timestamp": [T0, T0], "model": ["m", "m"],
                             "output": [1.0, 0.0]}), tmp_path / "log" / "part-0.parquet")
    labels = labels_csv(tmp_path, [("a", 1), ("b", 1)])
    [window] = realised_quality(tmp_path / "log", labels, by_version=True)
    assert (window.model_version, window.labelled, window.metrics["accuracy"]) == ("", 2, 0.5)
    args = ["quality", str(tmp_path / "log"), str(labels), "--min-labelled", "1", "--by-version",
            "--objective", "accuracy=0.9"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "m version (none): below objective: accuracy 0.5 (objective 0.9)"
    assert "2 logged rows without a model_version" in captured.err


def test_versions_written_as_numbers_in_one_file_and_text_in_another_are_one_version(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    for i, version in enumerate([pa.array([7, 8], pa.int64()), pa.array(["7", "8"]), pa.array([7.0, 8.0])]):
        pq.write_table(pa.table({"request_id": [f"{i}a", f"{i}b"], "timestamp": [T0, T0], "model": ["m", "m"],
                                 "model_version": version, "output": [1.0, 1.0]}),
                       tmp_path / "log" / f"part-{i}.parquet")
    labels = labels_csv(tmp_path, [(f"{i}{s}", 1) for i in range(3) for s in "ab"])
    windows = realised_quality(tmp_path / "log", labels, by_version=True)
    assert [(w.model_version, w.logged, w.labelled) for w in windows] == [("7", 3, 3), ("8", 3, 3)]


def _version_per_request(tmp_path: Path, n: int) -> list[str]:
    """A careless client sends a new model_version with each request (a build hash, a timestamp): ``n`` versions
    of the model m, one request each, a second apart, the even ones wrong. The command's arguments, the verdict
    ``accuracy=0.5``."""
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0 + i, "model": "m",
                                "model_version": f"build-{i:04d}", "output": float(i % 2)} for i in range(n)])
    labels = labels_csv(tmp_path, [(f"r{i}", 1) for i in range(n)])
    return ["quality", str(log), str(labels), "--min-labelled", "1", "--by-version", "--objective", "accuracy=0.5"]


def test_a_version_per_request_with_max_versions_0_prints_every_version(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """1000 versions are 1000 rows of the table and, below the objective, 500 verdict lines: no error, nothing left
    out."""
    n = 1000
    args = _version_per_request(tmp_path, n)
    assert main([*args, "--max-versions", "0"]) == 1
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert len(out) == 1 + n + n // 2
    assert [line.split()[1] for line in out[1:n + 1]] == [f"build-{i:04d}" for i in range(n)]
    assert out[n + 1:] == [f"m version build-{i:04d}: below objective: accuracy 0 (objective 0.5)"
                           for i in range(0, n, 2)]
    assert "not shown" not in captured.err


def test_a_version_per_request_shows_20_versions_below_objective_the_latest_first_and_counts_the_rest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """By default the table shows 20 versions per model (it printed all 1000): the 500 below the objective are
    chosen first, so the 20 latest of them, shown in the table's order, with their verdict lines; one stderr line
    counts the 980 others, 480 of them below; --json keeps every window and verdict; the exit code counts every
    version."""
    n = 1000
    args = _version_per_request(tmp_path, n)
    assert main(args) == 1
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    shown = [f"build-{i:04d}" for i in range(n - 40, n, 2)]
    assert [line.split()[1] for line in out[1:21]] == shown
    assert out[21:] == [f"m version {v}: below objective: accuracy 0 (objective 0.5)" for v in shown]
    assert [line for line in captured.err.splitlines() if "not shown" in line] == [
        "aiwatch quality: m: 980 more versions not shown (480 below objective); the table shows 20 per model, chosen "
        "below objective first, then the latest: --max-versions 0 shows all, --json lists all"]
    assert main([*args, "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert len(result["windows"]) == n and len(result["below_objective"]["m"]) == n // 2


def test_max_versions_is_per_model_below_objective_first_then_the_latest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Per model, hour h holds version v{h}'s 2 requests. Model a: v0 (the oldest) is wrong, the others right;
    model b: all right. --max-versions 2: a shows v0 (below) and v4 (the latest), b v3 and v4; each model's
    others are counted apart."""
    rows = [(f"{m}{h}-{i}", T0 + 3600 * h, m, f"v{h}", 0.0 if (m, h) == ("a", 0) else 1.0)
            for m in "ab" for h in range(5) for i in range(2)]
    log = sink_log(tmp_path, [{"request_id": r, "timestamp": t, "model": m, "model_version": v, "output": o}
                               for r, t, m, v, o in rows])
    labels = labels_csv(tmp_path, [(r, 1) for r, *_ in rows])
    args = ["quality", str(log), str(labels), "--min-labelled", "1", "--by-version", "--objective", "accuracy=0.5",
            "--max-versions", "2"]
    assert main(args) == 1
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert [tuple(line.split()[:2]) for line in out[1:5]] == [("a", "v0"), ("b", "v3"), ("a", "v4"), ("b", "v4")]
    assert out[5:] == ["a version v0: below objective: accuracy 0 (objective 0.5)"]
    assert [line.split(";")[0] for line in captured.err.splitlines() if "not shown" in line] == [
        "aiwatch quality: a: 3 more versions not shown (0 below objective)",
        "aiwatch quality: b: 3 more versions not shown (0 below objective)"]


def test_max_versions_leaves_the_output_without_by_version_as_it_was(
        canary: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    log, labels = canary
    args = ["quality", str(log), str(labels), "--prediction", "output.label", "--objective", "accuracy=0.8"]
    assert main(args) == 1
    before = capsys.readouterr()
    assert main([*args, "--max-versions", "1"]) == 1
    assert capsys.readouterr() == before


@pytest.mark.parametrize("value", ["-1", "x", "1.5"])
def test_max_versions_must_be_a_whole_number_from_0(
        canary: tuple[Path, Path], capsys: pytest.CaptureFixture[str], value: str) -> None:
    log, labels = canary
    with pytest.raises(SystemExit) as exit_:
        main(["quality", str(log), str(labels), "--by-version", "--max-versions", value])
    assert exit_.value.code == 2
    assert f"--max-versions: must be a whole number >= 0, got {value!r}" in capsys.readouterr().err


def test_a_version_that_would_break_the_table_line_is_escaped() -> None:
    from aiwatch.commands.quality import shown_version

    assert shown_version("v7\n  fake line") == "'v7\\n  fake line'"
    assert (shown_version(""), shown_version("v7"), shown_version("é7")) == ("(none)", "v7", "é7")


def test_the_textfile_gauges_stay_per_model_with_by_version(canary: tuple[Path, Path], tmp_path: Path) -> None:
    log, labels = canary
    args = ["quality", str(log), str(labels), "--prediction", "output.label", "--objective", "accuracy=0.5"]
    assert main([*args, "--textfile", str(tmp_path / "plain.prom")]) == 0
    assert main([*args, "--by-version", "--textfile", str(tmp_path / "by-version.prom")]) == 0

    def quality_lines(name: str) -> list[str]:
        return [line for line in (tmp_path / name).read_text().splitlines() if line.startswith("aiwatch_model_quality")]

    lines = quality_lines("by-version.prom")
    assert 'aiwatch_model_quality{metric="accuracy",model="churn"} 0.75' in lines
    assert lines == quality_lines("plain.prom") and not any("version" in line for line in lines)


def test_without_the_flag_the_output_is_per_model_as_before(
        canary: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    log, labels = canary
    args = ["quality", str(log), str(labels), "--prediction", "output.label", "--objective", "accuracy=0.8"]
    assert main(args) == 1
    assert capsys.readouterr().out == (
        "model            window (UTC)        logged labelled unscored   accuracy  precision     recall\n"
        "churn            2026-09-21 15:00       100       80        0       0.75          1       0.75\n"
        "churn: below objective: accuracy 0.75 (objective 0.8)\n")
    assert main([*args, "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert list(result) == ["windows", "labels_left_out", "labels_markers_left_out", "logged_duplicates_left_out",
                            "logged_untimed_left_out", "positive_found", "below_objective"]
    assert "model_version" not in result["windows"][0] and result["below_objective"] == {"churn": ["accuracy"]}


def test_the_documented_quality_commands_parse() -> None:
    """docs/prediction-log.md's `aiwatch quality` examples, --by-version's included, are commands the CLI takes."""
    from aiwatch.cli import build_parser
    from tests.servers import REPO

    doc = (REPO / "docs" / "prediction-log.md").read_text()
    commands = [c.replace("\\\n", " ") for block in re.findall(r"```bash\n(.*?)```", doc, re.S)
                for c in re.findall(r"^aiwatch quality .*?(?<!\\)$", block, re.S | re.M)]
    parsed = [build_parser().parse_args(shlex.split(c, comments=True)[1:]) for c in commands]
    assert len(parsed) == 3 and [a.by_version for a in parsed] == [False, False, True]


def test_versions_each_under_min_labelled_get_no_verdict_the_model_does_and_its_gauges_are_written(
        canary: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """v6 and v7 have 40 labels each, the model 80: with --min-labelled 50 no version has a verdict (each named on
    stderr), the model's verdict decides (0.75 below 0.8: exit 1), and the per-model gauges are written as a run
    without --by-version writes them (a cron job keeps its gauges fresh)."""
    log, labels = canary
    textfile = tmp_path / "quality.prom"
    args = ["quality", str(log), str(labels), "--prediction", "output.label", "--min-labelled", "50",
            "--textfile", str(textfile), "--objective", "accuracy=0.8"]
    assert main([*args, "--by-version"]) == 1
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if "no verdict" in line] == [
        f"aiwatch quality: churn version {v}: 40 scored labels, under --min-labelled 50: no verdict"
        for v in ("v6", "v7")]
    assert captured.out.splitlines()[-1] == "churn: below objective: accuracy 0.75 (objective 0.8)"
    assert 'aiwatch_model_quality{metric="accuracy",model="churn"} 0.75' in textfile.read_text().splitlines()


def _canary_hiding_a_failure(tmp_path: Path) -> tuple[Path, Path]:
    """v6: 40 labels, all right; v7: 10 labels, all wrong. The model: 40 of 50 (0.8)."""
    rows = [(f"v6-{i}", "v6", 1.0) for i in range(40)] + [(f"v7-{i}", "v7", 0.0) for i in range(10)]
    log = sink_log(tmp_path, [{"request_id": rid, "timestamp": T0 + i, "model": "churn", "model_version": version,
                                "output": output} for i, (rid, version, output) in enumerate(rows)])
    return log, labels_csv(tmp_path, [(rid, 1) for rid, *_ in rows])


def test_a_version_under_min_labelled_does_not_hide_the_models_failure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """v7's 10 wrong answers bring the model to 0.8, below 0.85 (exit 1 without the flag); v7 alone has too few
    labels for a verdict of its own and v6 meets the objective: --by-version still exits 1, prints the per-model
    line, and names v7 as left without a verdict."""
    log, labels = _canary_hiding_a_failure(tmp_path)
    args = ["quality", str(log), str(labels), "--objective", "accuracy=0.85"]
    assert main(args) == 1
    capsys.readouterr()
    assert main([*args, "--by-version"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1:] == ["churn: below objective: accuracy 0.8 (objective 0.85)"]
    assert "churn version v7: 10 scored labels, under --min-labelled 30: no verdict" in captured.err
    assert "v6" not in captured.err
    assert main([*args, "--by-version", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["below_objective"] == {} and result["below_objective_per_model"] == {"churn": ["accuracy"]}


def test_by_version_exits_1_on_a_version_below_while_the_model_meets_the_objective(
        canary: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """The model (0.75) meets 0.7, v7 (0.6) does not: exit 1, one line for v7 and none for the model."""
    log, labels = canary
    args = ["quality", str(log), str(labels), "--prediction", "output.label", "--objective", "accuracy=0.7"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--by-version"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[3:] == ["churn version v7: below objective: accuracy 0.6 (objective 0.7)"]
    assert main([*args, "--by-version", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["below_objective"] == {"churn": {"v7": ["accuracy"]}} and result["below_objective_per_model"] == {}


def test_both_the_model_and_a_version_below_print_both_lines(
        canary: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    log, labels = canary
    assert main(["quality", str(log), str(labels), "--prediction", "output.label", "--objective", "accuracy=0.8",
                 "--by-version"]) == 1
    assert capsys.readouterr().out.splitlines()[3:] == [
        "churn: below objective: accuracy 0.75 (objective 0.8)",
        "churn version v7: below objective: accuracy 0.6 (objective 0.8)"]


def test_a_version_without_a_verdict_in_several_windows_is_named_with_its_fullest_window(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """v0: 6 labels in the first hour; v1: 2 in the first hour, 1 in the second. --min-labelled 5."""
    rows = [(f"a{i}", T0 + i, "v0") for i in range(6)] + [("b0", T0, "v1"), ("b1", T0 + 1, "v1"),
                                                         ("b2", T0 + 3600, "v1")]
    log = sink_log(tmp_path, [{"request_id": r, "timestamp": t, "model": "m", "model_version": v, "output": 1.0}
                               for r, t, v in rows])
    labels = labels_csv(tmp_path, [(r, 1) for r, *_ in rows])
    assert main(["quality", str(log), str(labels), "--min-labelled", "5", "--by-version"]) == 0
    assert [line for line in capsys.readouterr().err.splitlines() if "no verdict" in line] == [
        "aiwatch quality: m version v1: at most 2 scored labels in one of its 2 windows, under --min-labelled 5: "
        "no verdict"]


@pytest.mark.parametrize("n", [10, 11, 1000])
def test_stderr_names_the_first_10_versions_without_a_verdict_and_json_lists_them_all(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], n: int) -> None:
    """A version per request, each with one label under --min-labelled 2: 10 named on stderr, then one line
    counting the rest (1000 versions were 1000 lines); --json's versions_without_verdict has every one."""
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0 + i, "model": "m",
                                "model_version": f"build-{i:04d}", "output": 1.0} for i in range(n)])
    labels = labels_csv(tmp_path, [(f"r{i}", 1) for i in range(n)])
    args = ["quality", str(log), str(labels), "--by-version", "--min-labelled", "2"]
    assert main(args) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "verdict" in line]
    assert err[:10] == [f"aiwatch quality: m version build-{i:04d}: 1 scored label, under --min-labelled 2: no "
                        "verdict" for i in range(10)]
    more = n - 10
    assert err[10:] == ([f"aiwatch quality: ... and {more} more version{'s' * (more != 1)} without a verdict "
                         "(--json lists them)"] if more else [])
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["versions_without_verdict"] == {
        "m": [f"build-{i:04d}" for i in range(n)]}


@pytest.mark.parametrize("column, type_name", [
    (pa.array([[1], [2]], pa.list_(pa.int64())), "list<element: int64>"),
    (pa.array([{"a": 1}, {"a": 2}]), "struct<a: int64>"),
    (pa.array([b"\xff\xfe", b"v1"], pa.binary()), "binary"),
])
def test_a_model_version_column_that_is_not_text_or_numbers_is_an_error_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], column: pa.Array, type_name: str) -> None:
    (tmp_path / "log").mkdir()
    pq.write_table(pa.table({"request_id": ["a", "b"], "timestamp": [T0, T0], "model": ["m", "m"],
                             "model_version": column, "output": [1.0, 0.0]}), tmp_path / "log" / "part-0.parquet")
    labels = labels_csv(tmp_path, [("a", 1), ("b", 1)])
    with pytest.raises(ValueError, match=re.escape(f"the log's 'model_version' column is {type_name}")):
        quality_report(tmp_path / "log", labels, by_version=True)
    assert main(["quality", str(tmp_path / "log"), str(labels), "--min-labelled", "1", "--by-version"]) == 2
    err = capsys.readouterr().err
    assert f"the log's 'model_version' column is {type_name}" in err and "--by-version cannot read it" in err
    assert "unexpected" not in err
    assert main(["quality", str(tmp_path / "log"), str(labels), "--min-labelled", "1"]) == 0  # not read without it


def _two_models_two_windows(tmp_path: Path) -> tuple[Path, Path]:
    """Models "b" and "a" (written in that order), versions "v2" and "v1", in the hours T0 and T0 + 3600."""
    rows = [{"request_id": f"{model}{version}{hour}", "timestamp": T0 + hour * 3600 + 1, "model": model,
             "model_version": version, "output": 1.0}
            for hour in (1, 0) for model in ("b", "a") for version in ("v2", "v1")]
    log = sink_log(tmp_path, rows)
    return log, labels_csv(tmp_path, [(str(r["request_id"]), 1) for r in rows])


def test_two_models_in_two_windows_are_ordered_by_window_then_model_then_version(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, labels = _two_models_two_windows(tmp_path)
    args = ["quality", str(log), str(labels), "--min-labelled", "1"]
    assert main(args) == 0
    assert [line.split()[:3] for line in capsys.readouterr().out.splitlines()[1:]] == [
        ["a", "2026-09-21", "15:00"], ["b", "2026-09-21", "15:00"],
        ["a", "2026-09-21", "16:00"], ["b", "2026-09-21", "16:00"]]
    assert main([*args, "--json"]) == 0
    assert [(w["model"], w["start"]) for w in json.loads(capsys.readouterr().out)["windows"]] == [
        ("a", T0), ("b", T0), ("a", T0 + 3600), ("b", T0 + 3600)]
    assert main([*args, "--by-version"]) == 0
    assert [line.split()[:4] for line in capsys.readouterr().out.splitlines()[1:]] == [
        [m, v, "2026-09-21", hour] for hour in ("15:00", "16:00") for m in "ab" for v in ("v1", "v2")]
    assert main([*args, "--by-version", "--json"]) == 0
    assert [(w["model"], w["model_version"], w["start"]) for w in json.loads(capsys.readouterr().out)["windows"]] == [
        (m, v, start) for start in (T0, T0 + 3600) for m in "ab" for v in ("v1", "v2")]


def test_latest_per_version_counts_scored_labels_not_labelled_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """v1: 3 labels in the first hour; 3 in the second, 2 of them with no prediction (1 scored). With
    min_labelled 2 v1's verdict is on the first hour (the second has 3 labels but 1 scored)."""
    from aiwatch.feedback.outcomes import latest_per_version

    rows = [(f"a{i}", T0 + i, 0.0) for i in range(3)] + [("b0", T0 + 3600, 1.0), ("b1", T0 + 3601, None),
                                                         ("b2", T0 + 3602, None)]
    log = sink_log(tmp_path, [{"request_id": r, "timestamp": t, "model": "m", "model_version": "v1", "output": o}
                               for r, t, o in rows])
    labels = labels_csv(tmp_path, [(r, 1) for r, *_ in rows])
    windows = realised_quality(log, labels, by_version=True)
    assert [(w.start, w.labelled, w.scored) for w in windows] == [(T0, 3, 3), (T0 + 3600, 3, 1)]
    assert {k: q.start for k, q in latest_per_version(windows, min_labelled=2).items()} == {("m", "v1"): T0}
    # the first hour's 0 of 3 is the verdict, not the second hour's 1 of 1
    assert main(["quality", str(log), str(labels), "--min-labelled", "2", "--by-version",
                 "--objective", "accuracy=0.5"]) == 1
    assert "m version v1: below objective: accuracy 0 (objective 0.5)" in capsys.readouterr().out


def test_unversioned_counts_the_rows_kept_after_retries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """a: no version, then v1 (counts for v1); b: v1, then null (unversioned); c: "", then "" (one row); d: v1."""
    rows = [("a", None), ("b", "v1"), ("c", ""), ("a", "v1"), ("b", None), ("c", ""), ("d", "v1")]
    log = sink_log(tmp_path, [{"request_id": rid, "timestamp": T0 + i, "model": "m", "model_version": version,
                                "output": 1.0} for i, (rid, version) in enumerate(rows)])
    labels = labels_csv(tmp_path, [(r, 1) for r in "abcd"])
    report = quality_report(log, labels, by_version=True)
    assert (report.duplicates, report.unversioned) == (3, 2)
    assert [(w.model_version, w.logged) for w in report.windows] == [("", 2), ("v1", 2)]
    assert main(["quality", str(log), str(labels), "--min-labelled", "1", "--by-version", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["logged_unversioned"] == 2


def test_a_nan_version_is_no_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "log").mkdir()
    pq.write_table(pa.table({"request_id": ["a", "b", "c"], "timestamp": [T0, T0, T0], "model": ["m"] * 3,
                             "model_version": pa.array([float("nan"), 1.10, None]), "output": [1.0] * 3}),
                   tmp_path / "log" / "part-0.parquet")
    labels = labels_csv(tmp_path, [("a", 1), ("b", 1), ("c", 1)])
    report = quality_report(tmp_path / "log", labels, by_version=True)
    assert [(w.model_version, w.logged) for w in report.windows] == [("", 2), ("1.1", 1)]
    assert report.unversioned == 2
    assert main(["quality", str(tmp_path / "log"), str(labels), "--min-labelled", "1", "--by-version"]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]] == ["(none)", "1.1"]


def test_a_nan_version_in_a_file_of_floats_beside_a_file_of_text_is_no_version(tmp_path: Path) -> None:
    """The files disagree on the type, so the column is read as text and Arrow writes the NaN as the text nan:
    no version, as in a log of floats alone. There the text nan cannot be told from it: no version either. In a
    log whose model_version is text in every file the text nan is a version."""
    def write(name: str, arrays: list[pa.Array]) -> Path:
        (tmp_path / name).mkdir()
        for i, version in enumerate(arrays):
            pq.write_table(pa.table({"request_id": [f"{i}-{j}" for j in range(len(version))],
                                     "timestamp": [T0] * len(version), "model": ["m"] * len(version),
                                     "model_version": version, "output": [1.0] * len(version)}),
                           tmp_path / name / f"part-{i}.parquet")
        return tmp_path / name

    labels = labels_csv(tmp_path, [(f"{i}-{j}", 1) for i in range(2) for j in range(3)])
    mixed = quality_report(write("mixed", [pa.array([float("nan"), 7.0]), pa.array(["v1", "nan", "NaN"])]), labels,
                           by_version=True)
    assert [(w.model_version, w.logged) for w in mixed.windows] == [("", 2), ("7", 1), ("NaN", 1), ("v1", 1)]
    assert mixed.unversioned == 2
    text = quality_report(write("text", [pa.array(["nan", "v1"]), pa.array(["v1"])]), labels, by_version=True)
    assert [(w.model_version, w.logged) for w in text.windows] == [("nan", 1), ("v1", 2)]
    assert text.unversioned == 0


def test_text_7_0_stays_apart_from_the_number_7(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    for i, version in enumerate([pa.array([7], pa.int64()), pa.array([7.0]), pa.array(["7.0"])]):
        pq.write_table(pa.table({"request_id": [f"r{i}"], "timestamp": [T0], "model": ["m"],
                                 "model_version": version, "output": [1.0]}), tmp_path / "log" / f"part-{i}.parquet")
    windows = realised_quality(tmp_path / "log", labels_csv(tmp_path, [(f"r{i}", 1) for i in range(3)]),
                               by_version=True)
    assert [(w.model_version, w.logged) for w in windows] == [("7", 2), ("7.0", 1)]


def test_a_version_literally_none_is_shown_apart_from_no_version(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aiwatch.commands.quality import shown_version

    assert shown_version("(none)") != shown_version("") == "(none)"
    log = sink_log(tmp_path, [{"request_id": rid, "timestamp": T0, "model": "m", "model_version": version,
                                "output": 1.0} for rid, version in (("a", "(none)"), ("b", ""))])
    labels = labels_csv(tmp_path, [("a", 1), ("b", 1)])
    assert main(["quality", str(log), str(labels), "--min-labelled", "1", "--by-version", "--objective",
                 "accuracy=1"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[1] for line in rows] == ["(none)", "'(none)'"]  # "" sorts first


def test_versions_that_would_read_alike_are_shown_apart() -> None:
    from aiwatch.commands.quality import shown_version

    versions = ["v7", "v7 ", " v7", "'v7'", "v7\\n", "v7\n", "(none)", "'(none)'", "", "v 7", '"v7"']
    shown = [shown_version(v) for v in versions]
    assert len(set(shown)) == len(versions)
    assert all(s == s.strip() and s.isprintable() for s in shown)
    assert shown_version("v7") == "v7" and shown_version("é7") == "é7"


def test_long_versions_keep_the_table_aligned_and_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long = "release-candidate-build-" + "x" * 40
    versions = ["v1", f"{long}-a", f"{long}-b", "y" * 40]
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "model_version": v,
                                "output": 1.0} for i, v in enumerate(versions)])
    labels = labels_csv(tmp_path, [(f"r{i}", 1) for i in range(len(versions))])
    assert main(["quality", str(log), str(labels), "--min-labelled", "1", "--by-version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len({line.index("2026-09-21") for line in lines[1:]}) == 1  # the window column lines up
    assert lines[0].index("window") == lines[1].index("2026-09-21")
    shown = [line[lines[0].index("version"):lines[0].index("window")].rstrip() for line in lines[1:]]
    assert len(set(shown)) == 4 and all(len(s) <= 40 for s in shown)
    assert "y" * 40 in shown  # 40 characters: whole


def test_a_cut_version_never_reads_as_a_whole_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 40-character version written as another's cut form (its start, ... and a digest) once read alike in
    the table. A cut form has a space (a version shown as written has none) and ends with a hex digit (a quoted
    one ends with its quote)."""
    import hashlib

    from aiwatch.commands.quality import shown_version, table_version

    long = "release-2026-09-21-canary-build-" + "a" * 20
    digest = hashlib.sha1(long.encode()).hexdigest()[:10]
    cut = table_version(shown_version(long))
    versions = sorted({long, cut, f"{long[:27]}...{digest}", f"{long[:26]}...{digest}"})
    log = sink_log(tmp_path, [{"request_id": f"r{i}", "timestamp": T0, "model": "m", "model_version": v,
                                "output": 1.0} for i, v in enumerate(versions)])
    labels = labels_csv(tmp_path, [(f"r{i}", 1) for i in range(len(versions))])
    assert main(["quality", str(log), str(labels), "--min-labelled", "1", "--by-version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    cells = [line[lines[0].index("version"):lines[0].index("window")].rstrip() for line in lines[1:]]
    assert len(cells) == len(set(cells)) == len(versions)
    for version in (long, "'" + "x" * 40 + "'", "v 7" * 20):
        cut = table_version(shown_version(version))
        assert len(cut) <= 40 and shown_version(cut) != cut and cut[-1] not in "'\""
