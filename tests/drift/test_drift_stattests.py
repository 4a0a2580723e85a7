"""Every drift statistic against scipy (1e-9) and Evidently 0.7 (same method, same data)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial import distance

from aiwatch.drift import stattests
from tests.drift.samples import COUNTS, SAMPLES


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


@pytest.mark.parametrize(("m", "n"), [(1, 1), (1, 7), (7, 1), (5, 5), (20, 1000), (1000, 20), (333, 1000),
                                      (64, 64 * 3), (50, 2000)])
def test_wasserstein_of_sorted_samples_is_scipys(m: int, n: int) -> None:
    rng = np.random.default_rng(m * 1000 + n)
    for u, v in ((rng.normal(size=m), rng.normal(0.3, 2.0, size=n)),
                 (rng.integers(0, 4, m).astype(float), rng.integers(0, 4, n).astype(float)),  # ties everywhere
                 (rng.normal(1e6, 1.0, size=m), rng.normal(1e6 + 0.5, 1.0, size=n))):  # far from 0
        expected = stats.wasserstein_distance(u, v)
        found = stattests.wasserstein_distance_sorted(np.sort(u), np.sort(v))
        assert found == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert stattests.wasserstein(u, v, current_sorted=False).statistic == pytest.approx(
            expected / max(float(np.std(u)), 0.001), rel=1e-9, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-3, 3) | st.floats(-5, 5), min_size=1, max_size=60),
       st.lists(st.integers(-3, 3) | st.floats(-5, 5), min_size=1, max_size=300))
def test_the_exact_wasserstein_splits_each_run_where_a_binary_search_does(short: list[float],
                                                                         long: list[float]) -> None:
    # _splits skips the search for a reference value at or outside its run of current values: ties at either
    # end of a run, empty runs and one-value runs included, it must agree with the search it replaces
    u, v = np.sort(np.asarray(short, dtype=np.float64)), np.sort(np.asarray(long, dtype=np.float64))
    if u.size > v.size:
        u, v = v, u
    m, n = u.size, v.size
    k = np.arange(m, dtype=np.int64)
    a = (k * n) // m + 1
    b = np.maximum(((k + 1) * n - 1) // m, a)
    assert stattests._splits(v, u, a, b).tolist() == np.clip(np.searchsorted(v, u), a, b).tolist()


def test_wasserstein_needs_values_on_both_sides() -> None:
    with pytest.raises(ValueError, match="both sides"):
        stattests.wasserstein_distance_sorted(np.empty(0), np.array([1.0]))
    with pytest.raises(ValueError, match="both sides"):
        stattests.wasserstein_distance_sorted(np.array([1.0]), np.empty(0))


def test_compare_in_exact_mode_uses_every_current_value_and_sorts_it_once() -> None:
    from aiwatch.drift.current import numerical_current
    from aiwatch.drift.evaluate import Options, compare
    from aiwatch.drift.profile import ReferenceProfile

    rng = np.random.default_rng(12)
    ref, cur = rng.normal(0, 1, 5000), rng.normal(0.02, 1, 40_000)
    profile = ReferenceProfile.build({"x": ref}, sample_size=5000)  # the sample is the whole reference
    expected = stats.wasserstein_distance(ref, cur) / np.std(ref)
    assert compare(profile, {"x": cur}, exact=True).features["x"].statistic == pytest.approx(expected, rel=1e-9)
    sampled = compare(profile, {"x": cur}, max_exact=1000).features["x"].statistic
    assert sampled != pytest.approx(expected, rel=1e-6)
    assert Options(exact=True, max_exact=10).sample_limit() is None and Options(max_exact=10).sample_limit() == 10
    feat = profile.features["x"]
    exact = numerical_current(feat, cur, None, bins=True)  # type: ignore[arg-type]
    assert exact.values_sorted and exact.values.tolist() == np.sort(cur).tolist()  # type: ignore[union-attr]
    assert exact.bin_counts.tolist() == numerical_current(feat, cur, 10).bin_counts.tolist()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exact must be True or False"):
        Options(exact="yes").check_numbers()  # type: ignore[arg-type]


def test_rows_alternating_between_two_sources_that_did_not_move_do_not_read_as_drifted() -> None:
    """The current data is the reference's mixture of two sources, rows alternating between them: its sample (every
    2nd row, from one random start, before) must hold both, as the exact mode and the monitor see them."""
    from aiwatch.drift.evaluate import compare
    from aiwatch.drift.monitor import DriftMonitor
    from aiwatch.drift.profile import ReferenceProfile

    rng = np.random.default_rng(3)
    ref = np.concatenate([rng.normal(0, 1, 50_000), rng.normal(10, 1, 50_000)])
    cur = np.empty(200_000)
    cur[0::2], cur[1::2] = rng.normal(0, 1, 100_000), rng.normal(10, 1, 100_000)
    profile = ReferenceProfile.build({"x": ref})
    sampled, exact = compare(profile, {"x": cur}).features["x"], compare(profile, {"x": cur}, exact=True).features["x"]
    assert not sampled.drifted and not exact.drifted
    assert sampled.statistic == pytest.approx(exact.statistic, abs=0.02)  # 0.977 before, against 0.004
    monitor = DriftMonitor(profile, window_size=200_000)
    monitor.observe_batch({"x": cur})
    assert not monitor.evaluate().features["x"].drifted


def test_the_default_check_takes_the_wasserstein_of_its_sample_by_cells_without_sorting_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampled check's Wasserstein is scipy's on the stratified sample, computed by cells as the exact mode's
    is: no sort of the sample (which cost 2.9x the whole check at 1M rows), and the same distance."""
    from aiwatch.drift.evaluate import compare
    from aiwatch.drift.profile import ReferenceProfile
    from aiwatch.drift.sampling import stratified_sample

    rng = np.random.default_rng(7)
    ref, cur = rng.normal(0, 1, 5000), rng.normal(0.05, 1.2, 300_000)
    profile = ReferenceProfile.build({"x": ref}, sample_size=5000)
    sample = stratified_sample(cur, 100_000, np.random.default_rng(0))  # the check's own draw (Options.seed 0)
    expected = stats.wasserstein_distance(ref, sample) / np.std(ref)
    sorted_path = stattests.wasserstein_distance_sorted
    calls: list[int] = []

    def counted(u: np.ndarray, v: np.ndarray) -> float:
        calls.append(v.size)
        return sorted_path(u, v)

    monkeypatch.setattr(stattests, "wasserstein_distance_sorted", counted)
    found = compare(profile, {"x": cur}).features["x"]
    assert found.method == "wasserstein" and found.statistic == pytest.approx(expected, rel=1e-9)
    assert calls == []  # neither the sample nor any part of it went through a full sort


