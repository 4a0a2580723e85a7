"""pandas' extension dtypes (nullable ``Int64`` / ``Float64`` / ``boolean`` / ``string``, ``category``, and the
Arrow-backed dtypes ``read_parquet(dtype_backend="pyarrow")`` gives) are typed as their numpy counterparts, with a
missing value counted missing: the same column gets the same kind, the same test and the same report with or
without a missing value and whatever its backend. ``to_numpy()`` made an integer column holding ``pd.NA`` floats,
so one missing value turned ints 1, 2, 3 from categorical into numerical."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aiwatch.drift import ReferenceProfile, compare
from aiwatch.drift.features import CategoricalFeature, Feature, NumericalFeature
from tests.drift.pandas_arrays import exact_array
from tests.servers import require_module

pd = require_module("pandas")
pa = require_module("pyarrow")

ROWS = 60
FEW_INTS = [1, 2, 3, 2, 1, 3] * (ROWS // 6)  # categorical: at most 10 distinct ints
MANY_INTS = list(range(ROWS))  # numerical
FLOATS = [0.25 * i for i in range(ROWS)]
WORDS = ["red", "green", "blue"] * (ROWS // 3)
BOOLS = [True, False, True] * (ROWS // 3)


def arrow(type_: Any) -> Any:
    return pd.ArrowDtype(type_)


#: id -> (values, the plain numpy dtype, the extension dtype, the kind both give)
CASES = {
    "Int64-few": (FEW_INTS, "int64", "Int64", "categorical"),
    "Int64-many": (MANY_INTS, "int64", "Int64", "numerical"),
    "UInt8-few": (FEW_INTS, "uint8", "UInt8", "categorical"),
    "Int32-many": (MANY_INTS, "int32", "Int32", "numerical"),
    "Float64": (FLOATS, "float64", "Float64", "numerical"),
    "Float64-integral": (FEW_INTS, "float64", "Float64", "numerical"),
    "boolean": (BOOLS, "bool", "boolean", "categorical"),
    "bool[pyarrow]": (BOOLS, "bool", "bool[pyarrow]", "categorical"),
    "string-python": (WORDS, "object", "string[python]", "categorical"),
    "string-pyarrow": (WORDS, "object", "string[pyarrow]", "categorical"),
    "category": (WORDS, "object", "category", "categorical"),
    "category-of-ints": (FEW_INTS, "int64", "category", "categorical"),
    "category-of-many-ints": (MANY_INTS, "int64", "category", "numerical"),
    "int64[pyarrow]-few": (FEW_INTS, "int64", "int64[pyarrow]", "categorical"),
    "int64[pyarrow]-many": (MANY_INTS, "int64", "int64[pyarrow]", "numerical"),
    "uint16-arrow-few": (FEW_INTS, "uint16", arrow(pa.uint16()), "categorical"),
    "double[pyarrow]": (FLOATS, "float64", "double[pyarrow]", "numerical"),
    "float32-arrow": (FLOATS, "float32", arrow(pa.float32()), "numerical"),
    "string-arrow": (WORDS, "object", arrow(pa.string()), "categorical"),
    "large-string-arrow": (WORDS, "object", arrow(pa.large_string()), "categorical"),
    "dictionary-arrow": (WORDS, "object", arrow(pa.dictionary(pa.int32(), pa.string())), "categorical"),
}
CASE_PARAMS = [pytest.param(*case, id=name) for name, case in CASES.items()]

#: How the column is handed over: a DataFrame, a dict of Series, a dict of pandas arrays, a dict of pyarrow arrays, a
#: pyarrow Table or RecordBatch.
CONTAINERS = {
    "dataframe": lambda column: pd.DataFrame({"x": column}),
    "dict-of-series": lambda column: {"x": column},
    "dict-of-arrays": lambda column: {"x": column.array},
    "dict-of-arrow-arrays": lambda column: {"x": pa.array(column)},  # a category column: a DictionaryArray
    "arrow-table": lambda column: pa.table({"x": pa.array(column)}),
    # pyarrow 14, the data extra's floor, takes no dict in pyarrow.record_batch
    "arrow-record-batch": lambda column: pa.RecordBatch.from_arrays([pa.array(column)], names=["x"]),
}
CONTAINER_PARAMS = [pytest.param(make, id=name) for name, make in CONTAINERS.items()]


def column(values: list[Any], dtype: Any, missing_at: int | None = None) -> Any:
    """``values`` as a Series of ``dtype``, the value at ``missing_at`` missing."""
    if missing_at is None:
        return pd.Series(values, dtype=dtype)
    series = pd.Series(values, dtype=dtype)
    series.iloc[missing_at] = None  # a category column keeps its categories (a None in the list made them floats)
    return series


def summary(feat: Feature) -> tuple[Any, ...]:
    """What a feature knows about its values, without the sample keys (which depend on the row numbers)."""
    if isinstance(feat, NumericalFeature):
        return feat.kind, feat.count, feat.cuts, feat.bin_counts, feat.distinct, feat.mean, feat.min, feat.max
    assert isinstance(feat, CategoricalFeature)
    return feat.kind, feat.count, feat.categories, feat.counts, feat.other_count


def report_of(profile: ReferenceProfile, data: Any) -> dict[str, Any]:
    """The feature's report, as ``--json`` gives it."""
    return compare(profile, data).features["x"].to_dict()


