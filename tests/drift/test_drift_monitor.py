"""The streaming DriftMonitor: counting, bad input, windows, exports, evaluation off the request path."""

from __future__ import annotations

import gc
import itertools
import logging
import math
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from aiwatch.drift import DriftMonitor, ReferenceProfile, compare
from aiwatch.drift.evaluate import STATUS_INSUFFICIENT, Options
from aiwatch.drift.monitor import MAX_UNKNOWN_NAME_CHARS
from aiwatch.drift.profile import OTHER, UNSEEN, CategoricalFeature, NumericalFeature
from aiwatch.drift.stattests import jensenshannon, psi
from aiwatch.metrics import Metrics
from tests.hostile_numbers import BAD_COUNTS, BAD_SECONDS, OTHER_SECONDS

RNG = np.random.default_rng(3)
#: No test here should wait anywhere near this long: it only turns a hang into a failure.
HANG = 30.0
REF_X = RNG.normal(0, 1, 4000)
REF_C = list(RNG.choice(["red", "green", "blue"], 4000, p=[0.5, 0.3, 0.2]))


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    # its own generator: the module's RNG gives other scores by the tests that drew from it before the first one
    # that asks for the profile (another order, another xdist split)
    score = np.random.default_rng(7).uniform(0, 1, 4000)
    return ReferenceProfile.build({"x": REF_X, "color": REF_C, "score": score})


SKETCH = ("aiwatch_feature_bin_total", "aiwatch_feature_reference_ratio")


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """The sample of ``name`` with ``labels``; for the fleet sketch, whatever its ``reference`` (a monitor exports
    one per feature)."""
    if name not in SKETCH or "reference" in labels:
        return registry.get_sample_value(name, labels)
    found = [s.value for family in registry.collect() for s in family.samples
             if s.name == name and {k: v for k, v in s.labels.items() if k != "reference"} == labels]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def bins(registry: CollectorRegistry, feature: str, labels: list[str]) -> list[float]:
    return [value(registry, "aiwatch_feature_bin_total", model="m", feature=feature, bin=b) or 0.0 for b in labels]


def test_every_bin_and_reference_ratio_exists_before_any_traffic(profile: ReferenceProfile,
                                                                  registry: CollectorRegistry) -> None:
    DriftMonitor(profile, model="m", registry=registry)
    x = profile.features["x"]
    color = profile.features["color"]
    assert isinstance(x, NumericalFeature) and isinstance(color, CategoricalFeature)
    assert bins(registry, "x", x.bin_labels) == [0.0] * 10
    assert value(registry, "aiwatch_feature_bin_total", model="m", feature="color", bin=UNSEEN) == 0
    ratios = [value(registry, "aiwatch_feature_reference_ratio", model="m", feature="x", bin=b) for b in x.bin_labels]
    assert ratios == pytest.approx(list(x.reference_shares()))
    assert value(registry, "aiwatch_feature_reference_ratio", model="m", feature="color", bin=OTHER) == 0


def test_single_rows_and_batches_count_into_the_same_bins(profile: ReferenceProfile,
                                                          registry: CollectorRegistry) -> None:
    x = profile.features["x"]
    assert isinstance(x, NumericalFeature)
    mon = DriftMonitor(profile, model="m", registry=registry, flush_every=7)
    values = RNG.normal(0.5, 1, 100)
    for v in values[:50]:
        mon.observe({"x": float(v), "color": "red", "score": 0.5})
    mon.observe_batch({"x": values[50:], "color": ["blue"] * 50, "score": [0.5] * 50})
    mon.flush()
    expected = np.bincount(x.bin_index(values), minlength=10)
    assert bins(registry, "x", x.bin_labels) == list(expected.astype(float))
    assert value(registry, "aiwatch_feature_bin_total", model="m", feature="color", bin="red") == 50
    assert value(registry, "aiwatch_feature_bin_total", model="m", feature="color", bin="blue") == 50


def test_nan_inf_none_count_as_missing_and_are_excluded(profile: ReferenceProfile,
                                                        registry: CollectorRegistry) -> None:
    mon = DriftMonitor(profile, model="m", registry=registry, min_samples=1)
    for v in (math.nan, math.inf, -math.inf, None, np.float32("nan"), 0.1):
        mon.observe({"x": v, "color": None if v is None else "red", "score": 0.2})
    mon.observe_batch({"x": [math.nan, 1.0, None], "color": [math.nan, "red", "red"], "score": [0.1, 0.2, 0.3]})
    report = mon.evaluate()
    assert value(registry, "aiwatch_feature_missing_total", model="m", feature="x") == 7
    assert value(registry, "aiwatch_feature_missing_total", model="m", feature="color") == 2
    assert report.features["x"].current_count == 2 and report.features["x"].missing == 7
    assert sum(bins(registry, "x", profile.features["x"].bin_labels)) == 2


def test_the_report_tells_missing_values_from_wrong_typed_and_absent_ones(profile: ReferenceProfile,
                                                                          registry: CollectorRegistry) -> None:
    # the window used to mark all three NaN / -1, so the report's `missing` counted every excluded value, where
    # compare's leaves wrong-typed ones out of it
    mon = DriftMonitor(profile, model="m", registry=registry, min_samples=1)
    for row in ({"x": None, "color": None}, {"x": "abc", "color": ["red"]}, {"score": 0.5}, {"x": 0.1, "color": "red"}):
        mon.observe(row)
    mon.observe_batch({"x": [math.nan, "abc", b"1", 0.2], "color": [math.nan, {}, b"x", "red"]})  # no score column
    mon.observe_batch({"score": [0.1, 0.2]})  # no x or color column
    report = mon.evaluate()
    x, color, score = (report.features[name] for name in ("x", "color", "score"))
    assert (x.current_count, x.missing, x.invalid) == (2, 2, 1 + 1 + 2 + 2)
    assert (color.current_count, color.missing, color.invalid) == (2, 2, 1 + 1 + 2 + 2)
    assert (score.current_count, score.missing, score.invalid) == (3, 0, 3 + 4)
    assert x.to_dict()["missing"] == 2 and x.to_dict()["invalid"] == 6
    # the metrics say the same
    assert value(registry, "aiwatch_feature_missing_total", model="m", feature="x") == 2
    assert value(registry, "aiwatch_feature_invalid_total", model="m", feature="x", reason="wrong_type") == 3
    assert value(registry, "aiwatch_feature_invalid_total", model="m", feature="x", reason="missing_feature") == 3
    # and the one-off check of the same values counts them as the monitor does
    from aiwatch.drift import compare

    checked = compare(profile, {"x": [None, "abc", math.nan, "abc", b"1", 0.1, 0.2]}, min_samples=1)
    assert (checked.features["x"].missing, checked.features["x"].invalid) == (2, 3)
    # window() still shows every excluded value as NaN / -1
    window = mon.window()
    assert np.isnan(window["x"]).sum() == 8 and (window["color"] == -1).sum() == 8


def test_an_int_past_float64_is_missing_and_the_rest_of_its_row_is_kept(profile: ReferenceProfile,
                                                                       registry: CollectorRegistry) -> None:
    # infinite as a float, like Decimal("1e400"): a row holding one was skipped whole (OverflowError), and a batch or
    # a profile build raised
    mon = DriftMonitor(profile, model="m", registry=registry, min_samples=1)
    mon.observe({"x": 10**400, "color": "red", "score": 0.2})
    mon.observe({"x": -(10**400), "color": "red", "score": 0.4})
    mon.observe({"x": 0.5, "color": "blue", "score": 2**70})  # past int64, within float64: a number
    mon.observe_batch({"x": [10**400, 1.0], "color": ["red", "red"], "score": [0.1, -(10**400)]})
    report = mon.evaluate()
    assert value(registry, "aiwatch_feature_missing_total", model="m", feature="x") == 3
    assert value(registry, "aiwatch_feature_missing_total", model="m", feature="score") == 1
    assert value(registry, "aiwatch_instrumentation_errors_total", component="drift") == 0
    assert report.features["x"].current_count == 2 and report.features["color"].current_count == 5
    assert report.features["score"].current_count == 4
    assert value(registry, "aiwatch_feature_bin_total", model="m", feature="color", bin="red") == 4


