"""The fleet PromQL (aiwatch.drift.promql) run in a real Prometheus equals the Python PSI / JS on the same counts.

Two DriftMonitors (two "replicas") count different live data into the same reference bins; one tiny metrics
endpoint serves both registries with a ``replica`` label (one scrape, so every series has the same sample
timestamps and ``increase()``'s extrapolation scales every bin alike); Prometheus scrapes it, and the fleet
expressions must give the PSI / Jensen-Shannon distance that aiwatch.drift.stattests computes on the summed counts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from aiwatch.drift import DriftMonitor, ReferenceProfile
from aiwatch.drift.features import Feature, NumericalFeature
from aiwatch.drift.promql import (
    BIN_RATE_RECORD,
    FLEET_BINS_RECORD,
    JS_RECORD,
    MISSING_VALUES_RECORD,
    PSI_RECORD,
    fleet_js_expr,
    fleet_psi_expr,
    live_bins_expr,
    live_missing_share_expr,
    reference_missing_share_expr,
)
from aiwatch.drift.stattests import jensenshannon, psi
from aiwatch.rules import RulesConfig, render
from aiwatch.rules.render import drift_alerts, drift_records
from tests.servers import prometheus_scraping

pytestmark = pytest.mark.slow


def inlined(expr: str, cfg: RulesConfig) -> str:
    """``expr`` with the drift group's records it reads replaced by their expressions, to run ad hoc."""
    records = {r["record"]: r["expr"] for r in drift_records(cfg)}
    pattern = re.compile("|".join(re.escape(name) for name in sorted(records, key=len, reverse=True))
                         + r"(?![\w:])")
    while pattern.search(expr):
        expr = pattern.sub(lambda m: f"({records[m.group(0)]})", expr)
    return expr


#: the families AiwatchFeatureMissing reads (:class:`Replicas` serves them)
SCRAPE_TIMEOUT = 1.0
"""Seconds a scrape of ``prometheus_scraping`` may read its target after the instant its samples are stamped with (its
interval, 1 s, bounds its timeout)."""
MISSING_FAMILIES = ("aiwatch_feature_bin", "aiwatch_feature_reference", "aiwatch_feature_missing",
                    "aiwatch_feature_invalid")


def ten_minute_config(interval: str | None = None) -> RulesConfig:
    """The drift rules over a 10m window from 100 values, for a test that scrapes for seconds (``interval``: the
    drift group's, when the test loads the rendered rules)."""
    cfg = RulesConfig()
    cfg.drift.windows = ["10m"]
    cfg.drift.psi_window = "10m"
    cfg.drift.fleet_min_values = 100
    if interval is not None:
        cfg.drift.interval = interval
    return cfg


class Replicas(Collector):
    """Serves several registries on one endpoint, each sample labelled with its replica."""

    def __init__(self, registries: dict[str, CollectorRegistry],
                 families: tuple[str, ...] = ("aiwatch_feature_bin", "aiwatch_feature_reference_ratio")) -> None:
        self.registries = registries
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for replica, registry in self.registries.items():
            for family in registry.collect():
                if not family.name.startswith(self.families):
                    continue
                out = Metric(family.name, family.documentation, family.type)
                for s in family.samples:
                    out.add_sample(s.name, {**s.labels, "replica": replica}, s.value)
                yield out


def _counts(registry: CollectorRegistry, feature: Feature) -> list[float]:
    return [registry.get_sample_value("aiwatch_feature_bin_total", {"model": "m", "feature": feature.name, "bin": b,
                                                                    "reference": feature.reference_id})
            or 0.0 for b in feature.bin_labels]


