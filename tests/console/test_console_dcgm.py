"""GPUs from NVIDIA's dcgm-exporter: a tiny exporter serves a dcgm-exporter payload (tests/fixtures), a real
Prometheus scrapes it, and the console's Prometheus source, the DCGM Grafana dashboard and the DCGM KEDA and
prometheus-adapter examples read it in aiwatch's units (utilization 0-1, memory in bytes) and labels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aiwatch.console import PrometheusSource
from aiwatch.console.config import ConsoleConfig
from aiwatch.console.queries import PanelQueries
from aiwatch.gpuseries import MIB, SM_ACTIVE, GpuSeries
from tests.console.test_console_dashboard import DCGM_DASHBOARD, load, substitute, targets
from tests.servers import REPO, Prometheus, exposition_handler, handler_server, prometheus, require_module

PAYLOAD = Path(__file__).resolve().parents[1] / "fixtures" / "dcgm-exporter-metrics.txt"
H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture(scope="module")
def dcgm_prometheus() -> Iterator[Prometheus]:
    with handler_server(exposition_handler(PAYLOAD.read_bytes())) as url, \
            prometheus([url.removeprefix("http://")]) as prom:
        prom.wait_for("count(DCGM_FI_DEV_GPU_UTIL) == 2 and count(DCGM_FI_PROF_SM_ACTIVE) == 2")
        yield prom


def source(prom: Prometheus, gpu: GpuSeries) -> PrometheusSource:
    return PrometheusSource(prom.url, span=30, points=10, queries=PanelQueries(gpu=gpu))


@pytest.mark.slow
def test_the_gpu_table_reads_dcgm_in_aiwatchs_units_and_labels(dcgm_prometheus: Prometheus) -> None:
    rows = source(dcgm_prometheus, GpuSeries("dcgm")).gpu_table().rows
    assert [(r.gpu, r.name) for r in rows] == [("0", H100), ("1", H100)]
    busy, idle = rows
    assert busy.uuid.startswith("GPU-3f5e") and idle.uuid.startswith("GPU-a81c")
    assert busy.up == 1 and busy.utilization == pytest.approx(0.87) and idle.utilization == 0
    assert busy.memory_used_bytes == 61440 * MIB and busy.memory_total_bytes == (61440 + 19079) * MIB
    assert busy.power_watts == pytest.approx(512.346) and busy.temperature_celsius == 64


@pytest.mark.slow
def test_sm_active_can_stand_for_utilization(dcgm_prometheus: Prometheus) -> None:
    src = source(dcgm_prometheus, GpuSeries("dcgm", SM_ACTIVE))
    assert [r.utilization for r in src.gpu_table().rows] == [pytest.approx(0.71), 0]
    found = src.gpu_utilization()
    assert {s.labels["gpu"]: s.last for s in found.gpus} == {"0": pytest.approx(0.71), "1": 0}
    assert found.total == 2
    # a fleet's chart reads its busiest and idlest GPUs by their UUID, which dcgm-exporter labels UUID
    busy = next(s.labels["uuid"] for s in found.gpus if s.labels["gpu"] == "0")
    assert [s.labels["uuid"] for s in src.range(src.q.per_gpu("utilization", src.q.gpus_of([busy])))] == [busy]
    ranked = src.instant(src.q.gpu_extremes(1, "60s"))
    assert sorted((labels["rank"], labels["gpu"]) for labels, _ in ranked) == [("busiest", "0"), ("idlest", "1")]
    # and the fleet's distribution in aiwatch's units, per scope: the busy GPU is namespace shop's, the idle one none's
    fleet = {(s.labels.get("namespace", ""), s.labels["stat"]): s.last
             for s in src.range(src.q.gpu_fleet("utilization"))}
    assert fleet == {("shop", "min"): pytest.approx(0.71), ("shop", "median"): pytest.approx(0.71),
                     ("shop", "max"): pytest.approx(0.71), ("", "min"): 0, ("", "median"): 0, ("", "max"): 0}


@pytest.mark.slow
def test_the_autoscaling_signal_and_the_aiwatch_source_on_the_same_prometheus(dcgm_prometheus: Prometheus) -> None:
    # pod attribution puts the busy GPU in namespace shop and leaves the idle one without a namespace: kept apart
    # by the aggregation labels, the busiest namespace is shown, and the signal says there were two
    (gpu,) = [s for s in source(dcgm_prometheus, GpuSeries("dcgm")).autoscaling_signals(60) if "GPU" in s.name]
    assert gpu.value == pytest.approx(0.87) and "The largest of 2 (cluster, namespace)" in gpu.help
    unscoped = PrometheusSource(dcgm_prometheus.url, queries=PanelQueries(scope=(), gpu=GpuSeries("dcgm")))
    signals = {s.name: s.value for s in unscoped.autoscaling_signals(60)}
    assert signals["GPU utilization (mean)"] == pytest.approx(0.435)
    # the default source reads aiwatch's collector, which this Prometheus does not have: no GPU, no error
    assert not source(dcgm_prometheus, GpuSeries()).gpu_table().rows


@pytest.mark.slow
def test_every_gpu_panel_of_the_dcgm_dashboard_returns_data(dcgm_prometheus: Prometheus) -> None:
    gpu_targets = [(title, t) for title, t in targets(load(DCGM_DASHBOARD)) if title.startswith("GPU")]
    assert len(gpu_targets) >= 10
    empty = [(title, t["refId"]) for title, t in gpu_targets if not dcgm_prometheus.query(substitute(t["expr"]))]
    # two GPUs, fewer than $gpu_limit: both are the busiest, none left to be the idlest
    assert empty == [("GPU utilization", "C")], empty


@pytest.mark.slow
def test_the_dcgm_keda_query_returns_one_series_with_the_utilization_of_the_deployments_gpus(
        dcgm_prometheus: Prometheus) -> None:
    yaml = require_module("yaml")
    (scaled,) = [d for d in yaml.safe_load_all((REPO / "examples" / "autoscaling" /
                                                "keda-scaledobject-dcgm.yaml").read_text()) if d]
    (trigger,) = scaled["spec"]["triggers"]
    result = dcgm_prometheus.query(trigger["metadata"]["query"])
    assert len(result) == 1 and float(result[0]["value"][1]) == pytest.approx(0.87)


@pytest.mark.slow
def test_the_dcgm_hpa_metric_reads_each_pods_gpu_utilization(dcgm_prometheus: Prometheus) -> None:
    """prometheus-adapter's per-pod query for the HPA's Pods metric, its template filled the way the adapter fills
    it for the Deployment's pods: the busy GPU's pod, in aiwatch's 0-1 ratio; a pod without a GPU series is absent
    (no value, not a zero)."""
    yaml = require_module("yaml")
    autoscaling = REPO / "examples" / "autoscaling"
    (rules,) = [d for d in yaml.safe_load_all((autoscaling / "prometheus-adapter-rules-dcgm.yaml").read_text()) if d]
    (hpa,) = [d for d in yaml.safe_load_all((autoscaling / "hpa-prometheus-adapter-dcgm.yaml").read_text()) if d]
    (rule,) = rules["rules"]["custom"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert dcgm_prometheus.api("/api/v1/series", **{"match[]": rule["seriesQuery"]})
    busy, gone = "recommender-6d8f7c9b5-k2xqz", "recommender-6d8f7c9b5-zzzzz"
    query = (rule["metricsQuery"].replace("<<.Series>>", rule["seriesQuery"].split("{")[0])
             .replace("<<.LabelMatchers>>", f'namespace="shop",pod=~"{busy}|{gone}"').replace("<<.GroupBy>>", "pod"))
    result = dcgm_prometheus.query(query)
    assert [(r["metric"], float(r["value"][1])) for r in result] == [({"pod": busy}, pytest.approx(0.87))]


def test_the_dcgm_source_needs_prometheus() -> None:
    with pytest.raises(ValueError, match="needs a Prometheus URL"):
        ConsoleConfig(gpu_source="dcgm")
    with pytest.raises(ValueError, match="GPU source must be one of aiwatch, dcgm"):
        ConsoleConfig(prometheus="http://prom:9090", gpu_source="nvml")
    assert ConsoleConfig(prometheus="http://prom:9090", gpu_source="dcgm").gpu == GpuSeries("dcgm")
