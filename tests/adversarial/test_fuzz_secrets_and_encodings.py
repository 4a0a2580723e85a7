"""Fuzzing this stop's parsers of text a client or an operator sends: an ``Accept-Encoding`` header
(:func:`aiwatch.exposition.gzip_refused`, on every scrape), a URL that may hold credentials
(:func:`aiwatch.httpconfig.refuse_credentials`) and free text that may quote a signed URL
(:func:`aiwatch.semconv.redact_text`, on a failed client call's span). None of them raises anything but the
``ValueError`` it documents, and what they hide stays hidden."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiwatch.exposition import gzip_refused
from aiwatch.httpconfig import refuse_credentials
from aiwatch.semconv import REDACTED_QUERY_PARAMS, is_credential_name, redact_text

_CODINGS = st.sampled_from(["gzip", "x-gzip", "GZIP", "*", "br", "identity", "deflate"])
_WEIGHTS = st.none() | st.floats(0, 1).map(lambda w: f"{w:.3f}") | st.sampled_from(["", "abc", "1e400", "-0"])


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_any_accept_encoding_is_read_without_an_error(header: str) -> None:
    assert gzip_refused(header) in (True, False)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_CODINGS, _WEIGHTS), max_size=6))
def test_gzip_is_refused_exactly_when_its_first_weight_or_the_wildcards_is_zero(
        members: list[tuple[str, str | None]]) -> None:
    header = ", ".join(coding if weight is None else f"{coding};q={weight}" for coding, weight in members)

    def weight_of(text: str | None) -> float:
        try:
            return 1.0 if text is None else float(text)
        except ValueError:  # a weight that is no number is no refusal
            return 1.0

    named = [weight_of(w) for c, w in members if c.lower() in ("gzip", "x-gzip")]
    anything = [weight_of(w) for c, w in members if c == "*"]
    weight = named[0] if named else (anything[0] if anything else None)
    assert gzip_refused(header) == (weight is not None and weight <= 0.0)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=120))
def test_any_url_is_taken_or_refused_with_a_value_error(url: str) -> None:
    with contextlib.suppress(ValueError):
        refuse_credentials(url, "the URL")
    assert is_credential_name(url) in (True, False)


_SECRET = st.text(st.characters(min_codepoint=0x30, max_codepoint=0x7A, blacklist_characters="&#=?[\\]^`@:;<>"),
                  min_size=12, max_size=24)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REDACTED_QUERY_PARAMS), _SECRET, st.text(max_size=30), st.text(max_size=30))
def test_a_signed_urls_secret_quoted_in_any_text_is_hidden(param: str, secret: str, before: str, after: str) -> None:
    text = f"{before} Max retries exceeded with url: /bucket/o?part=1&{param}={secret} {after}"
    hidden = redact_text(text)
    assert f"{param}=REDACTED" in hidden
    assert secret not in hidden.replace(before, "").replace(after, "")


@settings(max_examples=300, deadline=None)
@given(_SECRET, _SECRET)
def test_a_urls_user_and_password_quoted_in_text_are_hidden(user: str, password: str) -> None:
    hidden = redact_text(f"cannot open 'http://{user}:{password}@10.0.0.7/m'")
    assert "REDACTED:REDACTED@10.0.0.7" in hidden and password not in hidden


@pytest.mark.parametrize("url", ["http://u:p@h/metrics", "http://h/metrics?token=abc", "http://h/m?X-Amz-Signature=s"])
def test_the_fuzzed_refusal_still_refuses_credentials(url: str) -> None:
    with pytest.raises(ValueError, match="holds credentials"):
        refuse_credentials(url, "the URL")
