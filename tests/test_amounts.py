"""aiwatch.amounts: the rules every count and number of seconds from the app is checked by."""

from __future__ import annotations

import doctest
import math
import re
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiwatch.amounts
from aiwatch.amounts import (
    MAX_COUNT,
    MAX_SECONDS,
    as_count,
    as_elapsed,
    as_seconds,
    as_timeout,
    count,
    period,
    seconds,
    shown,
    timeout,
)
from tests.hostile_numbers import BAD_COUNTS, BAD_SECONDS, OTHER_COUNTS, OTHER_SECONDS


def test_doctest() -> None:
    assert doctest.testmod(aiwatch.amounts).failed == 0


@pytest.mark.parametrize("bad", BAD_SECONDS)
def test_what_is_no_number_of_seconds_is_none_or_a_value_error_naming_it(bad: Any) -> None:
    assert as_seconds(bad) is None
    with pytest.raises(ValueError, match=r"^lookup seconds must be a number of seconds from 0 to 1e9, got "):
        seconds(bad, "lookup seconds")


@pytest.mark.parametrize("other", OTHER_SECONDS)
def test_other_numbers_of_seconds_are_their_float(other: Any) -> None:
    assert type(as_seconds(other)) is float and as_seconds(other) == float(other)


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**1100), 2**1100))
def test_a_number_of_seconds_is_a_float_within_the_bounds_or_none(number: float | int) -> None:
    got = as_seconds(number)
    if isinstance(number, int) and abs(number) >= 2**1024:
        assert got is None
    elif 0.0 <= float(number) <= MAX_SECONDS:
        assert got == float(number) and type(got) is float
    else:
        assert got is None


@pytest.mark.parametrize("bad", BAD_COUNTS)
def test_what_is_no_count_is_none_or_an_error_naming_it(bad: Any) -> None:
    assert as_count(bad) is None
    with pytest.raises((TypeError, ValueError), match=r"^hits must be (a non-negative integer|at most 2\*\*53), got "):
        count(bad, "hits")


@pytest.mark.parametrize("other", OTHER_COUNTS)
def test_numpy_integers_are_counts(other: Any) -> None:
    assert as_count(other) == int(other) and type(as_count(other)) is int


@given(st.integers(-(2**60), 2**60))
def test_a_count_is_an_integer_from_0_to_2_to_the_53(number: int) -> None:
    assert as_count(number) == (number if 0 <= number <= MAX_COUNT else None)


def test_huge_integers_are_shown_by_their_size_not_their_digits() -> None:
    # repr() of an integer past 4300 digits raises ValueError: the message must not
    assert shown(10**5000) == "an integer of 16610 bits"
    assert shown(2**64 - 1) == repr(2**64 - 1)
    with pytest.raises(ValueError, match="an integer of 16610 bits"):
        seconds(10**5000, "seconds")
    assert shown("x" * 200).endswith("...") and len(shown("x" * 200)) == 80
    assert shown(math.nan) == "nan"


@pytest.mark.parametrize(("timeout", "expected"), [
    (0.5, 0.5), (2, 2.0), (-1, 0.0), (-math.inf, 0.0), (math.inf, None), (math.nan, None), (10**400, None),
    (-(10**400), 0.0), (True, None), ("1", None), (None, None)])
def test_a_timeout_is_seconds_a_negative_one_none_at_all(timeout: Any, expected: float | None) -> None:
    assert as_timeout(timeout) == expected


def test_the_bounds_themselves_are_accepted() -> None:
    assert as_count(MAX_COUNT) == MAX_COUNT and as_count(MAX_COUNT + 1) is None
    assert as_seconds(MAX_SECONDS) == MAX_SECONDS and as_seconds(math.nextafter(MAX_SECONDS, math.inf)) is None


def test_each_refusal_names_the_value_and_why() -> None:
    with pytest.raises(TypeError, match=r"^n must be a non-negative integer, got 'x'$"):
        count("x", "n")
    with pytest.raises(ValueError, match=r"^n must be a non-negative integer, got -1$"):
        count(-1, "n")
    with pytest.raises(ValueError, match=r"^n must be a non-negative integer, got True$"):  # not "at most 2**53"
        count(True, "n")
    with pytest.raises(ValueError, match=r"^n must be at most 2\*\*53, got 9007199254740993$"):
        count(MAX_COUNT + 1, "n")


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_shown_switches_to_a_size_past_64_bits_and_cuts_at_80_characters() -> None:
    assert shown(2**64) == "an integer of 65 bits"  # the first integer past 64 bits
    assert shown(_Unprintable()) == "a _Unprintable"
    exactly_80 = "x" * 78  # its repr has the two quotes
    assert shown(exactly_80) == repr(exactly_80)
    assert shown(exactly_80 + "x") == repr(exactly_80 + "x")[:77] + "..."