# ------------------------------------------------------------------ thresholds, degenerate buckets, corrections


@pytest.mark.parametrize(("name", "ref", "cur"), [
    ("ks", SAMPLES["shifted"][0], SAMPLES["shifted"][1]),
    ("wasserstein", SAMPLES["shifted"][0], SAMPLES["shifted"][1]),
])
def test_a_value_test_uses_the_threshold_it_is_given(name: str, ref: object, cur: object) -> None:
    test = stattests.ks if name == "ks" else stattests.wasserstein
    default = test(ref, cur)  # type: ignore[arg-type]
    for threshold in (0.0, 0.5, 1e9):
        result = test(ref, cur, threshold)  # type: ignore[arg-type]
        assert result.threshold == threshold and result.statistic == default.statistic
        assert result.drifted == stattests.method(name).drifted(result.statistic, result.pvalue, threshold)
    assert default.threshold == stattests.METHODS[name].default_threshold


@pytest.mark.parametrize("name", ["psi", "jensenshannon", "chisquare", "z"])
def test_a_count_test_uses_the_threshold_it_is_given(name: str) -> None:
    ref, cur = [40, 60], [55, 45]
    test = stattests.COUNT_TESTS[name]
    default = test(ref, cur, None)
    assert default.threshold == stattests.METHODS[name].default_threshold
    for threshold in (0.0, 0.999, 10.0):
        result = test(ref, cur, threshold)
        assert (result.method, result.statistic, result.pvalue) == (default.method, default.statistic,
                                                                     default.pvalue)
        assert result.threshold == threshold
        assert result.drifted == stattests.method(name).drifted(result.statistic, result.pvalue, threshold)


def test_chisquare_leaves_out_buckets_empty_on_both_sides_and_keeps_the_others() -> None:
    # bucket 2 is empty on both sides (not a degree of freedom); bucket 3 has 1 reference value and no current one
    ref, cur = [50, 30, 0, 1, 19], [40, 45, 0, 0, 15]
    used_ref, used_cur = np.array([50, 30, 1, 19.0]), np.array([40, 45, 0, 15.0])
    expected = stats.chisquare(used_cur, used_ref / used_ref.sum() * used_cur.sum())
    result = stattests.chisquare(ref, cur)
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.pvalue == pytest.approx(expected.pvalue, rel=1e-9)


def test_chisquare_over_two_buckets_is_a_real_test_and_over_one_is_no_evidence() -> None:
    two = stattests.chisquare([50, 50], [80, 20])
    expected = stats.chisquare([80, 20], [50, 50])
    assert two.statistic == pytest.approx(expected.statistic) and two.pvalue == pytest.approx(expected.pvalue)
    assert two.pvalue < 0.05 and two.drifted
    assert stattests.chisquare([5, 0], [7, 0], 0.2) == stattests.TestResult("chisquare", 0.0, 1.0, 0.2, False)


def test_z_compares_the_first_bucket_share_and_degenerate_counts_are_no_evidence() -> None:
    result = stattests.z([30, 70], [50, 50])
    p1, p2, n1, n2 = 0.7, 0.5, 100, 100
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z_value = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert result.statistic == pytest.approx(z_value) and result.pvalue == pytest.approx(2 * stats.norm.sf(z_value))
    # empty buckets on both sides do not count: the same as the two-bucket test
    assert stattests.z([30, 0, 70], [50, 0, 50]).statistic == pytest.approx(z_value)
    # a bucket with one reference value and no current one still counts
    assert stattests.z([1, 30, 70], [0, 50, 50]).statistic != pytest.approx(0.0)
    assert stattests.z([1, 30], [0, 50]).pvalue < 1.0
    # one bucket used, or every value in the same bucket on both sides: no evidence either way
    assert stattests.z([5, 0], [7, 0], 0.2) == stattests.TestResult("z", 0.0, 1.0, 0.2, False)
    assert stattests.z([0, 5], [0, 7], 0.2) == stattests.TestResult("z", 0.0, 1.0, 0.2, False)


