"""aiwatch.amounts: the rules every count and number of seconds from the app is checked by."""

from __future__ import annotations

import doctest
import math
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
