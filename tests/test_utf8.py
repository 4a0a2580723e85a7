"""utf8_text: what reaches a UTF-8 boundary (Prometheus' exposition, Parquet) is text UTF-8 can encode."""

from __future__ import annotations

import doctest

from hypothesis import given, settings
from hypothesis import strategies as st

import aiwatch.utf8
from aiwatch.utf8 import utf8_text

any_text = st.text(st.characters(categories=["Cs", "Ll", "Lo", "Nd", "So", "Cc"]), max_size=12)


def test_doctests() -> None:
    assert doctest.testmod(aiwatch.utf8).failed == 0


@settings(max_examples=300)
@given(any_text)
def test_the_text_is_encodable_and_unchanged_where_it_was(text: str) -> None:
    out = utf8_text(text)
    out.encode("utf-8")  # never raises
    surrogates = [c for c in text if 0xD800 <= ord(c) <= 0xDFFF]
    if not surrogates:
        assert out is text
    else:  # each lone surrogate is its escape, the rest as it was
        assert out == "".join(f"\\u{ord(c):04x}" if c in surrogates else c for c in text)