def test_names_utf8_cannot_encode_are_escaped_in_labels_and_matched_as_they_are() -> None:
    # a profile whose feature or category holds a lone surrogate (json.loads('"\\ud800"') makes one) made every
    # scrape of the registry fail; the values still match the category as it is, only the label is escaped
    from prometheus_client import generate_latest

    category, feature = "a\ud800", "x\udfff"
    registry = CollectorRegistry()
    built = ReferenceProfile.build({"c": [category] * 50 + ["b"] * 50, feature: [1.0, 2.0] * 50})
    mon = DriftMonitor(built, model="m\ud800", registry=registry, min_samples=1)
    mon.observe({"c": category, feature: 1.0})
    mon.observe({"c": "b", feature: "bad"})
    report = mon.evaluate()
    text = generate_latest(registry).decode("utf-8")
    assert report.features["c"].current_count == 2 and report.features[feature].current_count == 1
    labels = {"model": "m\\ud800", "feature": "c", "bin": "a\\ud800"}
    assert value(registry, "aiwatch_feature_bin_total", **labels) == 1
    assert registry.get_sample_value("aiwatch_feature_invalid_total", {"model": "m\\ud800", "feature": "x\\udfff",
                                                                        "reason": "wrong_type"}) == 1
    assert 'feature="x\\\\udfff"' in text  # the escape's backslash, escaped again by the exposition format


def test_wrong_types_and_missing_features_counted_per_feature_and_reason(profile: ReferenceProfile,
                                                                         registry: CollectorRegistry) -> None:
    mon = DriftMonitor(profile, model="m", registry=registry)
    mon.observe({"x": "1.5", "color": ["not", "a", "category"], "score": True})
    mon.observe({"x": 1.0})
    mon.observe_batch({"x": [1.0, "oops", 2.0], "color": ["red", {"a": 1}, "red"]})

    def invalid(feature: str, reason: str) -> float | None:
        return value(registry, "aiwatch_feature_invalid_total", model="m", feature=feature, reason=reason)

    assert invalid("x", "wrong_type") == 2
    assert invalid("color", "wrong_type") == 2
    assert invalid("score", "wrong_type") == 1
    assert invalid("color", "missing_feature") == 1
    assert invalid("score", "missing_feature") == 1 + 3


def test_unknown_features_are_reported_once_not_per_row(profile: ReferenceProfile, registry: CollectorRegistry,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    mon = DriftMonitor(profile, model="m", registry=registry)
    with caplog.at_level(logging.WARNING, logger="aiwatch.drift"):
        for _ in range(100):
            mon.observe({"x": 0.1, "color": "red", "score": 0.3, "user_id": 42})
        mon.observe_batch({"x": [0.1], "color": ["red"], "score": [0.3], "user_id": [1], "extra": [2]})
    assert value(registry, "aiwatch_feature_invalid_total", model="m", feature="user_id",
                 reason="unknown_feature") == 1
    assert value(registry, "aiwatch_feature_invalid_total", model="m", feature="extra", reason="unknown_feature") == 1
    assert sum("user_id" in r.getMessage() for r in caplog.records) == 1
    assert mon.unknown_features == ["extra", "user_id"]
    assert mon.evaluate().unknown_features == ["extra", "user_id"]


def test_long_unknown_feature_names_are_cut_in_memory_and_in_labels(profile: ReferenceProfile,
                                                                    registry: CollectorRegistry) -> None:
    """A client's JSON keys become unknown feature names: 50 keys of 100 000 characters each were kept whole in the
    monitor (up to 1000 of them) and exported whole as label values on every scrape."""
    mon = DriftMonitor(profile, model="m", registry=registry)
    names = [f"{i}-" + "k" * 100_000 for i in range(50)]
    for name in names:
        mon.observe({"x": 0.1, "color": "red", "score": 0.3, name: 1})
    mon.observe_batch({"x": [0.1], "color": ["red"], "score": [0.3], names[0]: [1], "y" + names[1]: [1]})
    kept = mon.unknown_features
    assert len(kept) == 51 and all(len(n) <= MAX_UNKNOWN_NAME_CHARS + 3 for n in kept)
    assert {n[:MAX_UNKNOWN_NAME_CHARS] for n in kept} == {n[:MAX_UNKNOWN_NAME_CHARS] for n in [*names, "y" + names[1]]}
    labels = {s.labels["feature"]: s.value for metric in registry.collect() if metric.name == "aiwatch_feature_invalid"
              for s in metric.samples if s.name.endswith("_total") and s.labels["reason"] == "unknown_feature"}
    assert sum(labels.values()) == 51 and all(len(label) <= MAX_UNKNOWN_NAME_CHARS + 3 for label in labels)


def test_a_batch_of_one_row_given_as_columns_is_refused_and_counted(profile: ReferenceProfile,
                                                                   registry: CollectorRegistry) -> None:
    """``observe_batch`` given one row's values instead of columns: "red" was read as the column "r", "e", "d" (three
    unseen categories, and three rows missing x and score)."""
    mon = DriftMonitor(profile, model="m", registry=registry, min_samples=1)
    mon.observe_batch({"color": "red"})
    mon.observe_batch({"color": b"red", "x": [0.1, 0.2, 0.3], "score": [0.5, 0.5, 0.5]})
    assert value(registry, "aiwatch_instrumentation_errors_total", component="drift") == 2
    assert value(registry, "aiwatch_feature_bin_total", model="m", feature="color", bin=UNSEEN) == 0
    assert value(registry, "aiwatch_feature_invalid_total", model="m", feature="x", reason="missing_feature") == 0
    assert mon.evaluate().features["color"].current_count == 0


def test_unseen_categories_get_their_own_bucket(profile: ReferenceProfile, registry: CollectorRegistry) -> None:
    mon = DriftMonitor(profile, model="m", registry=registry, methods={"color": "chisquare"})
    mon.observe_batch({"color": ["red"] * 150 + ["green"] * 90 + ["blue"] * 60, "x": RNG.normal(size=300),
                       "score": RNG.uniform(size=300)})
    mon.observe({"color": "orange", "x": 0.0, "score": 0.5})
    report = mon.evaluate()
    assert value(registry, "aiwatch_feature_bin_total", model="m", feature="color", bin=UNSEEN) == 1
    r = report.features["color"]
    # Evidently's chi-square gives p = 0 here (expected count 0); the epsilon keeps it finite and > 0.
    assert r.pvalue is not None and 0 < r.pvalue < 0.05 and math.isfinite(r.statistic) and r.drifted
    mon2 = DriftMonitor(profile, model="m2", registry=registry, methods={"color": "psi"})
    mon2.observe_batch({"color": ["red"] * 150 + ["green"] * 90 + ["blue"] * 59 + ["orange"]})
    assert math.isfinite(mon2.evaluate().features["color"].statistic)


def test_too_few_samples_is_insufficient_data_never_drift(profile: ReferenceProfile,
                                                          registry: CollectorRegistry) -> None:
    mon = DriftMonitor(profile, model="m", registry=registry, min_samples=30)
    for _ in range(10):
        mon.observe({"x": 50.0, "color": "red", "score": 9.0})  # wildly off, but only 10 values
    report = mon.evaluate()
    assert all(r.status == STATUS_INSUFFICIENT and not r.drifted for r in report.features.values())
    assert not report.drifted and report.tested_count == 0
    assert value(registry, "aiwatch_drift_detected", model="m", feature="x", test="wasserstein") == 0
    assert value(registry, "aiwatch_drift_score", model="m", feature="x", test="wasserstein") is None
    assert value(registry, "aiwatch_drift_window_samples", model="m", feature="x") == 10


def test_constant_reference_column_works(registry: CollectorRegistry) -> None:
    p = ReferenceProfile.build({"k": [1.0] * 2000})
    mon = DriftMonitor(p, model="m", registry=registry)
    mon.observe_batch({"k": [1.0] * 100})
    same = mon.evaluate().features["k"]
    assert same.status == "ok" and not same.drifted and same.statistic == 0
    mon.observe_batch({"k": [2.0] * 1000})
    assert mon.evaluate().features["k"].drifted


def test_drift_is_detected_and_exported(profile: ReferenceProfile, registry: CollectorRegistry) -> None:
    mon = DriftMonitor(profile, model="m", registry=registry, window_size=2000)
    rng = np.random.default_rng(8)  # its own: score crosses the threshold in under 1 % of draws, never with this one
    mon.observe_batch({"x": rng.normal(1.5, 1, 1000), "color": ["blue"] * 1000, "score": rng.uniform(0, 1, 1000)})
    report = mon.evaluate()
    assert report.features["x"].drifted and report.features["color"].drifted and not report.features["score"].drifted
    assert report.drifted  # 2 of 3 >= 0.5
    assert value(registry, "aiwatch_drift_detected", model="m", feature="x", test="wasserstein") == 1
    assert value(registry, "aiwatch_drift_score", model="m", feature="x", test="wasserstein") == pytest.approx(
        report.features["x"].statistic)
    assert value(registry, "aiwatch_drift_detected", model="m", feature="score", test="wasserstein") == 0
    assert value(registry, "aiwatch_drift_window_samples", model="m", feature="x") == 1000


def test_pvalue_exported_for_hypothesis_tests_only(profile: ReferenceProfile, registry: CollectorRegistry) -> None:
    mon = DriftMonitor(profile, model="m", registry=registry, methods={"x": "ks", "color": "psi"})
    mon.observe_batch({"x": RNG.normal(0, 1, 300), "color": ["red"] * 300, "score": RNG.uniform(size=300)})
    report = mon.evaluate()
    assert value(registry, "aiwatch_drift_pvalue", model="m", feature="x", test="ks") == pytest.approx(
        report.features["x"].pvalue)
    assert value(registry, "aiwatch_drift_pvalue", model="m", feature="color", test="psi") is None
    assert value(registry, "aiwatch_drift_score", model="m", feature="color", test="psi") > 0.1


def test_count_window_keeps_only_the_latest_rows(profile: ReferenceProfile, registry: CollectorRegistry) -> None:
    mon = DriftMonitor(profile, model="m", registry=registry, window_size=100, methods={"x": "ks"})
    mon.observe_batch({"x": np.full(500, 9.0), "color": ["red"] * 500, "score": [0.5] * 500})
    # the reference's quantiles, shuffled: 100 fresh normal values fail KS at 5 % in 5 % of draws
    for v in np.random.default_rng(6).permutation(np.quantile(REF_X, (np.arange(150) + 0.5) / 150)):
        mon.observe({"x": float(v), "color": "red", "score": 0.5})
    window = mon.window()["x"]
    assert window.size == 100 and np.all(np.abs(window) < 9)
    assert not mon.evaluate().features["x"].drifted
    # the fleet counters still saw every value
    assert sum(bins(registry, "x", profile.features["x"].bin_labels)) == 650


def test_time_window_uses_only_recent_rows(profile: ReferenceProfile, registry: CollectorRegistry) -> None:
    now = [1000.0]
    mon = DriftMonitor(profile, model="m", registry=registry, window_seconds=60, clock=lambda: now[0])
    mon.observe_batch({"x": np.full(300, 9.0), "color": ["red"] * 300, "score": [0.5] * 300})
    now[0] += 120
    mon.observe_batch({"x": RNG.normal(0, 1, 200), "color": ["red"] * 200, "score": [0.5] * 200})
    assert mon.window()["x"].size == 200
    assert mon.evaluate().features["x"].current_count == 200
    now[0] += 120
    assert mon.evaluate().features["x"].status == STATUS_INSUFFICIENT


_WALL_CLOCK_STEP = """
import time
real, step = time.time, [0.0]
time.time = lambda: real() + step[0]  # before aiwatch is imported: the wall clock a monitor could read
import numpy as np
from prometheus_client import CollectorRegistry
from aiwatch.drift import DriftMonitor, ReferenceProfile
profile = ReferenceProfile.build({"x": np.random.default_rng(0).normal(size=500)})
mon = DriftMonitor(profile, registry=CollectorRegistry(), window_seconds=60)
mon.observe_batch({"x": [0.5] * 100})
step[0] = 3600.0  # the wall clock is set an hour ahead (an NTP step, a VM resumed)
mon.observe_batch({"x": [0.0] * 40})
print(mon.window()["x"].size)
"""


def test_a_time_window_does_not_move_with_the_wall_clock() -> None:
    """The default clock was the wall clock: set an hour ahead, it took the rows observed a moment before for an hour
    old and left them out of a 60-second window (set back, it kept old rows in the window as long)."""
    import subprocess
    import sys

    from tests.servers import python_env

    result = subprocess.run([sys.executable, "-c", _WALL_CLOCK_STEP], env=python_env(), capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["140"]


def test_outputs_are_monitored_like_inputs(registry: CollectorRegistry) -> None:
    p = ReferenceProfile.build({"x": REF_X, "prediction": np.random.default_rng(4).uniform(0, 1, 4000)})
    mon = DriftMonitor(p, model="m", registry=registry)
    # x: the reference's own quantiles, in a shuffled order, so that x is not drifted whatever ran before (300 fresh
    # normal values, drawn from the module's generator, crossed the 0.1 threshold in 15 % of draws)
    x = np.random.default_rng(5).permutation(np.quantile(REF_X, (np.arange(300) + 0.5) / 300))
    for v in x[:200]:
        mon.observe({"x": float(v)}, outputs={"prediction": 0.99})
    mon.observe_batch({"x": x[200:]}, outputs={"prediction": [0.98] * 100})
    report = mon.evaluate()
    assert report.features["prediction"].drifted and not report.features["x"].drifted
    assert report.features["prediction"].current_count == 300


def test_multiple_testing_correction_changes_the_verdict(registry: CollectorRegistry) -> None:
    rng = np.random.default_rng(1)  # fixed: f0's raw p-value lands between 0.05 / 10 and 0.05
    p = ReferenceProfile.build({f"f{i}": rng.normal(size=500) for i in range(10)})
    cur = {f"f{i}": rng.normal(0.0, 1, 200) for i in range(10)}
    cur["f0"] = rng.normal(0.2, 1, 200)
    plain = DriftMonitor(p, model="a", registry=registry, window_size=200, rule="any")
    corrected = DriftMonitor(p, model="b", registry=registry, window_size=200, rule="any", correction="bonferroni")
    for mon in (plain, corrected):
        mon.observe_batch(cur)
    r1, r2 = plain.evaluate(), corrected.evaluate()
    raw = r1.features["f0"].pvalue
    assert raw is not None and 0.05 / 10 < raw < 0.05
    assert r2.features["f0"].adjusted_pvalue == pytest.approx(min(1.0, raw * 10))
    assert all(r.adjusted_pvalue is None for r in r1.features.values())
    # the same data: drift without the correction, none with it
    assert r1.features["f0"].drifted and r1.drifted
    assert not r2.features["f0"].drifted and not r2.drifted


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), "5", True, 10**400],
                         ids=["nan", "inf", "text", "True", "10**400"])
