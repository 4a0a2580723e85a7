"""aiwatch.drift.report.evidently_html: without ``kinds=`` the columns are typed as aiwatch's profile types them
(Evidently typed pandas' ``Int64`` unknown, left every column out and divided by zero), and the report runs without
changing the process's warning filters (``warnings.catch_warnings`` is not thread-safe: another thread's warnings
could be lost while a report ran), yet without pandas' downcasting FutureWarning or scipy's divide-by-zero."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.servers import require_module

pd = require_module("pandas")
pytestmark = pytest.mark.slow  # Evidently's report: seconds each


def frames() -> tuple[Any, Any]:
    """Int64 columns with missing values (a few codes: categorical; many counts: numerical), an object column of
    ints and None (categorical), and a category the reference never had in each categorical column."""
    rng = np.random.default_rng(21)

    def frame(shift: int, rows: int) -> Any:
        few = pd.array(rng.integers(0, 4 + shift, rows), dtype="Int64")
        many = pd.array(rng.integers(0, 1000, rows) + 100 * shift, dtype="Int64")
        few[::7], many[::9] = pd.NA, pd.NA
        codes = pd.Series([*rng.integers(0, 3 + shift, rows - 1).tolist(), None], dtype=object)
        return pd.DataFrame({"few_codes": few, "many_counts": many, "object_codes": codes})

    return frame(0, 300), frame(2, 200)


def test_int64_columns_are_reported_without_kinds(tmp_path: Path) -> None:
    require_module("evidently")
    from aiwatch.drift.report import evidently_html, profile_kinds

    reference, current = frames()
    assert profile_kinds(reference) == {"few_codes": "categorical", "many_counts": "numerical",
                                        "object_codes": "categorical"}
    evidently_html(reference, current, tmp_path / "r.html")  # ZeroDivisionError inside Evidently
    text = (tmp_path / "r.html").read_text()
    assert "Drifted Columns" in text and all(name in text for name in reference.columns)


@pytest.mark.parametrize("columns, left_out", [
    ({"x": [None] * 40}, "'x' unknown"),
    ({"x": pd.array([pd.NA] * 40, dtype="Int64")}, "'x' unknown"),
    ({"x": [f"word {i}" for i in range(40)]}, "'x' text"),
    ({"x": pd.date_range("2026-01-01", periods=40)}, "'x' datetime"),
], ids=["none", "int64-na", "text", "datetime"])
def test_no_reportable_column_is_a_clear_error_without_kinds(tmp_path: Path, columns: dict[str, Any],
                                                             left_out: str) -> None:
    require_module("evidently")
    from aiwatch.drift.report import evidently_html

    frame = pd.DataFrame(columns)
    with pytest.raises(ValueError, match="no numerical or categorical column to report") as raised:
        evidently_html(frame, frame, tmp_path / "r.html")
    assert left_out in str(raised.value)
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("kinds", [None, {"x": "numerical"}], ids=["inferred", "given"])
def test_a_frame_of_no_rows_is_named(tmp_path: Path, kinds: dict[str, str] | None) -> None:
    require_module("evidently")
    from aiwatch.drift.report import evidently_html

    rows, empty = pd.DataFrame({"x": np.arange(40.0)}), pd.DataFrame({"x": pd.array([], dtype="Int64")})
    with pytest.raises(ValueError, match=r"^the reference has no rows to report$"):
        evidently_html(empty, rows, tmp_path / "r.html", kinds=kinds)
    with pytest.raises(ValueError, match=r"^the current data has no rows to report$"):
        evidently_html(rows, empty, tmp_path / "r.html", kinds=kinds)


@pytest.mark.parametrize("kinds", [None, {"few_codes": "categorical", "many_counts": "numerical",
                                          "object_codes": "categorical"}], ids=["inferred", "given"])
def test_the_report_leaves_the_warning_filters_alone_and_warns_of_nothing_it_silenced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kinds: dict[str, str] | None) -> None:
    evidently = require_module("evidently")
    from aiwatch.drift.report import evidently_html

    run = evidently.Report.run
    seen: list[tuple[bool, bool]] = []
    before: list[Any] = []

    def spied(self: Any, *args: Any, **kwargs: Any) -> Any:
        # catch_warnings() swaps warnings.filters for a copy, process-wide, until it exits
        seen.append((warnings.filters is before[0], threading.current_thread() is threading.main_thread()))
        return run(self, *args, **kwargs)

    monkeypatch.setattr(evidently.Report, "run", spied)
    reference, current = frames()
    with warnings.catch_warnings(record=True) as caught:  # the test's own, around the call
        warnings.simplefilter("always")
        before.append(warnings.filters)
        evidently_html(reference, current, tmp_path / "r.html", kinds=kinds)
    assert seen == [(True, True)]
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "Downcasting" in m or "divide by zero" in m], messages


def test_int_column_names_are_reported(tmp_path: Path) -> None:
    # profile_kinds keys by str(name) and the lookup used the raw name: "no ... column to report ('0' not in the
    # current data)" for a frame of int names (DataFrame(ndarray))
    require_module("evidently")
    from aiwatch.drift.report import evidently_html

    rng = np.random.default_rng(22)
    evidently_html(pd.DataFrame(rng.normal(size=(100, 2))), pd.DataFrame(rng.normal(size=(100, 2))),
                   tmp_path / "r.html")
    assert "Drifted Columns" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("current, kinds, reason", [
    ({"y": np.arange(40.0)}, None, "'x' not in the current data"),
    ({"y": np.arange(40.0)}, {"x": "numerical"}, "'x' not in the current data"),
    ({"x": np.arange(40.0)}, {}, "'x' no kind given"),
], ids=["absent-inferred", "absent-given", "no-kind"])
def test_each_left_out_column_is_given_its_own_reason(tmp_path: Path, current: dict[str, Any],
                                                      kinds: dict[str, str] | None, reason: str) -> None:
    # it said "'x' numerical" for a numerical column absent from current, "'x' not in the current data" for one
    # absent from kinds={}
    require_module("evidently")
    from aiwatch.drift.report import evidently_html

    with pytest.raises(ValueError, match="no numerical or categorical column to report") as raised:
        evidently_html(pd.DataFrame({"x": np.arange(40.0)}), pd.DataFrame(current), tmp_path / "r.html", kinds=kinds)
    assert str(raised.value).endswith(f"({reason})")


@pytest.mark.parametrize("kinds", [None, {"0": "numerical"}], ids=["inferred", "given"])
def test_two_names_that_are_one_as_text_are_refused_by_name(tmp_path: Path, kinds: dict[str, str] | None) -> None:
    # renamed to text, 0 and "0" were one name twice: pandas' "Length of values (4) does not match length of index"
    require_module("evidently")
    from aiwatch.drift.report import evidently_html

    frame = pd.DataFrame({0: np.arange(40.0)})
    frame["0"] = np.arange(40.0)
    with pytest.raises(ValueError, match=r"columns 0 and '0' are both named '0' \(names are read as text\)"):
        evidently_html(frame, frame, tmp_path / "r.html", kinds=kinds)
    assert not (tmp_path / "r.html").exists()


def test_a_column_name_given_twice_is_refused_by_name(tmp_path: Path) -> None:
    require_module("evidently")
    from aiwatch.drift.report import evidently_html

    frame = pd.DataFrame(np.zeros((40, 2)), columns=["x", "x"])
    with pytest.raises(ValueError, match=r"column 'x' is given twice"):
        evidently_html(frame, frame, tmp_path / "r.html")


def handed_over(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The frames evidently_html hands Evidently (current, then reference), recorded as it builds its datasets."""
    evidently = require_module("evidently")
    build = evidently.Dataset.from_pandas
    frames: list[Any] = []

    def spied(frame: Any, *args: Any, **kwargs: Any) -> Any:
        frames.append(frame.copy())
        return build(frame, *args, **kwargs)

    monkeypatch.setattr(evidently.Dataset, "from_pandas", spied)
    return frames


