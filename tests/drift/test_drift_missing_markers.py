"""pandas' and numpy's missing markers (pd.NA, pd.NaT, numpy's NaT, a float32 NaN) are missing values on every drift
path: one row, a batch, a one-off comparison and a profile build. They were wrong-typed (``pd.NA`` is what a nullable
``string``, ``boolean`` or ``Int64`` column holds where a value is missing), and a float32 NaN in a categorical
feature was the category "nan"."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from aiwatch.drift import DriftMonitor, ReferenceProfile, compare
from aiwatch.drift.columns import is_missing, to_float
from tests.servers import require_module

pd = require_module("pandas")

MARKERS = [pytest.param(lambda: pd.NA, id="pd.NA"), pytest.param(lambda: pd.NaT, id="pd.NaT"),
           pytest.param(lambda: np.datetime64("NaT", "ns"), id="np.NaT"),
           pytest.param(lambda: np.timedelta64("NaT", "ns"), id="np.timedelta-NaT"),
           pytest.param(lambda: np.float32("nan"), id="float32-nan"),
           pytest.param(lambda: np.float16("inf"), id="float16-inf")]


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    rng = np.random.default_rng(5)
    return ReferenceProfile.build({"x": rng.normal(size=600), "c": ["a", "b", "c"] * 200, "k": [1, 2, 3] * 200})


def counted(registry: CollectorRegistry, feature: str) -> tuple[float, float]:
    """(missing, wrong-typed) counted for ``feature`` of model m."""
    missing = registry.get_sample_value("aiwatch_feature_missing_total", {"model": "m", "feature": feature})
    wrong = registry.get_sample_value("aiwatch_feature_invalid_total",
                                      {"model": "m", "feature": feature, "reason": "wrong_type"})
    return missing or 0.0, wrong or 0.0


@pytest.mark.parametrize("marker", MARKERS)
def test_a_marker_is_missing_not_wrong_typed(marker: Any) -> None:
    assert is_missing(marker())
    number = to_float(marker())
    assert number is not None and not math.isfinite(number)


def test_real_values_are_not_missing() -> None:
    for v in ("nan", "", 0, 0.0, False, np.float32(1.5), np.datetime64("2024-01-01"), pd.Timestamp(0), [None]):
        assert not is_missing(v), v


@pytest.mark.parametrize("marker", MARKERS)
def test_a_row_holding_a_marker_counts_it_missing(profile: ReferenceProfile, marker: Any) -> None:
    registry = CollectorRegistry()
    mon = DriftMonitor(profile, model="m", registry=registry, min_samples=1)
    mon.observe({"x": marker(), "c": marker(), "k": marker()})
    mon.observe({"x": 0.5, "c": "a", "k": 2})
    for feature in ("x", "c", "k"):
        assert counted(registry, feature) == (1.0, 0.0), feature
    report = mon.evaluate()
    assert {name: (f.current_count, f.missing, f.invalid) for name, f in report.features.items()} == \
        dict.fromkeys(("x", "c", "k"), (1, 1, 0))


def nullable_frame() -> Any:
    """Two present values and one missing one in each nullable dtype, as the features' kinds take them."""
    return pd.DataFrame({"x": pd.array([0.5, 1.5, None], dtype="Float64"),
                         "c": pd.array(["a", "b", None], dtype="string"),
                         "k": pd.array([1, 2, None], dtype="Int64")})


@pytest.mark.parametrize("data", [
    pytest.param(nullable_frame, id="dataframe"),
    pytest.param(lambda: {name: nullable_frame()[name].array for name in ("x", "c", "k")}, id="pandas-arrays"),
    pytest.param(lambda: {"x": pd.array([1, 2, None], dtype="Int64"), "c": pd.array([True, False, None],
                                                                                    dtype="boolean"),
                          "k": pd.Series(["1", "2", None], dtype="string")}, id="other-dtypes"),
    pytest.param(lambda: pd.DataFrame({"x": [0.5, pd.NA, 1.5], "c": ["a", pd.NA, "b"], "k": [pd.NaT, 1, 2]},
                                      dtype=object), id="object-columns"),
])
def test_a_batch_and_a_comparison_count_nullable_missing_values_missing(profile: ReferenceProfile, data: Any) -> None:
    registry = CollectorRegistry()
    mon = DriftMonitor(profile, model="m", registry=registry, min_samples=1)
    mon.observe_batch(data())
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "drift"}) == 0
    expected = {"x": (1.0, 0.0), "c": (1.0, 0.0), "k": (1.0, 0.0)}
    assert {name: counted(registry, name) for name in expected} == expected
    checked = compare(profile, data(), min_samples=1)
    assert {name: (f.missing, f.invalid) for name, f in checked.features.items()} == dict.fromkeys(expected, (1, 0))


def test_a_profile_counts_nullable_missing_values_missing() -> None:
    # the string column was left out of the profile (its last value, pd.NA, was no string: kind "unknown")
    built = ReferenceProfile.build({"s": pd.array(["a", "b", None] * 20, dtype="string"),
                                    "n": pd.array([1, 2, None] * 20, dtype="Int64"),
                                    "o": np.array([0.5, pd.NA, 1.5, pd.NaT] * 15, dtype=object)})
    assert {name: (f.kind, f.count, f.missing) for name, f in built.features.items()} == {
        "s": ("categorical", 40, 20), "n": ("categorical", 40, 20), "o": ("numerical", 30, 30)}


@pytest.mark.parametrize("marker", MARKERS[:2])
def test_pandas_3s_missing_markers_are_missing(profile: ReferenceProfile, marker: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # pandas 3 moved the types of pd.NA and pd.NaT (their __module__ is pandas.api.typing there): aiwatch knew them
    # by pandas 2's module names, so on pandas 3 each was a wrong-typed value, not a missing one. Their module set
    # as pandas 3 sets it:
    monkeypatch.setattr(type(marker()), "__module__", "pandas.api.typing")
    assert is_missing(marker())
    registry = CollectorRegistry()
    mon = DriftMonitor(profile, model="m", registry=registry, min_samples=1)
    mon.observe({"x": marker(), "c": marker(), "k": marker()})
    assert {feature: counted(registry, feature) for feature in ("x", "c", "k")} == \
        dict.fromkeys(("x", "c", "k"), (1.0, 0.0))
