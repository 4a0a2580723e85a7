"""Counting one feature's values (aiwatch.drift.counting), a column's distinct values, the one-sort profile build
and the sample drawn without a key per value: each checked against the plain computation it replaces."""

from __future__ import annotations

import itertools
import math
import re
import warnings
from collections import Counter
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiwatch.drift.builder import ProfileBuilder, build_in_memory, numerical_cuts, quantiles_sorted
from aiwatch.drift.columns import (
    arrow_values,
    category_counts,
    category_key,
    distinct_counts,
    extension_column,
    infer_kind,
    infer_kind_counting,
    to_float,
    to_float_counting,
)
from aiwatch.drift.counting import (
    INVALID,
    MISSING,
    NEW_VALUES_LIMIT,
    CategoryBuckets,
    bin_index,
    count_bins,
    count_bins_sorted,
    merge_new_values,
    new_values,
)
from aiwatch.drift.errors import ProfileError
from aiwatch.drift.sampling import keep_smallest, smallest_keys_sample, stratified_sample
from tests.servers import require_module

RNG = np.random.default_rng(7)


# ------------------------------------------------------------------------------------------------ bins


def test_a_value_on_a_cut_falls_in_the_bin_below_it() -> None:
    cuts = np.array([0.0, 1.0, 2.0])
    assert bin_index(cuts, np.array([-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0])).tolist() == [0, 0, 1, 1, 2, 2, 3]
    assert count_bins(cuts, np.array([0.0, 0.0, 2.0, 9.0])).tolist() == [2, 0, 1, 1]


def test_count_bins_has_a_bin_for_every_cut_plus_one_even_when_empty() -> None:
    assert count_bins(np.array([0.0, 1.0]), np.empty(0)).tolist() == [0, 0, 0]
    assert count_bins(np.array([], dtype=np.float64), np.array([5.0, -5.0])).tolist() == [2]


@pytest.mark.parametrize("values", [
    RNG.normal(size=1000), RNG.integers(0, 5, 1000).astype(float), np.array([1.0]), np.empty(0),
    np.array([0.0, 0.0, 1.0, 1.0, 2.0]),
])
def test_counting_sorted_values_is_counting_them(values: np.ndarray) -> None:
    for cuts in (np.array([0.0, 1.0]), np.array([-0.5, 0.0, 0.5]), np.array([], dtype=np.float64),
                 np.array([1.0])):
        counts = count_bins_sorted(cuts, np.sort(values))
        assert counts.tolist() == count_bins(cuts, values).tolist() and counts.dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(-4, 4).map(float), max_size=40).map(sorted),
       picks=st.lists(st.sampled_from([-5.0, -4.0, -2.5, -1.0, 0.0, 0.5, 1.0, 3.0, 4.0, 9.0, math.inf, -math.inf]),
                      min_size=1, max_size=8),
       size=st.sampled_from([1, 1023, 1024, 5000]))
def test_counting_by_comparisons_is_counting_by_binary_search(cuts: list[float], picks: list[float],
                                                               size: int) -> None:
    """Large arrays with few cuts are counted by one comparison per cut; every array, with values on the cuts and
    infinities, gets the counts of the binary search (small arrays and many cuts still use it)."""
    values = np.resize(np.array(picks), size)
    edges = np.array(cuts, dtype=np.float64)
    searched = np.bincount(bin_index(edges, values), minlength=edges.size + 1)
    counted = count_bins(edges, values)
    assert counted.tolist() == searched.tolist() and counted.dtype == np.int64


def test_new_values_are_the_distinct_values_outside_the_reference_smallest_first() -> None:
    assert new_values([1.0, 2.0], np.array([5.0, 1.0, 3.0, 3.0, 2.0])).tolist() == [3.0, 5.0]
    assert new_values(None, np.array([5.0])).size == 0  # unknown reference values: nothing is "new"
    assert new_values([1.0], np.empty(0)).size == 0
    many = np.arange(NEW_VALUES_LIMIT + 10, dtype=float)
    assert new_values([], many).tolist() == many[:NEW_VALUES_LIMIT].tolist()