def test_fleet_psi_and_js_in_prometheus_equal_python() -> None:
    rng = np.random.default_rng(11)
    profile = ReferenceProfile.build({"x": rng.normal(0, 1, 5000),
                                      "color": list(rng.choice(["red", "green", "blue"], 5000, p=[0.5, 0.3, 0.2]))})
    regs = {"a": CollectorRegistry(), "b": CollectorRegistry()}
    mon_a = DriftMonitor(profile, model="m", registry=regs["a"])
    mon_b = DriftMonitor(profile, model="m", registry=regs["b"])
    served = CollectorRegistry()
    served.register(Replicas(regs))
    n_series = 2 * sum(len(f.bin_labels) for f in profile.features.values())
    with prometheus_scraping(served) as prom:
        # every bin is scraped at 0 before any traffic
        prom.wait_for("count(aiwatch_feature_bin_total == 0)",
                      lambda r: bool(r) and int(float(r[0]["value"][1])) == n_series)
        mon_a.observe_batch({"x": rng.normal(0.5, 1, 3000), "color": ["red"] * 2000 + ["purple"] * 1000})
        for v in rng.normal(-0.2, 2, 700):
            mon_b.observe({"x": float(v), "color": "green"})
        mon_b.flush()
        prom.wait_for('sum(aiwatch_feature_bin_total{feature="x"})',
                      lambda r: bool(r) and float(r[0]["value"][1]) == 3700)
        prom.wait_for('sum(aiwatch_feature_bin_total{feature="color"})',
                      lambda r: bool(r) and float(r[0]["value"][1]) == 3700)
        got_psi = {r["metric"]["feature"]: float(r["value"][1]) for r in prom.query(fleet_psi_expr("10m"))}
        got_js = {r["metric"]["feature"]: float(r["value"][1]) for r in prom.query(fleet_js_expr("10m"))}
        selected = prom.query(fleet_psi_expr("10m", '{feature="x"}'))
    assert [r["metric"]["feature"] for r in selected] == ["x"]
    for name, feat in profile.features.items():
        live = np.add(_counts(regs["a"], feat), _counts(regs["b"], feat))
        ref = feat.bin_counts if hasattr(feat, "bin_counts") else feat.bucket_counts()  # type: ignore[union-attr]
        assert got_psi[name] == pytest.approx(psi(ref, live).statistic, rel=1e-9), name
        assert got_js[name] == pytest.approx(jensenshannon(ref, live).statistic, rel=1e-9), name
    # the unseen "purple" bucket had reference share 0: PSI used the epsilon and stayed finite
    assert np.isfinite(got_psi["color"]) and got_psi["color"] > 0.1


def test_a_feature_that_stops_arriving_fires_the_missing_alert_in_prometheus() -> None:
    """AiwatchFeatureMissing's expression on what two real monitors export: replica a gets x as None, replica b gets
    rows without the key x (a series born at its first such row); coupon is 80% missing in the reference and live,
    and stays quiet."""
    rng = np.random.default_rng(12)
    profile = ReferenceProfile.build({"x": rng.normal(0, 1, 1000), "coupon": ["A", None, None, None, None] * 200})
    regs = {"a": CollectorRegistry(), "b": CollectorRegistry()}
    mons = {r: DriftMonitor(profile, model="m", registry=reg) for r, reg in regs.items()}
    served = CollectorRegistry()
    served.register(Replicas(regs, MISSING_FAMILIES))
    cfg = ten_minute_config()
    expr = inlined(next(a.expr for a in drift_alerts(cfg) if a.name == "AiwatchFeatureMissing"), cfg)
    with prometheus_scraping(served) as prom:
        prom.wait_for("count(aiwatch_feature_reference_missing_ratio)",
                      lambda r: bool(r) and int(float(r[0]["value"][1])) == 4)
        shares = {(r["metric"]["replica"], r["metric"]["feature"]): float(r["value"][1])
                  for r in prom.query("aiwatch_feature_reference_missing_ratio")}
        for mon in mons.values():  # x arrives, then stops
            for i in range(100):
                mon.observe({"x": float(rng.normal()), "coupon": "A" if i % 5 == 0 else None})
            mon.flush()
        prom.wait_for('sum(aiwatch_feature_bin_total{feature="x"})',
                      lambda r: bool(r) and float(r[0]["value"][1]) == 200)
        assert prom.query(expr) == []
        for i in range(400):
            coupon = "A" if i % 5 == 0 else None
            mons["a"].observe({"x": None, "coupon": coupon})
            mons["b"].observe({"coupon": coupon})
        for mon in mons.values():
            mon.flush()
        prom.wait_for('sum(aiwatch_feature_missing_total{feature="x"})',
                      lambda r: bool(r) and float(r[0]["value"][1]) == 400)
        prom.wait_for('sum(aiwatch_feature_invalid_total{feature="x", reason="missing_feature"})',
                      lambda r: bool(r) and float(r[0]["value"][1]) == 400)
        # a scrape more: the series born at its first absent row counts from its second sample
        prom.wait_for('count(count_over_time(aiwatch_feature_invalid_total{reason="missing_feature"}[1m]) >= 2)')
        firing = {r["metric"]["feature"]: float(r["value"][1]) for r in prom.query(expr)}
    assert shares == {(r, f): share for r in regs for f, share in (("x", 0.0), ("coupon", 0.8))}
    assert list(firing) == ["x"]
    assert 0.2 < firing["x"] <= 1.0