def test_stop_refuses_a_timeout_that_is_no_number_of_seconds_and_stops_nothing(
        profile: ReferenceProfile, registry: CollectorRegistry, timeout: object) -> None:
    # thread.join(NaN) raised an error that named no timeout, after the stop was already signalled; True waited 1 s
    mon = DriftMonitor(profile, model="m", registry=registry, interval=3600).start()
    with pytest.raises(ValueError, match=r"^timeout must be a number of seconds \(at most 1e9\), got "):
        mon.stop(timeout)  # type: ignore[arg-type]
    assert mon._thread is not None and mon._thread.is_alive() and not mon._stop.is_set()
    mon.stop()
    assert mon._thread is None


def test_background_thread_evaluates_and_stops(profile: ReferenceProfile, registry: CollectorRegistry) -> None:
    mon = DriftMonitor(profile, model="m", registry=registry, interval=0.01)
    mon.observe_batch({"x": RNG.normal(size=100), "color": ["red"] * 100, "score": RNG.uniform(size=100)})
    done = threading.Event()
    original = mon.evaluate

    def evaluate() -> Any:
        result = original()
        done.set()
        return result

    mon.evaluate = evaluate  # type: ignore[method-assign]
    with mon:
        assert done.wait(10)
        assert mon.start() is mon  # idempotent
    assert mon._thread is None and mon.last_report is not None
    mon.stop()  # idempotent


def test_a_check_slower_than_its_interval_is_followed_by_a_whole_interval_without_one() -> None:
    """The next check was planned from the start of the last one: a check that took longer than ``interval`` (a large
    window tested exactly) was followed at once by the next, so the monitor evaluated back to back, a core of the
    serving process busy with it for good."""
    import time

    rng = np.random.default_rng(11)
    wide = ReferenceProfile.build({f"x{i}": rng.normal(size=5000) for i in range(4)})
    interval = 0.02
    mon = DriftMonitor(wide, model="m", registry=CollectorRegistry(), window_size=400_000, exact=True,
                       method="ks", interval=interval, flush_interval=60)
    mon.observe_batch({f"x{i}": rng.normal(size=400_000) for i in range(4)})
    spans: list[tuple[float, float]] = []
    done = threading.Event()
    original = mon.evaluate

    def evaluate() -> Any:
        started = time.monotonic()
        try:
            return original()
        finally:
            spans.append((started, time.monotonic()))
            if len(spans) >= 5:
                done.set()

    mon.evaluate = evaluate  # type: ignore[method-assign]
    with mon:
        assert done.wait(60)
    overran = [(end, following) for (start, end), (following, _) in itertools.pairwise(spans)
               if end - start > interval]
    assert len(overran) >= 3, spans  # each of these checks took longer than its interval
    assert all(following - end >= interval * 0.9 for end, following in overran), spans