@pytest.mark.parametrize("kinds", [None, {"code": "categorical"}], ids=["inferred", "given"])
def test_a_categorical_column_of_ints_and_text_is_reported_as_its_categories(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kinds: dict[str, str] | None) -> None:
    # ints with a text value among them (a CSV column 1, 1, unknown): Evidently's Z-test of a column of two
    # categories sorted them and raised "TypeError: '<' not supported between instances of 'str' and 'int'". The
    # profile reads a categorical value as its text (category_key: 1 and 1.0 are "1", True "True"), and so is
    # each value now handed to Evidently, in both frames
    require_module("evidently")
    from aiwatch.drift.report import evidently_html, profile_kinds

    reference = pd.DataFrame({"code": pd.Series([1, 1, "unknown"] * 40, dtype=object)})
    current = pd.DataFrame({"code": pd.Series([1.0, "unknown", None, True] * 30, dtype=object)})
    assert profile_kinds(reference) == {"code": "categorical"}
    frames = handed_over(monkeypatch)
    evidently_html(reference, current, tmp_path / "r.html", kinds=kinds)
    assert "Drifted Columns" in (tmp_path / "r.html").read_text()
    cur, ref = (frame["code"].tolist() for frame in frames)
    assert ref == ["1", "1", "unknown"] * 40 and cur == ["1", "unknown", None, "True"] * 30