@pytest.mark.parametrize("make", CONTAINER_PARAMS)
@pytest.mark.parametrize(("values", "plain", "dtype", "kind"), CASE_PARAMS)
def test_a_missing_value_does_not_change_the_kind(values: list[Any], plain: str, dtype: Any, kind: str,
                                                  make: Any) -> None:
    without = ReferenceProfile.build(make(column(values, dtype))).features["x"]
    with_na = ReferenceProfile.build(make(column(values, dtype, missing_at=ROWS - 1))).features["x"]
    numpy_built = ReferenceProfile.build({"x": column(values, plain).to_numpy()}).features["x"]
    assert (numpy_built.kind, without.kind, with_na.kind) == (kind, kind, kind)
    assert (with_na.count, with_na.missing) == (ROWS - 1, 1)


@pytest.mark.parametrize(("values", "plain", "dtype", "kind"), CASE_PARAMS)
def test_current_data_with_a_missing_value_against_a_numpy_profile(values: list[Any], plain: str, dtype: Any,
                                                                   kind: str) -> None:
    profile = ReferenceProfile.build(pd.DataFrame({"x": column(values, plain)}))
    checked = report_of(profile, pd.DataFrame({"x": column(values, dtype, missing_at=0)}))
    # the same values without the missing one, in the numpy dtype: the same test on the same values
    expected = report_of(profile, pd.DataFrame({"x": column(values[1:], plain)}))
    assert checked == {**expected, "missing": 1}
    assert checked["kind"] == kind


@pytest.mark.parametrize(("values", "plain", "dtype", "kind"), CASE_PARAMS)
def test_a_profile_with_a_missing_value_checks_numpy_data_as_a_numpy_profile_does(
        values: list[Any], plain: str, dtype: Any, kind: str) -> None:
    built = ReferenceProfile.build(pd.DataFrame({"x": column(values, dtype, missing_at=0)}))
    numpy_built = ReferenceProfile.build(pd.DataFrame({"x": column(values[1:], plain)}))
    assert summary(built.features["x"]) == summary(numpy_built.features["x"])
    assert (built.features["x"].missing, numpy_built.features["x"].missing) == (1, 0)
    current = pd.DataFrame({"x": column(values[::-1], plain)})
    assert report_of(built, current) == report_of(numpy_built, current)


def test_a_list_of_bools_with_a_missing_value_is_categorical() -> None:
    built = ReferenceProfile.build({"x": [*BOOLS[1:], None]}).features["x"]
    assert (built.kind, built.count, built.missing) == ("categorical", ROWS - 1, 1)