def test_a_rollout_of_a_new_profile_is_one_fleet_psi_per_reference_in_prometheus() -> None:
    """Replica a on the old profile, b and c on a re-baselined one (a fresh sample of the same traffic, 20 bins):
    their bins share indices but not edges or shares. Added up by index, unmoved traffic made a fleet PSI of 0.21
    that fired AiwatchFleetInputDrift; per ``reference`` each profile's PSI is its own replicas' (the Python PSI of
    what they counted). Then b and c's traffic moves: the alert fires for the new reference only."""
    rng = np.random.default_rng(5)
    old = ReferenceProfile.build({"x": rng.normal(0, 1, 5000)})
    new = ReferenceProfile.build({"x": rng.normal(0, 1, 5000)}, n_bins=20)
    profiles = {"a": old, "b": new, "c": new}
    regs = {r: CollectorRegistry() for r in profiles}
    mons = {r: DriftMonitor(profiles[r], model="m", registry=regs[r]) for r in profiles}
    fed: dict[str, list[np.ndarray]] = {r: [] for r in profiles}

    def feed(replica: str, values: np.ndarray) -> None:
        mons[replica].observe_batch({"x": values})
        fed[replica].append(values)

    def python_psi(*replicas: str) -> float:
        feat = profiles[replicas[0]].features["x"]
        assert isinstance(feat, NumericalFeature)
        values = np.concatenate([v for r in replicas for v in fed[r]])
        return float(psi(feat.bin_counts, np.bincount(feat.bin_index(values), minlength=len(feat.bin_counts)))
                     .statistic)

    served = CollectorRegistry()
    served.register(Replicas(regs))
    cfg = ten_minute_config()
    alert = inlined(next(a.expr for a in drift_alerts(cfg) if a.name == "AiwatchFleetInputDrift"), cfg)
    with prometheus_scraping(served) as prom:
        prom.wait_for("count(aiwatch_feature_bin_total == 0)",
                      lambda r: bool(r) and int(float(r[0]["value"][1])) == 50)
        for r in profiles:
            feed(r, rng.normal(0, 1, 2000))
        prom.wait_for("sum(aiwatch_feature_bin_total)", lambda r: bool(r) and float(r[0]["value"][1]) == 6000)
        unmoved = sorted(float(r["value"][1]) for r in prom.query(fleet_psi_expr("10m")))
        quiet = prom.query(alert)
        unmoved_expected = sorted([python_psi("a"), python_psi("b", "c")])
        for r in "bc":
            feed(r, rng.normal(1, 1, 4000))
        prom.wait_for("sum(aiwatch_feature_bin_total)", lambda r: bool(r) and float(r[0]["value"][1]) == 14000)
        firing = [(r["metric"].get("reference"), float(r["value"][1])) for r in prom.query(alert)]
    assert unmoved == pytest.approx(unmoved_expected, rel=1e-9)
    assert max(unmoved) < 0.05
    assert quiet == []
    assert firing == [(new.features["x"].reference_id, pytest.approx(python_psi("b", "c"), rel=1e-9))]
    assert firing[0][1] > 0.2
    assert old.features["x"].reference_id != new.features["x"].reference_id