def test_merged_new_values_are_the_smallest_of_both_parts() -> None:
    assert merge_new_values(np.array([1.0, 4.0]), np.array([2.0, 4.0])).tolist() == [1.0, 2.0, 4.0]
    a, b = np.arange(0.0, NEW_VALUES_LIMIT), np.arange(0.5, NEW_VALUES_LIMIT)
    merged = merge_new_values(a, b)
    assert merged.size == NEW_VALUES_LIMIT and merged.tolist() == np.union1d(a, b)[:NEW_VALUES_LIMIT].tolist()


# ------------------------------------------------------------------------------------------- categories


def _buckets() -> CategoryBuckets:
    return CategoryBuckets({"red": 0, "blue": 1, "3": 2}, unseen=3, size=4)


def test_each_kind_of_value_gets_its_code() -> None:
    b = _buckets()
    assert [b.code(v) for v in ("red", "blue", "green", None, math.nan, math.inf, 3, 3.0, ["x"], {"a": 1})] == \
        [0, 1, 3, MISSING, MISSING, MISSING, 2, 2, INVALID, INVALID]


def test_numpy_durations_and_datetimes_are_no_categories() -> None:
    """np.timedelta64 is a numpy integer: one read as its count of units, the category '3'."""
    b = _buckets()
    values = [np.timedelta64(3, "ns"), np.timedelta64(3, "s"), np.datetime64(3, "s"), np.timedelta64("NaT", "ns"), 3]
    assert [b.code(v) for v in values] == [INVALID, INVALID, INVALID, MISSING, 2]
    assert b.codes(values).tolist() == [INVALID, INVALID, INVALID, MISSING, 2]


def test_codes_are_in_order_and_unhashable_values_are_invalid() -> None:
    b = _buckets()
    values = ["red", ["x"], "red", None, "green", math.nan, float("nan"), 3]
    assert b.codes(values).tolist() == [0, INVALID, 0, MISSING, 3, MISSING, MISSING, 2]
    assert b.codes(np.asarray(values, dtype=object)).tolist() == b.codes(values).tolist()


class _HashRaises:
    """A value whose hash raises something other than TypeError."""

    def __hash__(self) -> int:
        raise RuntimeError("hash boom")


def test_a_value_whose_hash_raises_is_invalid_where_the_others_are_counted() -> None:
    """Only TypeError was caught: codes() raised the value's RuntimeError (so the monitor dropped the whole batch),
    and count() did too."""
    b = _buckets()
    values = ["red", _HashRaises(), 3, None]
    assert b.codes(values).tolist() == [0, INVALID, 2, MISSING]
    assert [c.tolist() if isinstance(c, np.ndarray) else c for c in b.count(values)] == [[1, 0, 1, 0], 1, 1]


@pytest.mark.parametrize("values", [
    ["red", "blue", "red", "green", None, math.nan, 3],
    ["red", ["x"], "blue", None],  # an unhashable value: counted through the codes
    ["red", _HashRaises(), "blue", None],
    [np.timedelta64(3, "s"), 3, "red"],  # a duration equals its count of units, yet is no category: counted apart
    [3, np.timedelta64(3, "s"), "red"],
    ["red", b"raw", b"raw", (1, 2), "blue"],  # hashable values that cannot be categories, two distinct ones
    np.asarray(["red", "blue"] * 2000 + ["green", None] * 10, dtype=object),
    # a numpy column of datetimes or durations (docs/drift.md: wrong-typed in a categorical feature): each distinct
    # value is a key of its own with no category, so the wrong-typed count is their sum, not the last one's count
    np.array(["2026-01-01", "2026-01-02", "2026-01-01", "NaT"], dtype="datetime64[D]"),
    np.array([3, 5, 5, 7], dtype="timedelta64[s]"),
])
def test_bucket_counts_missing_and_invalid_add_up_as_the_codes_say(values: object) -> None:
    b = _buckets()
    counts, missing, invalid = b.count(values)
    codes = b.codes(values)
    assert counts.tolist() == [int(np.count_nonzero(codes == i)) for i in range(4)]
    assert (missing, invalid) == (int(np.count_nonzero(codes == MISSING)), int(np.count_nonzero(codes == INVALID)))
    from_codes, missing_codes, invalid_codes = b.count_codes(codes)
    assert (from_codes.tolist(), missing_codes, invalid_codes) == (counts.tolist(), missing, invalid)
    assert counts.dtype == b.count_codes(codes)[0].dtype == np.int64  # whole numbers, exported as such


