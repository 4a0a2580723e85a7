"""The fleet PromQL (aiwatch.drift.promql) run in a real Prometheus equals the Python PSI / JS on the same counts.

Two DriftMonitors (two "replicas") count different live data into the same reference bins; one tiny metrics
endpoint serves both registries with a ``replica`` label (one scrape, so every series has the same sample
timestamps and ``increase()``'s extrapolation scales every bin alike); Prometheus scrapes it, and the fleet
expressions must give the PSI / Jensen-Shannon distance that aiwatch.drift.stattests computes on the summed counts.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from aiwatch.drift import DriftMonitor, ReferenceProfile
from aiwatch.drift.promql import fleet_js_expr, fleet_psi_expr
from aiwatch.drift.stattests import jensenshannon, psi
from tests.servers import free_port, prometheus

pytestmark = pytest.mark.slow


class Replicas(Collector):
    """Serves several registries on one endpoint, each sample labelled with its replica."""

    def __init__(self, registries: dict[str, CollectorRegistry]) -> None:
        self.registries = registries

    def collect(self) -> Iterator[Metric]:
        for replica, registry in self.registries.items():
            for family in registry.collect():
                if not family.name.startswith(("aiwatch_feature_bin", "aiwatch_feature_reference_ratio")):
                    continue
                out = Metric(family.name, family.documentation, family.type)
                for s in family.samples:
                    out.add_sample(s.name, {**s.labels, "replica": replica}, s.value)
                yield out


def _counts(registry: CollectorRegistry, feature: str, labels: list[str]) -> list[float]:
    return [registry.get_sample_value("aiwatch_feature_bin_total", {"model": "m", "feature": feature, "bin": b})
            or 0.0 for b in labels]


def test_fleet_psi_and_js_in_prometheus_equal_python() -> None:
    rng = np.random.default_rng(11)
    profile = ReferenceProfile.build({"x": rng.normal(0, 1, 5000),
                                      "color": list(rng.choice(["red", "green", "blue"], 5000, p=[0.5, 0.3, 0.2]))})
    regs = {"a": CollectorRegistry(), "b": CollectorRegistry()}
    mon_a = DriftMonitor(profile, model="m", registry=regs["a"])
    mon_b = DriftMonitor(profile, model="m", registry=regs["b"])
    served = CollectorRegistry()
    served.register(Replicas(regs))
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=served)
    n_series = 2 * sum(len(f.bin_labels) for f in profile.features.values())
    try:
        with prometheus([f"127.0.0.1:{port}"], scrape_interval="1s") as prom:
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
    finally:
        server.shutdown()
        thread.join(5)
    assert [r["metric"]["feature"] for r in selected] == ["x"]
    for name, feat in profile.features.items():
        labels = feat.bin_labels
        live = np.add(_counts(regs["a"], name, labels), _counts(regs["b"], name, labels))
        ref = feat.bin_counts if hasattr(feat, "bin_counts") else feat.bucket_counts()  # type: ignore[union-attr]
        assert got_psi[name] == pytest.approx(psi(ref, live).statistic, rel=1e-9), name
        assert got_js[name] == pytest.approx(jensenshannon(ref, live).statistic, rel=1e-9), name
    # the unseen "purple" bucket had reference share 0: PSI used the epsilon and stayed finite
    assert np.isfinite(got_psi["color"]) and got_psi["color"] > 0.1
