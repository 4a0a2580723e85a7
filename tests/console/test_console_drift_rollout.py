"""The console's bin view of a feature while a re-baselined profile rolls out: replica a still counts into the old
profile's bins, b and c into the new one's, under the same bin indices (other edges, other shares). Both sources
show the bins of one reference, the one whose replicas counted the most live values; mixed, the old profile's
shares stood beside both profiles' live shares under one index."""

from __future__ import annotations

import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from aiwatch.console import PrometheusSource
from aiwatch.console.scrape import ScrapeSource
from aiwatch.drift import DriftMonitor, ReferenceProfile
from tests.drift.test_drift_promql import Replicas
from tests.servers import free_port, prometheus

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
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=served)
    try:
        with prometheus([f"127.0.0.1:{port}"], scrape_interval="1s") as prom:
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
    finally:
        server.shutdown()
        thread.join(5)
    from_scrapes = scraped.feature_distribution("m", "x", 60)
    feat = new.features["x"]
    counted = np.bincount(feat.bin_index(np.concatenate([mons[r].window()["x"] for r in "bc"])), minlength=4)
    expected = [(b, pytest.approx(float(s)), pytest.approx(c / counted.sum()))
                for b, s, c in zip(feat.bin_labels, feat.reference_shares(), counted, strict=True)]
    assert [(b.bin, b.reference, b.live) for b in from_scrapes] == expected
    assert [(b.bin, b.reference, b.live) for b in from_prometheus] == expected
    assert old.features["x"].reference_shares().tolist() != feat.reference_shares().tolist()
