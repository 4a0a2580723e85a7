"""Two Kubernetes pods on two nodes, one GPU each: both are GPU 0 of their host, told apart only by their UUID.
Every GPU view (the console's over-time chart from Prometheus or from its own scrapes, its GPU table, the Grafana
dashboards' GPU panels) shows both, not the hotter one under "GPU 0"."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from aiwatch.console.scrape import ScrapeSource
from tests.console.conftest import PinnedSource
from tests.console.test_console_dashboard import DASHBOARD, load, substitute, targets
from tests.servers import Prometheus, exposition_handler, handler_server, prometheus

#: (uuid, utilization) of each pod's one GPU
GPUS = {"GPU-3f5e2b9c-41a7-8d0e-6c1b-92f4d7a0e815": 0.9, "GPU-a81c07d2-5b3e-4f19-9e60-2d7b8c14f3a6": 0.2}


def exporter(uuid: str, utilization: float) -> type[BaseHTTPRequestHandler]:
    labels = f'gpu="0",uuid="{uuid}",name="NVIDIA H100 80GB HBM3",mig_gi="",mig_ci=""'
    body = "".join(f"# TYPE {name} gauge\n{name}{{{labels}}} {value}\n" for name, value in (
        ("aiwatch_gpu_up", 1), ("aiwatch_gpu_utilization_ratio", utilization),
        ("aiwatch_gpu_memory_used_bytes", 1e9), ("aiwatch_gpu_memory_total_bytes", 8e10),
        ("aiwatch_gpu_power_watts", 300), ("aiwatch_gpu_temperature_celsius", 60))).encode()

    return exposition_handler(body)


@pytest.fixture(scope="module")
def pods() -> Iterator[list[str]]:
    (a, util_a), (b, util_b) = GPUS.items()
    with handler_server(exporter(a, util_a)) as url_a, handler_server(exporter(b, util_b)) as url_b:
        yield [url_a, url_b]


@pytest.fixture(scope="module")
def prom(pods: list[str]) -> Iterator[Prometheus]:
    with prometheus([url.removeprefix("http://") for url in pods]) as p:
        p.wait_for("count(aiwatch_gpu_utilization_ratio) == 2")
        yield p


def settled(prom: Prometheus) -> float:
    """An instant where both pods' scrapes answered and have landed (:meth:`Prometheus.settled_for`): asked at now, a
    scrape failed since (its 1 s timeout on a loaded machine) reads that pod's GPU gauges stale, and the views and
    panels show the other pod's GPU alone."""
    return prom.settled_for("count(up == 1) == 2 and on() count(aiwatch_gpu_utilization_ratio) == 2")


def by_uuid(series: list[Any]) -> dict[str, float | None]:
    return {s.labels.get("uuid", ""): s.last for s in series}


@pytest.mark.slow
def test_the_prometheus_source_shows_each_pods_gpu(prom: Prometheus) -> None:
    src = PinnedSource(prom.url, settled(prom), span=30, points=10)
    found = src.gpu_utilization()
    assert by_uuid(found.gpus) == pytest.approx(GPUS)
    assert (found.total, found.fleet) == (2, [])  # a small fleet: every GPU, no distribution
    assert {r.uuid: r.utilization for r in src.gpu_table().rows} == pytest.approx(GPUS)


@pytest.mark.slow
def test_the_scrape_source_shows_each_pods_gpu(pods: list[str]) -> None:
    src = ScrapeSource(pods, interval=10.0, history=600, start=False)
    try:
        src.scrape_once()
        src.scrape_once()
        assert by_uuid(src.gpu_utilization().gpus) == pytest.approx(GPUS)
        assert {r.uuid: r.utilization for r in src.gpu_table().rows} == pytest.approx(GPUS)
    finally:
        src.close()


@pytest.mark.slow
def test_every_gpu_panel_of_the_dashboard_shows_each_pods_gpu(prom: Prometheus) -> None:
    per_gpu = [(title, t) for title, t in targets(load(DASHBOARD))
               if title in ("GPUs", "GPU utilization", "GPU power", "GPU temperature", "GPU memory used")]
    assert len(per_gpu) >= 10
    at = settled(prom)
    for title, target in per_gpu:
        found = prom.query(substitute(target["expr"]), at)
        if target["legendFormat"].startswith("fleet"):  # the fleet's min / median / max over both GPUs
            assert {r["metric"]["stat"] for r in found} == {"min", "median", "max"}, (title, found)
        elif target["legendFormat"].startswith("idlest"):  # both GPUs are among the $gpu_limit busiest
            assert found == [], (title, found)
        else:
            assert {r["metric"].get("uuid") for r in found} == set(GPUS), (title, target["expr"], found)
    # the autoscaling card's mean is over both GPUs
    (mean,) = [t for title, t in targets(load(DASHBOARD)) if title == "GPU utilization (mean)"]
    assert prom.value(substitute(mean["expr"]), at) == pytest.approx(sum(GPUS.values()) / 2)
