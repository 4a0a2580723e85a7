"""The console's bin view of a feature while a re-baselined profile rolls out: replica a still counts into the old
profile's bins, b and c into the new one's, under the same bin indices (other edges, other shares). Both sources
show the bins of one reference, the one whose replicas counted the most live values; mixed, the old profile's
shares stood beside both profiles' live shares under one index."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from aiwatch.console import PrometheusSource
from aiwatch.console.scrape import ScrapeSource
from aiwatch.drift import DriftMonitor, ReferenceProfile
from aiwatch.drift.features import NumericalFeature
from tests.console.test_console_dashboard import load
from tests.drift.test_drift_promql import Replicas, _older_aiwatch
from tests.servers import prometheus_scraping

pytestmark = pytest.mark.slow


def test_both_sources_show_the_bins_of_the_reference_most_traffic_counted() -> None:
    rng = np.random.default_rng(8)
    old = ReferenceProfile.build({"x": rng.normal(0, 1, 3000)}, n_bins=4)
    new = ReferenceProfile.build({"x": rng.normal(2, 1, 3000)}, edges_from=old)  # the old edges, other shares
    profiles = {"a": old, "b": new, "c": new}
    regs = {r: CollectorRegistry() for r in profiles}
    mons = {r: DriftMonitor(p, model="m", registry=regs[r]) for r, p in profiles.items()}
    urls = {r: f"http://replica-{r}/metrics" for r in profiles}
    scraped = ScrapeSource(list(urls.values()), interval=10.0, history=600, start=False)
    served = CollectorRegistry()
    served.register(Replicas(regs))
    with prometheus_scraping(served) as prom:
        prom.wait_for("count(aiwatch_feature_bin_total == 0)",
                      lambda r: bool(r) and int(float(r[0]["value"][1])) == 12)
        t0 = time.time() - 30
        for r, reg in regs.items():
            scraped.record(urls[r], generate_latest(reg).decode(), t0)
        mons["a"].observe_batch({"x": rng.normal(0, 1, 300)})
        for r in "bc":
            mons[r].observe_batch({"x": rng.normal(2, 1, 300)})
        for r, reg in regs.items():
            scraped.record(urls[r], generate_latest(reg).decode(), t0 + 20)
        prom.wait_for("sum(aiwatch_feature_bin_total)", lambda r: bool(r) and float(r[0]["value"][1]) == 900)
        from_prometheus = PrometheusSource(prom.url, span=30, points=10).feature_distribution("m", "x", 60)
        # the dashboard: its bin chart repeated over the references its variable lists, each panel one's bins
        dash = load()
        chart = next(p for p in dash["panels"] if p.get("repeat") == "reference")
        listed = re.fullmatch(r"label_values\((.+), reference\)",
                              next(v for v in dash["templating"]["list"] if v["name"] == "reference")["definition"])
        assert listed
        grafana = {"$model": "m", "$feature": "x", "$__range": "60s", "$cluster": ".*", "$namespace": ".*"}
        listing = prom.api("/api/v1/series", **{"match[]": _grafana(listed[1], grafana)})
        references = {s["reference"] for s in listing}
        panels = {ref: [prom.query(_grafana(t["expr"], {**grafana, "$reference": ref})) for t in chart["targets"]]
                  for ref in references}
    from_scrapes = scraped.feature_distribution("m", "x", 60)
    feat = new.features["x"]
    counted = np.bincount(feat.bin_index(np.concatenate([mons[r].window()["x"] for r in "bc"])), minlength=4)
    expected = [(b, pytest.approx(float(s)), pytest.approx(c / counted.sum()))
                for b, s, c in zip(feat.bin_labels, feat.reference_shares(), counted, strict=True)]
    assert [(b.bin, b.reference, b.live) for b in from_scrapes] == expected
    assert [(b.bin, b.reference, b.live) for b in from_prometheus] == expected
    assert old.features["x"].reference_shares().tolist() != feat.reference_shares().tolist()
    assert set(panels) == {old.features["x"].reference_id, feat.reference_id}
    for profile in (old, new):
        shares, live = panels[profile.features["x"].reference_id]
        assert {r["metric"]["reference"] for r in [*shares, *live]} == {profile.features["x"].reference_id}
        assert sorted((r["metric"]["bin"], float(r["value"][1])) for r in shares) == [
            (b, pytest.approx(float(s))) for b, s in zip(profile.features["x"].bin_labels,
                                                          profile.features["x"].reference_shares(), strict=True)]
    assert sorted((r["metric"]["bin"], float(r["value"][1])) for r in panels[feat.reference_id][1]) == [
        (b, pytest.approx(c / counted.sum())) for b, c in zip(feat.bin_labels, counted, strict=True) if c]


def _grafana(expr: str, values: dict[str, str]) -> str:
    """``expr`` with Grafana's variables replaced by ``values`` (each of them)."""
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def test_both_sources_show_a_missing_share_per_reference_against_its_own() -> None:
    """x is 40% missing in the old profile (replica a) and never in the new one (b, c). a misses 40%, b and c 30%:
    each profile's row reads its own replicas against its own share. Mixed, one row read 33% against 40% (the
    largest share), and the new profile's replicas losing a third of x was past no threshold."""
    rng = np.random.default_rng(9)

    def with_missing(n: int, share: float) -> np.ndarray:
        values = rng.normal(0, 1, n)
        values[: round(n * share)] = np.nan
        return values

    old = ReferenceProfile.build({"x": with_missing(3000, 0.4)}, n_bins=4)
    new = ReferenceProfile.build({"x": with_missing(3000, 0.0)}, n_bins=5)
    profiles = {"a": old, "b": new, "c": new}
    regs = {r: CollectorRegistry() for r in profiles}
    mons = {r: DriftMonitor(p, model="m", registry=regs[r]) for r, p in profiles.items()}
    urls = {r: f"http://replica-{r}/metrics" for r in profiles}
    scraped = ScrapeSource(list(urls.values()), interval=10.0, history=600, start=False)
    served = CollectorRegistry()
    served.register(Replicas(regs, ("aiwatch_feature_bin", "aiwatch_feature_reference", "aiwatch_feature_missing",
                                    "aiwatch_feature_invalid")))
    with prometheus_scraping(served) as prom:
        prom.wait_for("count(aiwatch_feature_missing_total == 0)",
                      lambda r: bool(r) and int(float(r[0]["value"][1])) == 3)
        t0 = time.time() - 30
        for r, reg in regs.items():
            scraped.record(urls[r], generate_latest(reg).decode(), t0)
        mons["a"].observe_batch({"x": with_missing(500, 0.4)})
        for r in "bc":
            mons[r].observe_batch({"x": with_missing(500, 0.3)})
        for r, reg in regs.items():
            scraped.record(urls[r], generate_latest(reg).decode(), t0 + 20)
        prom.wait_for("sum(aiwatch_feature_missing_total)", lambda r: bool(r) and float(r[0]["value"][1]) == 500)
        prom.wait_for("sum(aiwatch_feature_bin_total)", lambda r: bool(r) and float(r[0]["value"][1]) == 1000)
        from_prometheus = PrometheusSource(prom.url, span=30, points=10).feature_missing(60)
    from_scrapes = scraped.feature_missing(60)
    old_id, new_id = old.features["x"].reference_id, new.features["x"].reference_id
    for rows in (from_prometheus, from_scrapes):
        assert [(r.feature, r.live, r.reference) for r in rows] == [("x", pytest.approx(0.3), 0.0),
                                                                     ("x", pytest.approx(0.4), pytest.approx(0.4))]
        assert [r.reference_id for r in rows] == [new_id, old_id]
        # each row counts its own replicas' values and missing ones (rates times the window: extrapolated)
        assert rows[0].counted == pytest.approx(2 * (rows[1].counted or 0.0))
        assert [r.past(0.2, 100) for r in rows] == [True, False]


