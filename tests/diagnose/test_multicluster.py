"""Two clusters in one Prometheus (what Thanos or Mimir serve): the same gateway and inference services in ``eu``,
where the network slowed down, and in ``us``, where nothing changed. Diagnose never adds the two clusters' time
together: it asks to be narrowed with --match, and narrowed it finds each cluster's own story. The console's
queries keep them apart and show the service once per cluster."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from aiwatch.cli import main
from aiwatch.console.queries import PanelQueries
from aiwatch.console.source import tell_scopes_apart
from aiwatch.diagnose import PrometheusWindows, diagnose
from aiwatch.promapi import PrometheusAPI
from tests.diagnose.backfill import backfilled_prometheus
from tests.diagnose.traffic import BASELINE, INCIDENT, History, Means, history, slower

pytestmark = pytest.mark.slow


def in_cluster(openmetrics: str, cluster: str) -> str:
    """The OpenMetrics text with a ``cluster`` label on every sample (as a Prometheus external label adds it)."""
    def label(match: re.Match[str]) -> str:
        return f'{match[1]}{{cluster="{cluster}"{"," if match[2] != "}" else ""}{match[2]}'
    return "\n".join(line if line.startswith("#") else re.sub(r"^([^{\s]+)\{(.)", label, line, count=1)
                     for line in openmetrics.splitlines()) + "\n"


@pytest.fixture(scope="module")
def two_clusters() -> Iterator[tuple[str, History, History]]:
    eu, us = history(slower(network=0.2)), history(Means())
    with backfilled_prometheus([in_cluster(eu.traffic.openmetrics(), "eu"),
                                in_cluster(us.traffic.openmetrics(), "us")]) as prom:
        yield prom.url, eu, us


def windows(h: History) -> list[str]:
    return ["--incident", f"{INCIDENT:g}s", "--baseline", f"{BASELINE:g}s", "--at", f"{h.incident_end:.0f}"]


def test_the_labels_are_added_to_every_sample() -> None:
    text = '# TYPE a counter\na_total{x="1"} 2 3\nb{} 1 2\n# EOF\n'
    assert in_cluster(text, "eu") == '# TYPE a counter\na_total{cluster="eu",x="1"} 2 3\nb{cluster="eu"} 1 2\n# EOF\n'


def test_diagnose_refuses_to_add_two_clusters_together(two_clusters: tuple[str, History, History],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    url, eu, _ = two_clusters
    assert main(["diagnose", "--prometheus", url, "--service", "gateway", *windows(eu)]) == 2
    err = capsys.readouterr().err
    assert "service 'gateway' is in 2 places (cluster='eu'; cluster='us')" in err and "--match" in err


def test_narrowed_to_one_cluster_diagnose_finds_its_own_story(two_clusters: tuple[str, History, History],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    url, eu, us = two_clusters
    verdicts = {}
    for cluster, h in (("eu", eu), ("us", us)):
        assert main(["diagnose", "--prometheus", url, "--service", "gateway", "--match", f'cluster="{cluster}"',
                     *windows(h)]) == 0
        verdicts[cluster] = capsys.readouterr().out.splitlines()[0]
    # eu alone reads exactly like the same history in a Prometheus of its own (no cluster label)
    with backfilled_prometheus(eu.traffic.openmetrics()) as single:
        alone = diagnose(PrometheusWindows(single.url), "gateway", INCIDENT, BASELINE, eu.incident_end)
    assert verdicts["eu"] == alone.verdict and "network gateway -> inference" in alone.verdict
    assert "network gateway -> inference (+" not in verdicts["us"]


def test_the_console_queries_show_each_clusters_service_apart(two_clusters: tuple[str, History, History]) -> None:
    url, eu, _ = two_clusters
    api = PrometheusAPI(url)
    answer = api.query(PanelQueries().throughput("5m"), time=eu.incident_end)
    names = sorted(labels["service"] for labels in tell_scopes_apart([lb for lb, _ in answer], ("cluster",)))
    assert names == ["gateway (eu)", "gateway (us)", "inference (eu)", "inference (us)"]
    # summed across clusters, as the queries did before aggregation labels, the two would be one series each
    assert len(api.query(PanelQueries(scope=()).throughput("5m"), time=eu.incident_end)) == 2
    one = api.query(PanelQueries(match='cluster="eu"').throughput("5m"), time=eu.incident_end)
    assert sorted(labels["service"] for labels, _ in one) == ["gateway", "inference"]
