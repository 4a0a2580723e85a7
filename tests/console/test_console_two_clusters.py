"""One Prometheus holding two clusters (what Thanos or Mimir serve) that run a model of the same name: the console
shows it once per cluster (``ranker (eu)``, ``ranker (us)``), and the panels that ask again about one of them (the
Drift view's distribution and drift over time) ask about that cluster's series."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiwatch.console import PrometheusSource
from aiwatch.console.queries import PanelQueries
from tests.console.conftest import WINDOW, Stack
from tests.console.workload import MISSING_FEATURE, REFERENCE_MISSING
from tests.servers import prometheus

FEATURE = "basket_value"


@pytest.fixture(scope="module")
def two_clusters(stack: Stack) -> Iterator[str]:
    """The console workload scraped twice, as cluster ``eu`` and as cluster ``us``."""
    jobs = "".join(f"  - job_name: {cluster}\n    static_configs:\n      - targets: ['{stack.service['target']}']\n"
                   f"        labels: {{cluster: {cluster}}}\n" for cluster in ("eu", "us"))
    with prometheus([], extra_config=jobs) as prom:
        prom.wait_for(f'count(increase(aiwatch_feature_bin_total{{feature="{FEATURE}"}}[{WINDOW:g}s]) > 0) by '
                      "(cluster)", lambda found: len(found) == 2)
        prom.wait_for("count(aiwatch_drift_score) by (cluster)", lambda found: len(found) == 2)
        yield prom.url


def test_the_drift_table_shows_the_model_once_per_cluster(two_clusters: str) -> None:
    rows = PrometheusSource(two_clusters).drift_table()
    assert {(r.model, r.feature) for r in rows if r.feature == FEATURE} == {("ranker (eu)", FEATURE),
                                                                           ("ranker (us)", FEATURE)}


@pytest.mark.parametrize("cluster", ["eu", "us"])
def test_a_models_distribution_is_its_own_clusters(two_clusters: str, cluster: str) -> None:
    src = PrometheusSource(two_clusters)
    src.drift_table()  # the rows the person picks a feature from
    got = src.feature_distribution(f"ranker ({cluster})", FEATURE, WINDOW)
    narrowed = PrometheusSource(two_clusters, queries=PanelQueries(match=f'cluster="{cluster}"'))
    expected = narrowed.feature_distribution("ranker", FEATURE, WINDOW)
    assert expected and [(b.bin, b.reference) for b in got] == [(b.bin, b.reference) for b in expected]
    assert sum(b.live or 0.0 for b in got) == pytest.approx(1.0)


def test_a_models_drift_over_time_is_its_own_clusters(two_clusters: str) -> None:
    src = PrometheusSource(two_clusters, span=30, points=10)
    src.drift_table()
    found = src.drift_over_time([("ranker (eu)", FEATURE), ("ranker (us)", FEATURE)])
    assert sorted((s.labels["model"], s.labels["feature"], s.labels["test"], s.labels["cluster"]) for s in found) == [
        (f"ranker ({c})", FEATURE, test, c) for c in ("eu", "us") for test in ("ks", "psi")]
    assert all(s.points for s in found)


def test_the_missing_values_table_shows_the_feature_once_per_cluster(two_clusters: str) -> None:
    # the live share, the reference's and the counts are three answers: a feature is named alike in each
    rows = [r for r in PrometheusSource(two_clusters).feature_missing(WINDOW) if r.feature == MISSING_FEATURE]
    assert sorted(r.model for r in rows) == ["ranker (eu)", "ranker (us)"]
    assert all(r.live and r.reference == REFERENCE_MISSING and r.counted for r in rows), rows