BIG = 2**53  # past it, float64 holds only every other int: BIG + 1 is read as BIG, BIG + 3 as BIG + 4


def test_ints_past_2_53_in_a_categorical_column_are_reported_as_their_exact_categories(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the current frame's ints (with a missing value: an object column, or pandas' Int64) were handed over as
    # float64, the reference's (none missing) as int64: BIG + 1 became BIG, one category with it, and BIG + 3 and
    # -BIG - 3 became BIG + 4 and -BIG - 4, categories the reference never had. The profile's categories are the
    # ints' exact digits
    require_module("evidently")
    from aiwatch.drift.profile import ReferenceProfile
    from aiwatch.drift.report import evidently_html

    codes = [BIG - 1, BIG, BIG + 1, BIG + 3, -BIG - 3]
    reference = pd.DataFrame({"code": np.array(codes * 30, dtype=np.int64)})
    categories = ReferenceProfile.build(reference).features["code"].categories  # type: ignore[union-attr]
    assert sorted(categories) == sorted(map(str, codes))
    for current in (pd.Series([*codes * 20, None], dtype=object), pd.Series([*codes * 20, None], dtype="Int64")):
        frames = handed_over(monkeypatch)
        evidently_html(reference, pd.DataFrame({"code": current}), tmp_path / "r.html")
        cur, ref = (frame["code"].tolist() for frame in frames)
        assert pd.Series(cur).dropna().nunique() == len(codes)  # BIG and BIG + 1 were one float
        assert ref == list(map(str, codes)) * 30 and cur == [*map(str, codes * 20), None]


def test_ints_past_2_53_in_a_numerical_column_are_reported_as_the_floats_the_profile_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the profile's numerical statistics read every value as a float64 (to nearest, ties to even), whatever held
    # it; Evidently is handed those floats in both frames, whichever type held the ints
    require_module("evidently")
    from aiwatch.drift.profile import ReferenceProfile
    from aiwatch.drift.report import evidently_html

    ints = [BIG + 2 * i + 1 for i in range(40)]
    reference = pd.DataFrame({"n": np.array(ints, dtype=np.int64)})
    feature = ReferenceProfile.build(reference).features["n"]
    assert feature.kind == "numerical" and feature.max == float(ints[-1])  # type: ignore[union-attr]
    frames = handed_over(monkeypatch)
    evidently_html(reference, pd.DataFrame({"n": pd.Series([*ints, None], dtype=object)}), tmp_path / "r.html")
    cur, ref = frames
    assert ref["n"].dtype == cur["n"].dtype == np.float64
    assert ref["n"].tolist() == [float(i) for i in ints] and cur["n"].tolist()[:-1] == [float(i) for i in ints]