class _FaultCountingLock:
    """A lock that records the page faults its holder's thread took while holding it (Linux: RUSAGE_THREAD)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = 0
        self.faults: list[int] = []

    @staticmethod
    def _now() -> int:
        import resource

        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt  # type: ignore[attr-defined,unused-ignore]

    def acquire(self, blocking: bool = True) -> bool:
        got = self._lock.acquire(blocking)
        if got:
            self._at = self._now()
        return got

    def release(self) -> None:
        self.faults.append(self._now() - self._at)
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@pytest.mark.skipif(not hasattr(__import__("resource"), "RUSAGE_THREAD"), reason="RUSAGE_THREAD is Linux's")
def test_a_check_copies_the_window_into_pages_touched_before_it_takes_the_lock(profile: ReferenceProfile) -> None:
    """Every observe() waits while a check copies the window under the lock. The copy was made by an index array
    into freshly allocated arrays, so the lock was held while the kernel mapped their pages (hundreds of page
    faults for a 72 MB window) and while numpy gathered row by row: 0.44 s for a 4M-row window of 8 features, an
    event loop stalled as long at every check."""
    rng = np.random.default_rng(2)
    wide = ReferenceProfile.build({f"x{i}": rng.normal(size=2000) for i in range(8)})
    mon = DriftMonitor(wide, model="m", registry=CollectorRegistry(), window_size=1_000_000)
    mon.observe_batch({f"x{i}": rng.normal(size=1_000_000) for i in range(8)})
    lock = _FaultCountingLock()
    mon._lock = lock  # type: ignore[assignment]
    for _ in range(3):
        assert mon.evaluate().features["x0"].current_count == 1_000_000
    assert len(lock.faults) == 3 and max(lock.faults) < 10, lock.faults


def test_observe_goes_on_while_a_batch_of_columns_is_read(profile: ReferenceProfile) -> None:
    """observe_batch read and converted every column holding the lock that every observe() takes: a 200k-row batch
    held each request that long (0.38 s). Here the batch's reading of one value waits until a single row has been
    observed on another thread."""
    mon = DriftMonitor(profile, model="m", registry=CollectorRegistry(), window_size=200)
    reading, observed, waited = threading.Event(), threading.Event(), []

    class Slow(str):
        __slots__ = ()

        def __hash__(self) -> int:
            reading.set()
            waited.append(observed.wait(10))
            return str.__hash__(self)

    batch = {"x": [0.5] * 41, "color": [Slow("red"), *["green"] * 40], "score": [0.1] * 41}
    reader = threading.Thread(target=mon.observe_batch, args=(batch,))
    reader.start()
    assert reading.wait(10)

    _observe_a_row_beside(mon, observed, reader)
    assert waited and waited[0], "the single row waited for the batch's reading"
    assert mon.evaluate().features["color"].current_count == 42


def _observe_a_row_beside(mon: DriftMonitor, observed: threading.Event, other: threading.Thread) -> None:
    """Observe one row on a thread of its own while ``other`` runs (``observed`` set once it is), and wait for both."""
    def one_row() -> None:
        mon.observe({"x": 0.1, "color": "blue", "score": 0.2})
        observed.set()

    single = threading.Thread(target=one_row)
    single.start()
    other.join(20)
    single.join(20)


@pytest.mark.parametrize("shape", ["row", "rows", "columns"])
def test_observe_goes_on_while_another_rows_unknown_features_are_counted(profile: ReferenceProfile,
                                                                        shape: str) -> None:
    """A row's unknown features were counted, and logged, holding the lock every observe() takes: a hostile row of
    50 000 unknown keys held every request 0.14 s, and a log handler that blocked (a full pipe) held them all. Here
    the unknown feature's log line waits until another thread's row has been observed."""
    mon = DriftMonitor(profile, model="m", registry=CollectorRegistry())
    logging_now, observed, waited = threading.Event(), threading.Event(), []

    class Waiting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "is not in the reference profile" in record.getMessage():
                logging_now.set()
                waited.append(observed.wait(10))

    handler = Waiting()
    logger = logging.getLogger("aiwatch")
    logger.addHandler(handler)
    row = {"x": 0.5, "color": "red", "score": 0.1, f"hostile_{shape}": 1}
    observe: Any = {"row": lambda: mon.observe(row), "rows": lambda: mon.observe_batch([row]),
                    "columns": lambda: mon.observe_batch({k: [v] for k, v in row.items()})}[shape]
    try:
        hostile = threading.Thread(target=observe)
        hostile.start()
        assert logging_now.wait(10)

        _observe_a_row_beside(mon, observed, hostile)
    finally:
        logger.removeHandler(handler)
    assert waited == [True], "the single row waited for the other row's unknown features to be counted"
    assert mon.unknown_features == [f"hostile_{shape}"]
    assert mon.evaluate().features["x"].current_count == 2


@pytest.mark.parametrize("size", [1, 7, 64])
def test_the_window_holds_the_latest_rows_in_order_as_it_wraps(size: int) -> None:
    rng = np.random.default_rng(size)
    mon = DriftMonitor(ReferenceProfile.build({"x": rng.normal(size=500)}), model="m", registry=CollectorRegistry(),
                       window_size=size, min_samples=1)
    seen: list[float] = []
    for step in range(300):
        if rng.integers(0, 2):
            mon.observe({"x": float(step)})
            seen.append(float(step))
        else:
            batch = list(np.arange(int(rng.integers(0, 2 * size))) + step * 1000.0)
            mon.observe_batch({"x": batch})
            seen.extend(batch)
        assert mon.window()["x"].tolist() == seen[-size:]


def test_start_called_from_many_threads_at_once_starts_one_schedule_that_stop_ends(profile: ReferenceProfile) -> None:
    """start() is idempotent, so an app may call it at its first requests: called from 8 threads at once, up to 7
    schedules started, stop() ended only the last, and the others evaluated and exported for as long as the
    monitor lived."""
    import sys

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # thread switches inside start(), where the race is
    try:
        for trial in range(20):
            model = f"many-starts-{trial}"
            mon = DriftMonitor(profile, model=model, registry=CollectorRegistry(), interval=30)
            barrier = threading.Barrier(8)

            def start(monitor: DriftMonitor = mon, gate: threading.Barrier = barrier) -> None:
                gate.wait()
                monitor.start()

            callers = [threading.Thread(target=start) for _ in range(8)]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join(10)
            schedules = [t for t in threading.enumerate() if t.name == f"aiwatch-drift-{model}"]
            mon.stop()
            assert len(schedules) == 1, (trial, len(schedules))
            schedules[0].join(10)
            assert not schedules[0].is_alive()
    finally:
        sys.setswitchinterval(switch)


def test_a_monitor_dropped_without_stop_ends_its_thread(profile: ReferenceProfile,
                                                       registry: CollectorRegistry) -> None:
    """A profile reloaded by making a new monitor: the old one, started and dropped without stop(), was kept alive by
    its thread, which evaluated its frozen window for ever and wrote its stale scores over the new monitor's."""
    mon = DriftMonitor(profile, model="m", registry=registry, interval=0.01, flush_interval=0.01)
    from tests.servers import wait_until

    mon.observe_batch({"x": RNG.normal(size=100), "color": ["red"] * 100, "score": RNG.uniform(size=100)})
    mon.start()
    thread, dropped = mon._thread, weakref.ref(mon)

    def evaluated() -> bool:
        monitor = dropped()
        return monitor is not None and monitor.last_report is not None

    wait_until(evaluated, timeout=10, what="background evaluation")
    assert thread is not None
    del mon
    gc.collect()
    thread.join(10)
    assert not thread.is_alive() and dropped() is None


def test_a_thread_that_outlived_stop_still_stops_after_a_restart(profile: ReferenceProfile,
                                                                registry: CollectorRegistry) -> None:
    """stop(timeout) returned while an evaluation was still running; start() then cleared the stop signal that
    thread was to see, so two threads evaluated until the next stop."""
    mon = DriftMonitor(profile, model="m", registry=registry, interval=0.01)
    running, release = threading.Event(), threading.Event()

    def evaluate() -> Any:
        running.set()
        release.wait(10)

    mon.evaluate = evaluate  # type: ignore[method-assign]
    mon.start()
    assert running.wait(10)
    first = mon._thread
    assert first is not None
    mon.stop(timeout=0.01)  # the evaluation is still running
    mon.start()
    release.set()
    first.join(10)
    try:
        assert not first.is_alive()
        assert mon._thread is not None and mon._thread.is_alive()
    finally:
        mon.stop()