# equal values of different types, each with its own category (or none): False == 0 == 0.0 == Decimal(0), True == 1
MIXED = [False, 0, 0.0, np.bool_(False), True, 1, 1.0, Decimal(1), Fraction(1), Decimal("0"), "red", "3", 3, None]


@pytest.mark.parametrize("values", [MIXED, MIXED[::-1], np.asarray(MIXED * 300, dtype=object), [[], (1,), [0], "red"]],
                         ids=["in-order", "reversed", "long-array", "sequences"])
def test_each_value_is_counted_in_its_own_category_as_one_at_a_time(values: Any) -> None:
    # a Counter keeps the first of equal keys met: [False, 0] counted as two False, where one at a time they are
    # the categories "False" and "0"; a list among the values made a column of no values at all
    b = CategoryBuckets({"False": 0, "0": 1, "True": 2, "1": 3, "red": 4, "3": 5}, unseen=6, size=7)
    one_at_a_time = [b.code(v) for v in values]
    assert b.codes(values).tolist() == one_at_a_time
    counts, missing, invalid = b.count(values)
    assert counts.tolist() == [one_at_a_time.count(i) for i in range(7)]
    assert (missing, invalid) == (one_at_a_time.count(MISSING), one_at_a_time.count(INVALID))


@pytest.mark.parametrize("values", [[[]], [[1.0]], [[0], [1]], [(1, 2), (3, 4), 2.0], [[], 2.0]])
def test_a_list_among_numerical_values_is_one_wrong_typed_value(values: list[Any]) -> None:
    # np.asarray read [[]] as a column of no values at all (a monitor's batch failed on it), [[1.0]] as one 1.0 and
    # [[0], [1]] as two numbers; only sequences of unequal lengths were kept whole
    floats, invalid = to_float_counting(values)
    sequences = sum(isinstance(v, list | tuple) for v in values)
    assert floats.shape == (len(values),) and invalid == sequences
    assert np.isnan(floats[:sequences]).all()


@pytest.mark.parametrize("values", [[True, False, None, True], [np.bool_(True), False, None, "red", True]],
                         ids=["bools-and-none", "numpy-bools-strings-none"])
def test_bools_among_strings_and_missing_values_are_counted_once(values: list[Any]) -> None:
    # a bool equals no string and no None, so their Counter already holds one key per category: a boolean column
    # with a pd.NA (read as Python bools and None) was counted again value by value, 1.5 s per 1M rows against
    # 0.1 s for the same column without a missing value
    column = np.asarray(values * 300, dtype=object)
    counts = distinct_counts(column)
    assert category_counts(column, counts) is counts
    f = build_in_memory({"c": column}, kinds={"c": "categorical"}).features()["c"]
    expected = Counter(category_key(v) for v in column.tolist() if v is not None)
    assert dict(zip(f.categories, f.counts, strict=True)) == expected
    assert f.missing == 300


def test_a_reference_column_counts_each_value_in_its_own_category() -> None:
    f = build_in_memory({"c": MIXED * 3}, kinds={"c": "categorical"}).features()["c"]
    expected = Counter(category_key(v) for v in MIXED * 3 if v is not None and category_key(v) is not None)
    assert dict(zip(f.categories, f.counts, strict=True)) == expected
    assert (set(expected), f.missing) == ({"False", "0", "True", "1", "red", "3"}, 3 * 4)  # None, 2 Decimals, Fraction


def test_codes_of_a_tuple_keep_each_value_as_it_is() -> None:
    # not through a numpy array of strings, where NaN would become the category "nan" and 3 the string "3"
    assert _buckets().codes((math.nan, "red", 3, 3.0)).tolist() == _buckets().codes([math.nan, "red", 3, 3.0]).tolist()
    assert _buckets().codes((math.nan, "red"))[0] == MISSING