def test_a_rollout_fires_the_missing_alert_for_the_reference_whose_replicas_miss_more_than_it() -> None:
    """Replica a on a profile where x is 40% missing, b and c on a re-baselined one where it never is. a misses 40%
    (as its reference), b and c 30%: the new profile's replicas lost a third of x. Mixed over the fleet, the live
    share (33%) read against the largest reference share (40%) stayed quiet; per reference, the new one fires at
    30% against 0%, and the old one is quiet."""
    rng = np.random.default_rng(13)

    def with_missing(n: int, share: float) -> np.ndarray:
        values = rng.normal(0, 1, n)
        values[: round(n * share)] = np.nan
        return values

    old = ReferenceProfile.build({"x": with_missing(5000, 0.4)})
    new = ReferenceProfile.build({"x": with_missing(5000, 0.0)}, n_bins=20)
    profiles = {"a": old, "b": new, "c": new}
    regs = {r: CollectorRegistry() for r in profiles}
    mons = {r: DriftMonitor(profiles[r], model="m", registry=regs[r]) for r in profiles}
    served = CollectorRegistry()
    served.register(Replicas(regs, MISSING_FAMILIES))
    cfg = ten_minute_config()
    expr = inlined(next(a.expr for a in drift_alerts(cfg) if a.name == "AiwatchFeatureMissing"), cfg)
    with prometheus_scraping(served) as prom:
        prom.wait_for("count(aiwatch_feature_reference_missing_ratio)",
                      lambda r: bool(r) and int(float(r[0]["value"][1])) == 3)
        prom.wait_for("count(aiwatch_feature_missing_total)",
                      lambda r: bool(r) and int(float(r[0]["value"][1])) == 3)
        mons["a"].observe_batch({"x": with_missing(1000, 0.4)})
        for r in "bc":
            mons[r].observe_batch({"x": with_missing(1000, 0.3)})
        prom.wait_for("sum(aiwatch_feature_missing_total)", lambda r: bool(r) and float(r[0]["value"][1]) == 1000)
        prom.wait_for("sum(aiwatch_feature_bin_total)", lambda r: bool(r) and float(r[0]["value"][1]) == 2000)
        firing = {r["metric"].get("reference"): float(r["value"][1]) for r in prom.query(expr)}
        shares = {r["metric"].get("reference"): float(r["value"][1])
                  for r in prom.query(live_missing_share_expr("10m"))}
        reference = {r["metric"].get("reference"): float(r["value"][1])
                     for r in prom.query(reference_missing_share_expr())}
    old_id, new_id = old.features["x"].reference_id, new.features["x"].reference_id
    assert reference == {old_id: pytest.approx(0.4), new_id: 0.0}
    assert shares == {old_id: pytest.approx(0.4), new_id: pytest.approx(0.3)}
    assert firing == {new_id: pytest.approx(0.3)}



def _older_aiwatch(registry: CollectorRegistry, feature: NumericalFeature, counts: int) -> Counter:
    """Export ``feature`` as an aiwatch older than the ``reference`` label did (the same names and labels, that one
    left out): its reference shares, no missing value, and ``counts`` live values in each bin; returns the bins'
    counter."""
    labels = {"model": "m", "feature": feature.name}
    ratio = Gauge("aiwatch_feature_reference_ratio", "", ("model", "feature", "bin"), registry=registry)
    bins = Counter("aiwatch_feature_bin_total", "", ("model", "feature", "bin"), registry=registry)
    for b, share in zip(feature.bin_labels, feature.reference_shares(), strict=True):
        ratio.labels(bin=b, **labels).set(float(share))
        bins.labels(bin=b, **labels).inc(counts)
    Gauge("aiwatch_feature_reference_missing_ratio", "", ("model", "feature"), registry=registry).labels(
        **labels).set(0.0)
    Counter("aiwatch_feature_missing_total", "", ("model", "feature"), registry=registry).labels(**labels)
    return bins


