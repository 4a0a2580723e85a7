"""Fuzzing the drift API in process with any Python value a client could put in a feature: each value is counted
exactly once (in the window, as missing, or as invalid with its reason), by a single row, a batch and a one-off
check alike, and nothing is raised, warned or counted as an aiwatch error. An int past float64's range slipped
through the file fuzzing (a CSV or Parquet file holds no such int): a monitor row holding one was lost whole."""

from __future__ import annotations

import decimal
import warnings
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from aiwatch.drift import DriftMonitor, ReferenceProfile
from aiwatch.drift.evaluate import compare

RNG = np.random.default_rng(17)
PROFILE = ReferenceProfile.build({"x": RNG.normal(0, 1, 800), "c": RNG.choice(["a", "b", "c"], 800)},
                                 sample_size=400)
values = st.one_of(
    st.none(), st.booleans(), st.floats(), st.integers(), st.integers(-(10**400), 10**400), st.text(max_size=6),
    st.decimals(), st.fractions(), st.complex_numbers(), st.binary(max_size=4),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.sampled_from([np.float32("nan"), np.float16(65504), np.int64(-(2**63)), np.uint64(2**64 - 1), np.bool_(True),
                     np.str_("a"), np.float64("-inf"), np.int8(3), decimal.Decimal("1e400"), "a", "b", 0.5, 2]),
)
rows = st.lists(st.fixed_dictionaries({}, optional={"x": values, "c": values, "unknown": values}), max_size=25)


def counted(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"model": "m", **labels}) or 0.0


def bin_counts(registry: CollectorRegistry, name: str) -> dict[str, float]:
    return {s.labels["bin"]: s.value for metric in registry.collect() if metric.name == "aiwatch_feature_bin"
            for s in metric.samples if s.name.endswith("_total") and s.labels["feature"] == name}


@settings(max_examples=300, deadline=None)
@given(rows=rows)
def test_every_value_is_counted_once_and_nothing_fails(rows: list[dict[str, Any]]) -> None:
    by_row, by_batch = CollectorRegistry(), CollectorRegistry()
    row_monitor = DriftMonitor(PROFILE, model="m", registry=by_row, window_size=64, min_samples=1)
    batch_monitor = DriftMonitor(PROFILE, model="m", registry=by_batch, window_size=64, min_samples=1)
    columns = {name: [row.get(name) for row in rows] for name in ("x", "c")}  # an absent value is None here
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for row in rows:
            row_monitor.observe(row)
        batch_monitor.observe_batch(columns)
        row_report, batch_report = row_monitor.evaluate(), batch_monitor.evaluate()
        one_off = compare(PROFILE, columns, min_samples=1) if rows else None
    for registry in (by_row, by_batch):
        assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "drift"}) == 0
    for name in ("x", "c"):
        wrong_type = counted(by_row, "aiwatch_feature_invalid_total", feature=name, reason="wrong_type")
        absent = counted(by_row, "aiwatch_feature_invalid_total", feature=name, reason="missing_feature")
        missing = counted(by_row, "aiwatch_feature_missing_total", feature=name)
        assert row_report.features[name].current_count + missing + wrong_type + absent == len(rows)
        assert absent == sum(name not in row for row in rows)
        # the report says why each value was left out, as the metrics do
        assert (row_report.features[name].missing, row_report.features[name].invalid) == (missing,
                                                                                          wrong_type + absent)
        assert (batch_report.features[name].missing, batch_report.features[name].invalid) == (missing + absent,
                                                                                              wrong_type)
        # the batch: the same values, in the same buckets
        assert bin_counts(by_batch, name) == bin_counts(by_row, name)
        assert batch_report.features[name].current_count == row_report.features[name].current_count
        assert counted(by_batch, "aiwatch_feature_invalid_total", feature=name, reason="wrong_type") == wrong_type
        assert counted(by_batch, "aiwatch_feature_missing_total", feature=name) == missing + absent
        if one_off is not None:  # and checked once
            checked = one_off.features[name]
            assert (checked.current_count, checked.missing, checked.invalid) == (
                row_report.features[name].current_count, missing + absent, wrong_type)