@pytest.mark.parametrize("thread", ["running", "stopped without waiting"])
def test_an_evaluation_the_hand_over_came_during_is_not_exported_and_the_hand_over_does_not_wait_for_it(
        profile: ReferenceProfile, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch, thread: str) -> None:
    """gunicorn's pre_fork hook stopped the master's schedule without waiting for an evaluation in progress, which
    then exported its empty window's gauges after the hook: they are mostrecent across processes, so the master's
    0 rows could still win over a worker's values."""
    from aiwatch.drift import monitor as monitor_module
    from aiwatch.drift.monitor import hand_over_schedules

    held, release = threading.Event(), threading.Event()
    compare = monitor_module.compare_features

    def held_compare(*args: Any, **kwargs: Any) -> Any:  # the tests of the scheduled evaluation, held inside
        held.set()
        release.wait(60)
        return compare(*args, **kwargs)

    monkeypatch.setattr(monitor_module, "compare_features", held_compare)
    mon = DriftMonitor(profile, model="m", registry=registry, interval=0.01).start()
    evaluating = mon._thread
    assert evaluating is not None
    try:
        assert held.wait(60)
        if thread == "stopped without waiting":
            mon.stop(timeout=0)
        hand_over_schedules()
        assert evaluating.is_alive() and not release.is_set()  # returned with the evaluation still held
    finally:
        release.set()
    evaluating.join(60)
    assert not evaluating.is_alive()
    assert [s.name for f in registry.collect() for s in f.samples if s.name.startswith("aiwatch_drift_")] == []
    assert mon.last_report is None
    assert mon.evaluate().features["x"].current_count == 0  # an evaluation asked for in the master still exports
    assert value(registry, "aiwatch_drift_window_samples", model="m", feature="x") == 0
    mon.stop()


def test_a_new_profile_for_the_same_model_takes_over_its_series(registry: CollectorRegistry) -> None:
    """A profile reloaded at runtime (a new monitor for the model, the old one stopped): the old profile's series
    stayed, each at its last value: a category only it had kept its reference ratio (the shares summed to 1.5, and
    the fleet PSI counted that bin as emptied, about 4.3 on its own), a feature only it had kept its gauges, and its
    drift_detected{test=...} for a test the new profile does not choose kept saying 1."""
    rng = np.random.default_rng(21)
    old = ReferenceProfile.build({"x": rng.normal(size=500), "color": ["red", "blue"] * 250,
                                  "gone": rng.normal(size=500)})
    new = ReferenceProfile.build({"x": rng.normal(5, 2, 4000), "color": ["red", "green"] * 2000})
    first = DriftMonitor(old, model="m", registry=registry)
    first.observe_batch({"x": rng.normal(3, 1, 200), "color": ["blue"] * 200, "gone": rng.normal(size=200)})
    assert first.evaluate().features["x"].method == "ks"
    first.stop()
    DriftMonitor(old, model="other", registry=registry)  # another model's series are its own
    second = DriftMonitor(new, model="m", registry=registry)
    second.observe_batch({"x": rng.normal(5, 2, 200), "color": ["red", "green"] * 100})
    report = second.evaluate()

    def series(name: str, model: str = "m") -> dict[tuple[str, str], float]:
        return {(s.labels["feature"], s.labels.get("bin") or s.labels.get("test") or ""): s.value
                for metric in registry.collect() for s in metric.samples
                if s.name == name and s.labels["model"] == model}

    ratios = series("aiwatch_feature_reference_ratio")
    for name, feat in new.features.items():
        assert sorted(b for f, b in ratios if f == name) == sorted(feat.bin_labels)
        assert sum(v for (f, _), v in ratios.items() if f == name) == pytest.approx(1.0)
    assert {f for f, _ in ratios} == {f for f, _ in series("aiwatch_feature_bin_total")} == {"x", "color"}
    assert sorted(series("aiwatch_feature_bin_total")) == sorted(ratios)
    # the bins of x's old edges (another reference) are gone, not beside the new ones
    for name in ("aiwatch_feature_bin_total", "aiwatch_feature_reference_ratio"):
        assert {(s.labels["feature"], s.labels["reference"]) for metric in registry.collect() for s in metric.samples
                if s.name == name and s.labels["model"] == "m"} == {(f, new.features[f].reference_id)
                                                                     for f in ("x", "color")}
    tests = {(name, r.method) for name, r in report.features.items()}
    for gauge in ("aiwatch_drift_detected", "aiwatch_drift_score"):
        assert set(series(gauge)) == tests
    assert {f for f, _ in series("aiwatch_drift_window_samples")} == {"x", "color"}
    assert {f for f, _ in series("aiwatch_feature_reference_ratio", "other")} == {"x", "color", "gone"}


def test_the_reference_missing_share_of_each_feature_is_exported_and_replaced_on_reload(
        registry: CollectorRegistry) -> None:
    """aiwatch_feature_reference_missing_ratio is missing / (values + missing) of each feature's reference (what
    AiwatchFeatureMissing compares the live missing share with); a reloaded profile sets its own and removes the
    share of a feature only the old one had."""
    rng = np.random.default_rng(22)
    x = rng.normal(size=400)
    x[:100] = np.nan  # 25% missing
    old = ReferenceProfile.build({"x": x, "coupon": ["A", None, None, None, None] * 80, "gone": rng.normal(size=400)})
    new = ReferenceProfile.build({"x": rng.normal(size=400), "coupon": ["A", "B", None, None] * 100})
    for feat, share in (("x", 0.25), ("coupon", 0.8), ("gone", 0.0)):
        f = old.features[feat]
        assert f.missing / (f.count + f.missing) == share  # what the profile knows, and the gauge exports
    DriftMonitor(old, model="m", registry=registry).stop()
    DriftMonitor(old, model="other", registry=registry)

    def shares(model: str) -> dict[str, float]:
        return {s.labels["feature"]: s.value for metric in registry.collect() for s in metric.samples
                if s.name == "aiwatch_feature_reference_missing_ratio" and s.labels["model"] == model}

    assert shares("m") == {"x": 0.25, "coupon": 0.8, "gone": 0.0}
    DriftMonitor(new, model="m", registry=registry)
    assert shares("m") == {"x": 0.0, "coupon": 0.5}
    assert shares("other") == {"x": 0.25, "coupon": 0.8, "gone": 0.0}  # another model's series are its own


def test_the_count_of_rows_without_a_feature_exists_at_0_before_the_first_such_row(registry: CollectorRegistry
                                                                                     ) -> None:
    """AiwatchFeatureMissing reads increase() of aiwatch_feature_invalid_total{reason="missing_feature"}: a series
    first made at the first row without the key loses that first scrape's rows to increase()."""
    profile = ReferenceProfile.build({"x": np.arange(100.0), "tier": ["a", "b"] * 50})
    DriftMonitor(profile, model="m", registry=registry)

    def keyless(feature: str) -> float | None:
        return registry.get_sample_value("aiwatch_feature_invalid_total",
                                         {"model": "m", "feature": feature, "reason": "missing_feature"})

    assert keyless("x") == 0.0 and keyless("tier") == 0.0


def test_broken_internals_never_raise_into_the_caller(profile: ReferenceProfile, registry: CollectorRegistry,
                                                      metrics: Metrics) -> None:
    """Fault injection: aiwatch's own failure on the request path is counted, not raised."""
    mon = DriftMonitor(profile, model="m", metrics=metrics)
    mon._ring_num = None  # type: ignore[assignment]
    mon.observe({"x": 1.0, "color": "red", "score": 0.1})
    mon.observe_batch({"x": [1.0, 2.0], "color": ["red", "red"], "score": [0.1, 0.2]})
    mon.observe_batch({"x": [1.0, 2.0], "color": ["red"]})  # ragged columns: counted too
    mon.observe(["not", "a", "row"])  # type: ignore[arg-type]
    assert value(registry, "aiwatch_instrumentation_errors_total", component="drift") == 4


def test_failing_background_evaluation_is_counted(profile: ReferenceProfile, metrics: Metrics,
                                                  registry: CollectorRegistry) -> None:
    mon = DriftMonitor(profile, model="m", metrics=metrics, interval=0.01)
    failed = threading.Event()

    def boom() -> Any:
        failed.set()
        raise RuntimeError("boom")

    mon.evaluate = boom  # type: ignore[method-assign]
    mon.start()
    try:
        assert failed.wait(10)
    finally:
        mon.stop()
    assert (value(registry, "aiwatch_instrumentation_errors_total", component="drift") or 0) >= 1


