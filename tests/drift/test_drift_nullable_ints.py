"""An integer column with missing values (pandas' nullable ``Int8``..``UInt64``, a pyarrow integer array or Parquet
column with a null) is held as its ints and where they are missing (:class:`~aiwatch.drift.columns.NullableInts`),
not as an object array of Python ints and None, yet reads exactly as that object column did: the same kind, the same
profile, the same comparison, bit for bit, in memory and from a Parquet file (the oracle: the same data given as the
object column, or read with the readers giving it back as that column)."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from aiwatch.drift import ReferenceProfile, compare
from aiwatch.drift import columns as columns_module
from aiwatch.drift import datasets as datasets_module
from aiwatch.drift import files as files_module
from aiwatch.drift.batch import compare_file
from aiwatch.drift.columns import NullableInts, extension_column
from aiwatch.drift.errors import ProfileError
from aiwatch.drift.evaluate import Options
from aiwatch.drift.monitor import DriftMonitor
from tests.drift.pandas_arrays import exact_array
from tests.servers import require_module

pd = require_module("pandas")
pa = require_module("pyarrow")
pq = require_module("pyarrow.parquet")

DTYPES = ["Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"]


def _limits(dtype: str) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dtype.lower()))
    return int(info.min), int(info.max)


def _edges(dtype: str) -> list[int]:
    """Values where a conversion to float could go wrong: the limits, and around 2**53 and 2**63 (float64 rounds)."""
    lo, hi = _limits(dtype)
    near = [lo, lo + 1, hi - 1, hi, 0, 1, -1, 2**53 - 1, 2**53, 2**53 + 1, 2**53 + 3, -(2**53) - 1, 2**63 - 1,
            2**63 - 512, 2**63 - 513, 2**63, 2**63 + 1025, 2**64 - 1025, 2**64 - 1]
    return [v for v in near if lo <= v <= hi]


@st.composite
def nullable_columns(draw: Any) -> tuple[str, list[int | None]]:
    """A nullable integer dtype and values of it with None: few or many distinct, all missing, none missing."""
    dtype = draw(st.sampled_from(DTYPES))
    lo, hi = _limits(dtype)
    pool = draw(st.lists(st.one_of(st.sampled_from(_edges(dtype)), st.integers(lo, hi)), min_size=1, max_size=30))
    size = draw(st.integers(0, 60))
    missing = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    values = [None if draw(st.floats(0, 1)) < missing else draw(st.sampled_from(pool)) for _ in range(size)]
    return dtype, values


def _old(dtype: str, values: list[int | None]) -> np.ndarray:
    """The old representation: an object column of Python ints and None when a value is missing, else the ints."""
    if None in values:
        return np.fromiter(values, dtype=object, count=len(values))
    return np.asarray(values, dtype=np.dtype(dtype.lower()))


def _outcome(run: Callable[[], Any]) -> str:
    """What ``run`` gave, as text (floats by repr: bit for bit; NaN equals NaN), or the error it raised."""
    try:
        return json.dumps(run().to_dict())
    except (ProfileError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _old_readers() -> Iterator[None]:
    """The readers as they were: a nullable integer column made its object column of Python ints and None."""
    def objects(read: Callable[..., Any]) -> Callable[..., Any]:
        def reading(*args: Any) -> Any:
            out = read(*args)
            return out.objects() if isinstance(out, NullableInts) else out
        return reading

    with pytest.MonkeyPatch.context() as mp:
        old_arrow = objects(columns_module.arrow_values)
        mp.setattr(columns_module, "_nullable_numbers", objects(columns_module._nullable_numbers))
        mp.setattr(columns_module, "arrow_values", old_arrow)
        mp.setattr(datasets_module, "arrow_values", old_arrow)
        mp.setattr(files_module, "arrow_values", old_arrow)
        yield


def _frames(ref: tuple[str, list[int | None]], cur: tuple[str, list[int | None]]) -> list[tuple[Any, Any]]:
    """The reference and current data (a nullable int column with a float column beside it) as pandas, as pyarrow,
    and, first, as the object columns they stood for."""
    out = []
    for maker in ("objects", "pandas", "arrow"):
        pair = []
        for dtype, values in (ref, cur):
            other = [0.5 * i for i in range(len(values))]
            if maker == "objects":
                pair.append({"x": _old(dtype, values), "f": np.asarray(other, dtype=np.float64)})
            elif maker == "pandas":
                pair.append(pd.DataFrame({"x": exact_array(values, dtype), "f": other}))
            else:
                pair.append(pa.table({"x": pa.array(values, type=pa.from_numpy_dtype(np.dtype(dtype.lower()))),
                                      "f": pa.array(other, type=pa.float64())}))
        out.append((pair[0], pair[1]))
    return out


KINDS = st.sampled_from([None, "categorical", "numerical"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ref=nullable_columns(), cur=nullable_columns(), kind=KINDS, exact=st.booleans())
# 2**53 + 1 beside 2**63 without a missing value: pandas' pd.array of that list holds 2**53 (exact_array)
@example(ref=("UInt64", [2**53 + 1, 2**63]), cur=("Int8", []), kind=None, exact=False)
def test_in_memory_profile_and_comparison_are_the_object_columns(ref: tuple[str, list[int | None]],
                                                                  cur: tuple[str, list[int | None]],
                                                                  kind: str | None, exact: bool) -> None:
    kinds = None if kind is None else {"x": kind}
    results: list[tuple[str, str | None]] = []
    for reference, current in _frames(ref, cur):
        built = _outcome(partial(ReferenceProfile.build, reference, kinds=kinds))
        try:
            profile = ReferenceProfile.build(reference, kinds=kinds)
        except ProfileError:
            results.append((built, None))
            continue
        results.append((built, _outcome(partial(compare, profile, current, Options(exact=exact)))))
    assert results[1] == results[0]  # pandas' nullable dtype
    assert results[2] == results[0]  # pyarrow's int array with nulls


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ref=nullable_columns(), cur=nullable_columns(), chunk_rows=st.sampled_from([7, 25, 1000]),
       exact=st.booleans())
def test_parquet_profile_and_comparison_are_the_object_columns(ref: tuple[str, list[int | None]],
                                                               cur: tuple[str, list[int | None]], chunk_rows: int,
                                                               exact: bool) -> None:
    _, (reference, current) = _frames(ref, cur)[:2]
    with tempfile.TemporaryDirectory() as tmp:
        ref_path, cur_path = Path(tmp, "ref.parquet"), Path(tmp, "cur.parquet")
        pq.write_table(pa.Table.from_pandas(reference, preserve_index=False), ref_path)
        pq.write_table(pa.Table.from_pandas(current, preserve_index=False), cur_path)

        def run() -> tuple[str, str | None]:
            built = _outcome(lambda: ReferenceProfile.from_file(ref_path, chunk_rows=chunk_rows, sample_size=20))
            try:
                profile = ReferenceProfile.from_file(ref_path, chunk_rows=chunk_rows, sample_size=20)
            except ProfileError:
                return built, None
            return built, _outcome(lambda: compare_file(profile, cur_path, Options(exact=exact, max_exact=15),
                                                        chunk_rows=chunk_rows))

        new = run()
        with _old_readers():
            old = run()
    assert new == old


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ref=nullable_columns(), cur=nullable_columns())
def test_the_monitor_reads_a_batch_as_the_object_column(ref: tuple[str, list[int | None]],
                                                         cur: tuple[str, list[int | None]]) -> None:
    frames = _frames(ref, cur)
    reference = frames[0][0]
    try:
        profile = ReferenceProfile.build(reference)
    except ProfileError:
        return
    seen = []
    for _, batch in frames:  # the object column, pandas, pyarrow
        registry = CollectorRegistry()
        monitor = DriftMonitor(profile, registry=registry, window_size=100)
        monitor.observe_batch(batch)
        monitor.flush()
        samples = sorted((m.name, s.name, sorted(s.labels.items()), s.value) for m in registry.collect()
                         for s in m.samples if not s.name.endswith("_created"))
        seen.append((_outcome(monitor.evaluate), samples))
    assert seen[1] == seen[0]
    assert seen[2] == seen[0]


@settings(max_examples=200, deadline=None)
@given(column=nullable_columns())
def test_counts_are_a_counter_of_the_python_ints_in_order(column: tuple[str, list[int | None]]) -> None:
    dtype, values = column
    assume(None in values)  # without one, the column is its numpy ints, counted by np.unique as before
    ints = extension_column(pd.Series(exact_array(values, dtype)))
    assert isinstance(ints, NullableInts)
    counts = columns_module.distinct_counts(ints)
    # a Counter of the Python values meets each distinct value in the order of its first occurrence
    assert list(counts.items()) == list(Counter(values).items())
    assert all(type(key) is int for key in counts if key is not None)


@pytest.mark.parametrize("late", [100, 5000, 40_000, 199_999])
def test_counts_of_a_long_column_are_in_order_of_first_occurrence(late: int) -> None:
    """A long column's first occurrences are looked for in growing prefixes first: a value first met late (past
    each prefix, or last) still takes its place in the order."""
    rng = np.random.default_rng(late)
    values: list[int | None] = [None if m else int(v) for v, m in zip(rng.integers(3, 9, 200_000),
                                                                       rng.random(200_000) < 0.1, strict=True)]
    values[late] = 2**62
    values[late // 2] = -5
    ints = extension_column(pd.Series(values, dtype="Int64"))
    assert isinstance(ints, NullableInts)
    assert list(columns_module.distinct_counts(ints).items()) == list(Counter(values).items())


@pytest.mark.parametrize("dtype", DTYPES)
def test_nullable_int_column_is_held_as_ints_not_python_objects(dtype: str) -> None:
    lo, hi = _limits(dtype)
    series = pd.Series([lo, None, hi], dtype=dtype)
    for column in (extension_column(series), extension_column(pa.array([lo, None, hi],
                                                                       type=pa.from_numpy_dtype(np.dtype(dtype.lower()))))):
        assert isinstance(column, NullableInts)
        assert column.values.dtype == np.dtype(dtype.lower())
        assert column.missing.tolist() == [False, True, False]
        assert np.asarray(column).tolist() == [lo, None, hi]  # still reads as the object column it stands for


def test_floats_round_as_python_ints_do_past_2_to_the_53() -> None:
    values = [2**53 + 1, 2**53 + 3, 2**63 - 1, -(2**63), None]
    column = extension_column(pd.Series(values, dtype="Int64"))
    assert isinstance(column, NullableInts)
    floats = columns_module.to_float_flagging(column)[0]
    assert floats.tolist()[:4] == [float(v) for v in values[:4] if v is not None]
    assert np.isnan(floats[4])
    big = extension_column(pd.Series([2**64 - 1, 2**63 + 1025, None], dtype="UInt64"))
    assert columns_module.to_float_flagging(big)[0].tolist()[:2] == [float(2**64 - 1), float(2**63 + 1025)]