@pytest.mark.parametrize("missing", [False, True], ids=["no-missing", "one-missing"])
@pytest.mark.parametrize(("values", "plain", "dtype", "kind"), CASE_PARAMS)
def test_a_dask_frame_is_typed_as_the_same_frame_in_memory(values: list[Any], plain: str, dtype: Any, kind: str,
                                                           missing: bool) -> None:
    dd = require_module("dask.dataframe")
    from aiwatch.drift.on_dask import profile_dask

    frame = pd.DataFrame({"x": column(values, dtype, missing_at=ROWS - 1 if missing else None)})
    on_dask = profile_dask(dd.from_pandas(frame, npartitions=2, sort=False)).features["x"]
    assert (on_dask.kind, on_dask.count, on_dask.missing) == (kind, ROWS - missing, int(missing))


#: Parquet columns of each Arrow type, as ``read_parquet(dtype_backend="pyarrow")`` would give them back.
PARQUET_CASES = [pytest.param(values, type_, kind, id=str(type_)) for values, type_, kind in [
    (FEW_INTS, pa.int64(), "categorical"), (FEW_INTS, pa.uint8(), "categorical"), (MANY_INTS, pa.int32(), "numerical"),
    (FLOATS, pa.float64(), "numerical"), (BOOLS, pa.bool_(), "categorical"), (WORDS, pa.string(), "categorical")]]


@pytest.mark.parametrize("missing", [False, True], ids=["no-missing", "one-missing"])
@pytest.mark.parametrize(("values", "type_", "kind"), PARQUET_CASES)
def test_a_parquet_column_with_a_null_keeps_its_kind(tmp_path: Any, values: list[Any], type_: Any, kind: str,
                                                     missing: bool) -> None:
    from aiwatch.drift.batch import profile_source

    pq = require_module("pyarrow.parquet")
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "part.parquet"
    pq.write_table(pa.table({"x": pa.array([*values[:-1], None if missing else values[-1]], type=type_)}), path)
    expected = (kind, ROWS - missing, int(missing))
    for built in (ReferenceProfile.from_file(path), profile_source(tmp_path / "data")):  # a file, a dataset
        feat = built.features["x"]
        assert (feat.kind, feat.count, feat.missing) == expected


@pytest.mark.parametrize(("values", "plain", "dtype", "kind"), CASE_PARAMS)
def test_a_monitor_counts_an_extension_columns_missing_value_missing(values: list[Any], plain: str, dtype: Any,
                                                                     kind: str) -> None:
    from prometheus_client import CollectorRegistry

    from aiwatch.drift import DriftMonitor

    profile = ReferenceProfile.build(pd.DataFrame({"x": column(values, plain)}))
    registry = CollectorRegistry()
    monitor = DriftMonitor(profile, model="m", registry=registry, min_samples=1)
    monitor.observe_batch(pd.DataFrame({"x": column(values, dtype, missing_at=0)}))
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "drift"}) == 0
    assert registry.get_sample_value("aiwatch_feature_missing_total", {"model": "m", "feature": "x"}) == 1
    window = monitor.evaluate().features["x"]
    assert (window.kind, window.current_count, window.missing, window.invalid) == (kind, ROWS - 1, 1, 0)