def test_python_psi_and_js_on_the_exported_counts(profile: ReferenceProfile, registry: CollectorRegistry) -> None:
    """The fleet formula's inputs: exported counts + reference ratios give the same PSI / JS as the monitor."""
    mon = DriftMonitor(profile, model="m", registry=registry, methods={"x": "psi"}, window_size=5000)
    data = RNG.normal(0.3, 1.1, 2000)
    mon.observe_batch({"x": data, "color": ["red"] * 2000, "score": RNG.uniform(size=2000)})
    x = profile.features["x"]
    counts = bins(registry, "x", x.bin_labels)
    assert mon.evaluate().features["x"].statistic == pytest.approx(psi(x.bin_counts, counts).statistic, rel=1e-12)
    assert jensenshannon(x.bin_counts, counts).statistic > 0


def test_profile_path_and_bad_options(profile: ReferenceProfile, tmp_path: Path, registry: CollectorRegistry) -> None:
    path = tmp_path / "p.json"
    profile.save(path)
    assert DriftMonitor(str(path), registry=registry).profile.features.keys() == profile.features.keys()
    with pytest.raises(ValueError, match="override for unknown feature 'nope'"):
        DriftMonitor(profile, registry=CollectorRegistry(), methods={"nope": "ks"})
    with pytest.raises(ValueError, match="test 'ks' needs numerical values; feature 'color' is categorical"):
        DriftMonitor(profile, registry=CollectorRegistry(), methods={"color": "ks"})


def test_options_and_option_keywords_together_are_refused_naming_the_keywords(profile: ReferenceProfile) -> None:
    """``options=Options(), correction="bh", min_samples=5``: the keywords were dropped without a word, so the
    monitor (and compare()) tested without the correction asked for, at the default min_samples."""
    with pytest.raises(TypeError, match="not both: correction, min_samples would be ignored"):
        DriftMonitor(profile, registry=CollectorRegistry(), options=Options(), correction="bh", min_samples=5)
    with pytest.raises(TypeError, match="not both: correction would be ignored"):
        compare(profile, {"x": REF_X[:100]}, Options(), correction="bh")
    mon = DriftMonitor(profile, registry=CollectorRegistry(), options=Options(correction="bh", min_samples=5))
    assert (mon.options.correction, mon.options.min_samples) == ("bh", 5)
    assert DriftMonitor(profile, registry=CollectorRegistry(), correction="bh").options.correction == "bh"


def test_a_window_smaller_than_min_samples_is_a_value_error_naming_both(profile: ReferenceProfile) -> None:
    """window_size=20 with the default min_samples (30): every check found every feature insufficient_data, for ever,
    and exported aiwatch_drift_detected 0 (no drift) however far the traffic moved."""
    with pytest.raises(ValueError, match=r"^window_size \(20\) must be at least min_samples \(30\)"):
        DriftMonitor(profile, registry=CollectorRegistry(), window_size=20)
    with pytest.raises(ValueError, match=r"^window_size \(4\) must be at least min_samples \(5\)"):
        DriftMonitor(profile, registry=CollectorRegistry(), window_size=4, options=Options(min_samples=5))
    mon = DriftMonitor(profile, model="m", registry=CollectorRegistry(), window_size=20, min_samples=20)
    mon.observe_batch({"x": RNG.normal(5, 1, 100), "color": ["red"] * 100, "score": RNG.uniform(size=100)})
    assert mon.evaluate().features["x"].drifted


BAD_SIZES = [*BAD_COUNTS, pytest.param(0, id="zero")]


@pytest.mark.parametrize("bad", BAD_SIZES)
@pytest.mark.parametrize("setting", ["window_size", "flush_every"])
def test_a_window_size_or_flush_every_that_is_no_count_is_a_value_error_naming_it(
        profile: ReferenceProfile, setting: str, bad: Any) -> None:
    # before (window_size): NaN and inf raised TypeError from numpy, 10**400 numpy's "Maximum allowed dimension
    # exceeded", 2**53+1 a MemoryError, True and a string or None a TypeError; (flush_every) NaN, inf, floats, a
    # Decimal, True were silently clamped into 1..window_size, a string or None raised TypeError
    with pytest.raises(ValueError, match=f"^{setting} must be an integer >= 1"):
        DriftMonitor(profile, registry=CollectorRegistry(), **{setting: bad})


#: (setting, bad value): None is no time window for window_seconds and "keep the interval" for start(interval)
BAD_INTERVALS = [pytest.param(setting, p.values[0], id=f"{setting}-{p.id}")
                 for setting in ("interval", "flush_interval", "window_seconds", "start")
                 for p in [*BAD_SECONDS, pytest.param(0, id="zero")]
                 if not (p.id == "None" and setting in ("window_seconds", "start"))]


@pytest.mark.parametrize(("setting", "bad"), BAD_INTERVALS)
def test_an_interval_that_is_no_number_of_seconds_is_a_value_error_naming_it(profile: ReferenceProfile,
                                                                             setting: str, bad: Any) -> None:
    # before: every one was accepted. A NaN interval made the background thread never evaluate, 0 or a negative one
    # (or a NaN flush_interval) spin without waiting; inf, 10**400, None, a Decimal or a string stopped the thread on
    # its first wait (uncounted OverflowError or TypeError); a NaN or negative window_seconds left no row in the
    # window, and 10**400 or a Decimal made evaluate() raise OverflowError or TypeError
    name = "interval" if setting == "start" else setting
    with pytest.raises(ValueError, match=f"^{name} must be a number of seconds above 0 and at most 1e9, got "):
        if setting == "start":
            mon = DriftMonitor(profile, registry=CollectorRegistry())
            try:
                mon.start(bad)
            finally:
                assert mon._thread is None and mon.interval == 60.0  # not started, the interval unchanged
        else:
            DriftMonitor(profile, registry=CollectorRegistry(), **{setting: bad})


@pytest.mark.parametrize("other", OTHER_SECONDS)
def test_intervals_of_another_numeric_type_are_kept_as_floats(profile: ReferenceProfile, other: Any) -> None:
    mon = DriftMonitor(profile, registry=CollectorRegistry(), interval=other, flush_interval=other,
                       window_seconds=other, window_size=np.int64(40), flush_every=np.int64(3))
    assert all(type(v) is float and v == float(other) for v in (mon.interval, mon.flush_interval,
                                                                mon.window_seconds))
    assert (mon.window_size, mon._flush_every) == (40, 3)


def test_one_empty_column_does_not_fail_the_others() -> None:
    """Evidently #1480: one empty column fails the whole report; here it is insufficient data and the rest run."""
    from aiwatch.drift import compare

    p = ReferenceProfile.build({"x": REF_X, "y": REF_X * 2})
    report = compare(p, {"x": [math.nan] * 500, "y": RNG.normal(0, 2, 500)})
    assert report.features["x"].status == STATUS_INSUFFICIENT and report.features["x"].missing == 500
    assert report.features["y"].status == "ok" and report.tested_count == 1
    rows = [{"x": float(v), "y": float(v) * 2, "z": 1} for v in RNG.normal(size=100)]
    from_rows = compare(p, rows)
    assert from_rows.unknown_features == ["z"] and from_rows.features["x"].current_count == 100


def test_batch_of_row_dicts_counts_like_single_rows(profile: ReferenceProfile, registry: CollectorRegistry) -> None:
    mon = DriftMonitor(profile, model="m", registry=registry)
    mon.observe_batch([{"x": 0.1, "color": "red"}, {"x": "bad", "color": "red", "score": 0.2}])
    assert value(registry, "aiwatch_feature_invalid_total", model="m", feature="score",
                 reason="missing_feature") == 1
    assert value(registry, "aiwatch_feature_invalid_total", model="m", feature="x", reason="wrong_type") == 1
    assert mon.window()["x"].size == 2


def test_background_thread_flushes_single_rows_between_evaluations(profile: ReferenceProfile,
                                                                   registry: CollectorRegistry) -> None:
    from tests.servers import wait_until

    mon = DriftMonitor(profile, model="m", registry=registry, interval=3600, flush_interval=0.01)
    mon.observe({"x": 0.0, "color": "red", "score": 0.5})
    assert value(registry, "aiwatch_feature_bin_total", model="m", feature="color", bin="red") == 0
    with mon:
        wait_until(lambda: value(registry, "aiwatch_feature_bin_total", model="m", feature="color", bin="red") == 1,
                   timeout=10, what="background flush")
    assert mon.last_report is None  # no evaluation yet: the interval is an hour


