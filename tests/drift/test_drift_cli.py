"""`aiwatch profile build` and `aiwatch drift`: tables, JSON, exit codes 0 / 1 / 2, Evidently HTML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiwatch.cli import main
from aiwatch.drift.batch import compare_file, load_reference
from aiwatch.drift.evaluate import DEFAULT_MAX_EXACT, Options
from tests.servers import require_module

pd = require_module("pandas")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    rng = np.random.default_rng(5)
    tmp = tmp_path_factory.mktemp("drift-cli")

    def frame(shift: float, n: int) -> object:
        return pd.DataFrame({"age": rng.normal(40 + shift, 10, n), "income": rng.lognormal(10, 0.5, n),
                             "plan": rng.choice(["free", "pro", "team"], n, p=[0.6, 0.3, 0.1])})

    out = {"ref": tmp / "ref.csv", "same": tmp / "same.parquet", "shifted": tmp / "shifted.csv"}
    frame(0, 3000).to_csv(out["ref"], index=False)  # type: ignore[attr-defined]
    frame(0, 1000).to_parquet(out["same"])  # type: ignore[attr-defined]
    shifted = frame(15, 1000)
    shifted["plan"] = "team"  # type: ignore[index]
    shifted.to_csv(out["shifted"], index=False)  # type: ignore[attr-defined]
    out["profile"] = tmp / "profile.json"
    return out


def test_profile_build_then_drift_against_the_profile(files: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "build", str(files["ref"]), "-o", str(files["profile"]), "--chunk-rows", "500"]) == 0
    assert "3 features (2 numerical, 1 categorical)" in capsys.readouterr().out
    assert main(["drift", str(files["profile"]), str(files["same"])]) == 0
    out = capsys.readouterr().out
    assert "dataset: no drift" in out and "wasserstein" in out and "jensenshannon" in out
    assert main(["drift", str(files["profile"]), str(files["shifted"])]) == 1
    assert "dataset: DRIFT (2/3 features drifted" in capsys.readouterr().out


def test_drift_json_with_data_reference_and_overrides(files: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["drift", str(files["ref"]), str(files["shifted"]), "--json", "--method", "age=ks",
                 "--threshold", "plan=0.5", "--correction", "bh", "--rule", "any"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["drifted"] and data["correction"] == "bh" and data["rule"] == "any"
    by_name = {f["feature"]: f for f in data["features"]}
    assert by_name["age"]["method"] == "ks" and by_name["age"]["adjusted_pvalue"] is not None
    assert by_name["plan"]["threshold"] == 0.5


@pytest.mark.parametrize(("args", "message"), [
    (["drift", "{dir}/missing.json", "{same}"], "cannot read profile"),
    (["drift", "{corrupt}", "{same}"], "not valid JSON"),
    (["drift", "{ref}", "{same}", "--method", "age=magic"], "unknown drift test 'magic'"),
    (["drift", "{ref}", "{dir}/nope.csv"], "does not exist"),
    (["profile", "build", "{dir}/nope.csv", "-o", "{dir}/p.json"], "does not exist"),
])
def test_errors_exit_2_with_a_message(files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                      args: list[str], message: str) -> None:
    corrupt = files["ref"].parent / "corrupt.json"
    corrupt.write_text('{"format": "aiwatch.reference_profile", "vers')
    fmt = {"dir": files["ref"].parent, "same": files["same"], "ref": files["ref"], "corrupt": corrupt}
    assert main([a.format(**fmt) for a in args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_report_writes_evidently_html(files: dict[str, Path], tmp_path: Path) -> None:
    require_module("evidently")
    html = tmp_path / "drift.html"
    assert main(["drift", str(files["ref"]), str(files["shifted"]), "--report", str(html)]) == 1
    text = html.read_text()
    assert "<html" in text.lower() and "Drifted Columns" in text and len(text) > 10_000


@pytest.mark.slow
def test_report_of_a_csv_column_of_ints_and_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A CSV column of ints with a text field among them (1, 1, unknown: categorical, two categories) made
    Evidently's Z-test sort ints with text: ``TypeError: '<' not supported between instances of 'str' and 'int'
    (unexpected: please report it)``, exit 2. Its values reach Evidently as the profile reads them, as text."""
    require_module("evidently")
    ref, cur, html = tmp_path / "ref.csv", tmp_path / "cur.csv", tmp_path / "drift.html"
    ref.write_text("code\n" + "1\n1\nunknown\n" * 40)
    cur.write_text("code\n" + "1\nunknown\nunknown\n" * 40)
    plain = main(["drift", str(ref), str(cur), "--json"])
    kinds = {f["feature"]: f["kind"] for f in json.loads(capsys.readouterr().out)["features"]}
    assert plain in (0, 1) and kinds == {"code": "categorical"}
    assert main(["drift", str(ref), str(cur), "--json", "--report", str(html)]) == plain
    assert "error" not in capsys.readouterr().err
    assert "Drifted Columns" in html.read_text()


