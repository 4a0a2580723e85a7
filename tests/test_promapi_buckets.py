"""``promapi.bucket_bound``: a bucket's ``le`` label as its upper bound, ``None`` for one no reader can place."""

from __future__ import annotations

import doctest
import math

from hypothesis import given
from hypothesis import strategies as st

from aiwatch import promapi
from aiwatch.promapi import bucket_bound


def test_the_doctest() -> None:
    assert doctest.testmod(promapi).failed == 0


def test_bounds_prometheus_writes_are_read() -> None:
    assert bucket_bound("0.005") == 0.005
    assert bucket_bound("1e+06") == 1e6
    assert bucket_bound("+Inf") == math.inf
    assert bucket_bound("-Inf") == -math.inf


def test_a_bound_that_is_no_number_or_nan_is_none() -> None:
    for le in ("", "x", "0,5", "NaN", "nan", "-nan", "1 2"):
        assert bucket_bound(le) is None, le


@given(st.text())
def test_any_text_gives_a_bound_that_is_not_nan_or_gives_none(le: str) -> None:
    bound = bucket_bound(le)
    assert bound is None or not math.isnan(bound)