def test_codes_of_an_arrow_array_are_those_of_its_python_values() -> None:
    # iterated as it is, an Arrow array gives pyarrow scalars, none of them a category
    pa = require_module("pyarrow")
    values = ["red", "blue", None, "green", "red"]
    assert _buckets().codes(pa.array(values)).tolist() == _buckets().codes(values).tolist() == [0, 1, MISSING, 3, 0]


# --------------------------------------------------------------------------------------- distinct values


def _fresh(text: str) -> str:
    """An equal string that is not the same object."""
    return "".join(list(text))


@pytest.mark.parametrize("kind", ["string", "large_string", "string_view", "dictionary"])
def test_an_arrow_string_column_of_few_categories_is_read_as_one_object_per_category(kind: str) -> None:
    """pyarrow's ``to_numpy`` makes one Python string per value, so every value was hashed to count the categories
    (the costliest part of a profile build from an Arrow table or a Parquet file); read through Arrow's dictionary,
    each category is one object, counted by reference."""
    pa = require_module("pyarrow")
    if kind == "string_view" and not hasattr(pa, "string_view"):
        pytest.skip("pyarrow < 16 has no string_view")
    values = ["red", None, "blue", "green"] * 3000
    arrow_type = pa.string() if kind == "dictionary" else getattr(pa, kind)()

    def part(items: list[str | None]) -> Any:
        array = pa.array(items, type=arrow_type)
        return array.dictionary_encode() if kind == "dictionary" else array

    read = arrow_values(pa.chunked_array([part(values[:5000]), part(values[5000:])]))
    assert read.dtype == object and read.tolist() == values
    assert len({id(v) for v in read.tolist() if v is not None}) == 3
    assert distinct_counts(read) == Counter(values)


def test_an_arrow_string_column_too_large_to_combine_is_read_as_it_is() -> None:
    """Combining a string column's chunks fails past 2 GiB of text (32-bit offsets); such a column is read chunk by
    chunk by to_numpy, as before, instead of failing the build inside pyarrow."""
    pa = require_module("pyarrow")
    values = ["red", None, "blue"] * 2000
    real = pa.chunked_array([pa.array(values[:3000]), pa.array(values[3000:])])

    class Overflowing:  # a ChunkedArray whose chunks hold too much text to be one array
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def combine_chunks(self) -> Any:
            raise pa.ArrowInvalid("offset overflow while concatenating arrays")

    read = arrow_values(Overflowing())
    assert read.dtype == object and read.tolist() == values


@pytest.mark.parametrize("dtype", ["string[pyarrow]", "str-nan", "arrow-large-string"])
def test_a_pandas_string_column_kept_by_arrow_is_read_as_one_object_per_category(dtype: str) -> None:
    """pandas 3 keeps strings in Arrow by default (``str``); its ``to_numpy`` made one object per value too."""
    pd = require_module("pandas")
    pa = require_module("pyarrow")
    values = ["red", None, "blue", "green"] * 3000
    if dtype == "str-nan":
        try:
            pandas_dtype = pd.StringDtype("pyarrow", na_value=np.nan)
        except TypeError:
            pytest.skip("pandas < 2.3 has no StringDtype(na_value=...), pandas 3's str")
    else:
        pandas_dtype = pd.StringDtype("pyarrow") if dtype == "string[pyarrow]" else pd.ArrowDtype(pa.large_string())
    series = pd.Series(values, dtype=pandas_dtype)
    read = extension_column(series)
    assert read.dtype == object and read.tolist() == series.to_numpy(dtype=object, na_value=None).tolist() == values
    assert len({id(v) for v in read.tolist() if v is not None}) == 3


@pytest.mark.parametrize("values", [[], [None, None], [f"id-{i}" for i in range(5000)] + [None]],
                         ids=["empty", "only-nulls", "mostly-distinct"])
def test_arrow_string_columns_read_as_their_values(values: list[str | None]) -> None:
    pa = require_module("pyarrow")
    read = arrow_values(pa.chunked_array([pa.array(values, type=pa.string())], type=pa.string()))
    assert read.dtype == object and read.tolist() == values


def test_distinct_counts_merges_equal_objects_that_are_not_the_same_object() -> None:
    a1, a2 = _fresh("alpha"), _fresh("alpha")
    assert a1 == a2 and a1 is not a2
    values = np.asarray([a1] * 3000 + [a2] * 2000 + ["b"] * 500, dtype=object)
    assert distinct_counts(values) == Counter({"alpha": 5000, "b": 500})


