"""finite_or_infinite: the one rule for a number past float64's range, which the drift tests and the log share."""

from __future__ import annotations

import doctest
import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

import aiwatch.floats
from aiwatch.drift.columns import to_float
from aiwatch.feedback.schema import normalise
from aiwatch.floats import finite_or_infinite

LARGEST = 2**1024 - 2**970  # float64's largest finite value, as an int


def test_doctest() -> None:
    assert doctest.testmod(aiwatch.floats).failed == 0


@given(st.integers(-(10**400), 10**400) | st.fractions(max_denominator=10))
def test_a_number_past_the_range_is_infinite_with_its_sign_and_any_other_is_its_float(number: int | Fraction) -> None:
    converted = finite_or_infinite(number)
    if abs(number) <= LARGEST:
        assert converted == float(number)
    elif abs(number) >= 2**1024:  # where float() raises OverflowError
        assert converted == (math.inf if number > 0 else -math.inf)


@given(st.integers(-(10**400), 10**400))
def test_the_drift_tests_and_the_log_read_an_int_alike(number: int) -> None:
    assert to_float(number) == normalise(number) == finite_or_infinite(number)