def test_report_with_a_categorical_column_of_no_value_exits_as_without(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """A categorical feature whose current values are all missing: drift tests the others and exits 0 (that one
    insufficient_data); --report failed (exit 2) with Evidently's "An empty column 'c' was provided for drift
    calculation in the current dataset". The column is left out of the report, with a note."""
    require_module("evidently")
    rng = np.random.default_rng(23)
    ref, cur, html = tmp_path / "ref.csv", tmp_path / "cur.csv", tmp_path / "drift.html"
    pd.DataFrame({"x": rng.normal(size=200), "c": rng.choice(["a", "b"], 200)}).to_csv(ref, index=False)
    pd.DataFrame({"x": rng.normal(size=200), "c": [None] * 200}).to_csv(cur, index=False)
    assert main(["drift", str(ref), str(cur), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert [(f["feature"], f["status"]) for f in plain["features"]] == [("x", "ok"), ("c", "insufficient_data")]
    assert main(["drift", str(ref), str(cur), "--json", "--report", str(html)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == plain and "Drifted Columns" in html.read_text()
    assert "error" not in err  # the note is a warning of the aiwatch.drift logger (stderr without logging set up)
    assert "the Evidently report leaves out 'c' (no value in the current data)" in caplog.text


@pytest.mark.slow
def test_report_of_parquet_ints_past_2_53_keeps_them_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A Parquet int64 column of a few codes past 2**53 (categorical), a null in the current file only: the
    reference's codes went to Evidently as ints, the current's as floats (2**53 + 1 was 2**53, one category with
    it). Both go as the profile's categories, the exact digits."""
    require_module("evidently")
    pa, pq = require_module("pyarrow"), require_module("pyarrow.parquet")
    from tests.drift.test_drift_report import handed_over

    big = 2**53
    codes = [big - 1, big, big + 1, big + 3]
    ref, cur, html = tmp_path / "ref.parquet", tmp_path / "cur.parquet", tmp_path / "drift.html"
    pq.write_table(pa.table({"code": pa.array(codes * 30, pa.int64())}), ref)
    pq.write_table(pa.table({"code": pa.array([*codes * 20, None], pa.int64())}), cur)
    frames = handed_over(monkeypatch)
    assert main(["drift", str(ref), str(cur), "--report", str(html)]) == 0
    assert "error" not in capsys.readouterr().err
    current, reference = (frame["code"].tolist() for frame in frames)
    assert reference == list(map(str, codes)) * 30 and current == [*map(str, codes * 20), None]


@pytest.mark.slow
def test_report_of_parquet_int_columns_with_nulls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An integer column with a null is read as ints and None, which Evidently typed unknown: with every column
    left out it divided by zero (``ZeroDivisionError ... (unexpected: please report it)``, exit 2). The report now
    types the columns as the profile does, and the command exits as it does without --report."""
    require_module("evidently")
    pa, pq = require_module("pyarrow"), require_module("pyarrow.parquet")
    rng = np.random.default_rng(11)

    def write(path: Path, shift: int) -> None:
        nulls = rng.random(500) < 0.1
        plan = pa.array(rng.integers(0, 4 + shift, 500), type=pa.int64(), mask=nulls)
        visits = pa.array(rng.integers(-400, 400, 500) + 50 * shift, type=pa.int32(), mask=nulls)
        empty = pa.array([None] * 500, type=pa.int64())
        pq.write_table(pa.table({"plan_code": plan, "visit_count": visits, "all_null_ints": empty}), path)

    ref, cur, html = tmp_path / "ref.parquet", tmp_path / "cur.parquet", tmp_path / "drift.html"
    write(ref, 0)
    write(cur, 3)
    plain = main(["drift", str(ref), str(cur), "--json"])
    kinds = {f["feature"]: f["kind"] for f in json.loads(capsys.readouterr().out)["features"]}
    assert plain == 1 and kinds == {"plan_code": "categorical", "visit_count": "numerical"}
    assert main(["drift", str(ref), str(cur), "--json", "--report", str(html)]) == plain
    assert "error" not in capsys.readouterr().err
    text = html.read_text()
    assert "<html" in text.lower() and "Drifted Columns" in text
    assert "plan_code" in text and "visit_count" in text and "all_null_ints" not in text


@pytest.mark.slow
def test_evidently_html_types_pandas_nullable_ints_with_the_given_kinds(tmp_path: Path) -> None:
    """Evidently types pandas' ``Int64`` unknown (left out, and with no column left it divides by zero);
    ``kinds=`` types it as the profile does."""
    require_module("evidently")
    from aiwatch.drift.report import evidently_html

    rng = np.random.default_rng(12)

    def frame(shift: int) -> object:
        few = pd.array(rng.integers(0, 4, 300) + shift, dtype="Int64")
        many = pd.array(rng.integers(0, 1000, 300) + 100 * shift, dtype="Int64")
        few[::7], many[::9] = pd.NA, pd.NA
        return pd.DataFrame({"few_codes": few, "many_counts": many})

    html = tmp_path / "r.html"
    evidently_html(frame(0), frame(1), html, kinds={"few_codes": "categorical", "many_counts": "numerical"})
    text = html.read_text()
    assert "Drifted Columns" in text and "few_codes" in text and "many_counts" in text


def test_a_failing_report_names_the_report_and_stays_unexpected(files: dict[str, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import aiwatch.drift.report

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(aiwatch.drift.report, "evidently_html", broken)
    html = tmp_path / "r.html"
    assert main(["drift", str(files["ref"]), str(files["shifted"]), "--report", str(html)]) == 2
    assert capsys.readouterr().err == (f"aiwatch drift: error: writing the --report {html}: ZeroDivisionError: "
                                       "division by zero (unexpected: please report it)\n")


def test_report_needs_reference_data_not_a_profile(files: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "build", str(files["ref"]), "-o", str(files["profile"])]) == 0
    import aiwatch.drift.batch

    def no_comparison(*args: object, **kwargs: object) -> None:  # it was refused after the whole comparison
        raise AssertionError("the comparison ran before --report was checked")

    monkeypatch.setattr(aiwatch.drift.batch, "compare_source", no_comparison)
    assert main(["drift", str(files["profile"]), str(files["same"]), "--report", str(tmp_path / "r.html")]) == 2
    assert "--report needs reference data" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["no directory", "a directory", "under a file"])
def test_a_report_path_that_cannot_be_written_is_refused_before_the_comparison(
        files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    # the comparison ran in full, and only then did writing the report fail with a bare "[Errno 2] ..."
    import aiwatch.drift.batch

    def no_comparison(*args: object, **kwargs: object) -> None:
        raise AssertionError("the comparison ran before --report was checked")

    monkeypatch.setattr(aiwatch.drift.batch, "compare_source", no_comparison)
    (tmp_path / "file.txt").write_text("")
    path, why = {"no directory": (tmp_path / "nodir" / "r.html", f"no directory {str(tmp_path / 'nodir')!r}"),
                 "a directory": (tmp_path, "it is a directory"),
                 "under a file": (tmp_path / "file.txt" / "r.html",
                                  f"{str(tmp_path / 'file.txt')!r} is not a directory")}[case]
    with pytest.raises(SystemExit) as info:
        main(["drift", str(files["ref"]), str(files["shifted"]), "--report", str(path)])
    assert info.value.code == 2
    assert f"argument --report: cannot write {str(path)!r}: {why}" in capsys.readouterr().err


def test_exact_mode_tests_every_current_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--exact: Wasserstein over all 3000 current values (the whole reference is the profile's sample here too), so
    the statistic is scipy's on the raw data; a sample of max_exact values gives another one."""
    from scipy import stats

    rng = np.random.default_rng(11)
    ref, cur = rng.normal(0, 1, 2000), rng.normal(0.05, 1, 3000)
    pd.DataFrame({"x": ref}).to_csv(tmp_path / "ref.csv", index=False)
    pd.DataFrame({"x": cur}).to_csv(tmp_path / "cur.csv", index=False)
    expected = stats.wasserstein_distance(ref, cur) / np.std(ref)

    def statistic(*extra: str) -> float:
        main(["drift", str(tmp_path / "ref.csv"), str(tmp_path / "cur.csv"), "--json", "--chunk-rows", "700",
              *extra])
        return float(json.loads(capsys.readouterr().out)["features"][0]["statistic"])

    assert statistic("--exact") == pytest.approx(expected, rel=1e-9)
    sampled = compare_file(load_reference(tmp_path / "ref.csv"), tmp_path / "cur.csv", Options(max_exact=500),
                           chunk_rows=700)
    assert sampled.features["x"].statistic != pytest.approx(expected, rel=1e-6)  # a sample of 500: not the same
    assert DEFAULT_MAX_EXACT > 3000 and statistic() == pytest.approx(expected, rel=1e-9)


def test_the_table_says_how_many_values_were_left_out_and_why(files: dict[str, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(9)
    age: list[object] = list(rng.normal(40, 10, 500))
    age[:3] = [None, "unknown", "?"]
    pd.DataFrame({"age": age, "plan": ["free"] * 500}).to_csv(tmp_path / "cur.csv", index=False)
    main(["drift", str(files["ref"]), str(tmp_path / "cur.csv")])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines if "left out" in line] == [
        ["age", "left", "out", "of", "n:", "1", "missing", "(None,", "NaN,", "inf),", "2", "wrong-typed"]]
    assert any(line.split()[:1] == ["age"] and line.split()[-2:] == ["497", "ok"] for line in lines)


@pytest.fixture(scope="module")
def small_table(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A few rows: floats, 30 distinct ints (numerical over the whole column, categorical in any 10 rows) and three
    repeated categories (categorical over the whole column, text in any 3 rows), as a CSV and a Parquet dataset."""
    tmp = tmp_path_factory.mktemp("small-table")
    frame = pd.DataFrame({"x": np.linspace(0.5, 30.5, 30), "n": np.arange(30),
                          "c": ["red", "green", "blue"] * 10})
    frame.to_csv(tmp / "small.csv", index=False)
    (tmp / "dataset").mkdir()
    frame.to_parquet(tmp / "dataset" / "part-0.parquet")
    return {"csv": tmp / "small.csv", "dataset": tmp / "dataset"}


@pytest.mark.parametrize("source", ["csv", "dataset"])
@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 29, 100_000])
def test_profile_build_kinds_do_not_depend_on_chunk_rows(small_table: dict[str, Path], tmp_path: Path, source: str,
                                                         chunk_rows: int,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # the kinds were decided on the first chunk alone: with --chunk-rows 1 or 3, 'c' (three categories) was skipped
    # as text, and with fewer than 11 rows a chunk of 'n' held at most 10 distinct ints, so it was categorical
    out = tmp_path / "p.json"
    assert main(["profile", "build", str(small_table[source]), "-o", str(out), "--chunk-rows", str(chunk_rows)]) == 0
    features = json.loads(out.read_text())["features"]
    kinds = {f["name"]: f["kind"] for f in features} if isinstance(features, list) else \
        {name: f["kind"] for name, f in features.items()}
    assert kinds == {"x": "numerical", "n": "numerical", "c": "categorical"}
    assert "skipped" not in capsys.readouterr().out


def test_reference_text_in_a_numerical_column_is_counted_and_shown_apart_from_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 'age' forced numerical while a third of it is text: the text was counted as missing, so the profile build
    # and the comparison said nothing of it
    rng = np.random.default_rng(11)
    age: list[object] = list(np.round(rng.normal(40, 10, 300), 2))
    age[::3] = ["unknown"] * 100
    age[1] = None
    pd.DataFrame({"age": age, "plan": ["free", "pro"] * 150}).to_csv(tmp_path / "ref.csv", index=False)
    pd.DataFrame({"age": rng.normal(40, 10, 200), "plan": ["free", "pro"] * 100}).to_csv(tmp_path / "cur.csv",
                                                                                       index=False)
    profile = tmp_path / "p.json"
    assert main(["profile", "build", str(tmp_path / "ref.csv"), "-o", str(profile), "--kind", "age=numerical"]) == 0
    assert "'age': 100 values are not numbers (text), left out and counted apart from the 1 missing" \
        in capsys.readouterr().out
    stored = json.loads(profile.read_text())["features"]["age"]
    assert (stored["count"], stored["missing"], stored["invalid"]) == (199, 1, 100)
    main(["drift", str(profile), str(tmp_path / "cur.csv")])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines if "reference" in line] == [
        ["age", "left", "out", "of", "the", "reference:", "100", "not", "numbers", "(text)"]]
    main(["drift", str(profile), str(tmp_path / "cur.csv"), "--json"])
    by_name = {f["feature"]: f for f in json.loads(capsys.readouterr().out)["features"]}
    assert (by_name["age"]["reference_invalid"], by_name["plan"]["reference_invalid"]) == (100, 0)


def _captured_report(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, object]]:
    """The frames ``aiwatch drift --report`` hands Evidently, in place of the report."""
    import aiwatch.drift.report

    seen: list[tuple[object, object]] = []

    def capture(reference: object, current: object, path: object, columns: object = None, **kinds: object) -> None:
        seen.append((reference, current))

    monkeypatch.setattr(aiwatch.drift.report, "evidently_html", capture)
    return seen


def test_the_report_reads_the_current_rows_of_since_and_until_as_the_comparison_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The comparison reads the rows in [--since, --until); the report read every row, so its verdict was on data the
    table left out (the first half shifted by 3: no drift in the window, drift in the report)."""
    pa, pq = require_module("pyarrow"), require_module("pyarrow.parquet")
    rng = np.random.default_rng(3)
    start = 1_768_608_000  # 2026-01-17T00:00:00Z
    pq.write_table(pa.table({"x": rng.normal(0, 1, 400)}), tmp_path / "ref.parquet")
    current = pa.table({"x": np.concatenate([rng.normal(3, 1, 400), rng.normal(0, 1, 400)]),
                        "timestamp": pa.array([start + 60 * i for i in range(800)], pa.float64())})
    pq.write_table(current, tmp_path / "cur.parquet")
    seen = _captured_report(monkeypatch)
    since = "2026-01-17T06:40:00Z"  # the 401st row's minute
    assert main(["drift", str(tmp_path / "ref.parquet"), str(tmp_path / "cur.parquet"), "--since", since,
                 "--report", str(tmp_path / "r.html")]) == 0, capsys.readouterr()
    [(reference, window)] = seen
    assert (len(reference), len(window)) == (400, 400)  # type: ignore[arg-type]
    assert abs(float(window["x"].mean())) < 0.5  # type: ignore[index]


def test_no_report_is_written_when_nothing_was_tested(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The table and "nothing was tested" say why, as without --report (the report failed first, with no column
    to report)."""
    pd.DataFrame({"a": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "ref.csv", index=False)
    pd.DataFrame({"b": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "cur.csv", index=False)
    seen = _captured_report(monkeypatch)
    assert main(["drift", str(tmp_path / "ref.csv"), str(tmp_path / "cur.csv"), "--report",
                 str(tmp_path / "r.html")]) == 2
    assert seen == []
    assert "error: nothing was tested: the current data has none of the reference's features" in \
        capsys.readouterr().err


def test_infinite_values_reach_evidently_as_missing(tmp_path: Path) -> None:
    """aiwatch's tests count an infinite value as missing; Evidently was handed it as it is."""
    from aiwatch.drift.report import _typed

    frame = pd.DataFrame({"x": [1.0, np.inf, -np.inf, np.nan, 2.0]})
    assert np.isnan(_typed(pd, frame, ["x"])["x"].to_numpy()).tolist() == [False, True, True, True, False]


@pytest.mark.parametrize("window", [[], ["--since", "2026-01-17T00:00Z"]], ids=["files", "dataset-reader"])
def test_the_reports_reads_use_chunk_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: list[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--chunk-rows was not passed to the report's reads: each source was read 100 000 rows at a time, whatever it
    said. Counted in batches: 95 reference rows and 61 current ones, 10 at a time."""
    import aiwatch.commands.drift as command

    pa, pq = require_module("pyarrow"), require_module("pyarrow.parquet")
    rng = np.random.default_rng(4)
    pq.write_table(pa.table({"x": rng.normal(0, 1, 95)}), tmp_path / "ref.parquet")
    start = 1_768_608_000  # 2026-01-17T00:00:00Z
    pq.write_table(pa.table({"x": rng.normal(0, 1, 61), "timestamp": pa.array([start + i for i in range(61)])}),
                   tmp_path / "cur.parquet")
    batches: list[list[int]] = []
    read = command._report_chunks

    def counted(*args: Any, **kwargs: Any) -> Any:
        batches.append([len(chunk["x"]) for chunk in read(*args, **kwargs)])
        return [{"x": [0.0] * n} for n in batches[-1]]

    monkeypatch.setattr(command, "_report_chunks", counted)
    seen = _captured_report(monkeypatch)
    assert main(["drift", str(tmp_path / "ref.parquet"), str(tmp_path / "cur.parquet"), "--chunk-rows", "10",
                 "--report", str(tmp_path / "r.html"), *window]) in (0, 1), capsys.readouterr()
    assert len(seen) == 1
    assert batches == [[10] * 9 + [5], [10] * 6 + [1]]


def test_json_says_why_nothing_was_tested(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # "nothing_tested": why_nothing_tested()'s text, null when something was tested
    rng = np.random.default_rng(8)
    for name, column in (("ref", "x"), ("cur", "x"), ("other", "y")):
        (tmp_path / f"{name}.csv").write_text(column + "\n" + "\n".join(map(str, rng.normal(size=300))) + "\n")
    assert main(["drift", str(tmp_path / "ref.csv"), str(tmp_path / "cur.csv"), "--json"]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["nothing_tested"] is None
    assert main(["drift", str(tmp_path / "ref.csv"), str(tmp_path / "other.csv"), "--json"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["nothing_tested"] == "the current data has none of the reference's features 'x' (its " \
        "columns: 'y')"
    assert err.endswith(json.loads(out)["nothing_tested"] + "\n")


def test_the_table_of_a_run_that_tested_nothing_gives_no_verdict(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The table's last line read "dataset: no drift (0/0 features drifted; rule: drifted share 0.00 < 0.5)" when
    nothing was tested (exit 2): a pass, on stdout, for a CI log or a reader that does not see stderr. It says
    nothing was tested, and why, as the error does (a few values each: too few to test, a verdict neither way)."""
    rng = np.random.default_rng(9)
    (tmp_path / "ref.csv").write_text("x\n" + "\n".join(map(str, rng.normal(size=300))) + "\n")
    (tmp_path / "other.csv").write_text("y\n1\n2\n")
    (tmp_path / "few.csv").write_text("x\n1\n2\n")
    for current in ("other.csv", "few.csv"):
        assert main(["drift", str(tmp_path / "ref.csv"), str(tmp_path / current)]) == 2
        out, err = capsys.readouterr()
        why = err.removeprefix("aiwatch drift: error: nothing was tested: ").rstrip("\n")
        assert why != err.rstrip("\n")
        assert out.splitlines()[-1] == f"dataset: nothing tested: {why}"
        assert "no drift" not in out


def test_the_table_shows_the_adjusted_p_value_its_verdict_compared_and_a_true_share_rule(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With a correction, the table showed the raw p-value only: 'f0 ks 0.0775 0.01635 0.05 800 ok' (0.016 under
    0.05, yet ok: its Bonferroni-adjusted 0.082 was compared). The dataset line read 'drifted share 0.00 >= 0.5'
    where no feature drifted: the rule with the share written in, a false inequality."""
    rng = np.random.default_rng(5)
    n = 800
    ref = pd.DataFrame({f"f{i}": rng.normal(size=n) for i in range(5)})
    cur = pd.DataFrame({f"f{i}": rng.normal(size=n) for i in range(5)})
    cur["f0"] = rng.normal(0.16, 1, n)
    ref.to_csv(tmp_path / "ref.csv", index=False)  # type: ignore[attr-defined]
    cur.to_csv(tmp_path / "cur.csv", index=False)  # type: ignore[attr-defined]
    assert main(["drift", str(tmp_path / "ref.csv"), str(tmp_path / "cur.csv"), "--correction", "bonferroni"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:7] == ["feature", "kind", "test", "statistic", "p-value", "adj.", "p"]
    f0 = lines[1].split()
    raw, adjusted, threshold = float(f0[4]), float(f0[5]), float(f0[6])
    assert raw <= threshold < adjusted and f0[-1] == "ok"  # the verdict is the adjusted p-value's
    assert adjusted == pytest.approx(min(1.0, 5 * raw), rel=1e-3)
    assert lines[-1] == ("dataset: no drift (0/5 features drifted; rule: drifted share 0.00 < 0.5, correction "
                         "bonferroni)")
    assert main(["drift", str(tmp_path / "ref.csv"), str(tmp_path / "cur.csv"), "--drift-share", "0.2"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "adj." not in out[0]  # no correction, no adjusted p-value
    assert out[-1] == "dataset: DRIFT (1/5 features drifted; rule: drifted share 0.20 >= 0.2)"