@pytest.mark.parametrize("values", [
    np.asarray(["x", "y", None, math.nan, 1, 1.0, True] * 400, dtype=object),  # 1, 1.0 and True are equal keys
    np.asarray([_fresh("v") for _ in range(3000)], dtype=object),  # every object distinct: counted by value
    np.asarray(["a", "b", "c"] * 1000, dtype=object)[::3],  # a strided view
    np.asarray(["short", "list"], dtype=object),
    ["p", "q", "p"],
    np.array([3, 1, 3, 2] * 500),
    np.array([0.5, np.nan, 0.5, -0.0, 0.0] * 500),
    np.array([True, False, True]),
    # equal keys first met past the first 4096 values (a longer prefix finds them), and past every prefix
    np.asarray(["a"] * 10_000 + [True, 1.0, 1, "b"] * 50, dtype=object),
    np.asarray(["a"] * 40_000 + [1.0, True, 1] * 10 + ["late"], dtype=object),
    # a few objects, each counted by a comparison pass; more than 16 in the first values: one sort of references
    np.asarray(["x", "y", None] * 5000, dtype=object),
    np.asarray([f"k{i}" for i in range(40)], dtype=object)[RNG.integers(0, 40, 8000)],
])
def test_distinct_counts_is_a_counter_of_the_values(values: object) -> None:
    expected = Counter(values.tolist() if isinstance(values, np.ndarray) else values)
    found = distinct_counts(values)
    if isinstance(values, np.ndarray) and values.dtype.kind != "O":  # np.unique: sorted, one key for every NaN
        assert sum(n for k, n in found.items() if k != k) == int(np.count_nonzero(values != values))
        assert {k: n for k, n in found.items() if k == k} == {k: n for k, n in expected.items() if k == k}
    else:  # the same keys (of equal keys such as 1, 1.0 and True, the first met), the same counts, in order
        assert [(repr(k), n) for k, n in found.items()] == [(repr(k), n) for k, n in expected.items()]


def test_distinct_counts_of_an_unhashable_value_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        distinct_counts(np.asarray([["x"]] * 2000 + ["y"], dtype=object))


def test_inferring_the_kind_of_a_string_column_returns_its_counts() -> None:
    values = np.asarray(["a", "b", "a", None] * 500, dtype=object)
    kind, counts = infer_kind_counting(values)
    assert kind == infer_kind(values) == "categorical"
    assert counts == Counter({"a": 1000, "b": 500, None: 500})
    assert infer_kind_counting(np.arange(50.0)) == ("numerical", None)


# ------------------------------------------------------------------------------ the one-sort profile build


@pytest.mark.parametrize("values", [
    RNG.normal(size=10_001), RNG.exponential(size=7), np.array([1.0, 2.0]), np.array([3.0]),
    np.repeat([1.0, 2.0, 5.0], 40), np.concatenate([np.zeros(500), RNG.normal(size=3)]),
])
def test_quantiles_of_sorted_values_are_numpys_to_the_bit(values: np.ndarray) -> None:
    qs = np.linspace(0, 1, 11)[1:-1]
    assert quantiles_sorted(np.sort(values), qs).tolist() == np.quantile(values, qs).tolist()


@pytest.mark.parametrize("values", [
    RNG.normal(3.0, 2.0, size=50_000),  # more than the sample: edges, counts and stats from the sorted values
    RNG.integers(0, 12, size=5000).astype(float),  # discrete: a bin per value
    np.concatenate([RNG.normal(size=3000), [np.nan, np.inf, -np.inf] * 10]),  # non-finite values are missing
    np.concatenate([[-np.inf, np.nan] * 5, RNG.normal(size=3000), [np.inf, -np.inf]]),  # at both ends sorted
    np.full(100, 4.0),
])
def test_the_one_sort_build_matches_counting_every_value(values: np.ndarray) -> None:
    f = build_in_memory({"x": values}, sample_size=1000).features()["x"]
    finite = values[np.isfinite(values)]
    assert f.cuts == numerical_cuts(finite, 10)
    assert f.bin_counts == count_bins(np.asarray(f.cuts), finite).tolist()
    assert (f.count, f.missing) == (finite.size, values.size - finite.size)
    assert (f.min, f.max) == (float(finite.min()), float(finite.max()))
    assert f.mean == pytest.approx(float(finite.mean()), rel=1e-12)
    assert f.std == pytest.approx(float(finite.std()), rel=1e-9)
    distinct = np.unique(finite)
    assert f.distinct == (distinct.tolist() if distinct.size <= 20 else None)
    assert len(f.sample) == min(1000, finite.size) and set(f.sample) <= set(finite.tolist())