def test_benjamini_hochberg_of_one_p_value_is_itself_and_adjusted_values_stop_at_one() -> None:
    assert stattests.benjamini_hochberg([0.03]) == [0.03]
    assert stattests.benjamini_hochberg([]) == []
    assert stattests.benjamini_hochberg([0.9, 0.8, 0.95]) == pytest.approx([0.95, 0.95, 0.95])
    adjusted = stattests.benjamini_hochberg([0.6, 0.7, 0.9, 0.99])
    assert max(adjusted) <= 1.0 and adjusted == pytest.approx(list(stats.false_discovery_control([0.6, 0.7, 0.9,
                                                                                                     0.99])))


@pytest.mark.parametrize("u, v", [(np.array([]), np.array([1.0])), (np.array([1.0]), np.array([]))])
def test_wasserstein_of_sorted_samples_refuses_an_empty_side_by_name(u: np.ndarray, v: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"^Wasserstein distance needs values on both sides$"):
        stattests.wasserstein_distance_sorted(u, v)


def test_a_p_value_equal_to_the_threshold_is_drift_only_for_ks() -> None:
    # KS drifts at p <= threshold (Evidently's rule); chi-square and z at p < threshold
    assert stattests.method("ks").drifted(0.3, 0.05, 0.05) is True
    assert stattests.method("chisquare").drifted(9.0, 0.05, 0.05) is False
    assert stattests.method("z").drifted(2.0, 0.05, 0.05) is False
    assert stattests.method("chisquare").drifted(9.0, 0.049, 0.05) is True


def test_a_distance_equal_to_the_threshold_is_drift() -> None:
    assert stattests.method("psi").drifted(0.1, None, 0.1) is True
    assert stattests.method("wasserstein").drifted(0.0999, None, 0.1) is False


def test_an_unknown_test_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"known: ks, chisquare, z, psi, jensenshannon, wasserstein$"):
        stattests.method("t-test")


# ----------------------------------------------------------------- Wasserstein by runs, and the exact mode, vs scipy

_values = st.lists(st.one_of(st.floats(-1e3, 1e3, allow_subnormal=False), st.sampled_from([0.0, 1.0, 2.5])),
                   min_size=1, max_size=300)  # the sampled values: ties


@settings(max_examples=300, deadline=None)
@given(u=_values, v=_values, offset=st.sampled_from([0.0, 1e6, -1e9]))
def test_wasserstein_of_sorted_samples_is_scipys_for_any_values(u: list[float], v: list[float],
                                                                 offset: float) -> None:
    ref, cur = np.asarray(u) + offset, np.asarray(v) + offset  # far from 0: summed from the median
    expected = stats.wasserstein_distance(ref, cur)
    found = stattests.wasserstein_distance_sorted(np.sort(ref), np.sort(cur))
    assert found == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("loc", [0.0, 190.0, 1e6, 1e9, -1e9])
def test_wasserstein_of_a_long_sample_far_from_zero_keeps_its_precision(loc: float) -> None:
    rng = np.random.default_rng(21)
    ref, cur = rng.normal(loc, 1.0, 500), rng.normal(loc + 0.05, 1.0, 200_000)  # 400 current values a block
    expected = stats.wasserstein_distance(ref, cur)
    assert stattests.wasserstein_distance_sorted(np.sort(ref), np.sort(cur)) == pytest.approx(expected, rel=1e-9)


MAX_FLOAT = float(np.finfo(np.float64).max)


@settings(max_examples=100, deadline=None)
@given(u=_values, v=_values, exponent=st.sampled_from([960, 990, 1000, 1010, 1013]))
def test_wasserstein_of_values_near_the_float_limit_is_scipys_scaled(u: list[float], v: list[float],
                                                                      exponent: int) -> None:
    # W1(c u, c v) = c W1(u, v): scipy's distance of the values as they are, times 2**exponent (|u|, |v| <= 1e3 <
    # 2**10, so the scaled values stay finite); unscaled, the sums of values this large overflowed to inf
    ref, cur = np.sort(np.asarray(u)), np.sort(np.asarray(v))
    expected = stats.wasserstein_distance(ref, cur) * 2.0**exponent
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way
        found = stattests.wasserstein_distance_sorted(np.ldexp(ref, exponent), np.ldexp(cur, exponent))
    assert math.isfinite(found)
    assert found == pytest.approx(expected, rel=1e-9, abs=1e-9 * 2.0**exponent)


def test_a_wasserstein_distance_past_the_largest_float_is_inf_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stattests.wasserstein_distance_sorted(np.full(3, -MAX_FLOAT), np.full(5, MAX_FLOAT)) == math.inf
        assert stattests.wasserstein_distance_sorted(np.array([-MAX_FLOAT]), np.array([0.0])) == MAX_FLOAT