def test_an_older_aiwatchs_series_left_on_a_replica_do_not_count_it_twice_in_the_missing_alert() -> None:
    """A fleet halfway through an upgrade. Replica a runs the new aiwatch, but its multiprocess directory still holds
    an old worker's sample files (a gunicorn USR2 upgrade keeps them until the next full restart): its /metrics has
    the old reference ratios without ``reference`` beside its own. Replica b still runs the old aiwatch. Both use the
    same profile. x stops arriving on a only: AiwatchFeatureMissing fires for a's reference, at 100%. The
    reference-less group is b's (x never missing there): it counted a's missing values too, read 50% and paged a
    second time, naming the old replicas."""
    rng = np.random.default_rng(14)
    profile = ReferenceProfile.build({"x": rng.normal(0, 1, 5000)})
    feature = profile.features["x"]
    assert isinstance(feature, NumericalFeature)
    new, left, old = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    monitor = DriftMonitor(profile, model="m", registry=new)
    _older_aiwatch(left, feature, 30)  # what the old worker counted before it exited
    b_bins = _older_aiwatch(old, feature, 0)
    served = CollectorRegistry()
    served.register(Replicas({"a": new, "b": old}, MISSING_FAMILIES))
    served.register(Replicas({"a": left}, MISSING_FAMILIES))
    cfg = ten_minute_config()
    expr = inlined(next(a.expr for a in drift_alerts(cfg) if a.name == "AiwatchFeatureMissing"), cfg)
    with prometheus_scraping(served) as prom:
        prom.wait_for("count(aiwatch_feature_missing_total)", lambda r: bool(r) and r[0]["value"][1] == "2")
        monitor.observe_batch({"x": np.full(500, np.nan)})
        monitor.flush()
        for b in feature.bin_labels:
            b_bins.labels(model="m", feature="x", bin=b).inc(50)
        prom.wait_for('sum(aiwatch_feature_missing_total{feature="x"})',
                      lambda r: bool(r) and float(r[0]["value"][1]) == 500)
        prom.wait_for('sum(aiwatch_feature_bin_total{replica="b"})',
                      lambda r: bool(r) and float(r[0]["value"][1]) == 50 * len(feature.bin_labels))
        firing = {r["metric"].get("reference", ""): float(r["value"][1]) for r in prom.query(expr)}
        shares = {r["metric"].get("reference", ""): float(r["value"][1])
                  for r in prom.query(live_missing_share_expr("10m"))}
    assert shares == {feature.reference_id: pytest.approx(1.0), "": 0.0}
    assert firing == {feature.reference_id: pytest.approx(1.0)}