def test_columns_built_together_are_each_built_as_alone() -> None:
    # add_whole reuses its sort and deviation buffers from one column to the next, whatever their sizes
    columns = {"big": RNG.normal(size=60_000), "small": RNG.exponential(size=300),
               "ties": RNG.integers(0, 7, size=20_000).astype(float),
               "holes": np.concatenate([RNG.normal(size=40_000), [np.nan, np.inf] * 5]),
               "rounded": np.round(RNG.normal(size=30_000), 1)}
    together = build_in_memory(columns, sample_size=1000).features()
    for name, values in columns.items():
        alone = build_in_memory({name: values}, sample_size=1000).features()[name]
        # the same, but for the sample: one random generator draws every column's in turn
        assert replace(together[name], sample=[], sample_keys=[]) == replace(alone, sample=[], sample_keys=[])
        assert len(together[name].sample) == len(alone.sample)
        finite = values[np.isfinite(values)]
        assert together[name].cuts == numerical_cuts(finite, 10)
        assert together[name].bin_counts == count_bins(np.asarray(together[name].cuts), finite).tolist()


def test_the_one_sort_build_keeps_fixed_edges_and_refuses_a_column_twice() -> None:
    values = RNG.normal(size=2000)
    f = build_in_memory({"x": values}, edges={"x": [-1.0, 0.0, 1.0]}).features()["x"]
    assert f.cuts == [-1.0, 0.0, 1.0] and f.bin_counts == count_bins(np.array([-1.0, 0.0, 1.0]), values).tolist()
    builder = ProfileBuilder()
    builder.add_whole({"x": values})
    with pytest.raises(Exception, match="already added"):
        builder.add_whole({"x": values})


def test_the_one_sort_build_equals_the_two_pass_build_of_chunks() -> None:
    values = RNG.gamma(2.0, size=30_000)
    whole = build_in_memory({"x": values}, sample_size=500).features()["x"]
    chunked = ProfileBuilder(sample_size=500, edges={"x": whole.cuts})
    for part in np.array_split(values, 7):
        chunked.add({"x": part})
    for part in np.array_split(values, 3):
        chunked.count({"x": part})
    f = chunked.features()["x"]
    assert (f.bin_counts, f.count, f.min, f.max) == (whole.bin_counts, whole.count, whole.min, whole.max)
    assert f.mean == pytest.approx(whole.mean, rel=1e-12) and f.std == pytest.approx(whole.std, rel=1e-9)


MAX_FLOAT = float(np.finfo(np.float64).max)


