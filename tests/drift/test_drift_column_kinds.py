"""One column, one kind, whatever holds it: a timezone-aware datetime column is ``datetime`` (left out of the tests,
as every datetime column is) in memory as it is read back from Parquet, and a column of bools and a few ints is
categorical. Both were ``unknown`` in memory: a tz-aware pandas column was read as Timestamp objects, Python
datetimes as objects, and bools among ints were "something else" among numbers."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
import pytest

from aiwatch.drift import ReferenceProfile, compare
from aiwatch.drift.features import CategoricalFeature
from tests.servers import require_module

pd = require_module("pandas")
pa = require_module("pyarrow")
pq = require_module("pyarrow.parquet")

ROWS = 60
UTC = dt.UTC
PARIS = dt.timezone(dt.timedelta(hours=1))
AWARE = [dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(hours=i) for i in range(ROWS)]
NUMBERS = [0.5 * i for i in range(ROWS)]


def _series(values: list[Any], dtype: Any = None) -> Any:
    return pd.Series(values, dtype=dtype)


def _parquet_file(tmp_path: Any, table: Any) -> ReferenceProfile:
    path = tmp_path / "x.parquet"
    pq.write_table(table, path)
    return ReferenceProfile.from_file(path)


def _parquet_dataset(tmp_path: Any, table: Any) -> ReferenceProfile:
    from aiwatch.drift.batch import profile_source

    (tmp_path / "data").mkdir()
    pq.write_table(table.slice(0, ROWS // 2), tmp_path / "data" / "part-0.parquet")
    pq.write_table(table.slice(ROWS // 2), tmp_path / "data" / "part-1.parquet")
    return profile_source(tmp_path / "data")


def _dask(frame: Any) -> ReferenceProfile:
    dd = require_module("dask.dataframe")
    from aiwatch.drift.on_dask import profile_dask

    return profile_dask(dd.from_pandas(frame, npartitions=2, sort=False))


#: How a column (a list of Python values) is handed over; each also holds the numerical column "n".
CONTAINERS: dict[str, Any] = {
    "list": lambda v, tmp: ReferenceProfile.build({"x": v, "n": NUMBERS}),
    "rows": lambda v, tmp: ReferenceProfile.build([{"x": a, "n": b} for a, b in zip(v, NUMBERS, strict=True)]),
    "numpy-object": lambda v, tmp: ReferenceProfile.build({"x": np.array(v, dtype=object), "n": np.array(NUMBERS)}),
    "series": lambda v, tmp: ReferenceProfile.build({"x": _series(v), "n": _series(NUMBERS)}),
    "dataframe": lambda v, tmp: ReferenceProfile.build(pd.DataFrame({"x": v, "n": NUMBERS})),
    "dask": lambda v, tmp: _dask(pd.DataFrame({"x": v, "n": NUMBERS})),
}
#: Containers with a typed column (pandas dtypes, Arrow types), for datetimes.
TYPED_CONTAINERS: dict[str, Any] = {
    "datetime64[ns, UTC]": lambda v, tmp: ReferenceProfile.build(pd.DataFrame({"x": _series(v), "n": NUMBERS})),
    "datetime64[us, +01:00]": lambda v, tmp: ReferenceProfile.build(
        {"x": pd.Series(pd.to_datetime(v, utc=True)).dt.tz_convert(PARIS).dt.as_unit("us"), "n": NUMBERS}),
    "pandas-array": lambda v, tmp: ReferenceProfile.build({"x": _series(v).array, "n": NUMBERS}),
    "timestamp[us, tz=UTC][pyarrow]": lambda v, tmp: ReferenceProfile.build(
        pd.DataFrame({"x": _series(v, pd.ArrowDtype(pa.timestamp("us", tz="UTC"))), "n": NUMBERS})),
    "arrow-array": lambda v, tmp: ReferenceProfile.build({"x": pa.array(v), "n": pa.array(NUMBERS)}),
    "arrow-table": lambda v, tmp: ReferenceProfile.build(pa.table({"x": pa.array(v), "n": NUMBERS})),
    "arrow-record-batch": lambda v, tmp: ReferenceProfile.build(
        pa.RecordBatch.from_arrays([pa.array(v), pa.array(NUMBERS)], names=["x", "n"])),
    "parquet-file": lambda v, tmp: _parquet_file(tmp, pa.table({"x": pa.array(v), "n": NUMBERS})),
    "parquet-dataset": lambda v, tmp: _parquet_dataset(tmp, pa.table({"x": pa.array(v), "n": NUMBERS})),
}
DATETIME_CONTAINERS = [pytest.param(make, id=name) for name, make in {**CONTAINERS, **TYPED_CONTAINERS}.items()]

DATETIMES = {
    "aware-utc": AWARE,
    "aware-utc-missing": [*AWARE[:-1], None],
    "aware-paris": [d.astimezone(PARIS) for d in AWARE],
    "naive": [d.replace(tzinfo=None) for d in AWARE],
}


@pytest.mark.parametrize("make", DATETIME_CONTAINERS)
@pytest.mark.parametrize("values", [pytest.param(v, id=k) for k, v in DATETIMES.items()])
def test_a_datetime_column_is_datetime_in_every_container(tmp_path: Any, values: list[Any], make: Any) -> None:
    profile = make(values, tmp_path)
    assert profile.skipped == {"x": "datetime"}
    assert list(profile.features) == ["n"]


def test_a_datetime_column_is_left_out_of_the_report_by_name() -> None:
    """A datetime column is not tested (by design, as before): the profile lists it as datetime and the report names
    it among the columns the reference does not have, whatever holds it."""
    profile = ReferenceProfile.build(pd.DataFrame({"x": AWARE, "n": NUMBERS}))
    assert profile.skipped == {"x": "datetime"}
    for current in ({"x": AWARE, "n": NUMBERS}, pa.table({"x": pa.array(AWARE), "n": NUMBERS})):
        report = compare(profile, current)
        assert list(report.features) == ["n"]
        assert report.unknown_features == ["x"]


def test_profile_build_names_a_datetime_column_without_an_override_that_would_be_refused(
        tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from aiwatch.cli import main

    pq.write_table(pa.table({"x": pa.array(AWARE), "n": NUMBERS}), tmp_path / "ref.parquet")
    assert main(["profile", "build", str(tmp_path / "ref.parquet"), "-o", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "skipped 'x': inferred datetime (datetime columns are not tested)" in out
    assert main(["profile", "build", str(tmp_path / "ref.parquet"), "-o", str(tmp_path / "q.json"),
                 "--kind", "x=categorical"]) == 2  # what the old line suggested


BOOLS_AND_INTS = [True, 0, 1, False, None] * (ROWS // 5)


@pytest.mark.parametrize("make", [pytest.param(make, id=name) for name, make in CONTAINERS.items()])
def test_bools_and_a_few_ints_are_categorical_in_every_container(tmp_path: Any, make: Any) -> None:
    feat = make(BOOLS_AND_INTS, tmp_path).features["x"]
    assert isinstance(feat, CategoricalFeature)
    # each value its own category: True and 1 apart, as False and 0 are
    assert (feat.kind, dict(zip(feat.categories, feat.counts, strict=True)), feat.missing) == (
        "categorical", {"True": 12, "0": 12, "1": 12, "False": 12}, 12)


def test_bools_and_a_few_ints_are_tested_against_themselves() -> None:
    profile = ReferenceProfile.build({"x": BOOLS_AND_INTS, "n": NUMBERS})
    report = compare(profile, {"x": BOOLS_AND_INTS[::-1], "n": NUMBERS}).features["x"]
    assert (report.kind, report.current_count, report.missing, report.invalid, report.drifted) == (
        "categorical", 48, 12, 0, False)


def test_a_numpy_array_of_bools_and_ints_is_categorical_as_a_list_is() -> None:
    """numpy makes the bools of such a list ints: the same kind (the categories are the ints)."""
    feat = ReferenceProfile.build({"x": np.array([True, 0, 1, False] * 15)}).features["x"]
    assert feat.kind == "categorical"


INTS_AND_A_NONE = [1, 2, 3] * (ROWS // 3 - 1) + [1, 2, None]
#: Containers that keep ints with a missing value ints (a pandas column from the list makes them floats: NaN).
INTS_AND_A_NONE_CONTAINERS: dict[str, Any] = {
    "list": CONTAINERS["list"],
    "rows": CONTAINERS["rows"],
    "rows-key-left-out": lambda v, tmp: ReferenceProfile.build(
        [{"n": b} if a is None else {"x": a, "n": b} for a, b in zip(v, NUMBERS, strict=True)]),
    "numpy-object": CONTAINERS["numpy-object"],
    "Int64-series": lambda v, tmp: ReferenceProfile.build({"x": _series(v, "Int64"), "n": NUMBERS}),
    "arrow-array": TYPED_CONTAINERS["arrow-array"],
    "parquet-file": TYPED_CONTAINERS["parquet-file"],
}


@pytest.mark.parametrize("make", [pytest.param(make, id=name) for name, make in INTS_AND_A_NONE_CONTAINERS.items()])
def test_a_few_ints_with_a_none_are_categorical_in_every_container(tmp_path: Any, make: Any) -> None:
    """A list with a None among a few ints was made floats (as pandas makes it), so numerical, where the same
    column as a nullable Int64 Series, an Arrow array or a Parquet file is categorical."""
    feat = make(INTS_AND_A_NONE, tmp_path).features["x"]
    assert isinstance(feat, CategoricalFeature)
    assert (feat.kind, dict(zip(feat.categories, feat.counts, strict=True)), feat.count, feat.missing) == (
        "categorical", {"1": 20, "2": 20, "3": 19}, 59, 1)


INTS_PAST_INT64_AND_A_NONE = [2**63, 1, 2] * (ROWS // 3 - 1) + [2**63, 1, None]


@pytest.mark.parametrize("make", [pytest.param(make, id=name) for name, make in {
    **{name: INTS_AND_A_NONE_CONTAINERS[name] for name in ("list", "rows", "rows-key-left-out", "numpy-object")},
    "UInt64-series": lambda v, tmp: ReferenceProfile.build({"x": _series(v, "UInt64"), "n": NUMBERS}),
    "object-dataframe": lambda v, tmp: ReferenceProfile.build(pd.DataFrame({"x": _series(v, object),
                                                                            "n": NUMBERS}))}.items()])
def test_ints_past_int64_with_a_none_are_typed_by_their_ints_in_every_container(tmp_path: Any, make: Any) -> None:
    """A list of them overflowed int64 and was made floats, numerical (2**63 read as 9.223372036854776e18), where
    the same values in an object array, a pandas object column or a UInt64 column are categorical."""
    feat = make(INTS_PAST_INT64_AND_A_NONE, tmp_path).features["x"]
    assert isinstance(feat, CategoricalFeature)
    assert (dict(zip(feat.categories, feat.counts, strict=True)), feat.count, feat.missing) == (
        {"1": 20, "2": 19, str(2**63): 20}, 59, 1)


@pytest.mark.parametrize(("values", "why", "overridable"), [
    pytest.param([True, 0.5, 1.5, False] * 15, "(bool, float: True, 0.5, 1.5)", True, id="bools-and-floats"),
    pytest.param([True, False, True, 5, 7] + list(range(20, 40)) + [True] * 35, "(bool, int: True, False, 5)", True,
                 id="bools-and-many-ints"),
    pytest.param([None] * ROWS, "every value is missing", False, id="all-missing"),
    pytest.param([[1, 2]] * ROWS, "(list: [1, 2])", False, id="lists"),
    # the ints are categories, the lists none (counted missing, as bytes are): following the override raised
    # TypeError (unhashable) from inside the builder's Counter
    pytest.param([1, [1, 2]] * (ROWS // 2), "(int, list: 1, [1, 2])", True, id="ints-and-lists")])
def test_a_column_that_stays_unknown_is_named_in_a_warning(values: list[Any], why: str, overridable: bool,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="aiwatch.drift"):
        profile = ReferenceProfile.build({"x": values, "n": NUMBERS})
    assert profile.skipped == {"x": "unknown"}
    assert "column 'x' left out of the profile" in caplog.text and why in caplog.text
    # the override only where it would be taken: lists are no categories, and no value is no kind
    assert ("give it a kind: kinds={'x': 'categorical'} (CLI: --kind x=categorical)" in caplog.text) == overridable
    assert len(caplog.records) == 1
    if overridable:  # and the override named is taken
        feat = ReferenceProfile.build({"x": values, "n": NUMBERS}, kinds={"x": "categorical"}).features["x"]
        assert feat.kind == "categorical" and feat.count > 0


def test_ints_and_lists_given_categorical_count_the_lists_as_no_category() -> None:
    values = [1, [1, 2], 2, {"a": 1}] * (ROWS // 4)
    feat = ReferenceProfile.build({"x": values, "n": NUMBERS}, kinds={"x": "categorical"}).features["x"]
    assert isinstance(feat, CategoricalFeature)
    assert (dict(zip(feat.categories, feat.counts, strict=True)), feat.count, feat.missing) == (
        {"1": 15, "2": 15}, 30, 30)
    report = compare(ReferenceProfile.build({"x": [1, 2] * (ROWS // 2), "n": NUMBERS}), {"x": values, "n": NUMBERS})
    assert (report.features["x"].current_count, report.features["x"].invalid) == (30, 30)


def test_strings_with_a_list_among_them_are_typed_without_a_raw_error() -> None:
    """The string rule counted the distinct values with a Counter: a list among them raised TypeError."""
    profile = ReferenceProfile.build({"x": ["a", [1], "b"] * (ROWS // 3), "n": NUMBERS})
    feat = profile.features["x"]
    assert isinstance(feat, CategoricalFeature)
    assert (dict(zip(feat.categories, feat.counts, strict=True)), feat.missing) == ({"a": 20, "b": 20}, 20)


#: Datetimes handed over where numbers or categories are expected: a naive pandas column (numpy datetime64[ns],
#: which numpy's tolist() and astype(object) make nanosecond ints), a tz-aware one (now read as datetime64[ns] too)
#: and Python datetimes.
WRONG_DATETIMES = {
    "datetime64[ns]": lambda: pd.Series(AWARE).dt.tz_localize(None),
    "datetime64[ns, UTC]": lambda: pd.Series(AWARE),
    "python-datetimes": lambda: list(AWARE),
}


@pytest.mark.parametrize("make", [pytest.param(make, id=name) for name, make in WRONG_DATETIMES.items()])
def test_datetimes_where_a_feature_holds_numbers_or_categories_are_wrong_typed(make: Any) -> None:
    """A datetime is neither a number nor a category, on every path: a datetime64[ns] column was read as its
    nanoseconds, valid numbers and categories such as '1767225600000000000'."""
    from prometheus_client import CollectorRegistry

    from aiwatch.drift import DriftMonitor

    profile = ReferenceProfile.build({"n": NUMBERS, "c": ["a", "b"] * (ROWS // 2)})
    current = pd.DataFrame({"n": make(), "c": make()})
    for feat in compare(profile, current).features.values():
        assert (feat.feature, feat.current_count, feat.missing, feat.invalid) == (feat.feature, 0, 0, ROWS)
    registry = CollectorRegistry()
    monitor = DriftMonitor(profile, model="m", registry=registry, min_samples=1)
    monitor.observe_batch(current)
    for name in ("n", "c"):
        assert registry.get_sample_value("aiwatch_feature_invalid_total",
                                         {"model": "m", "feature": name, "reason": "wrong_type"}) == ROWS


def test_a_categorical_kind_for_a_datetime64_ns_column_is_refused() -> None:
    """A DataFrame's datetime64[ns] column was taken for nanosecond ints, categories."""
    from aiwatch.drift.errors import ProfileError

    with pytest.raises(ProfileError, match="column 'x' cannot be categorical: none of its values is a category"):
        ReferenceProfile.build(pd.DataFrame({"x": pd.Series(AWARE).dt.tz_localize(None), "n": NUMBERS}),
                               kinds={"x": "categorical"})


