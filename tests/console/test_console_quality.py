"""The Drift view's realised-quality table: both sources read the aiwatch_model_quality gauges the same way, and a
metric on the wrong side of its objective is flagged."""

from __future__ import annotations

from aiwatch.console import PrometheusSource, ScrapeSource
from aiwatch.console.source import QualityRow
from tests.console.workload import MODEL


def test_both_sources_read_quality_and_its_objective(settled_source: PrometheusSource,
                                                     scrape_source: ScrapeSource) -> None:
    # Prometheus' gauges asked at an instant it has them for: a failed scrape marks them stale until the next one
    for source in (settled_source, scrape_source):
        rows = {r.metric: r for r in source.model_quality()}
        assert rows["accuracy"] == QualityRow(MODEL, "accuracy", 0.62, 0.85, 1800.0)
        assert rows["accuracy"].off_objective is True
        assert rows["recall"].objective is None and rows["recall"].off_objective is None


def test_a_lower_is_better_metric_is_off_above_its_objective() -> None:
    assert QualityRow("eta", "mae", 6.5, 4.0, 10.0).off_objective is True
    assert QualityRow("eta", "rmse", 3.0, 4.0, 10.0).off_objective is False
    assert QualityRow("m", "accuracy", 0.9, 0.85, 10.0).off_objective is False