def test_a_discrete_column_gets_a_below_bin_unless_it_holds_the_most_negative_float() -> None:
    assert numerical_cuts(np.array([-1.0, 0.0, 0.0]), 10) == [float(np.nextafter(-1.0, -np.inf)), -1.0, 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nextafter of it overflowed to -inf, which a profile refuses
        # no finite value is below it: bin 0 holds the value itself
        assert numerical_cuts(np.array([-MAX_FLOAT, 0.0, 1.0]), 10) == [-MAX_FLOAT, 0.0, 1.0]
        f = build_in_memory({"x": np.array([-MAX_FLOAT])}).features()["x"]
    assert (f.cuts, f.bin_counts, f.mean, f.std) == ([-MAX_FLOAT], [1, 0], -MAX_FLOAT, 0.0)


@pytest.mark.parametrize("values", [
    np.array([1e200, 0.0, 5.0] * 100),  # the squared deviations overflow
    np.full(300, -MAX_FLOAT),  # the sum overflows
    np.array([MAX_FLOAT, -MAX_FLOAT] * 3),  # the sum does not, the deviations do
    np.array([-MAX_FLOAT] * 99 + [np.nextafter(-MAX_FLOAT, 0.0)]),  # one ulp there is 2e292: its square is not
    np.append(RNG.normal(size=999), MAX_FLOAT),  # one value among ordinary ones
], ids=["squares", "sum", "both-limits", "one-ulp-apart", "one-value"])
def test_a_column_too_large_for_float64_statistics_is_refused_by_name(values: np.ndarray) -> None:
    largest = f"{float(np.abs(values).max()):.4g}"
    message = rf"column 'big': values as large as {re.escape(largest)} overflow float64"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ProfileError, match=message):
            build_in_memory({"ok": RNG.normal(size=values.size), "big": values}).features()
        chunked = ProfileBuilder(sample_size=100)  # chunk by chunk, with a second pass over them
        for part in np.array_split(values, 3):
            chunked.add({"big": part})
        for part in np.array_split(values, 3):
            chunked.count({"big": part})
        with pytest.raises(ProfileError, match=message):
            chunked.features()


@pytest.mark.parametrize("exact", [False, True])
def test_an_int_past_float64_is_a_missing_value_in_a_build_and_in_a_check(exact: bool) -> None:
    from aiwatch.drift.evaluate import compare
    from aiwatch.drift.profile import ReferenceProfile

    assert (to_float(10**400), to_float(-(10**400)), to_float(2**70)) == (math.inf, -math.inf, 2.0**70)
    floats = RNG.normal(size=300).tolist()
    ints = [int(v) for v in RNG.integers(-1000, 1000, 300)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for column in ([*floats, 10**400], [*ints, -(10**400)], [*ints[:-1], 2**70]):
            f = ReferenceProfile.build({"x": column}).features["x"]
            huge = abs(column[-1]) > 2**1024
            assert (f.kind, f.count, f.missing) == ("numerical", 300, int(huge))
        profile = ReferenceProfile.build({"x": floats})
        report = compare(profile, {"x": [*floats[:50], 10**400, -(10**400)]}, exact=exact)
    assert (report.features["x"].current_count, report.features["x"].missing) == (50, 2)



@pytest.mark.skipif(np.finfo(np.longdouble).max <= np.finfo(np.float64).max, reason="longdouble is float64 here")
@pytest.mark.parametrize("exact", [False, True])
def test_a_longdouble_past_float64_is_a_missing_value_without_a_warning(exact: bool) -> None:
    # numpy warned "overflow encountered in cast" where such an array became float64 (its values infinite: missing)
    from prometheus_client import CollectorRegistry

    from aiwatch.drift.evaluate import compare
    from aiwatch.drift.monitor import DriftMonitor
    from aiwatch.drift.profile import ReferenceProfile

    column = np.array(["1e4000", "-1e4000", *map(str, RNG.normal(size=60))], dtype=np.longdouble)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = ReferenceProfile.build({"x": column}).features["x"]
        checked = compare(ReferenceProfile.build({"x": RNG.normal(size=300)}), {"x": column}, exact=exact)
        monitor = DriftMonitor(ReferenceProfile.build({"x": RNG.normal(size=300)}), registry=CollectorRegistry(),
                               min_samples=1)
        monitor.observe_batch({"x": column})
        watched = monitor.evaluate().features["x"]
    assert (f.count, f.missing) == (60, 2)
    assert (checked.features["x"].current_count, checked.features["x"].missing) == (60, 2)
    assert (watched.current_count, watched.missing) == (60, 2)


# ---------------------------------------------------------------------------------------------- sampling


def test_a_small_column_is_its_own_sample_with_a_key_each() -> None:
    values = np.arange(10.0)
    sample, keys = smallest_keys_sample(values, 10, np.random.default_rng(0))
    assert sample.tolist() == values.tolist() and keys.size == 10 and ((keys >= 0) & (keys < 1)).all()


def test_the_sample_without_a_key_per_value_is_distributed_like_the_smallest_keys() -> None:
    n, size = 200_000, 2_000
    sample, keys = smallest_keys_sample(np.arange(n, dtype=float), size, np.random.default_rng(3))
    assert sample.size == size and np.unique(sample).size == size  # distinct positions
    # the kept keys are the smallest of n uniforms: in (0, 1), increasing, the largest near size / (n + 1)
    assert (keys > 0).all() and (np.diff(keys) > 0).all()
    assert keys[-1] == pytest.approx(size / (n + 1), rel=5 / math.sqrt(size))
    # the kept positions are uniform over the column: mean n / 2, standard error n / sqrt(12 size)
    assert float(sample.mean()) == pytest.approx(n / 2, abs=5 * n / math.sqrt(12 * size))


def test_samples_drawn_in_parts_merge_like_keys_drawn_per_value() -> None:
    rng = np.random.default_rng(5)
    parts = [smallest_keys_sample(np.full(50_000, float(i)), 1000, rng) for i in range(2)]
    sample, keys = keep_smallest(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), 1000)
    assert sample.size == 1000 and keys.max() < min(p[1].max() for p in parts) + 1e-12
    # two equal halves: each holds about half of the merged sample (binomial, sd ~ 16)
    assert abs(int(np.count_nonzero(sample == 0.0)) - 500) < 80


