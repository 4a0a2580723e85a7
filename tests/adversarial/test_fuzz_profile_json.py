"""Fuzzing the profile loader: any JSON text (random values, a real profile with one field swapped for a random value
or removed, truncated, deeply nested, huge numbers) loads as a profile or raises ProfileError, never another
exception; and a profile that loads is one every drift path can use: ``compare`` and the ``DriftMonitor`` run on it
without an error."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from aiwatch.drift import DriftMonitor, ProfileError, ReferenceProfile, compare

RNG = np.random.default_rng(3)
GOOD = ReferenceProfile.build({"x": RNG.normal(size=300), "few": RNG.integers(0, 3, 300).astype(float),
                               "c": RNG.choice(["a", "b", "c"], 300)}, sample_size=50).to_dict()
NUMERICAL_FIELDS = ["cuts", "bin_counts", "count", "missing", "invalid", "mean", "std", "min", "max", "distinct",
                    "sample", "sample_keys", "kind"]
CATEGORICAL_FIELDS = ["categories", "counts", "other_count", "count", "missing", "other_names", "exact", "kind"]
TOP_FIELDS = ["format", "version", "n_bins", "top_k", "sample_size", "skipped", "features"]

numbers = st.one_of(st.integers(-3, 3), st.integers(), st.floats(), st.sampled_from([1e400, -1e400, 2**53, 2**64]))
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20)
edits = st.one_of(
    numbers, json_values, st.lists(numbers, max_size=12), st.lists(st.text(max_size=3), max_size=5),
    st.just("AAAAAAAA8D8="), st.just("not base64"), st.just("AAAA"))


@st.composite
def mutated_profiles(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "x", "few", "c"]))
        features = data.get("features")
        target = data if where == "top" else features.get(where) if isinstance(features, dict) else None
        if not isinstance(target, dict):
            continue
        fields = TOP_FIELDS if where == "top" else CATEGORICAL_FIELDS if where == "c" else NUMERICAL_FIELDS
        key = draw(st.sampled_from(fields))
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(edits)
    return data


texts = st.one_of(
    mutated_profiles().map(lambda d: json.dumps(d, allow_nan=True)),
    json_values.map(lambda v: json.dumps(v, allow_nan=True)),
    st.builds(lambda n: json.dumps(GOOD)[:n], st.integers(0, 2000)),
    st.text(max_size=50),
    st.sampled_from(["[" * 10_000, '{"a":' * 5000, "1" * 5000, "-" + "9" * 400, "1e400", "NaN", ""]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts)
def test_any_json_is_a_profile_or_a_profile_error(text: str) -> None:
    try:
        profile = ReferenceProfile.from_json(text, "fuzzed.json")
    except ProfileError as exc:
        assert "fuzzed.json" in str(exc)
        return
    # it loaded: every path can use it
    data = {"x": RNG.normal(size=60), "few": RNG.integers(0, 4, 60).astype(float), "c": RNG.choice(["a", "z"], 60)}
    report = compare(profile, {k: v for k, v in data.items() if k in profile.features})
    assert set(report.features) <= set(profile.features)
    monitor = DriftMonitor(profile, registry=CollectorRegistry(), window_size=100)
    monitor.observe_batch({k: v for k, v in data.items() if k in profile.features})
    monitor.evaluate()
    assert ReferenceProfile.from_json(profile.to_json()).to_dict() == profile.to_dict()


def test_the_mutations_start_from_a_valid_profile() -> None:
    assert set(ReferenceProfile.from_dict(GOOD).features) == {"x", "few", "c"}


@pytest.mark.parametrize("text", ["[" * 100_000, '{"features": ' * 60_000])
def test_deep_nesting_is_a_profile_error(text: str) -> None:
    with pytest.raises(ProfileError, match="nested deeper than 16 levels"):
        ReferenceProfile.from_json(text)