def test_an_elapsed_time_is_a_number_of_seconds_or_none() -> None:
    assert as_elapsed(1.0, 1.5) == 0.5
    assert as_elapsed(np.float64(1.0), np.float64(3.0)) == 2.0 and type(as_elapsed(np.float64(1.0), 3.0)) is float
    assert as_elapsed(2.0, 1.0) is None  # ended before it started
    assert as_elapsed(0, 10**400) is None and as_elapsed(None, 1.0) is None and as_elapsed("1", 2) is None


def test_timeout_is_as_timeout_or_a_value_error_naming_it() -> None:
    assert timeout(0.5, "t") == 0.5 and timeout(-1, "t") == 0.0 and type(timeout(2, "t")) is float
    with pytest.raises(ValueError, match=r"^stop timeout must be a number of seconds \(at most 1e9\), got nan$"):
        timeout(math.nan, "stop timeout")


PERIOD_REFUSED = r"^interval must be a number of seconds above 0 and at most 1e9, got "


@pytest.mark.parametrize("bad", [*BAD_SECONDS, pytest.param(0, id="zero"), pytest.param(0.0, id="0.0"),
                                 pytest.param(-0.0, id="-0.0"), pytest.param(math.nextafter(MAX_SECONDS, math.inf),
                                                                             id="just-past-1e9"),
                                 pytest.param(Decimal("1e-400"), id="Decimal-whose-float-is-0"),
                                 pytest.param(Fraction(1, 10**400), id="Fraction-whose-float-is-0"),
                                 pytest.param(np.float64(0.0), id="numpy-zero"), pytest.param(b"1", id="bytes")])
def test_a_period_refuses_what_is_no_number_of_seconds_above_0_with_a_value_error_naming_it(bad: Any) -> None:
    # a ValueError for every kind of refusal, a string or None included, as seconds() does
    with pytest.raises(ValueError, match=PERIOD_REFUSED + re.escape(shown(bad)) + "$"):
        period(bad, "interval")


@pytest.mark.parametrize("other", OTHER_SECONDS)
def test_a_period_of_another_numeric_type_is_its_float(other: Any) -> None:
    assert type(period(other, "interval")) is float and period(other, "interval") == float(other)


def test_a_period_is_above_0_and_at_most_1e9_the_bounds_included() -> None:
    tiny = math.nextafter(0.0, math.inf)  # 5e-324: the smallest positive float
    assert period(tiny, "interval") == tiny and period(1e-9, "interval") == 1e-9
    assert period(MAX_SECONDS, "interval") == MAX_SECONDS and period(10**9, "interval") == 1e9
    assert type(period(10**9, "interval")) is float
    with pytest.raises(ValueError, match=PERIOD_REFUSED + r"1000000000\.0000002$"):
        period(MAX_SECONDS * (1 + 2**-52), "interval")
    with pytest.raises(ValueError, match=PERIOD_REFUSED + r"1000000001$"):
        period(10**9 + 1, "interval")
    with pytest.raises(ValueError, match=PERIOD_REFUSED + r"an integer of 1329 bits$"):  # not its 401 digits
        period(10**400, "interval")


def test_a_period_names_what_was_given() -> None:
    with pytest.raises(ValueError, match=r"^flush_seconds must be a number of seconds above 0 and at most 1e9, "
                                         r"got nan$"):
        period(math.nan, "flush_seconds")
    with pytest.raises(ValueError, match=r"^AIWATCH_X must be a number of seconds above 0 and at most 1e9, got "
                                         r"-inf$"):
        period(-math.inf, "AIWATCH_X")
    with pytest.raises(ValueError, match=r" got True$"):  # not the 1.0 float() makes of it
        period(True, "interval")
    with pytest.raises(ValueError, match=r" got '60'$"):
        period("60", "interval")


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**1100), 2**1100))
def test_a_period_is_a_number_of_seconds_that_is_not_0(number: float | int) -> None:
    expected = as_seconds(number)
    if expected:
        assert period(number, "p") == expected and type(period(number, "p")) is float
    else:
        with pytest.raises(ValueError, match=r"^p must be a number of seconds above 0 and at most 1e9, got "):
            period(number, "p")