def test_a_stratified_sample_takes_one_value_from_each_run_of_k() -> None:
    values = np.arange(100.0)
    assert stratified_sample(values, 200) is values
    picked = stratified_sample(values, 10, np.random.default_rng(1))
    assert (picked // 10).tolist() == list(range(10))  # one of 0-9, one of 10-19, ...
    assert len({tuple(stratified_sample(values, 10, np.random.default_rng(seed)) % 10) for seed in range(5)}) == 5
    # 103 values in runs of 11: 9 full runs and one of 4, drawn from with the chance 4/11
    drawn = [stratified_sample(np.arange(103.0), 10, np.random.default_rng(seed)) for seed in range(2000)]
    assert all((d[:9] // 11).tolist() == list(range(9)) and d.size in (9, 10) and d[-1] < 103 for d in drawn)
    assert abs(sum(d.size == 10 for d in drawn) / 2000 - 4 / 11) < 0.05  # sd 0.011


def test_a_stratified_sample_of_rows_alternating_between_two_sources_holds_both() -> None:
    # every 2nd row from one random start would hold one source only
    rows = np.tile([0.0, 10.0], 100_000)
    for seed in range(5):
        picked = stratified_sample(rows, 100_000, np.random.default_rng(seed))
        assert picked.size == 100_000 and abs(np.count_nonzero(picked == 0.0) / picked.size - 0.5) < 0.01


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 19_999), max_size=12, unique=True).map(sorted),
       size=st.sampled_from([1, 50, 300, 2000]), split=st.integers(0, 20_000))
def test_a_chunked_sample_is_the_rows_with_the_smallest_keys(cuts: list[int], size: int, split: int) -> None:
    """However the rows arrive (chunks of any length, two halves counted apart then merged), the sample is the values
    of the ``size`` finite rows with the smallest keys: the sample is cut lazily, never wrongly."""
    from aiwatch.drift.current import ChunkedCurrent
    from aiwatch.drift.features import NumericalFeature
    from aiwatch.drift.sampling import row_keys

    values = np.random.default_rng(len(cuts) + size).normal(size=20_000)
    values[::37] = np.nan
    keys = row_keys(5, 0, values.size)
    finite = np.isfinite(values)
    expected = np.sort(keep_smallest(values[finite], keys[finite], size)[0])
    feat = NumericalFeature("x", [0.0], [1, 1], 2)

    def counted(start: int, stop: int) -> ChunkedCurrent:
        acc = ChunkedCurrent(feat, size)
        bounds = [start, *[c for c in cuts if start < c < stop], stop]
        for a, b in itertools.pairwise(bounds):
            acc.add(values[a:b], keys[a:b])
        return acc

    whole = counted(0, values.size).result()
    assert whole is not None and whole.values is not None
    assert whole.values.tolist() == expected.tolist()
    halves = counted(0, split)
    halves.merge(counted(split, values.size).part)
    merged = halves.result()
    assert merged is not None and merged.values is not None
    assert merged.values.tolist() == expected.tolist()
    assert merged.count == whole.count == int(finite.sum())
