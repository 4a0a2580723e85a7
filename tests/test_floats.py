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

LARGEST = 2**1024 - 2**971  # float64's largest finite value, as an int
OVERFLOWS = 2**1024 - 2**970  # half an ulp past LARGEST: from here on float() rounds to 2**1024 and raises
#: the edges of the range, which integers drawn up to 10**400 all but never hit
EDGES = [LARGEST, OVERFLOWS - 1, OVERFLOWS, 2**1024 - 1, 2**1024]


def test_doctest() -> None:
    assert doctest.testmod(aiwatch.floats).failed == 0


@given(st.integers(-(10**400), 10**400) | st.fractions(max_denominator=10)
       | st.sampled_from(EDGES + [-edge for edge in EDGES]))
def test_a_number_past_the_range_is_infinite_with_its_sign_and_any_other_is_its_float(number: int | Fraction) -> None:
    converted = finite_or_infinite(number)
    if abs(number) < OVERFLOWS:
        assert converted == float(number)
    else:
        assert converted == (math.inf if number > 0 else -math.inf)


@given(st.integers(-(10**400), 10**400))
def test_the_drift_tests_and_the_log_read_an_int_alike(number: int) -> None:
    assert to_float(number) == normalise(number) == finite_or_infinite(number)