def test_the_drift_rule_files_record_what_the_fleet_expressions_compute(tmp_path: Path) -> None:
    """The drift group reads the fleet's per-bin increase and reference shares from records of its own (made
    earlier in the same evaluation, so one scan of the raw counters per window), and AiwatchFeatureMissing reads
    recorded counts: a real Prometheus evaluating the rendered files records the same PSI, JS distance and missing
    shares as the self-contained expressions give at the records' timestamp."""
    rng = np.random.default_rng(13)
    profile = ReferenceProfile.build({"x": rng.normal(0, 1, 1000), "color": ["red", "green", None, "blue"] * 250})
    regs = {"a": CollectorRegistry(), "b": CollectorRegistry()}
    mons = {r: DriftMonitor(profile, model="m", registry=reg) for r, reg in regs.items()}
    served = CollectorRegistry()
    served.register(Replicas(regs, MISSING_FAMILIES))
    cfg = ten_minute_config(interval="1s")
    for name, text in render(cfg).items():
        (tmp_path / name).write_text(text)
    with prometheus_scraping(served, sorted(tmp_path.glob("*.rules.yml"))) as prom:
        prom.wait_for("count(aiwatch_feature_reference_missing_ratio)",
                      lambda r: bool(r) and int(float(r[0]["value"][1])) == 4)
        mons["a"].observe_batch({"x": rng.normal(0.7, 1, 800), "color": ["red", None] * 400})
        for i in range(300):
            mons["b"].observe({"x": None if i % 3 else float(rng.normal()), "color": "blue"})
        for mon in mons.values():
            mon.flush()
        prom.wait_for("sum(aiwatch_feature_bin_total)", lambda r: bool(r) and float(r[0]["value"][1]) == 1600)
        prom.wait_for("sum(aiwatch_feature_missing_total)", lambda r: bool(r) and float(r[0]["value"][1]) == 600)
        pairs = {
            PSI_RECORD.format(window="10m"): fleet_psi_expr("10m"),
            JS_RECORD.format(window="10m"): fleet_js_expr("10m"),
            "model_feature:aiwatch_feature_missing_values:increase10m / "
            "model_feature:aiwatch_feature_values:increase10m": live_missing_share_expr("10m"),
            "model_feature:aiwatch_feature_reference_missing_ratio:max": reference_missing_share_expr(),
        }
        # two evaluations after the last count moved
        start = time.time()
        prom.wait_for(f"timestamp({MISSING_VALUES_RECORD.format(window='10m')}) > {start + 2}",
                      lambda r: len(r) == 2)
        for recorded, computed in pairs.items():
            got = prom.query(recorded)
            assert len(got) == 2, recorded
            at = str(got[0]["value"][0])
            want = prom.api("/api/v1/query", query=computed, time=at)["result"]
            assert {r["metric"]["feature"]: pytest.approx(float(r["value"][1]), rel=1e-9) for r in want} \
                == {r["metric"]["feature"]: float(r["value"][1]) for r in got}, recorded


