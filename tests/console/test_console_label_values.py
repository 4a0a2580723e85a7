"""PrometheusSource asks a real Prometheus about models and features whose names hold quotes, backslashes, regex
metacharacters and newlines, and gets exactly those series back (the queries are valid PromQL and select them)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from aiwatch.console import PrometheusSource
from aiwatch.metrics import Metrics
from tests.servers import prometheus_scraping

pytestmark = pytest.mark.slow

MODEL = 'rank"er\\v2'
FEATURES = ['a"b\\c}', "a.b", "line\nbreak"]
DECOYS = ["aXb", 'a"b\\c', "line"]


def test_drift_queries_select_awkward_names_exactly() -> None:
    m = Metrics(CollectorRegistry())
    for i, feature in enumerate(FEATURES + DECOYS):
        m.drift_score.labels(MODEL, feature, "psi").set(i + 1)
    for bin_label, share, count in (("0", 0.25, 30), ("1", 0.75, 10)):
        m.feature_reference_ratio.labels(MODEL, FEATURES[0], bin_label, "r1").set(share)
        m.feature_bin.labels(MODEL, FEATURES[0], bin_label, "r1").inc(count)
        m.feature_reference_ratio.labels(MODEL, DECOYS[1], bin_label, "r1").set(1 - share)
    with prometheus_scraping(m.registry) as prom:
        prom.wait_for("count(aiwatch_drift_score)", lambda r: bool(r) and r[0]["value"][1] == "6")
        source = PrometheusSource(prom.url, span=30, points=10)
        over_time = source.drift_over_time([(MODEL, f) for f in FEATURES])
        distribution = source.feature_distribution(MODEL, FEATURES[0], 60)
    assert sorted((s.labels["feature"], s.last) for s in over_time) == sorted(
        (f, float(i + 1)) for i, f in enumerate(FEATURES))
    assert [(b.bin, b.reference) for b in distribution] == [("0", 0.25), ("1", 0.75)]
