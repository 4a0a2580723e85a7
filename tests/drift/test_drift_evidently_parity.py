"""aiwatch's drift statistics against Evidently 0.7 on the same data (the scipy checks are in
test_drift_stattests.py, and run whether or not Evidently is installed)."""

from __future__ import annotations

import numpy as np
import pytest

from aiwatch.drift import stattests
from aiwatch.drift.evaluate import compare
from aiwatch.drift.profile import ReferenceProfile
from tests.drift.samples import SAMPLES
from tests.servers import require_module

ev_stattests = require_module("evidently.legacy.calculations.stattests")
pd = require_module("pandas")
from evidently.legacy.calculations.stattests.registry import _get_default_stattest  # noqa: E402
from evidently.legacy.core import ColumnType  # noqa: E402

RNG = np.random.default_rng(43)

# ----------------------------------------------------------------------------------------------- Evidently



def _evidently(test: object, ref: object, cur: object, kind: ColumnType) -> float:
    return float(test(pd.Series(ref), pd.Series(cur), kind, None).drift_score)  # type: ignore[operator]


@pytest.mark.parametrize("name", ["same", "shifted", "small", "ties"])
def test_ks_equals_evidently(name: str) -> None:
    ref, cur = SAMPLES[name]
    assert stattests.ks(ref, cur).pvalue == pytest.approx(
        _evidently(ev_stattests.ks_stat_test, ref, cur, ColumnType.Numerical), abs=1e-9)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_wasserstein_via_profile_equals_evidently(name: str) -> None:
    """Through the whole path: profile (sample = the whole reference) -> compare -> Evidently's value."""
    ref, cur = SAMPLES[name]
    profile = ReferenceProfile.build({"x": ref}, sample_size=len(ref))
    report = compare(profile, {"x": cur}, methods={"x": "wasserstein"}, min_samples=1)
    assert report.features["x"].statistic == pytest.approx(
        _evidently(ev_stattests.wasserstein_stat_test, ref, cur, ColumnType.Numerical), rel=1e-9)


CATEGORIES = {
    "balanced": (["a", "b", "c"] * 100, ["a", "b", "c"] * 60 + ["a"] * 20),
    "shifted": (["a"] * 200 + ["b"] * 100 + ["c"] * 20 + ["d"] * 5, ["a"] * 50 + ["b"] * 100 + ["c"] * 80 + ["d"] * 9),
    "missing-in-current": (["x"] * 30 + ["y"] * 70 + ["z"] * 10, ["x"] * 40 + ["y"] * 60),
}


@pytest.mark.parametrize("name", CATEGORIES)
@pytest.mark.parametrize("method", ["chisquare", "jensenshannon", "psi"])
def test_categorical_tests_equal_evidently(name: str, method: str) -> None:
    ref, cur = CATEGORIES[name]
    profile = ReferenceProfile.build({"c": ref})
    report = compare(profile, {"c": cur}, methods={"c": method})
    evidently_test = {"chisquare": ev_stattests.chi_stat_test, "jensenshannon": ev_stattests.jensenshannon_stat_test,
                      "psi": ev_stattests.psi_stat_test}[method]
    assert report.features["c"].score == pytest.approx(
        _evidently(evidently_test, ref, cur, ColumnType.Categorical), abs=1e-9)


def test_z_equals_evidently() -> None:
    ref, cur = ["no"] * 300 + ["yes"] * 100, ["no"] * 200 + ["yes"] * 110
    profile = ReferenceProfile.build({"c": ref})
    report = compare(profile, {"c": cur})
    assert report.features["c"].method == "z"
    assert report.features["c"].pvalue == pytest.approx(
        _evidently(ev_stattests.z_stat_test, ref, cur, ColumnType.Categorical), abs=1e-9)


def test_discrete_numerical_jensenshannon_equals_evidently() -> None:
    """A numerical column with <= 5 values and > 1000 reference rows: Evidently picks JS on value counts; so do we
    (one bin per reference value)."""
    ref = RNG.integers(0, 5, 3000).astype(float)
    cur = RNG.choice([0.0, 1, 2, 3, 4], 800, p=[0.4, 0.3, 0.1, 0.1, 0.1])
    report = compare(ReferenceProfile.build({"x": ref}), {"x": cur})
    assert report.features["x"].method == "jensenshannon"
    assert report.features["x"].statistic == pytest.approx(
        _evidently(ev_stattests.jensenshannon_stat_test, ref, cur, ColumnType.Numerical), abs=1e-9)


@pytest.mark.parametrize(("kind", "ref", "cur"), [
    ("numerical", RNG.normal(size=500), RNG.normal(size=300)),
    ("numerical", RNG.normal(size=3000), RNG.normal(size=300)),
    ("numerical", RNG.integers(0, 4, 500).astype(float), RNG.integers(0, 4, 300).astype(float)),
    ("numerical", RNG.integers(0, 2, 500).astype(float), RNG.integers(0, 2, 300).astype(float)),
    ("numerical", RNG.integers(0, 3, 3000).astype(float), RNG.integers(0, 3, 300).astype(float)),
    ("categorical", np.array(["a", "b", "c"] * 100), np.array(["a", "b"] * 100)),
    ("categorical", np.array(["a", "b"] * 300), np.array(["a", "b"] * 100)),
    ("categorical", np.array(["a", "b"] * 1000), np.array(["a", "b"] * 100)),
])
def test_default_selection_equals_evidently(kind: str, ref: np.ndarray, cur: np.ndarray) -> None:
    profile = ReferenceProfile.build({"f": ref}, kinds={"f": kind})
    report = compare(profile, {"f": cur})
    ev_kind = ColumnType.Numerical if kind == "numerical" else ColumnType.Categorical
    expected = _get_default_stattest(pd.Series(ref), pd.Series(cur), ev_kind)
    assert report.features["f"].method == expected.name
    assert report.features["f"].threshold == expected.default_threshold


def test_evidently_psi_binning_differs_on_continuous_data() -> None:
    """Documented difference: Evidently bins PSI on continuous data by Sturges bins of reference + current; aiwatch
    uses the profile's fixed reference-quantile bins (what the fleet sketch can add up across replicas)."""
    ref, cur = SAMPLES["shifted"]
    ours = compare(ReferenceProfile.build({"x": ref}), {"x": cur}, methods={"x": "psi"}).features["x"].statistic
    theirs = _evidently(ev_stattests.psi_stat_test, ref, cur, ColumnType.Numerical)
    assert ours > 0 and theirs > 0 and ours != pytest.approx(theirs, abs=1e-6)