@pytest.mark.parametrize(("u", "v", "expected"), [
    # the largest magnitude at each end of either sample (the other values 0: v[1] is no stand-in for v[0])
    ([-MAX_FLOAT, 0.0], [0.0] * 4, MAX_FLOAT / 2),
    ([0.0, MAX_FLOAT], [0.0] * 4, MAX_FLOAT / 2),
    ([0.0] * 2, [-MAX_FLOAT, 0.0, 0.0, 0.0], MAX_FLOAT / 4),
    ([0.0] * 2, [0.0, 0.0, 0.0, MAX_FLOAT], MAX_FLOAT / 4),
    # just past the bound 2 m n |value| > 2**1000, either way round: one run of 4096 values of 2**1012 sums to 2**1024
    ([0.0], [-(2.0**1012)] * 4096 + [2.0**1012] * 4096, 2.0**1012),
    # m = n = 4096: 4096 blocks of width n at distance 2**1000 sum to 2**1024 (in units of 1 / (m n))
    ([-(2.0**999)] * 4096, [2.0**999] * 4096, 2.0**1000),
], ids=["u-first", "u-last", "v-first", "v-last", "long-v", "equal-sizes"])
def test_wasserstein_scales_the_values_wherever_its_sums_would_overflow(u: list[float], v: list[float],
                                                                        expected: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stattests.wasserstein_distance_sorted(np.array(u), np.array(v)) == pytest.approx(expected, rel=1e-15)
        assert stattests.wasserstein_distance_sorted(np.array(v), np.array(u)) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("exact", [False, True])
def test_one_current_value_at_the_float_limit_is_drift_with_a_finite_statistic(exact: bool) -> None:
    from aiwatch.drift.evaluate import compare
    from aiwatch.drift.profile import ReferenceProfile

    rng = np.random.default_rng(5)
    reference = rng.normal(size=4000)
    profile = ReferenceProfile.build({"x": reference}, sample_size=4000)
    current = np.append(rng.normal(size=2999), MAX_FLOAT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = compare(profile, {"x": current}, exact=exact, method="wasserstein").features["x"]
    # the one value alone moves the mean by MAX_FLOAT / 3000: the rest of the distance is noise next to it
    expected = MAX_FLOAT / current.size / float(np.std(reference))
    assert found.statistic == pytest.approx(expected, rel=1e-6)
    assert found.drifted


@settings(max_examples=60, deadline=None)
@given(ref=st.lists(st.floats(-50, 50, allow_subnormal=False), min_size=40, max_size=400),
       cur=st.lists(st.one_of(st.floats(-60, 60, allow_subnormal=False),
                              st.sampled_from([math.nan, math.inf, -math.inf, 0.0])), min_size=40, max_size=2000))
def test_the_exact_mode_is_scipy_on_every_finite_current_value(ref: list[float], cur: list[float]) -> None:
    from aiwatch.drift.evaluate import Options, compare, compare_features, summarise
    from aiwatch.drift.profile import ReferenceProfile

    reference = np.asarray(ref)
    profile = ReferenceProfile.build({"x": reference, "y": reference[::-1].copy()}, sample_size=400)
    current = np.asarray(cur)
    finite = current[np.isfinite(current)]
    data = {"x": current, "y": current[::-1].copy()}
    report = compare(profile, data, exact=True, method="wasserstein", min_samples=1)
    for name in ("x", "y"):
        found = report.features[name]
        assert (found.current_count, found.missing) == (finite.size, current.size - finite.size)
        if finite.size:
            expected = stats.wasserstein_distance(reference, finite) / max(float(np.std(reference)), 0.001)
            assert found.statistic == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # one feature at a time in one reused buffer: the same report as every feature summarised and kept
    options = Options(exact=True, method="wasserstein", min_samples=1)
    assert compare_features(profile, summarise(profile, data, options), options).to_dict() == report.to_dict()
    assert np.array_equal(current, np.asarray(cur), equal_nan=True)  # the caller's column is left as it was


def test_the_exact_mode_drops_a_features_values_when_the_next_is_summarised() -> None:
    from aiwatch.drift.evaluate import Options, _SortedOneByOne
    from aiwatch.drift.profile import ReferenceProfile

    rng = np.random.default_rng(8)
    profile = ReferenceProfile.build({"a": rng.normal(size=500), "b": rng.normal(size=500)})
    columns = {"a": rng.normal(size=300), "b": rng.normal(size=200), "z": [1.0]}
    lazy = _SortedOneByOne(profile, columns, Options(exact=True))
    assert list(lazy) == ["a", "b"] and "a" in lazy and "z" not in lazy and len(lazy) == 2
    first = lazy["a"]  # a raw-value test (Wasserstein): the finite values as they are, not sorted
    assert first.values is not None and first.values.tolist() == columns["a"].tolist() and not first.values_sorted
    second = lazy["b"]
    assert first.values is None and second.values is not None and second.values.size == 200
    binned = _SortedOneByOne(profile, columns, Options(exact=True, method="psi"))["a"]  # bins: read off sorted values
    assert binned.values_sorted and binned.values.tolist() == np.sort(columns["a"]).tolist()  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        lazy["z"]


@pytest.mark.parametrize("test", [stattests.psi, stattests.jensenshannon, stattests.chisquare, stattests.z])
@pytest.mark.parametrize(("reference", "current"), [([0, 0, 0], [5, 3, 2]), ([5, 3, 2], [0, 0, 0]),
                                                    ([4, 0], [0, 0]), ([0, 0], [0, 0])])
def test_a_count_test_refuses_a_side_without_data_and_says_why(
        test: Callable[[list[int], list[int]], stattests.TestResult], reference: list[int],
        current: list[int]) -> None:
    # every count test the same way: a share of nothing is NaN, and z and chisquare returned it (or p = 1)
    with pytest.raises(ValueError, match=r"^counts are all zero: no data$"):
        test(reference, current)


@pytest.mark.parametrize("test", [stattests.chisquare, stattests.z])
def test_a_count_test_takes_a_side_of_one_value(
        test: Callable[[list[int], list[int]], stattests.TestResult]) -> None:
    # one value is data: only a total of zero is refused
    for reference, current in (([1, 0], [30, 70]), ([30, 70], [0, 1])):
        result = test(reference, current)
        assert result.pvalue is not None and 0.0 <= result.pvalue < 1.0, (reference, current)


def test_z_skips_a_first_bucket_empty_on_both_sides() -> None:
    # the share compared is the first *used* bucket's: an empty one on both sides would make both shares 0
    assert stattests.z([0, 30, 70], [0, 50, 50]).statistic == pytest.approx(stattests.z([30, 70], [50, 50]).statistic)
    assert stattests.z([0, 30, 70], [0, 50, 50]).pvalue < 0.01


def test_wasserstein_is_normalised_by_the_reference_std_it_is_given() -> None:
    # W([0, 1], [1, 2]) = 1; the sample's own std is 0.5, a profile's full reference can have another
    assert stattests.wasserstein([0.0, 1.0], [1.0, 2.0]).statistic == pytest.approx(2.0)
    assert stattests.wasserstein([0.0, 1.0], [1.0, 2.0], reference_std=2.0).statistic == pytest.approx(0.5)
    assert stattests.wasserstein([0.0, 1.0], [1.0, 2.0], reference_std=0.0).statistic == pytest.approx(1000.0)


def test_jensenshannon_of_near_identical_counts_is_zero_where_scipy_rounds_to_nan() -> None:
    # shares this close make scipy's sum under the square root a hair negative on this platform (found by search)
    ref = [657433357442, 562266100514, 150063113243]
    cur = [657433357442, 562266100514, 150063113245]
    r, c = (np.asarray(x, dtype=np.float64) / sum(x) for x in (ref, cur))
    with np.errstate(invalid="ignore"):
        if not math.isnan(float(distance.jensenshannon(r, c))):
            pytest.skip("scipy's rounding gives no NaN for these shares here")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no RuntimeWarning from numpy's square root reaches the caller
        result = stattests.jensenshannon(ref, cur)
    assert result == stattests.TestResult("jensenshannon", 0.0, None, 0.1, False)


def test_z_counts_a_category_the_reference_never_saw_even_when_seen_once() -> None:
    result = stattests.z([0, 100], [1, 99])
    p1, p2, n1, n2 = 1.0, 0.99, 100, 100
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    z_value = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert result.statistic == pytest.approx(z_value)
    assert result.pvalue == pytest.approx(2 * stats.norm.sf(z_value)) and 0.3 < result.pvalue < 0.33


def test_z_over_counts_so_large_that_both_shares_round_to_one_is_no_evidence() -> None:
    # 1 - 1 / (1e20 + 1) is 1.0 in float64: the pooled share is 1, its variance 0, the z value 0 / 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stattests.z([1, 1e20], [1, 1e20]) == stattests.TestResult("z", 0.0, 1.0, 0.05, False)
        assert stattests.z([1, 1e20], [1, 1e20], 0.2) == stattests.TestResult("z", 0.0, 1.0, 0.2, False)


@pytest.mark.parametrize("kind, reference_count, n_values, expected", [
    ("numerical", 1000, 6, "ks"),  # Evidently: a reference of at most 1000 values is "small"
    ("numerical", 1001, 6, "wasserstein"),
    ("numerical", 1000, 5, "chisquare"),  # at most 5 distinct values: tested as categories
    ("numerical", 1001, 5, "jensenshannon"),
    ("categorical", 1000, 3, "chisquare"),
    ("categorical", 1000, 2, "z"),
    ("categorical", 1001, 3, "jensenshannon"),
])
def test_default_method_follows_evidentlys_boundaries(kind: str, reference_count: int, n_values: int,
                                                      expected: str) -> None:
    assert stattests.default_method(kind, reference_count, n_values) == expected


def test_float32_values_and_counts_are_tested_as_the_same_numbers_in_float64() -> None:
    # a float32 column (pandas, a model's features) or float32 counts: the result must not depend on the dtype the
    # numbers came in; counts below 2**24 are exact in float32, their sums are not
    rng = np.random.default_rng(17)
    ref = rng.normal(size=200).astype(np.float32)
    cur = rng.normal(0.2, 1.3, size=20_000).astype(np.float32)
    for value_test in (stattests.ks, stattests.wasserstein):
        assert value_test(ref, cur) == value_test(ref.astype(np.float64), cur.astype(np.float64))
    ref_counts = rng.integers(10**6, 2**24, size=8).astype(np.float32)
    cur_counts = rng.integers(10**6, 2**24, size=8).astype(np.float32)
    for count_test in (stattests.psi, stattests.jensenshannon, stattests.chisquare, stattests.z):
        assert count_test(ref_counts, cur_counts) == count_test(ref_counts.astype(np.float64),
                                                                cur_counts.astype(np.float64))


def test_benjamini_hochberg_adjusts_p_values_given_as_integers() -> None:
    assert stattests.benjamini_hochberg([1, 0, 1]) == [1.0, 0.0, 1.0]
    assert stattests.benjamini_hochberg([0, 0]) == [0.0, 0.0]


# ------------------------------------------- the exact mode's Wasserstein on every current value, left unsorted

def _exact_statistic(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """The exact mode's statistic (the reference sample is the whole reference) and scipy's on the finite values."""
    from aiwatch.drift.evaluate import compare
    from aiwatch.drift.profile import ReferenceProfile

    profile = ReferenceProfile.build({"x": reference}, sample_size=reference.size)
    found = compare(profile, {"x": current}, exact=True, method="wasserstein", min_samples=1).features["x"]
    finite = current[np.isfinite(current)]
    assert (found.current_count, found.missing) == (finite.size, current.size - finite.size)
    return found.statistic, stats.wasserstein_distance(reference, finite) / max(float(np.std(reference)), 0.001)


def _adversarial(name: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(sum(map(ord, name)))
    ref = rng.normal(0.0, 1.0, 400)
    if name == "same-distribution":
        return ref, rng.normal(0.0, 1.0, 40_000)
    if name == "shifted":
        return ref, rng.normal(0.3, 1.2, 40_000)
    if name == "the-reference-repeated":  # F_cur = F_ref wherever both step: every cell is a crossing
        return ref, np.tile(ref, 100)
    if name == "ties-across-both-sides":  # 2 decimals: many distinct values, each repeated on both sides
        return np.round(ref, 2), np.round(rng.normal(0.1, 1.0, 40_000), 2)
    if name == "ties-at-the-reference-values":
        return ref, np.concatenate([rng.choice(ref, 30_000), rng.normal(size=10_000)])
    if name == "outside-the-reference-range":
        return ref, np.concatenate([rng.normal(0.0, 1.0, 20_000), rng.uniform(-50, -5, 5000), rng.uniform(5, 80, 5000)])
    if name == "wholly-above-the-reference":
        return ref, rng.normal(100.0, 1.0, 40_000)
    if name == "wholly-below-with-ties":
        return ref, np.full(40_000, -7.25)
    if name == "all-current-values-equal-a-reference-value":
        return ref, np.full(40_000, float(ref[17]))
    if name == "far-from-zero":
        return ref + 1e9, rng.normal(1e9 + 0.05, 1.0, 40_000)
    if name == "far-from-zero-negative":
        return ref * 1e-3 - 5e6, rng.normal(-5e6, 1e-3, 40_000)
    if name == "non-finite-current-values":
        cur = rng.normal(0.1, 1.0, 40_000)
        cur[rng.choice(cur.size, 3000, replace=False)] = rng.choice([np.nan, np.inf, -np.inf], 3000)
        return ref, cur
    if name == "one-reference-value-repeated":  # a reference of one value (zero spread)
        return np.full(400, 2.5), rng.normal(2.5, 0.1, 40_000)
    raise AssertionError(name)


ADVERSARIAL = ["same-distribution", "shifted", "the-reference-repeated", "ties-across-both-sides",
               "ties-at-the-reference-values", "outside-the-reference-range", "wholly-above-the-reference",
               "wholly-below-with-ties", "all-current-values-equal-a-reference-value", "far-from-zero",
               "far-from-zero-negative", "non-finite-current-values", "one-reference-value-repeated"]


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_the_exact_mode_is_scipy_on_many_current_values_per_reference_value(name: str) -> None:
    # 100 current values per reference value: the exact mode's Wasserstein of unsorted current values against
    # the sorted reference sample
    reference, current = _adversarial(name)
    found, expected = _exact_statistic(reference, current)
    assert found == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(ref=st.lists(st.floats(-50, 50, allow_subnormal=False) | st.sampled_from([0.0, 1.0, 2.5]), min_size=2,
                    max_size=60),
       cur=st.lists(st.floats(-60, 60, allow_subnormal=False)
                    | st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1.0, 2.5]), min_size=1, max_size=200),
       repeat=st.integers(1, 40), offset=st.sampled_from([0.0, 1e6, -1e9]))
def test_the_exact_mode_is_scipy_for_any_long_current_data(ref: list[float], cur: list[float], repeat: int,
                                                           offset: float) -> None:
    reference = np.asarray(ref) + offset
    current = np.tile(np.asarray(cur), repeat) + offset
    if not np.isfinite(current).any():
        return
    found, expected = _exact_statistic(reference, current)
    assert found == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", ADVERSARIAL)
@pytest.mark.parametrize("share", [stattests.MAX_CROSSING_SHARE, 1.0])
def test_the_wasserstein_of_unsorted_values_against_a_sorted_reference_is_scipys(name: str, share: float) -> None:
    # share 1.0: the cells' sums and the crossing cells' merge alone, never the fallback that sorts every value
    reference, current = _adversarial(name)
    finite = current[np.isfinite(current)]
    expected = stats.wasserstein_distance(reference, finite)
    found = stattests.wasserstein_distance_to_sorted(np.sort(reference), finite, stattests.Scratch(), share)
    assert found == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(u=_values, v=_values, repeat=st.integers(1, 5), offset=st.sampled_from([0.0, 1e6, -1e9]),
       cells=st.sampled_from([1, 2, 3]))
def test_the_wasserstein_of_unsorted_values_is_scipys_for_any_values(u: list[float], v: list[float], repeat: int,
                                                                     offset: float, cells: int) -> None:
    ref, cur = np.asarray(u) + offset, np.tile(np.asarray(v), repeat) + offset
    expected = stats.wasserstein_distance(ref, cur)
    with pytest.MonkeyPatch.context() as patch:  # the cells even for a short current side, at several widths
        patch.setattr(stattests, "MIN_CURRENT_PER_REFERENCE", 0)
        patch.setattr(stattests, "CELLS_PER_REFERENCE", cells)
        found = stattests.wasserstein_distance_to_sorted(np.sort(ref), cur, max_crossing_share=1.0)
    assert found == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert cur.tolist() == (np.tile(np.asarray(v), repeat) + offset).tolist()  # the caller's values, as they were


def test_the_wasserstein_of_unsorted_values_sorts_where_its_sums_could_overflow() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reference = np.sort(np.random.default_rng(3).normal(size=50))
        current = np.append(np.zeros(999), MAX_FLOAT)  # the sum of the current values overflows: sorted instead
        expected = stattests.wasserstein_distance_sorted(reference, np.sort(current))
        assert stattests.wasserstein_distance_to_sorted(reference, current) == expected
        assert math.isfinite(expected)
        huge = np.array([-MAX_FLOAT, MAX_FLOAT])  # a reference span past the largest float: |F_u - F_v| = 1/2
        assert stattests.wasserstein_distance_to_sorted(huge, np.zeros(100)) == MAX_FLOAT
        tiny = np.array([0.0, 2.0**-1022])  # a span so small that its cells per unit overflow: sorted
        assert stattests.wasserstein_distance_to_sorted(tiny, np.zeros(100)) == pytest.approx(2.0**-1023)
    with pytest.raises(ValueError, match=r"^Wasserstein distance needs values on both sides$"):
        stattests.wasserstein_distance_to_sorted(np.empty(0), np.array([1.0]))


@pytest.mark.parametrize(("share", "rel"), [(0.5, 1e-13), (0.2, 1e-9)])
def test_the_wasserstein_of_unsorted_values_with_a_point_mass(share: float, rel: float) -> None:
    # a share of the values on one point that moves a little. Half: most of the reference in one cell, so the values
    # are sorted (the cells' sums of a million values near their count, cancelled against each other, lost 2e-9 of
    # the distance). A fifth: the cells, within 1e-9 (3e-10 here), the price of not sorting (docs/drift.md)
    rng = np.random.default_rng(21)

    def side(size: int, share: float, at: float) -> np.ndarray:
        values = rng.normal(size=size)
        values[rng.random(size) < share] = at
        return values

    reference, current = np.sort(side(20_000, share, 0.1)), side(1_000_000, share - 0.01, 0.1007)
    expected = stats.wasserstein_distance(reference, current)
    assert stattests.wasserstein_distance_to_sorted(reference, current) == pytest.approx(expected, rel=rel)


def test_a_reference_in_few_cells_sorts_the_current_values_without_a_pass_over_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # heavy-tailed or discrete data (latencies, token counts) put most reference values in a few cells, where most
    # current values cross: the pass over every current value was done, then thrown away for the sort (1.5-2.6x the
    # old sort's time)
    rng = np.random.default_rng(5)
    reference, current = np.sort(rng.lognormal(sigma=1.0, size=20_000)), rng.lognormal(sigma=1.0, size=200_000)
    passes: list[int] = []
    real = stattests._shifted_cells

    def counted(x: np.ndarray, *args: object) -> object:
        passes.append(x.size)
        return real(x, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(stattests, "_shifted_cells", counted)
    found = stattests.wasserstein_distance_to_sorted(reference, current)
    assert passes == [reference.size]  # the reference's cells alone
    assert found == stattests.wasserstein_distance_sorted(reference, np.sort(current))


@pytest.mark.parametrize("name", ["same-distribution", "shifted"])
def test_continuous_current_values_go_through_the_cells_without_sorting_them_all(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # what the exact mode is for: current values of a continuous column are counted into cells and only those of
    # the few crossing cells are sorted; the whole sort (wasserstein_distance_sorted) is a fallback
    reference, current = _adversarial(name)
    expected = stats.wasserstein_distance(reference, current)
    passes: list[int] = []
    real = stattests._shifted_cells

    def counted(x: np.ndarray, *args: object) -> object:
        passes.append(x.size)
        return real(x, *args)  # type: ignore[arg-type]

    def no_sort(*args: object) -> float:
        raise AssertionError("all the current values were sorted")

    monkeypatch.setattr(stattests, "_shifted_cells", counted)
    monkeypatch.setattr(stattests, "wasserstein_distance_sorted", no_sort)
    found = stattests.wasserstein_distance_to_sorted(np.sort(reference), current)
    assert passes == [reference.size, current.size]
    assert found == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("n", "scale", "exact_limit", "sorts"), [
    (200, 1.0, None, False),  # 4 current values per reference value: enough for the cells
    (199, 1.0, None, True),  # one short of that: sorted
    (400, 1e-3, None, False),  # a reference spanning less than 1 goes through the cells too
    (400, 1.0, 50 * 400 - 1, True),  # counts times counts past the exact limit: sorted
    (400, 1.0, 50 * 400, False),  # at the limit: cells
])
def test_the_wasserstein_of_unsorted_values_sorts_them_only_past_its_bounds(
        n: int, scale: float, exact_limit: int | None, sorts: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(n)
    reference, current = np.sort(rng.normal(size=50)) * scale, rng.normal(0.2, 1.0, n) * scale
    if exact_limit is not None:
        monkeypatch.setattr(stattests, "_COUNTS_EXACT", exact_limit)
    calls: list[int] = []
    real = stattests.wasserstein_distance_sorted

    def counted(u: np.ndarray, v: np.ndarray) -> float:
        calls.append(v.size)
        return real(u, v)

    monkeypatch.setattr(stattests, "wasserstein_distance_sorted", counted)
    # every crossing cell allowed: only the bounds checked here can send the values to the sort
    found = stattests.wasserstein_distance_to_sorted(reference, current, max_crossing_share=1.0)
    assert calls == ([n] if sorts else [])
    assert found == pytest.approx(stats.wasserstein_distance(reference, current), rel=1e-9, abs=1e-15)


def test_the_scratch_arrays_are_reused_for_a_column_no_longer_than_the_last() -> None:
    scratch = stattests.Scratch()
    floats, cells = scratch.floats(100), scratch.cells(100)
    assert (floats.shape, floats.dtype, cells.shape, cells.dtype) == ((100,), np.float64, (100,), np.intp)
    for n in (100, 60):  # the same memory, as long as it is long enough
        assert np.shares_memory(scratch.floats(n), floats) and np.shares_memory(scratch.cells(n), cells)
        assert (scratch.floats(n).shape, scratch.cells(n).shape) == ((n,), (n,))
    assert not np.shares_memory(scratch.floats(101), floats)  # a longer one: new arrays
    assert not np.shares_memory(scratch.cells(101), cells)


def test_ks_takes_python_ints_past_int64_as_floats() -> None:
    # a list of Python ints past int64 is an object array to numpy, which scipy's ks_2samp cannot read
    for reference, current in (([10**20, 1], [1.0, 2.0]), ([1.0, 2.0], [10**20, 1])):
        expected = stats.ks_2samp(np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64))
        got = stattests.ks(reference, current)
        assert (got.statistic, got.pvalue) == (float(expected.statistic), float(expected.pvalue)) == (0.5, 1.0)


def test_chisquare_of_counts_whose_sum_passes_int64_is_taken_in_floats() -> None:
    # 2**62 + 2**62 wraps to a negative int64: summed as ints, these counts would be "all zero" or negative
    huge = [2**62, 2**62]
    assert stattests.chisquare([5, 5], huge).pvalue == 1.0
    assert stattests.chisquare([5, 5], huge).statistic == 0.0
    assert stattests.chisquare_expected([1, 1], huge).tolist() == [2.0**62, 2.0**62]


@pytest.mark.parametrize("sorted_current", [False, True])
@pytest.mark.parametrize("scratch", [None, "scratch"])
def test_a_nan_among_the_current_values_gives_a_nan_wasserstein_on_every_path(
        scratch: str | None, sorted_current: bool) -> None:
    # scipy's answer; with a scratch (the exact mode's cells) a NaN has no cell and took numpy's bincount down
    reference = [0.0, 1.0, 2.0, 3.0]
    current = np.array([0.5, 1.5, 2.5] * 5 + [math.nan])
    assert math.isnan(stats.wasserstein_distance(reference, current))
    found = stattests.wasserstein(reference, np.sort(current) if sorted_current else current,
                                  current_sorted=sorted_current,
                                  scratch=stattests.Scratch() if scratch else None).statistic
    assert math.isnan(found)
    assert math.isnan(stattests.wasserstein_distance_to_sorted(np.asarray(reference), current, stattests.Scratch(),
                                                               1.0))


def test_the_cells_raise_no_invalid_operation_for_a_current_value_past_the_float_range_in_cell_units() -> None:
    # -MAX_FLOAT in cell units is -inf, in cell 0, which crosses: an inf * 0 there, kept from the caller's numpy
    # settings by the cells' own np.errstate(invalid="ignore"); the distance is scipy's all the same
    start = 2.0**53
    reference = np.array([start, start + 2, start + 2, start + 4])
    current = np.array([-MAX_FLOAT] + [start + 100] * 15)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        found = stattests.wasserstein_distance_to_sorted(reference, current, stattests.Scratch())
    assert found == stats.wasserstein_distance(reference, current) == pytest.approx(1.1235582092889473e307)


@pytest.mark.parametrize("magnitude", [8.9e307, 3e301])
def test_the_cells_of_a_reference_spanning_most_of_the_float_range_keep_the_values_near_zero(
        magnitude: float) -> None:
    # a scale of 2**-1021 (8.9e307) or 2**-1000 (3e301) cells would round 0, 1 and 2 into one cell: sorted instead
    reference = np.array([-magnitude, 0.0, 1.0, magnitude])
    current = np.repeat([-magnitude, 0.0, 2.0, magnitude], 4)
    expected = stats.wasserstein_distance(reference, current)
    assert expected == 0.25
    assert stattests.wasserstein_distance_to_sorted(reference, current, stattests.Scratch(), 1.0) == expected


@pytest.mark.parametrize("magnitude", [1e-150, 1e-200, 1e-280])
def test_the_cells_take_a_reference_of_tiny_values_and_give_scipys_distance(magnitude: float) -> None:
    # cells of 2**-exponent with exponent up to 999: values near 1e-200 are cells of 2**-668 (the scale 2**668, as a
    # power of two exact); the scale check must not compute a power past the float range there
    rng = np.random.default_rng(2)
    reference = np.sort(rng.normal(0.0, 1.0, 50) * magnitude)
    current = rng.normal(0.0, 1.0, 400) * magnitude
    expected = stats.wasserstein_distance(reference, current)
    assert expected > 0.1 * magnitude  # not tiny next to the values: scipy's within 1e-9 is the contract
    found = stattests.wasserstein_distance_to_sorted(reference, current, stattests.Scratch())
    assert found == pytest.approx(expected, rel=1e-9)