class _Merged(Collector):
    """Several registries served as one endpoint, as prometheus_client merges a multiprocess directory: a
    counter's samples of one label set added up, a gauge's the first registry's (the latest written)."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self.registries = registries

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for registry in self.registries:
            for family in registry.collect():
                families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                kept = values.setdefault(family.name, {})
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if family.type == "counter":
                        kept[key] = kept.get(key, 0.0) + sample.value
                    else:
                        kept.setdefault(key, sample.value)
        for name, family in families.items():
            for (sample_name, labels), value in values[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family


def test_both_sources_count_a_replica_once_when_an_older_aiwatchs_series_are_left_on_it() -> None:
    """Replica a runs the new aiwatch with an old worker's series still in its multiprocess directory (the reference
    ratios without ``reference``); replica b runs the old aiwatch; one profile. x stops arriving on a only: one row
    for a's reference at 100%, and b's reference-less row at 0%. a's missing values were counted in b's row too
    (50%, past the alert's margin)."""
    rng = np.random.default_rng(10)
    profile = ReferenceProfile.build({"x": rng.normal(0, 1, 3000)}, n_bins=4)
    feature = profile.features["x"]
    assert isinstance(feature, NumericalFeature)
    new, left, old = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    monitor = DriftMonitor(profile, model="m", registry=new)
    _older_aiwatch(left, feature, 30)
    b_bins = _older_aiwatch(old, feature, 0)
    a = CollectorRegistry()
    a.register(_Merged(new, left))
    urls = {"a": "http://replica-a/metrics", "b": "http://replica-b/metrics"}
    endpoints = {"a": a, "b": old}
    scraped = ScrapeSource(list(urls.values()), interval=10.0, history=600, start=False)
    served = CollectorRegistry()
    served.register(Replicas(endpoints, ("aiwatch_feature_bin", "aiwatch_feature_reference", "aiwatch_feature_missing",
                                         "aiwatch_feature_invalid")))
    with prometheus_scraping(served) as prom:
        prom.wait_for("count(aiwatch_feature_missing_total == 0)", lambda r: bool(r) and r[0]["value"][1] == "2")
        t0 = time.time() - 30
        for r, reg in endpoints.items():
            scraped.record(urls[r], generate_latest(reg).decode(), t0)
        monitor.observe_batch({"x": np.full(400, np.nan)})
        for b in feature.bin_labels:
            b_bins.labels(model="m", feature="x", bin=b).inc(100)
        for r, reg in endpoints.items():
            scraped.record(urls[r], generate_latest(reg).decode(), t0 + 20)
        prom.wait_for("sum(aiwatch_feature_missing_total)", lambda r: bool(r) and float(r[0]["value"][1]) == 400)
        prom.wait_for('sum(aiwatch_feature_bin_total{replica="b"})',
                      lambda r: bool(r) and float(r[0]["value"][1]) == 400)
        from_prometheus = PrometheusSource(prom.url, span=30, points=10).feature_missing(60)
    from_scrapes = scraped.feature_missing(60)
    for rows in (from_prometheus, from_scrapes):
        assert sorted((r.reference_id, r.live) for r in rows) == [("", 0.0), (feature.reference_id, 1.0)]


def test_the_dashboards_bin_charts_show_the_replicas_of_an_older_aiwatch_too() -> None:
    """A fleet halfway through an upgrade: replica a runs the new aiwatch (its bins labelled with their reference),
    replica b the old one (no ``reference`` label), another profile. The bin chart repeated over $reference (the
    values Grafana's label_values lists, which never include an empty one) shows a's bins; b's bins, which no
    repeated panel showed, are in the panel of the replicas exporting no reference label."""
    rng = np.random.default_rng(11)
    new = ReferenceProfile.build({"x": rng.normal(0, 1, 3000)}, n_bins=4)
    old = ReferenceProfile.build({"x": rng.normal(3, 1, 3000)}, n_bins=5)
    new_regs, old_reg = CollectorRegistry(), CollectorRegistry()
    monitor = DriftMonitor(new, model="m", registry=new_regs)
    old_feature = old.features["x"]
    assert isinstance(old_feature, NumericalFeature)
    old_bins = _older_aiwatch(old_reg, old_feature, 0)
    served = CollectorRegistry()
    served.register(Replicas({"a": new_regs, "b": old_reg}))
    with prometheus_scraping(served) as prom:
        prom.wait_for("count(aiwatch_feature_bin_total == 0)",
                      lambda r: bool(r) and int(float(r[0]["value"][1])) == 9)
        monitor.observe_batch({"x": rng.normal(0, 1, 300)})
        for b in old_feature.bin_labels[:2]:
            old_bins.labels(model="m", feature="x", bin=b).inc(100)
        prom.wait_for("sum(aiwatch_feature_bin_total)", lambda r: bool(r) and float(r[0]["value"][1]) == 500)
        dash = load()
        chart = next(p for p in dash["panels"] if p.get("repeat") == "reference")
        listed = re.fullmatch(r"label_values\((.+), reference\)",
                              next(v for v in dash["templating"]["list"] if v["name"] == "reference")["definition"])
        assert listed
        grafana = {"$model": "m", "$feature": "x", "$__range": "60s", "$cluster": ".*", "$namespace": ".*"}
        # what Grafana asks for label_values(series, reference)
        references = set(prom.api("/api/v1/label/reference/values", **{"match[]": _grafana(listed[1], grafana)}))
        repeated = {ref: [prom.query(_grafana(t["expr"], {**grafana, "$reference": ref}))
                          for t in chart["targets"]] for ref in references}
        unlabelled = next(p for p in dash["panels"] if "exporting no reference label" in p.get("title", ""))
        shown = [prom.query(_grafana(t["expr"], grafana)) for t in unlabelled["targets"]]
    assert set(repeated) == {new.features["x"].reference_id}  # b's profile is no value of $reference
    assert {r["metric"]["reference"] for answers in repeated.values() for answer in answers for r in answer} == {
        new.features["x"].reference_id}
    shares, live = shown
    assert sorted((r["metric"]["bin"], float(r["value"][1])) for r in shares) == sorted(
        (b, pytest.approx(float(s))) for b, s in zip(old_feature.bin_labels, old_feature.reference_shares(),
                                                     strict=True))
    assert sorted((r["metric"]["bin"], float(r["value"][1])) for r in live) == sorted(
        (b, pytest.approx(0.5 if i < 2 else 0.0)) for i, b in enumerate(old_feature.bin_labels))