def test_a_window_longer_than_raw_window_max_is_summed_from_the_recorded_rate(tmp_path: Path) -> None:
    """A long window read from every replica's raw counters (a 1d ``increase()`` at 500 replicas x 50 features x 10
    bins is 1.44 billion samples per evaluation) is summed from the fleet's per-bin rate the group records at each
    evaluation: a real Prometheus evaluating the rendered files records, for traffic well inside the window, the
    counts, PSI and JS distance the self-contained expression over the raw counters gives at the same timestamp.
    Tolerance: each value counts once in the sum of the overlapping rate windows, each extrapolated to its edges as
    increase() is; where the traffic starts, stops or changes mix, a scrape's values weigh a little more or less
    than once (a sample ingested after an evaluation that should have read it, timestamps that jitter). Observed with
    this 20 s of traffic: counts within 0.2% of the monitors' (the raw increase() reads 60/59 of them), PSI and JS
    within 0.0005 of the raw expression's; with 10 s of traffic, PSI 0.006 off. Allowed: a second of traffic at each
    start and end in the window (a scrape's timeout: below), and 0.01."""
    rng = np.random.default_rng(15)
    profile = ReferenceProfile.build({"x": rng.normal(0, 1, 1000), "color": ["red", "green", "blue"] * 300})
    regs = {"a": CollectorRegistry(), "b": CollectorRegistry()}
    mons = {r: DriftMonitor(profile, model="m", registry=reg) for r, reg in regs.items()}
    for mon in mons.values():  # every bin above 0 at the first scrape: a counter read from 0 is not extrapolated
        mon.observe_batch({"x": np.linspace(-4, 4, 300), "color": ["red", "green", "blue"] * 100})
    served = CollectorRegistry()
    served.register(Replicas(regs))
    cfg = ten_minute_config(interval="1s")
    cfg.drift.windows, cfg.drift.psi_window = ["10s", "1m"], "10s"
    cfg.drift.raw_window_max, cfg.drift.rate_window = "10s", "4s"
    long_bins = FLEET_BINS_RECORD.format(window="1m")
    exprs = {r["record"]: r["expr"] for r in drift_records(cfg)}
    assert exprs[long_bins] == "sum_over_time(model_feature_bin:aiwatch_feature_bin:rate4s[1m]) * 1"
    assert exprs[FLEET_BINS_RECORD.format(window="10s")] == live_bins_expr("10s")
    for name, text in render(cfg).items():
        (tmp_path / name).write_text(text)
    with prometheus_scraping(served, sorted(tmp_path.glob("*.rules.yml"))) as prom:
        first = prom.wait_for(f"timestamp({BIN_RATE_RECORD.format(window='4s')})")
        started = min(float(r["value"][1]) for r in first)
        # the first traffic more than a rate window after the record's first sample
        time.sleep(max(0.0, started + 15 - time.time()))
        # steady traffic for 20 s, its mix changing twice (a alone, both, then b alone)
        for i in range(200):
            if i < 120:
                mons["a"].observe_batch({"x": rng.normal(0.7, 1, 30), "color": ["red"] * 20 + ["blue"] * 10})
            if i >= 80:
                mons["b"].observe_batch({"x": rng.normal(-0.5, 2, 15), "color": ["green"] * 15})
            time.sleep(0.1)
        prom.wait_for("sum(aiwatch_feature_bin_total)",
                      lambda r: bool(r) and float(r[0]["value"][1]) == 2 * 600 + 2 * 3600 + 2 * 1800)
        last = time.time()
        # the raw counters' samples span the whole window (else increase() extrapolates each bin by its own
        # factor), and the last values are more than a rate window and a scrape before the evaluation
        got = prom.wait_for(f"timestamp({PSI_RECORD.format(window='1m')}) > {max(started + 62, last + 6)}",
                            lambda r: len(r) == 2)
        at = str(got[0]["value"][0])
        assert float(at) - 60 + 4 < started + 15, "the first traffic must lie inside the compared window"
        pairs = {long_bins: live_bins_expr("1m"), PSI_RECORD.format(window="1m"): fleet_psi_expr("1m"),
                 JS_RECORD.format(window="1m"): fleet_js_expr("1m")}
        compared = {}
        for recorded, computed in pairs.items():
            rec = prom.api("/api/v1/query", query=recorded, time=at)["result"]
            raw = prom.api("/api/v1/query", query=computed, time=at)["result"]

            def key(r: dict[str, Any]) -> tuple[str, str]:
                return r["metric"]["feature"], r["metric"].get("bin", "")
            compared[recorded] = ({key(r): float(r["value"][1]) for r in rec},
                                  {key(r): float(r["value"][1]) for r in raw})
    counts, raw_counts = compared[long_bins]
    assert counts.keys() == raw_counts.keys()
    # A scrape is stamped when it starts and reads the counters up to its timeout (1 s) later: on a loaded machine
    # the values at a traffic's start and end are stamped up to a second early, so each edge can move a bin's count
    # by up to a second of its traffic (CI, every core: 'blue' 1245 for 1200, its 100 per second starting and
    # stopping in the window; 0.2% off on a quiet machine). Allowed: one second of each edge's traffic per second.
    per_second = {("color", "red"): 200, ("color", "blue"): 100, ("color", "green"): 150}  # each: one start, one end
    counted = {("color", "red"): 2400, ("color", "blue"): 1200, ("color", "green"): 1800}
    for key, n in counted.items():
        assert abs(counts[key] - n) <= SCRAPE_TIMEOUT * 2 * per_second[key], (key, counts[key], n)
    x_counted = sum(v for (feature, _), v in counts.items() if feature == "x")
    assert abs(x_counted - (3600 + 1800)) <= SCRAPE_TIMEOUT * 2 * (300 + 150), x_counted
    for record in (PSI_RECORD.format(window="1m"), JS_RECORD.format(window="1m")):
        got_values, raw_values = compared[record]
        assert got_values.keys() == raw_values.keys() == {("x", ""), ("color", "")}
        for key, value in raw_values.items():
            assert got_values[key] == pytest.approx(value, abs=0.01), (record, key)