class _HashRaises:
    """A value whose hash raises something other than TypeError."""

    def __hash__(self) -> int:
        raise RuntimeError("hash boom")


def test_a_value_whose_hash_raises_is_counted_wrong_typed_in_a_batch() -> None:
    """codes() caught only TypeError: the value's RuntimeError dropped the whole batch (an instrumentation error)."""
    from prometheus_client import CollectorRegistry

    from aiwatch.drift import DriftMonitor

    profile = ReferenceProfile.build({"c": ["a", "b"] * (ROWS // 2), "n": NUMBERS})
    registry = CollectorRegistry()
    monitor = DriftMonitor(profile, model="m", registry=registry, min_samples=1)
    monitor.observe_batch({"c": ["a", _HashRaises(), "b", None], "n": [1.0, 2.0, 3.0, 4.0]})
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "drift"}) == 0
    window = monitor.evaluate().features["c"]
    assert (window.current_count, window.missing, window.invalid) == (2, 1, 1)
    assert compare(profile, {"c": ["a", _HashRaises(), "b", None], "n": NUMBERS[:4]}).features["c"].invalid == 1


def test_a_numpy_bytes_column_is_not_offered_or_taken_as_categorical(caplog: pytest.LogCaptureFixture) -> None:
    """Bytes have no category: a numpy bytes column (dtype "S") was said to fit one, so the warning offered the
    override, which built a feature with every value missing (a list of the same bytes was refused)."""
    from aiwatch.drift.errors import ProfileError

    column = np.array([b"a", b"b"] * (ROWS // 2))
    with caplog.at_level(logging.WARNING, logger="aiwatch.drift"):
        assert ReferenceProfile.build({"x": column, "n": NUMBERS}).skipped == {"x": "unknown"}
    assert "(bytes: b'a', b'b')" in caplog.text and "give it a kind" not in caplog.text
    for given in (column, list(column)):
        with pytest.raises(ProfileError, match="column 'x' cannot be categorical: none of its values is a category"):
            ReferenceProfile.build({"x": given, "n": NUMBERS}, kinds={"x": "categorical"})


DURATIONS = pd.Series(pd.to_timedelta([1, 2, 3] * (ROWS // 3), unit="s"))
#: A duration column handed over every way: numpy's np.timedelta64 is a numpy integer, so the scalar paths read
#: one as its nanoseconds (a valid number, a category such as '1000000000') where a numpy column was wrong-typed.
DURATION_CURRENTS = {
    "dataframe": lambda: pd.DataFrame({"n": DURATIONS, "c": DURATIONS}),
    "dict-of-series": lambda: {"n": DURATIONS, "c": DURATIONS},
    "dict-of-numpy": lambda: {"n": DURATIONS.to_numpy(), "c": DURATIONS.to_numpy()},
    "dict-of-numpy-scalars": lambda: {"n": list(DURATIONS.to_numpy()), "c": list(DURATIONS.to_numpy())},
    "dict-of-timedeltas": lambda: {"n": DURATIONS.tolist(), "c": DURATIONS.tolist()},
}


@pytest.mark.parametrize("make", [pytest.param(make, id=name) for name, make in DURATION_CURRENTS.items()])
def test_durations_are_wrong_typed_on_every_path(make: Any) -> None:
    from prometheus_client import CollectorRegistry

    from aiwatch.drift import DriftMonitor

    profile = ReferenceProfile.build({"n": NUMBERS, "c": [1, 2, 3] * (ROWS // 3)})
    assert profile.features["c"].kind == "categorical"
    current = make()
    for feat in compare(profile, current).features.values():
        assert (feat.feature, feat.current_count, feat.missing, feat.invalid) == (feat.feature, 0, 0, ROWS)
    registry = CollectorRegistry()
    monitor = DriftMonitor(profile, model="m", registry=registry, min_samples=1)
    monitor.observe_batch(current)
    columns = {k: list(v) for k, v in current.items()}
    for i in range(ROWS):  # row by row: each value as the container holds it
        monitor.observe({k: v[i] for k, v in columns.items()})
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "drift"}) == 0
    for name in ("n", "c"):
        assert registry.get_sample_value("aiwatch_feature_invalid_total",
                                         {"model": "m", "feature": name, "reason": "wrong_type"}) == 2 * ROWS


def test_a_list_of_numpy_durations_is_no_ints() -> None:
    """A list of np.timedelta64 was made int64 (nanoseconds), so categorical; a numpy array of them is unknown."""
    from aiwatch.drift.errors import ProfileError

    for column in (DURATIONS.to_numpy(), list(DURATIONS.to_numpy())):
        assert ReferenceProfile.build({"x": column, "n": NUMBERS}).skipped == {"x": "unknown"}
        with pytest.raises(ProfileError, match="column 'x' cannot be categorical"):
            ReferenceProfile.build({"x": column, "n": NUMBERS}, kinds={"x": "categorical"})


class _EqRaises:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq boom")

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "EqRaises()"


class _StrRaises:
    def __str__(self) -> str:
        raise RuntimeError("str boom")

    def __repr__(self) -> str:
        raise RuntimeError("repr boom")


class _BoolRaises:
    def __eq__(self, other: object) -> Any:
        return self

    def __bool__(self) -> bool:
        raise RuntimeError("bool boom")

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "BoolRaises()"


@pytest.mark.parametrize(("make", "shown"), [
    pytest.param(_EqRaises, "(they are _EqRaises: EqRaises(), EqRaises(), EqRaises())", id="__eq__"),
    pytest.param(_StrRaises, "(they are _StrRaises: <_StrRaises>, <_StrRaises>, <_StrRaises>)", id="__str__"),
    pytest.param(_BoolRaises, "(they are _BoolRaises: BoolRaises(), BoolRaises(), BoolRaises())", id="__bool__")])
@pytest.mark.parametrize("kind", ["categorical", "numerical"])
def test_a_kind_given_for_values_whose_methods_raise_is_refused_clearly(make: Any, shown: str, kind: str) -> None:
    """The values are told apart and shown for the refusal without their own ==, bool() or str(): the user's
    RuntimeError was raised from inside the builder."""
    from aiwatch.drift.errors import ProfileError

    values = [make() for _ in range(ROWS)]
    with pytest.raises(ProfileError, match=f"column 'x' cannot be {kind}: none of its values") as caught:
        ReferenceProfile.build({"x": values, "n": NUMBERS}, kinds={"x": kind})
    assert shown in str(caught.value)


NUMPY_NUMBERS_CONTAINERS: dict[str, Any] = {
    "list": CONTAINERS["list"],
    "rows": CONTAINERS["rows"],
    "numpy-object": CONTAINERS["numpy-object"],
    "object-series": lambda v, tmp: ReferenceProfile.build({"x": _series(v, object), "n": NUMBERS}),
    "object-dataframe": lambda v, tmp: ReferenceProfile.build(pd.DataFrame({"x": _series(v, object), "n": NUMBERS})),
}


@pytest.mark.parametrize("make", [pytest.param(make, id=name) for name, make in NUMPY_NUMBERS_CONTAINERS.items()])
@pytest.mark.parametrize(("values", "kind"), [
    pytest.param([np.int64(i % 3) for i in range(ROWS - 1)] + [None], "categorical", id="int64"),
    pytest.param([np.uint64(2**64 - 1), np.uint64(1)] * (ROWS // 2 - 1) + [np.uint64(1), None], "categorical",
                 id="uint64"),
    pytest.param([np.float64(i + 0.5) for i in range(ROWS - 1)] + [None], "numerical", id="float64"),
    pytest.param([np.float32(i + 0.5) for i in range(ROWS - 1)] + [None], "numerical", id="float32"),
    pytest.param([np.int8(i % 3) for i in range(ROWS - 10)] + ["x"] * 9 + [None], "categorical", id="int8-and-text")])
def test_numpy_numbers_with_a_none_are_typed_as_python_numbers_in_every_container(
        tmp_path: Any, make: Any, values: list[Any], kind: str) -> None:
    """numpy ints and floats held as objects with a None (a gap) were no numbers to the rule for numbers among
    other values, so the column was left out as unknown where the same values in a list were typed."""
    feat = make(values, tmp_path).features["x"]
    python = ReferenceProfile.build({"x": [v.item() if isinstance(v, np.generic) else v for v in values],
                                     "n": NUMBERS}).features["x"]
    assert (feat.kind, feat.count, feat.missing) == (kind, ROWS - 1, 1)
    if isinstance(feat, CategoricalFeature):
        assert isinstance(python, CategoricalFeature)
        assert (feat.categories, feat.counts) == (python.categories, python.counts)
    else:
        assert (feat.mean, feat.std) == (python.mean, python.std)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["numerical", "categorical"])
def test_a_numpy_dtype_series_in_a_mapping_is_read_as_a_dataframes_column(kind: str,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A duration Series in a dict was read as pd.Timedelta objects, a DataFrame's same column as numpy durations:
    the refusal and the warning named other values ("Timedelta: 0 days 00:00:01" for "timedelta64: ...")."""
    from aiwatch.drift.errors import ProfileError

    durations = _series(list(pd.to_timedelta(np.arange(ROWS) % 3, unit="s")))
    assert durations.dtype.kind == "m"  # numpy durations (pandas 2 in ns, pandas 3 in us)
    messages = []
    for data in (pd.DataFrame({"x": durations, "n": NUMBERS}), {"x": durations, "n": NUMBERS}):
        with pytest.raises(ProfileError) as refused:
            ReferenceProfile.build(data, kinds={"x": kind})
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="aiwatch.drift"):
            assert ReferenceProfile.build(data).skipped == {"x": "unknown"}
        messages.append((str(refused.value), caplog.text))
    assert messages[0] == messages[1]
    assert "(they are timedelta64: " in messages[1][0]