#: dtype (its name up to a "-") -> a strategy for its present values (edge values included: int64's and uint64's
#: ends, ints past 2**53)
PROPERTY_VALUES = {
    "Int64": st.one_of(st.integers(-3, 12), st.sampled_from([2**63 - 1, -2**63, 2**53 + 1])),
    "UInt64": st.sampled_from([0, 1, 7, 2**53 + 1, 2**63, 2**64 - 1]),
    "Int8": st.integers(-128, 127),
    "Float64": st.sampled_from([0.0, 1.0, -2.5, 0.1, 1e150, 2.0**53 + 1]),
    "boolean": st.booleans(),
    "string": st.sampled_from(["a", "b", "", "1", "True"]),
    "category": st.sampled_from(["a", "b", "c"]),
    "category-of-ints": st.integers(0, 12),  # read as ints with a missing value: to_numpy() made them floats
    "int64[pyarrow]": st.integers(-3, 40),
    "double[pyarrow]": st.floats(-5, 5, allow_nan=False),
    "bool[pyarrow]": st.booleans(),
    "string[pyarrow]": st.sampled_from(["a", "b", "c"]),
    # a timezone-aware datetime column: datetime (left out) on every path; it was unknown in memory
    "datetime64[ns, UTC]": st.datetimes(dt.datetime(1970, 1, 1), dt.datetime(2200, 1, 1),
                                        timezones=st.just(dt.UTC)),
}


@st.composite
def extension_columns(draw: Any) -> tuple[str, list[Any]]:
    name = draw(st.sampled_from(sorted(PROPERTY_VALUES)))
    values = draw(st.lists(st.one_of(PROPERTY_VALUES[name], st.none()), min_size=2, max_size=40))
    if all(v is None for v in values):  # an all-missing category column has no categories: pandas writes doubles
        values[0] = draw(PROPERTY_VALUES[name])
    return name.split("-")[0], values


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extension_columns())
# CI runs these whatever Hypothesis draws: 2**53 + 1 (not a float64) beside 2**63 (past int64), which pandas read
# through float64 (see exact_array), with and without a missing value
@example(("UInt64", [2**53 + 1, 2**63]))
@example(("UInt64", [2**53 + 1, 2**63, None]))
@example(("UInt64", [None, 2**63, 2**53 + 1, 2**53 + 1]))
@example(("Int64", [2**53 + 1, -2**63, None]))
def test_one_column_gets_one_profile_on_every_path(case: tuple[str, list[Any]]) -> None:
    """A column of an extension dtype, with or without missing values, gets the same kind, counts, bins and report
    whether it is handed over as a DataFrame, a dict of Series, pyarrow arrays or a table, a Parquet file, a Dask
    frame or (its Python values) a dict of lists (a guard over the cases above: values and dtypes drawn at random)."""
    from aiwatch.drift.on_dask import profile_dask

    dtype, values = case
    frame = pd.DataFrame({"x": exact_array(values, dtype), "n": range(len(values))})
    built = {"dataframe": ReferenceProfile.build(frame),
             "dict-of-series": ReferenceProfile.build({"x": frame["x"], "n": frame["n"]}),
             "dict-of-arrow-arrays": ReferenceProfile.build({"x": pa.array(frame["x"]), "n": pa.array(frame["n"])}),
             "arrow-table": ReferenceProfile.build(pa.Table.from_pandas(frame, preserve_index=False))}
    # a list of ints past int64 is Python ints, typed by its ints (it was floats, numerical, with a None)
    built["dict-of-lists"] = ReferenceProfile.build({"x": list(values), "n": list(range(len(values)))})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.parquet"
        frame.to_parquet(path)
        built["parquet"] = ReferenceProfile.from_file(path)
    dd = require_module("dask.dataframe")
    on_dask = profile_dask(dd.from_pandas(frame, npartitions=2, sort=False))
    expected = built.pop("dataframe")
    current = pd.DataFrame({"x": exact_array(values[::-1], dtype), "n": range(len(values))})
    for how, profile in [*built.items(), ("dask", on_dask)]:
        assert profile.skipped == expected.skipped, how
        assert set(profile.features) == set(expected.features), how
        if "x" in expected.features:
            got, want = profile.features["x"], expected.features["x"]
            assert (summary(got)[:2], got.missing) == (summary(want)[:2], want.missing), how
            if how != "dask":  # Dask sums a mean by partition: the last bit may differ
                assert summary(got) == summary(want), how
                assert report_of(profile, current) == report_of(expected, current), how
