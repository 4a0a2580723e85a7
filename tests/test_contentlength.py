"""aiwatch.contentlength: a Content-Length is ASCII digits (RFC 9110 §8.6) and a count aiwatch can record, or none."""

from __future__ import annotations

import doctest
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiwatch.contentlength
from aiwatch.contentlength import content_length

MAX = "9007199254740992"  # 2**53, the largest count aiwatch records
_VALUE = re.compile(r"[ \t]*([0-9]+)[ \t]*")  # in a str pattern [0-9] is the ASCII digits only, unlike \d


def expected(value: str | bytes) -> int | None:
    """What a Content-Length means, told apart without int()'s leniency: 1 or more ASCII digits, with spaces or
    tabs around them, of a value from 0 to 2**53 (compared as text: int() refuses past 4300 digits)."""
    match = _VALUE.fullmatch(value.decode("latin-1") if isinstance(value, bytes) else value)
    if match is None:
        return None
    digits = match[1].lstrip("0") or "0"
    if len(digits) > len(MAX) or (len(digits) == len(MAX) and digits > MAX):
        return None
    return int(digits)


def test_doctest() -> None:
    assert doctest.testmod(aiwatch.contentlength).failed == 0


_PADDING = st.sampled_from(["", " ", "\t", " \t ", "\n", "\r", "\xa0"])  # OWS; then what is not OWS
_DIGITS = st.one_of(st.integers(0, 2**60).map(str), st.from_regex(r"\A0*[0-9]{0,20}\Z"),
                    st.integers(2**53 - 3, 2**53 + 3).map(str))
_NOISE = st.sampled_from(["+", "-", "_", ",", ", ", " ", "x", "e", ".", "٣", "²", "\x00", "0"])
_LIKE_A_LENGTH = st.builds(lambda before, digits, noise, at, after: before + digits[:at] + noise + digits[at:] + after,
                           _PADDING, _DIGITS, st.one_of(st.just(""), _NOISE), st.integers(0, 25), _PADDING)
# what int() and str.isdigit() take for digits: ASCII ones among other scripts' (٣) and superscripts (²)
_ANY_DIGITS = st.text(st.one_of(st.sampled_from("0123456789"), st.characters(categories=("Nd", "No"))),
                      min_size=1, max_size=20)
TEXTS = st.one_of(st.text(), _LIKE_A_LENGTH, _DIGITS, _ANY_DIGITS)


@given(TEXTS)
def test_a_text_value_is_its_ascii_digits_up_to_2_53_or_none(value: str) -> None:
    number = content_length(value)
    assert number == expected(value)
    assert number is None or type(number) is int


@given(st.one_of(st.binary(), TEXTS.map(lambda text: text.encode("utf-8")),
                 TEXTS.map(lambda text: text.encode("latin-1", "replace"))))
def test_a_header_bytes_value_is_read_as_the_same_text(value: bytes) -> None:
    number = content_length(value)
    assert number == expected(value)
    assert number is None or type(number) is int


@given(_DIGITS.filter(bool))
def test_every_count_up_to_2_53_is_its_int(digits: str) -> None:
    if int(digits) <= 2**53:
        assert content_length(digits) == content_length(digits.encode()) == int(digits)
    else:
        assert content_length(digits) is None


@pytest.mark.parametrize("value", [
    pytest.param("+7", id="plus"),
    pytest.param("1_000", id="underscore"),
    pytest.param("-5", id="negative"),
    pytest.param("-0", id="minus-zero"),
    pytest.param("٣", id="arabic-indic-digit"),
    pytest.param("²", id="superscript-two"),
    pytest.param("\uff13", id="fullwidth-digit"),
    pytest.param("0x10", id="hex"),
    pytest.param("1e3", id="exponent"),
    pytest.param("1.0", id="decimal-point"),
    pytest.param("12 34", id="inner-space"),
    pytest.param("5, 5", id="list-of-identical-values"),
    pytest.param("5,5", id="list-without-space"),
    pytest.param("9" * 400, id="400-digits"),
    pytest.param("9" * 5000, id="5000-digits"),
    pytest.param(str(2**53 + 1), id="2**53+1"),
    pytest.param(b"\xff", id="byte-ff"),
    pytest.param("٣".encode(), id="arabic-indic-digit-utf8"),
    pytest.param("12\n", id="newline"),
    pytest.param("\xa012", id="no-break-space"),
    pytest.param("", id="empty"),
    pytest.param(b"", id="empty-bytes"),
    pytest.param(" \t", id="whitespace-only"),
    pytest.param("X12X", id="letters-around"),  # only spaces and tabs are stripped
    pytest.param(b" X12", id="space-and-letter"),
    pytest.param(None, id="None"),
    pytest.param(12, id="an-int-not-text"),
])
def test_hostile_values_are_no_length(value: Any) -> None:
    assert content_length(value) is None


@pytest.mark.parametrize(("value", "number"), [
    ("0", 0),
    ("1234", 1234),
    (b"1234", 1234),
    ("007", 7),
    (" 12\t", 12),
    (b"5 ", 5),  # uvicorn with httptools hands the app the trailing whitespace the client sent
    (str(2**53), 2**53),
    ("0" * 5000 + "7", 7),
    ("0" * 16, 0),  # all zeros, past the common case's 15 digits
    (" 0", 0),
    (bytearray(b"42"), 42),
])
def test_ascii_digits_are_their_number(value: Any, number: int) -> None:
    assert content_length(value) == number
