"""Every drift statistic against scipy (1e-9) and Evidently 0.7 (same method, same data)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from aiwatch.drift import stattests
from aiwatch.drift.evaluate import compare
from aiwatch.drift.profile import ReferenceProfile

RNG = np.random.default_rng(42)
SAMPLES = {
    "same": (RNG.normal(0, 1, 300), RNG.normal(0, 1, 200)),
    "shifted": (RNG.normal(0, 1, 300), RNG.normal(0.4, 1.2, 250)),
    "small": (RNG.normal(0, 1, 12), RNG.normal(1, 1, 9)),
    "ties": (RNG.integers(0, 8, 400).astype(float), RNG.integers(0, 9, 300).astype(float)),
    "large": (RNG.exponential(2.0, 5000), RNG.exponential(2.3, 20000)),
}
COUNTS = {
    "uniform": ([25, 25, 25, 25], [30, 20, 25, 25]),
    "skewed": ([500, 300, 150, 50], [100, 200, 300, 400]),
    "zero-current": ([40, 30, 20, 10], [50, 50, 0, 0]),
    "identical": ([10, 20, 30], [10, 20, 30]),
    "many": (list(RNG.integers(1, 100, 30)), list(RNG.integers(1, 100, 30))),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_ks_equals_scipy(name: str) -> None:
    ref, cur = SAMPLES[name]
    expected = stats.ks_2samp(ref, cur)
    got = stattests.ks(ref, cur)
    assert got.statistic == pytest.approx(expected.statistic, abs=1e-9)
    assert got.pvalue == pytest.approx(expected.pvalue, abs=1e-9)
    assert got.drifted == (expected.pvalue <= 0.05)


@pytest.mark.parametrize("name", SAMPLES)
def test_wasserstein_equals_scipy_normalised(name: str) -> None:
    ref, cur = SAMPLES[name]
    expected = stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001)
    assert stattests.wasserstein(ref, cur).statistic == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", COUNTS)
def test_jensenshannon_equals_scipy(name: str) -> None:
    ref, cur = COUNTS[name]
    expected = distance.jensenshannon(np.asarray(ref, float), np.asarray(cur, float))
    assert stattests.jensenshannon(ref, cur).statistic == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("name", COUNTS)
def test_chisquare_equals_scipy(name: str) -> None:
    ref, cur = COUNTS[name]
    r, c = np.asarray(ref, float), np.asarray(cur, float)
    used = (r > 0) | (c > 0)
    expected = stats.chisquare(c[used], r[used] / r.sum() * c.sum())
    got = stattests.chisquare(ref, cur)
    assert got.statistic == pytest.approx(expected.statistic, rel=1e-9, abs=1e-9)
    assert got.pvalue == pytest.approx(expected.pvalue, abs=1e-9)


@pytest.mark.parametrize("name", COUNTS)
def test_psi_equals_formula(name: str) -> None:
    ref, cur = COUNTS[name]
    r = np.asarray(ref, float) / sum(ref)
    c = np.asarray(cur, float) / sum(cur)
    r[r == 0] = 0.0001
    c[c == 0] = 0.0001
    expected = sum((ci - ri) * math.log(ci / ri) for ri, ci in zip(r, c, strict=True))
    assert stattests.psi(ref, cur).statistic == pytest.approx(expected, abs=1e-12)


def test_chisquare_unseen_bucket_uses_epsilon_not_zero() -> None:
    """A category the reference never saw: Evidently's expected count 0 gives p = 0; ours is small but > 0 when
    the evidence is thin, and the expected count is the documented epsilon share."""
    ref, cur = [500, 500, 0], [50, 49, 1]
    got = stattests.chisquare(ref, cur)
    assert got.pvalue is not None and got.pvalue > 0
    expected = stattests.chisquare_expected(ref, cur)
    assert expected[2] == pytest.approx(stattests.CHI2_EPSILON / (1 + stattests.CHI2_EPSILON) * 100)
    scipy_p = stats.chisquare(np.asarray(cur, float), expected).pvalue
    assert got.pvalue == pytest.approx(scipy_p, abs=1e-9)
    assert math.isfinite(stattests.psi(ref, cur).statistic)


def test_z_matches_two_proportion_formula() -> None:
    ref, cur = [300, 700], [380, 620]
    p1, p2 = 0.7, 0.62
    pooled = (p1 * 1000 + p2 * 1000) / 2000
    zval = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    got = stattests.z(ref, cur)
    assert got.statistic == pytest.approx(zval, rel=1e-12)
    assert got.pvalue == pytest.approx(2 * stats.norm.sf(abs(zval)), abs=1e-12)


def test_corrections_equal_scipy_and_formula() -> None:
    p = [0.001, 0.2, 0.03, 0.04, 0.5, 0.011]
    assert stattests.benjamini_hochberg(p) == pytest.approx(list(stats.false_discovery_control(p, method="bh")),
                                                            abs=1e-12)
    assert stattests.bonferroni(p) == pytest.approx([min(1.0, x * 6) for x in p])


def test_unknown_method_is_named() -> None:
    with pytest.raises(ValueError, match="unknown drift test 'kss'"):
        stattests.method("kss")


# ----------------------------------------------------------------------------------------------- Evidently

ev_stattests = pytest.importorskip("evidently.legacy.calculations.stattests")
pd = pytest.importorskip("pandas")
from evidently.legacy.calculations.stattests.registry import _get_default_stattest  # noqa: E402
from evidently.legacy.core import ColumnType  # noqa: E402


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
