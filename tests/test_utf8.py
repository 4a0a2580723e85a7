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


def test_metrics_labels_and_remove_write_a_value_alike() -> None:
    # the drift monitor sets and removes its score gauges by feature name: both must escape it the same way, or a
    # removed series would stay behind (and one unescaped would break the scrape)
    from prometheus_client import CollectorRegistry, generate_latest

    from aiwatch.metrics import Metrics

    registry = CollectorRegistry()
    m = Metrics(registry)
    labels = ("m\ud800", "feature\udfff", "ks")
    m.labels(m.drift_score, labels).set(0.5)
    assert registry.get_sample_value("aiwatch_drift_score", dict(zip(("model", "feature", "test"),
                                                                     map(utf8_text, labels), strict=True))) == 0.5
    generate_latest(registry)
    m.remove(m.drift_score, labels)
    m.remove(m.drift_score, labels)  # a child that is not there: nothing to do
    assert b"aiwatch_drift_score{" not in generate_latest(registry)
