"""A CSV field that is not a number ("unknown", "-") must not turn the numbers read with it into text.

pandas types a CSV column per chunk, so such a field made its whole chunk's column strings: a profile build counted
the chunk's numbers as missing, and a drift check as wrong-typed. What a field counts as must not depend on the
chunk it falls in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiwatch.drift import ReferenceProfile
from aiwatch.drift.batch import compare_file
from aiwatch.drift.evaluate import Options
from aiwatch.drift.files import NUMBER_PROBE, csv_column
from aiwatch.drift.profile import NumericalFeature
from tests.servers import require_module

pd = require_module("pandas")

RNG = np.random.default_rng(23)
PROFILE = ReferenceProfile.build({"x": RNG.normal(0, 1, 600), "plan": RNG.choice(["1", "2", "x"], 600)},
                                 sample_size=300)
NOT_NUMBERS = ["unknown", "-", "?", "x", "1.2.3", "0x10"]  # none is one of pandas' missing-value tokens


def write_csv(path: Path, columns: dict[str, list[str]]) -> Path:
    names = list(columns)
    lines = [",".join(names)] + [",".join(row) for row in zip(*columns.values(), strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_one_text_field_leaves_the_numbers_of_its_chunk_counted(tmp_path: Path) -> None:
    values = RNG.normal(40, 10, 2000)
    fields = [f"{v:.3f}" for v in values]
    fields[1500] = "unknown"
    csv = write_csv(tmp_path / "age.csv", {"age": fields})
    profile = ReferenceProfile.from_file(csv, chunk_rows=1000)
    age = profile.features["age"]
    assert isinstance(age, NumericalFeature)
    assert (age.count, age.missing) == (1999, 1)  # was (1000, 1000): the second chunk was text
    assert age.mean == pytest.approx(np.delete(np.round(values, 3), 1500).mean())
    report = compare_file(profile, csv, chunk_rows=1000)
    checked = report.features["age"]
    assert (checked.current_count, checked.missing, checked.invalid) == (1999, 0, 1)
    assert checked.status == "ok" and not checked.drifted


def test_numbers_keep_their_category_and_large_integers_stay_exact() -> None:
    column = pd.Series(["7", "unknown", "12345678901234567", "2.50", None, "99999999999999999999999"], dtype=object)
    assert list(csv_column(column)) == [7.0, "unknown", 12345678901234567, 2.5, None, 99999999999999999999999]
    # the categories pandas gives those fields in a chunk of numbers only
    from aiwatch.drift.columns import category_key

    assert [category_key(v) for v in csv_column(column)] == ["7", "unknown", "12345678901234567", "2.5", None,
                                                             "99999999999999999999999"]


def test_a_text_column_is_left_as_it_is() -> None:
    # no number among its first NUMBER_PROBE values: text, without parsing each field (about 1 µs a field)
    text = pd.Series(["free"] * NUMBER_PROBE + ["007"], dtype=object)
    assert csv_column(text)[-1] == "007"
    assert csv_column(pd.Series(["free", None, "007"], dtype=object))[-1] == 7.0
    numbers = pd.Series([1.5, 2.0])
    assert csv_column(numbers).dtype == np.float64


fields = st.one_of(st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: f"{v:.4g}"), st.integers(-50, 50).map(str),
                   st.sampled_from(NOT_NUMBERS), st.just(""))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=st.lists(fields, min_size=1, max_size=40), plan=st.lists(st.sampled_from(["1", "2", "x", "3", "-"]),
                                                                   min_size=40, max_size=40),
       chunk_rows=st.integers(1, 41))
def test_what_a_field_counts_as_does_not_depend_on_its_chunk(tmp_path: Path, x: list[str], plan: list[str],
                                                             chunk_rows: int) -> None:
    csv = write_csv(tmp_path / "cur.csv", {"x": x, "plan": plan[:len(x)]})
    options = Options(min_samples=1, exact=True)
    whole, chunked = (compare_file(PROFILE, csv, options, chunk_rows=n) for n in (10_000, chunk_rows))
    numbers = [float(f) for f in x if f and f not in NOT_NUMBERS]
    for report in (whole, chunked):
        found = report.features["x"]
        assert (found.current_count, found.missing, found.invalid) == (
            len(numbers), x.count(""), sum(f in NOT_NUMBERS for f in x))
    for name in ("x", "plan"):
        assert whole.features[name].statistic == pytest.approx(chunked.features[name].statistic, nan_ok=True)
    assert whole.features["plan"].current_count == chunked.features["plan"].current_count == len(x)