def test_a_window_past_its_memory_bound_is_a_value_error_naming_window_size(profile: ReferenceProfile) -> None:
    # before: numpy's ArrayMemoryError ("Unable to allocate 29.1 TiB ..."), naming no setting, or the OOM killer
    from aiwatch.drift.monitor import MAX_WINDOW_BYTES

    row_bytes = 8 + 8 * 2 + 4 * 1  # profile: x and score numerical, color categorical
    largest = MAX_WINDOW_BYTES // row_bytes
    for size in (10**12, largest + 1, 2**53):
        with pytest.raises(ValueError, match=f"^window_size must be at most {largest} for this profile "
                                             f"\\({row_bytes} bytes per row"):
            DriftMonitor(profile, registry=CollectorRegistry(), window_size=size)
    wide = ReferenceProfile.build({f"f{i}": REF_X[:100] for i in range(100)})
    with pytest.raises(ValueError, match=f"^window_size must be at most {MAX_WINDOW_BYTES // (8 + 800)} "):
        DriftMonitor(wide, registry=CollectorRegistry(), window_size=10**7)


def _nothing_counted(registry: CollectorRegistry, mon: DriftMonitor, profile: ReferenceProfile) -> None:
    """No value of any row was counted: no missing, invalid or bin count, and an empty window."""
    mon.flush()
    for name, feat in profile.features.items():
        assert value(registry, "aiwatch_feature_missing_total", model="m", feature=name) == 0, name
        assert value(registry, "aiwatch_feature_invalid_total", model="m", feature=name, reason="wrong_type") is None
        # (made at 0 with the monitor, as the missing count: AiwatchFeatureMissing reads its increase())
        assert value(registry, "aiwatch_feature_invalid_total", model="m", feature=name, reason="missing_feature") == 0
        assert sum(bins(registry, name, feat.bin_labels)) == 0, name
    assert all(column.size == 0 for column in mon.window().values())


@pytest.mark.parametrize("outputs", [np.array([0.3, 0.7]), [0.3], "0.3", 0.3],
                         ids=["ndarray", "list", "str", "float"])
