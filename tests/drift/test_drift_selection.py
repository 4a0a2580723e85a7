"""Order statistics selected through a sample's brackets are the sorted column's, and an in-memory build that
selects its quantiles makes the same profile as one that sorts every column."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiwatch.drift import builder, selection
from aiwatch.drift.builder import build_in_memory
from aiwatch.drift.columns import SortBuffer
from aiwatch.drift.selection import order_statistics

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
#: Few distinct values: many ties at every order statistic.
tied_floats = st.sampled_from([-1.5, 0.0, 0.0, 2.0, 1e300, -0.0])


@st.composite
def columns_with_positions(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values = np.asarray(draw(st.lists(st.one_of(finite_floats, tied_floats), min_size=1, max_size=400)))
    positions = np.asarray(sorted(draw(st.lists(st.integers(0, values.size - 1), max_size=12))), dtype=np.intp)
    sample_of_values = draw(st.booleans())
    if sample_of_values:
        sample = values[draw(st.lists(st.integers(0, values.size - 1), max_size=60))]
    else:  # a sample from elsewhere only makes the brackets miss
        sample = np.asarray(draw(st.lists(finite_floats, max_size=60)))
    return values, positions, sample


@settings(max_examples=400, deadline=None)
@given(columns_with_positions())
def test_order_statistics_are_the_sorted_values_at_those_positions(case: tuple[np.ndarray, ...]) -> None:
    values, positions, sample = case
    before = values.copy()
    assert order_statistics(values, positions, sample).tolist() == np.sort(values)[positions].tolist()
    assert np.array_equal(values, before)  # the column is not reordered


def _spy_partitions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the arrays ``np.partition`` is called on from the selection module (the whole column only when
    a bracket missed)."""
    sizes: list[int] = []
    real = np.partition

    def spy(a: Any, kth: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(np.asarray(a).size)
        return real(a, kth, *args, **kwargs)

    monkeypatch.setattr(selection.np, "partition", spy)
    return sizes


def test_a_sample_from_the_column_brackets_every_statistic_in_a_few_percent_of_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.random.default_rng(1).lognormal(size=300_000)
    positions = np.array([0, 29_999, 30_000, 150_000, 269_999, 270_000, 299_999])
    sizes = _spy_partitions(monkeypatch)
    taken: list[int] = []
    real_bracket = selection._bracket

    def spy_bracket(*args: Any) -> Any:
        found = real_bracket(*args)
        taken.append(-1 if found is None else found[1].size)
        return found

    monkeypatch.setattr(selection, "_bracket", spy_bracket)
    found = order_statistics(values, positions, np.random.default_rng(2).choice(values, 20_000, replace=False))
    assert found.tolist() == np.sort(values)[positions].tolist()
    assert sizes == []  # no whole-column partition: every bracket held its statistics
    assert len(taken) == 5  # a quantile's two neighbouring statistics share one bracket
    assert 0 < max(taken) <= 0.04 * values.size  # 5 standard deviations of a 20 000-value sample's ranks


def test_brackets_ending_at_every_offset_around_the_statistic_give_it_exactly() -> None:
    """Samples shifted against the column put a bracket's ends just below, at and just above the wanted order
    statistic: only a bracket that holds it may answer (one ending a value short must fall back)."""
    values = np.random.default_rng(4).permutation(np.arange(1000.0))
    for position in (0, 283, 500, 999):
        for offset in range(-150, 151):
            found = order_statistics(values, np.array([position]), np.arange(1000.0) + offset)
            assert found.tolist() == [float(position)], (position, offset)


def test_brackets_that_miss_fall_back_to_one_partition_of_the_column(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.random.default_rng(1).random(100_000)
    positions = np.array([10, 50_000, 99_000])
    sizes = _spy_partitions(monkeypatch)
    # every sample value is above every column value: each bracket's lower edge lies above the wanted statistic
    found = order_statistics(values, positions, np.linspace(10.0, 11.0, 5_000))
    assert found.tolist() == np.sort(values)[positions].tolist()
    assert sizes == [values.size]


def test_a_bracket_of_tied_values_too_large_to_take_out_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    values = np.where(rng.random(200_000) < 0.4, 5.0, rng.normal(5.0, 1.0, 200_000))  # 40% tied at the median
    positions = np.array([99_999, 100_000])
    sizes = _spy_partitions(monkeypatch)
    found = order_statistics(values, positions, rng.choice(values, 20_000, replace=False))
    assert found.tolist() == np.sort(values)[positions].tolist() == [5.0, 5.0]
    assert sizes == [values.size]


def test_positions_out_of_order_or_range_are_refused() -> None:
    values = np.arange(10.0)
    for positions in ([3, 2], [-1], [10]):
        with pytest.raises(ValueError, match=r"positions must be increasing and within 0\.\.9"):
            order_statistics(values, np.asarray(positions, dtype=np.intp), values)
    with pytest.raises(ValueError, match=r"no values, so no order statistic at positions \[0\]"):
        order_statistics(np.empty(0), np.array([0]), values)


# ------------------------------------------------------------------------------------- the in-memory build


def _columns(rows: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    heavy = rng.standard_cauchy(rows)
    with_gaps = rng.normal(size=rows)
    with_gaps[rng.random(rows) < 0.05] = np.nan
    with_gaps[:3] = [np.inf, -np.inf, np.nan]
    return {
        "normal": rng.normal(3.0, 2.0, rows),
        "heavy_tailed": heavy,
        "ascending": np.sort(rng.random(rows)),
        "descending": np.sort(rng.random(rows))[::-1].copy(),
        "with_missing_and_infinite": with_gaps,
        "ties_at_the_cuts": np.round(rng.normal(size=rows), 1),  # ~80 distinct values: every cut a tied value
        "mostly_one_value": np.where(rng.random(rows) < 0.7, 1.0, rng.random(rows)),
        "huge": rng.normal(size=rows) * 1e100,
        "ints": rng.integers(-10_000, 10_000, rows),
        "few_distinct": rng.integers(0, 5, rows).astype(float),  # discrete: sorted, one bin per value
        "plan": rng.choice(["free", "pro"], rows),
    }


def _profile(columns: dict[str, Any], **options: Any) -> dict[str, Any]:
    return build_in_memory(columns, **options).features()


@pytest.mark.parametrize("rows", [70_000, 200_000])
def test_selecting_the_quantiles_builds_the_profile_that_sorting_builds(rows: int,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    columns = _columns(rows, seed=rows)
    selected = _profile(columns)
    with monkeypatch.context() as m:
        m.setattr(builder, "SELECT_MIN_VALUES", 10**12)  # every column sorted, as before selection existed
        sorted_ = _profile(columns)
    assert selected == sorted_
    edges = {"normal": [-1.0, 0.0, 2.5], "heavy_tailed": []}
    selected_with_edges = _profile(columns, edges=edges)
    with monkeypatch.context() as m:
        m.setattr(builder, "SELECT_MIN_VALUES", 10**12)
        assert selected_with_edges == _profile(columns, edges=edges)
    assert selected_with_edges["normal"].cuts == [-1.0, 0.0, 2.5]


def test_a_large_continuous_column_is_not_sorted_and_a_discrete_one_is(monkeypatch: pytest.MonkeyPatch) -> None:
    sorted_sizes: list[int] = []
    real = SortBuffer.sorted_copy

    def spy(self: SortBuffer, values: np.ndarray) -> np.ndarray:
        sorted_sizes.append(values.size)
        return real(self, values)

    monkeypatch.setattr(SortBuffer, "sorted_copy", spy)
    rng = np.random.default_rng(5)
    features = build_in_memory({"x": rng.normal(size=100_000), "few": rng.integers(0, 5, 100_000).astype(float),
                                "small": rng.normal(size=1_000)}).features()
    assert sorted_sizes == [100_000, 1_000]  # "few" and "small" only
    assert features["few"].distinct == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_small_sample_size_still_gives_the_exact_cuts() -> None:
    values = np.random.default_rng(6).exponential(size=100_000)
    for sample_size in (10, 2_000):
        cuts = build_in_memory({"x": values}, sample_size=sample_size).features()["x"].cuts
        assert cuts == np.unique(np.quantile(values, np.linspace(0, 1, 11)[1:-1])).tolist()