CATEGORY_TEXT_CASES = {
    "ints": np.array([3, -1, 3, 0, 2**53 + 1, 2**63 - 1, -(2**63)], dtype=np.int64),
    "many distinct ints": np.arange(-50, 50, dtype=np.int64),
    "uints": np.array([2**64 - 1, 3, 3, 2**53 + 1], dtype=np.uint64),
    "floats with NaN": np.array([1.0, np.nan, 0.5, 1.0, -0.0, 0.0, np.inf, -np.inf, np.nan, 2.0**60, 1e300, 0.1]),
    "all NaN": np.full(50, np.nan),
    "float32": np.array([0.1, np.nan, 3.0, -0.0, np.inf], dtype=np.float32),
    "float16": np.array([0.1, np.nan, 3.0, 65504.0], dtype=np.float16),
    "longdouble": np.array([1.0, np.nan, 2.5], dtype=np.longdouble),
    "bools": np.array([True, False, False, True]),
    "objects with NaN": np.array([np.nan, 1, 1.0, "x", None, float("nan"), True, np.float64("nan"), np.float32(2),
                                  [1], False, 0, -0.0, np.inf, 2**64], dtype=object),
    "empty floats": np.empty(0),
    # not native (a big-endian file's column): pd.factorize refuses such a buffer ("Big-endian buffer not supported")
    "big-endian ints": np.tile(np.array([3, -1, 0, 2**53 + 1], dtype=">i8"), 10),  # few distinct: factorized
    "big-endian floats": np.array([1.0, np.nan, 0.5, 1.0, np.inf], dtype=">f8"),
}


@pytest.mark.parametrize("case", CATEGORY_TEXT_CASES)
def test_category_texts_are_each_values_category(case: str) -> None:
    # the definition, one value at a time: None where missing (NaN, inf) or no category, else category_key's text
    from aiwatch.drift.columns import category_key, is_missing
    from aiwatch.drift.report import category_texts

    values = CATEGORY_TEXT_CASES[case]
    texts = category_texts(values)
    assert texts.dtype == object and len(texts) == len(values)
    assert texts.tolist() == [None if is_missing(v) else category_key(v) for v in values]
    if case == "floats with NaN":
        assert texts.tolist() == ["1", None, "0.5", "1", "0", "0", None, None, None, str(2**60), str(int(1e300)),
                                  "0.1"]


def test_category_texts_of_a_numpy_column_read_each_distinct_value_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # a float column went through the object loop, one dict look-up per value and is_missing for each NaN (each a
    # new key of the memo): 1.2 s per million NaN; now each distinct value's text is found once (pd.factorize)
    from aiwatch.drift import columns
    from aiwatch.drift.report import category_texts

    calls = []
    for name in ("category_key", "is_missing"):
        original = getattr(columns, name)
        monkeypatch.setattr(columns, name, lambda v, f=original: calls.append(v) or f(v))
    values = np.tile([np.nan, 1.5, 0.5], 1000)
    assert category_texts(values).tolist() == [None, "1.5", "0.5"] * 1000
    assert len(calls) <= 3


@pytest.mark.parametrize("empty", ["current categorical", "current numerical", "reference categorical",
                                   "both categorical"])
def test_a_column_with_no_value_in_a_frame_is_left_out_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   empty: str) -> None:
    # Evidently failed the whole report ("An empty column 'c' was provided for drift calculation in the current
    # dataset") where aiwatch's comparison reports that feature insufficient_data and tests the others
    require_module("evidently")
    from aiwatch.drift.report import evidently_html

    rng = np.random.default_rng(22)
    full = {"x": rng.normal(size=120), "c": rng.choice(["a", "b"], 120)}
    column = "x" if "numerical" in empty else "c"
    hollow = {**full, column: np.full(120, np.inf) if column == "x" else pd.Series([None, [1]] * 60, dtype=object)}
    reference, current = {"reference": (hollow, full), "current": (full, hollow), "both": (hollow, hollow)}[
        empty.split()[0]]
    frames = handed_over(monkeypatch)
    with caplog.at_level("WARNING", logger="aiwatch.drift"):
        evidently_html(reference, current, tmp_path / "r.html", kinds={"x": "numerical", "c": "categorical"})
    assert "Drifted Columns" in (tmp_path / "r.html").read_text()
    assert [list(frame.columns) for frame in frames] == [[n for n in ("x", "c") if n != column]] * 2
    # a column empty in both frames was named for one of them only (the reference)
    side = {"reference": "reference", "current": "current data", "both": "reference or the current data"}[
        empty.split()[0]]
    assert [r.getMessage() for r in caplog.records] == [
        f"aiwatch: the Evidently report leaves out {column!r} (no value in the {side}): every value missing or "
        "wrong-typed (aiwatch reports such a feature insufficient_data)"]
    with pytest.raises(ValueError, match=rf"^no column with values to report: {column!r} \(no value in the {side}\)"):
        evidently_html({column: reference[column]}, {column: current[column]}, tmp_path / "r2.html",
                       kinds={column: "numerical" if column == "x" else "categorical"})