def test_outputs_that_are_no_mapping_are_named_and_count_none_of_the_row(
        profile: ReferenceProfile, registry: CollectorRegistry, outputs: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    # before: numpy's "truth value of an array ... is ambiguous" (a list: "'list' object is not a mapping"), naming
    # neither outputs= nor what it must be
    mon = DriftMonitor(profile, model="m", registry=registry)
    with caplog.at_level(logging.WARNING, logger="aiwatch"):
        mon.observe({"x": None, "color": ["wrong"], "score": 0.5}, outputs=outputs)
    assert value(registry, "aiwatch_instrumentation_errors_total", component="drift") == 1
    message = "outputs= must be a mapping of output name -> value (or None), got " + type(outputs).__name__
    assert any(message in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    _nothing_counted(registry, mon, profile)


class _Raising(float):
    """A float whose float() fails: it fails the row it is in, at the feature it is in."""

    def __float__(self) -> float:
        raise ArithmeticError("no float")


class _Unhashable(str):
    def __hash__(self) -> int:
        raise ValueError("no hash")


class _Unnamed:
    def __str__(self) -> str:
        raise RuntimeError("no name")


@pytest.mark.parametrize("row", [
    pytest.param({"x": None, "color": ["wrong"], "score": _Raising(0.5)}, id="__float__-numerical"),
    pytest.param({"score": None, "x": "wrong", "color": _Raising(0.5)}, id="__float__-categorical"),
    pytest.param({"x": None, "color": ["wrong"], "score": 0.5, _Unnamed(): 1}, id="__str__-of-a-key"),
    pytest.param({"x": 10**400, "color": None, "score": _Raising(0.5)}, id="huge-int-first"),
])
def test_a_row_that_fails_partway_counts_none_of_its_values(profile: ReferenceProfile, registry: CollectorRegistry,
                                                            row: dict[Any, Any]) -> None:
    # before: the values read before the failing one were counted (missing, wrong_type), their bins too once
    # flushed, while the row never entered the window: the counters and the window disagreed by that row
    mon = DriftMonitor(profile, model="m", registry=registry, flush_every=1)
    mon.observe(row)
    mon.observe_batch([row])
    mon.observe_batch({str(k): [v] for k, v in row.items()} if not any(isinstance(k, _Unnamed) for k in row)
                      else {"x": [1.0], "color": [_Raising(0.5)]})
    assert value(registry, "aiwatch_instrumentation_errors_total", component="drift") == 3
    _nothing_counted(registry, mon, profile)
    assert value(registry, "aiwatch_feature_invalid_total", model="m", feature="unknown", reason="unknown_feature") \
        is None
    mon.observe({"x": 0.5, "color": "red", "score": 0.5})  # the next row is counted whole
    assert value(registry, "aiwatch_feature_bin_total", model="m", feature="color", bin="red") == 1
    assert all(column.size == 1 for column in mon.window().values())


def test_a_string_whose_hash_raises_is_its_category_on_every_path(profile: ReferenceProfile,
                                                                  registry: CollectorRegistry) -> None:
    """A category is read as its own str: a str subclass whose __hash__ raises failed its row, and its batch."""
    mon = DriftMonitor(profile, model="m", registry=registry, flush_every=1)
    row = {"x": 0.5, "score": 0.5, "color": _Unhashable("red")}
    mon.observe(row)
    mon.observe_batch([row])
    mon.observe_batch({k: [v] for k, v in row.items()})
    assert value(registry, "aiwatch_instrumentation_errors_total", component="drift") == 0
    assert value(registry, "aiwatch_feature_bin_total", model="m", feature="color", bin="red") == 3
    report = compare(profile, {k: [v] * 3 for k, v in row.items()}).features["color"]
    assert (report.current_count, report.invalid) == (3, 0)


def test_a_category_named_like_a_bucket_is_counted_in_other_and_its_series_stay_apart(
        registry: CollectorRegistry) -> None:
    # data whose pipeline folded rare values into an "__other__" of its own: kept as a top-K category, it was one
    # `bin="__other__"` series with aiwatch's bucket (both counts in it, the reference ratio of the last one set)
    ref = ["__other__"] * 500 + ["a"] * 300 + ["b"] * 200 + ["__unseen__"] * 10
    profile = ReferenceProfile.build({"c": ref}, top_k=2)
    color = profile.features["c"]
    assert isinstance(color, CategoricalFeature)
    assert color.categories == ["a", "b"] and color.other_count == 510
    assert len(set(color.bin_labels)) == len(color.bin_labels)
    monitor = DriftMonitor(profile, model="m", registry=registry)
    monitor.observe_batch({"c": ["__other__"] * 100 + ["a"] * 60 + ["__unseen__"] * 2 + ["new"] * 5})
    monitor.flush()
    assert bins(registry, "c", ["a", "b", OTHER, UNSEEN]) == [60, 0, 102, 5]
    ratios = [value(registry, "aiwatch_feature_reference_ratio", model="m", feature="c", bin=b)
              for b in ("a", "b", OTHER, UNSEEN)]
    assert ratios == pytest.approx([300 / 1010, 200 / 1010, 510 / 1010, 0.0])


def test_a_profile_listing_a_category_named_like_a_bucket_is_refused(tmp_path: Path) -> None:
    from aiwatch.drift.errors import ProfileError

    profile = ReferenceProfile.build({"c": ["a"] * 50 + ["b"] * 50})
    path = tmp_path / "p.json"
    path.write_text(profile.to_json().replace('"b"', '"__unseen__"'))
    with pytest.raises(ProfileError, match=r"'__unseen__' has a bucket's name; .* build the profile again"):
        ReferenceProfile.load(path)


def test_long_category_names_are_cut_labels_that_stay_apart(registry: CollectorRegistry) -> None:
    # templated prompts as a categorical column: every name was a whole `bin` label, 100 kB each, in two families
    from prometheus_client import generate_latest

    from aiwatch.drift.features import MAX_LABEL_CHARS

    shared = "You are a helpful assistant. " * 4000  # 116 kB, and the names differ only past it
    ref = [shared + "Summarise."] * 50 + [shared + "Translate."] * 30 + ["short"] * 20
    profile = ReferenceProfile.build({"prompt": ref})
    feat = profile.features["prompt"]
    assert isinstance(feat, CategoricalFeature) and len(feat.categories) == 3
    labels = feat.bin_labels
    assert len(set(labels)) == len(labels) and "short" in labels
    assert all(len(b) <= MAX_LABEL_CHARS + 19 for b in labels)
    monitor = DriftMonitor(profile, model="m", registry=registry)
    monitor.observe_batch({"prompt": [shared + "Translate."] * 3})
    monitor.flush()
    translate = next(b for b in labels if b != "short" and
                     value(registry, "aiwatch_feature_reference_ratio", model="m", feature="prompt", bin=b) == 0.3)
    assert value(registry, "aiwatch_feature_bin_total", model="m", feature="prompt", bin=translate) == 3
    assert len(generate_latest(registry)) < 100_000  # 21 kB; 716 kB before


#: what close() leaves of a model: the counts of missing and rejected values, which no alert reads without the
#: reference's missing share
KEPT_AT_CLOSE = {f"aiwatch_feature_{c}_{s}" for c in ("missing", "invalid") for s in ("total", "created")}


def _exported(registry: CollectorRegistry, model: str) -> set[str]:
    """The names of the samples ``registry`` exports for ``model``."""
    return {s.name for family in registry.collect() for s in family.samples if s.labels.get("model") == model}


@pytest.mark.slow
def test_a_closed_monitor_leaves_prometheus_no_series_to_alert_on(profile: ReferenceProfile) -> None:
    """A model unloaded: its monitor found drift, then was stopped and dropped, and its last drift_detected 1 was
    scraped for good (AiwatchLocalInputDrift fired for a model no longer served). close() removes its series: the
    local alert's expression and the fleet PSI answer nothing once Prometheus scrapes again. A second model's
    monitor on the same registry keeps its own."""
    from aiwatch.drift.promql import fleet_psi_expr
    from aiwatch.rules import RulesConfig
    from aiwatch.rules.render import drift_alerts
    from tests.servers import prometheus_scraping

    registry = CollectorRegistry()
    local = next(a.expr for a in drift_alerts(RulesConfig()) if a.name == "AiwatchLocalInputDrift")
    mons = {m: DriftMonitor(profile, model=m, registry=registry, min_samples=10) for m in ("unloaded", "kept")}
    for mon in mons.values():
        mon.observe_batch({"x": RNG.normal(4, 1, 300), "color": ["red"] * 300, "score": RNG.uniform(0, 1, 300)})
        mon.start(interval=3600)
        assert mon.evaluate().features["x"].drifted
    try:
        with prometheus_scraping(registry) as prom:
            prom.wait_for(f"count by (model) ({local})", lambda r: len(r) == 2)
            prom.wait_for(f"count by (model) ({fleet_psi_expr('5m')})", lambda r: len(r) == 2)
            mons["unloaded"].close()
            prom.wait_for(f"count by (model) ({local})", lambda r: [x["metric"]["model"] for x in r] == ["kept"])
            psi_models = [r["metric"]["model"] for r in prom.query(fleet_psi_expr("5m"))]
            left = prom.query('count by (__name__) ({model="unloaded"})')
    finally:
        mons["kept"].stop()
    assert set(psi_models) == {"kept"}
    assert {r["metric"]["__name__"] for r in left} <= KEPT_AT_CLOSE
    assert mons["unloaded"]._thread is None


def test_closing_an_old_monitor_leaves_the_series_of_the_newer_one_that_took_them_over(
        registry: CollectorRegistry, profile: ReferenceProfile) -> None:
    """A profile reloaded: the new monitor took the model's series over; the old one closed after it (or dropped,
    or closed twice) removes nothing of the new one's. Closing the new one then removes them."""
    old = DriftMonitor(profile, model="m", registry=registry, min_samples=10)
    new = DriftMonitor(profile, model="m", registry=registry, min_samples=10)
    new.observe_batch({"x": RNG.normal(4, 1, 300), "color": ["red"] * 300, "score": RNG.uniform(0, 1, 300)})
    new.evaluate()
    before = _exported(registry, "m")
    assert {"aiwatch_drift_detected", "aiwatch_feature_bin_total", "aiwatch_feature_reference_ratio"} <= before
    old.close()
    old.close()
    assert _exported(registry, "m") == before
    with new:
        pass  # the context's exit closes
    assert _exported(registry, "m") <= KEPT_AT_CLOSE


def test_an_evaluation_running_when_the_profile_is_reloaded_leaves_no_gauge_behind(
        registry: CollectorRegistry, profile: ReferenceProfile) -> None:
    """The old monitor's scheduled evaluation was running when the new monitor took the model's series over: it
    exported its test's gauges after the takeover removed them, and neither monitor removed them again, so a
    ``drift_detected 1`` of a test the new profile does not run stayed (AiwatchLocalInputDrift firing for good)."""
    evaluating, reloaded = threading.Event(), threading.Event()
    hold = [False]

    def clock() -> float:  # read by the evaluation's copy of the window: the reload happens there
        if hold[0]:
            hold[0] = False
            evaluating.set()
            reloaded.wait(HANG)
        return time.monotonic()

    old = DriftMonitor(profile, model="m", registry=registry, min_samples=10, clock=clock, window_seconds=3600,
                       methods={"x": "psi"})
    old.observe_batch({"x": RNG.normal(4, 1, 300), "color": ["red"] * 300, "score": RNG.uniform(0, 1, 300)})
    hold[0] = True
    evaluation = threading.Thread(target=old.evaluate)
    evaluation.start()
    assert evaluating.wait(HANG)
    new = DriftMonitor(profile, model="m", registry=registry, min_samples=10, methods={"x": "ks"})
    reloaded.set()
    evaluation.join(HANG)
    assert old.last_report is not None and old.last_report.features["x"].drifted  # it ran, and kept its report
    old.close()
    new.observe_batch({"x": REF_X[:300], "color": REF_C[:300], "score": RNG.uniform(0, 1, 300)})
    new.evaluate()
    assert {s.labels["test"] for f in registry.collect() if f.name == "aiwatch_drift_detected" for s in f.samples
            if s.labels["feature"] == "x"} == {"ks"}


def test_a_profile_reloaded_again_and_again_leaves_no_reference_sample_alive(tmp_path: Path,
                                                                             registry: CollectorRegistry) -> None:
    """A service that reloads its profile file every minute (a new monitor of the model, the old one closed): the
    sorted reference samples of the numerical tests were kept in a process-wide table until it held 4096 features,
    each entry holding its feature's sample alive (10 features of 20 000 values: +8 MiB a reload, 1 GiB after 120
    reloads). An entry now leaves with its feature: only the live profile's samples stay."""
    from aiwatch.drift import evaluate

    path = tmp_path / "profile.json"
    rng = np.random.default_rng(11)
    ReferenceProfile.build({f"x{i}": rng.normal(0, 1, 3000) for i in range(3)}).save(path)
    evaluate._sorted_cache.clear()  # other tests' features, which this one does not own
    samples: list[weakref.ref[Any]] = []
    monitor = None
    for _ in range(40):
        profile = ReferenceProfile.load(path)
        for feat in profile.features.values():
            assert isinstance(feat, NumericalFeature)
            feat.sample = np.asarray(feat.sample)  # as a profile built in the process holds it: weakly referable
            samples.append(weakref.ref(feat.sample))
        new = DriftMonitor(profile, model="m", registry=registry, min_samples=10)
        if monitor is not None:
            monitor.close()
        monitor = new
        del profile, feat, new
        monitor.observe_batch({f"x{i}": rng.normal(0, 1, 200) for i in range(3)})
        assert {r.method for r in monitor.evaluate().features.values()} == {"wasserstein"}
    gc.collect()
    assert sum(ref() is not None for ref in samples) == 3  # the live monitor's
    assert len(evaluate._sorted_cache) == 3


def test_a_closed_monitor_observes_and_exports_nothing_and_cannot_start(registry: CollectorRegistry,
                                                                        profile: ReferenceProfile) -> None:
    mon = DriftMonitor(profile, model="m", registry=registry, min_samples=10)
    mon.close()
    mon.observe({"x": 1.0, "color": "red", "score": 0.5})
    mon.observe_batch({"x": RNG.normal(4, 1, 300), "color": ["red"] * 300, "score": RNG.uniform(0, 1, 300)})
    report = mon.evaluate()
    assert report.features["x"].current_count == 0 and mon.last_report is None
    assert _exported(registry, "m") <= KEPT_AT_CLOSE
    with pytest.raises(RuntimeError, match="drift monitor of model 'm' is closed"):
        mon.start()
    # a new monitor of the model exports again
    again = DriftMonitor(profile, model="m", registry=registry, min_samples=10)
    again.observe_batch({"x": RNG.normal(4, 1, 300), "color": ["red"] * 300, "score": RNG.uniform(0, 1, 300)})
    again.evaluate()
    assert value(registry, "aiwatch_drift_detected", model="m", feature="x", test="wasserstein") == 1
