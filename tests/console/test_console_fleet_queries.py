"""What the console asks of a Prometheus holding a fleet, against a real Prometheus serving a known history
(``promtool`` backfill around now, :func:`tests.diagnose.backfill.backfilled_prometheus`), its query log read back:
the Latency view aggregates the request buckets once and computes p50 / p95 / p99 from them to the same numbers
``histogram_quantile`` answers; the GPU utilization chart of a fleet is bounded (the fleet's min / median / max and
its busiest and idlest GPUs), a small fleet still draws every GPU."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aiwatch.console import GpuRow, PrometheusSource
from aiwatch.console.queries import GPU_GAUGES
from aiwatch.console.source import EVERY_GPU_UP_TO, GPU_EXTREMES, QUANTILES, Series, extremes, gpu_table
from aiwatch.metrics import LATENCY_BUCKETS
from tests.console.conftest import console_window, plain, run_view
from tests.diagnose.backfill import backfilled_prometheus
from tests.servers import Prometheus

STEP = 15
SERVICES = {"fast": 0.02, "slow": 3 * LATENCY_BUCKETS[-1]}
"""Each service's typical request seconds: ``slow``'s mostly lie above the largest finite bucket."""
REPLICAS = 3
HOSTS, GPUS_PER_HOST = 12, 2


def gpu_utilization(host: int, gpu: int) -> float:
    """Each GPU's steady utilization: all different, the busiest ``11-1``, the idlest ``0-0``."""
    return round((host * GPUS_PER_HOST + gpu + 1) / (HOSTS * GPUS_PER_HOST + 1), 4)


def history(now: int) -> str:
    rnd = random.Random(55)
    stamps = range(now - 600, now + 600, STEP)
    les = [*(f"{b:g}" for b in LATENCY_BUCKETS), "+Inf"]
    lines = ["# TYPE aiwatch_request_duration_seconds histogram"]
    for service, typical in SERVICES.items():
        for r in range(REPLICAS):
            labels = f'instance="10.0.0.{r}:8000",job="aiwatch",service="{service}",status="200"'
            counts = [0] * len(les)
            total = 0.0
            rows: dict[str, list[str]] = {le: [] for le in les}
            sums, totals = [], []
            for t in stamps:
                for _ in range(rnd.randint(5, 40)):  # irregular traffic: quantiles with many digits
                    seconds = rnd.expovariate(1 / typical)
                    total += seconds
                    for i, bound in enumerate([*LATENCY_BUCKETS, math.inf]):
                        if seconds <= bound:
                            counts[i] += 1
                for i, le in enumerate(les):
                    rows[le].append(f'aiwatch_request_duration_seconds_bucket{{{labels},le="{le}"}} {counts[i]} {t}')
                sums.append(f"aiwatch_request_duration_seconds_sum{{{labels}}} {total!r} {t}")
                totals.append(f"aiwatch_request_duration_seconds_count{{{labels}}} {counts[-1]} {t}")
            for le in les:
                lines += rows[le]
            lines += sums + totals
    for field_name, name in GPU_GAUGES:
        lines.append(f"# TYPE {name} gauge")
        for host in range(HOSTS):
            for gpu in range(GPUS_PER_HOST):
                labels = f'instance="10.0.1.{host}:8000",job="aiwatch",gpu="{gpu}",uuid="GPU-{host}-{gpu}",name="H100"'
                value = getattr(gpu_row(host, gpu), field_name)
                lines += [f"{name}{{{labels}}} {value} {t}" for t in stamps]
    return "\n".join(lines) + "\n# EOF\n"


DOWN = (5, 1)


def gpu_row(host: int, gpu: int) -> GpuRow:
    """Each GPU's steady readings: utilization as :func:`gpu_utilization`, temperature, memory and power each in
    another order (all different), and GPU ``5-1`` down."""
    i = host * GPUS_PER_HOST + gpu
    return GpuRow(str(gpu), "H100", f"GPU-{host}-{gpu}", up=0.0 if (host, gpu) == DOWN else 1.0,
                  utilization=gpu_utilization(host, gpu), memory_used_bytes=(i * 7 % 24 + 1) * 3.2e9,
                  memory_total_bytes=80e9, power_watts=100.0 + i * 10, temperature_celsius=40.0 + i * 5 % 24)


@dataclass
class Fleet:
    prom: Prometheus
    query_log: Path

    def queries_since(self, mark: int) -> list[str]:
        """The PromQL Prometheus evaluated since the log held ``mark`` bytes."""
        return [params["query"] for params in self.params_since(mark)]

    def params_since(self, mark: int) -> list[dict[str, object]]:
        """The parameters (``query``, and ``step`` for a range query) of each query since ``mark``."""
        with self.query_log.open("rb") as log:
            log.seek(mark)
            return [json.loads(line)["params"] for line in log.read().splitlines() if line.strip()]

    def mark(self) -> int:
        return self.query_log.stat().st_size if self.query_log.exists() else 0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    log = tmp_path_factory.mktemp("fleet-queries") / "queries.jsonl"
    # appended to the config's global section
    with backfilled_prometheus(history(int(time.time())), extra_config=f"  query_log_file: {log}\n") as prom:
        yield Fleet(prom, log)


def by_service(series: list[Series], quantile: str) -> dict[str, list[tuple[float, float]]]:
    return {s.labels["service"]: s.points for s in series if s.labels.get("quantile") == quantile}


@pytest.mark.slow
def test_the_latency_quantiles_are_the_numbers_histogram_quantile_answers(fleet: Fleet) -> None:
    src = PrometheusSource(fleet.prom.url, span=300, points=20)
    found = src.latency_quantiles(60)
    for name, q in QUANTILES:
        ours = by_service(found, name)
        assert set(ours) == set(SERVICES)
        times = [t for t, _ in ours["fast"]]
        assert len(times) >= 15
        # Prometheus' own histogram_quantile at the very same times
        theirs = {labels["service"]: points for labels, points in
                  src.api.query_range(src.q.latency_quantile(q, "1m"), times[0], times[-1], times[1] - times[0])}
        assert ours == theirs, name  # equal, not approximately
    # slow's p99 lies above the largest finite bound: each such point is only a lower bound
    (slow_p99,) = [s for s in found if s.labels == {"service": "slow", "quantile": "p99"}]
    assert slow_p99.lower_bounds and slow_p99.at_least
    assert all(v == LATENCY_BUCKETS[-1] for t, v in slow_p99.points if t in slow_p99.lower_bounds)
    (fast_p99,) = [s for s in found if s.labels == {"service": "fast", "quantile": "p99"}]
    assert not fast_p99.lower_bounds


@pytest.mark.slow
def test_the_latency_quantiles_aggregate_the_request_buckets_once(fleet: Fleet) -> None:
    """p50, p95 and p99 (and the overflow check) come from one aggregation of the buckets, not four."""
    src = PrometheusSource(fleet.prom.url, span=300, points=20)
    mark = fleet.mark()
    assert src.latency_quantiles(60)
    asked = fleet.queries_since(mark)
    assert asked == ["sum by (cluster, namespace, service, le) (rate(aiwatch_request_duration_seconds_bucket[60s]))"]


def uuids(found: list[Series], rank: str) -> list[str]:
    return [s.labels["uuid"] for s in found if s.labels.get("rank") == rank]


ALL_GPUS = sorted(((host, gpu) for host in range(HOSTS) for gpu in range(GPUS_PER_HOST)),
                  key=lambda hg: gpu_utilization(*hg))


@pytest.mark.slow
def test_a_fleets_gpu_chart_is_its_busiest_and_idlest_gpus_and_its_distribution(fleet: Fleet) -> None:
    """24 GPUs: the 5 busiest and 5 idlest (ranked by Prometheus), and the fleet's min / median / max; no range
    query reads every GPU's series back."""
    assert HOSTS * GPUS_PER_HOST > EVERY_GPU_UP_TO
    src = PrometheusSource(fleet.prom.url, span=300, points=20)
    mark = fleet.mark()
    found = src.gpu_utilization()
    assert found.total == HOSTS * GPUS_PER_HOST
    assert uuids(found.gpus, "busiest") == [f"GPU-{h}-{g}" for h, g in reversed(ALL_GPUS[-GPU_EXTREMES:])]
    assert sorted(uuids(found.gpus, "idlest")) == sorted(f"GPU-{h}-{g}" for h, g in ALL_GPUS[:GPU_EXTREMES])
    for s in found.gpus:
        host, gpu = (int(part) for part in s.labels["uuid"].split("-")[1:])
        assert s.last == pytest.approx(gpu_utilization(host, gpu)) and s.labels["gpu"] == str(gpu)
    values = sorted(gpu_utilization(h, g) for h, g in ALL_GPUS)
    fleet_now = {s.labels["stat"]: s.last for s in found.fleet}
    assert fleet_now == pytest.approx({"min": values[0], "median": (values[11] + values[12]) / 2, "max": values[-1]})
    ranges = [p for p in fleet.params_since(mark) if p.get("step") and "gpu_utilization" in str(p["query"])]
    assert len(ranges) == 2
    # one reads the 10 GPUs' series by their UUIDs, the other the fleet's aggregates
    assert sum('uuid=~"' in str(p["query"]) for p in ranges) == 1, ranges
    assert sum(str(p["query"]).startswith("label_replace(min by (cluster, namespace)") for p in ranges) == 1, ranges


@pytest.mark.slow
def test_the_resources_view_says_which_gpus_of_how_many_it_draws(fleet: Fleet,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    console_window(monkeypatch, 60.0)
    at = run_view(PrometheusSource(fleet.prom.url, span=300, points=20), "Resources")
    captions = [plain(str(c.value)) for c in at.caption]
    assert any(c.startswith(f"10 of {HOSTS * GPUS_PER_HOST} GPUs drawn: the 5 busiest and the 5 idlest")
               for c in captions), captions


def test_the_scrape_sources_gpus_are_cut_as_prometheus_cuts_them() -> None:
    """Every GPU up to EVERY_GPU_UP_TO; past it the busiest and idlest by mean, and min / median / max per time."""
    series = [Series({"gpu": "0", "uuid": f"GPU-{i}"}, [(10.0, i / 100), (20.0, i / 100 + (0.5 if i == 3 else 0))])
              for i in range(EVERY_GPU_UP_TO + 4)]
    small = extremes(series[:EVERY_GPU_UP_TO])
    assert (len(small.gpus), small.total, small.fleet) == (EVERY_GPU_UP_TO, EVERY_GPU_UP_TO, [])
    cut = extremes(series)
    assert cut.total == len(series)
    # GPU-3 jumped to 0.53 at t=20: its mean (0.28) is the busiest
    assert uuids(cut.gpus, "busiest") == ["GPU-3", "GPU-19", "GPU-18", "GPU-17", "GPU-16"]
    assert uuids(cut.gpus, "idlest") == ["GPU-0", "GPU-1", "GPU-2", "GPU-4", "GPU-5"]
    stats = {s.labels["stat"]: s.points for s in cut.fleet}
    assert stats["min"] == [(10.0, 0.0), (20.0, 0.0)]
    assert stats["max"] == [(10.0, 0.19), (20.0, 0.53)]
    assert stats["median"][0] == (10.0, pytest.approx(0.095))


@pytest.mark.slow
def test_a_fleets_gpu_table_lists_the_gpus_needing_attention_and_the_fleets_summary(fleet: Fleet) -> None:
    """24 GPUs: the one down, the 5 hottest, fullest memory, busiest and idlest (chosen by Prometheus: no answer
    holds every GPU), the fleet's count and min / median / max; the scrape source's cut of every GPU's row agrees."""
    src = PrometheusSource(fleet.prom.url, span=300, points=20)
    mark = fleet.mark()
    table = src.gpu_table()
    every = [gpu_row(h, g) for h, g in sorted(ALL_GPUS)]
    assert (table.total, table.down, table.cut) == (HOSTS * GPUS_PER_HOST, 1, True)
    first = table.rows[0]
    assert (first.uuid, first.attention[0], first.up) == ("GPU-5-1", "down", 0.0)
    by_reason = {reason: [r.uuid for r in table.rows if reason in r.attention]
                 for reason in ("hottest", "fullest memory", "busiest", "idlest")}
    assert set(by_reason["busiest"]) == {f"GPU-{h}-{g}" for h, g in ALL_GPUS[-GPU_EXTREMES:]}
    assert set(by_reason["idlest"]) == {f"GPU-{h}-{g}" for h, g in ALL_GPUS[:GPU_EXTREMES]}
    hottest = sorted(every, key=lambda r: -(r.temperature_celsius or 0))[:GPU_EXTREMES]
    assert set(by_reason["hottest"]) == {r.uuid for r in hottest}
    fullest = sorted(every, key=lambda r: -(r.memory_share or 0))[:GPU_EXTREMES]
    assert set(by_reason["fullest memory"]) == {r.uuid for r in fullest}
    assert len(table.rows) == len({r.uuid for r in table.rows}) < table.total
    assert table.fleet["temperature_celsius"] == pytest.approx({"min": 40.0, "median": 51.5, "max": 63.0})
    assert table.fleet["power_watts"] == pytest.approx({"min": 100.0, "median": 215.0, "max": 330.0})
    cut = gpu_table(every)
    assert table.rows == cut.rows and (table.total, table.down) == (cut.total, cut.down)
    assert set(table.fleet) == set(cut.fleet) == {"utilization", "memory_share", "power_watts", "temperature_celsius"}
    for reading, stats in cut.fleet.items():
        assert table.fleet[reading] == pytest.approx(stats), reading
    # every query either aggregates the fleet, ranks it (at most 5 series per reason), or reads the chosen GPUs
    asked = fleet.queries_since(mark)
    assert len(asked) == 2 + len(GPU_GAUGES)
    assert sum('uuid=~"' in q for q in asked) == len(GPU_GAUGES), asked
    assert all('uuid=~"' in q or q.startswith("label_replace(") for q in asked), asked


def test_a_small_fleets_gpu_table_lists_every_gpu() -> None:
    rows = [gpu_row(h, g) for h, g in sorted(ALL_GPUS)[:EVERY_GPU_UP_TO]]
    table = gpu_table(rows)
    assert (table.rows, table.total, table.fleet, table.cut) == (rows, EVERY_GPU_UP_TO, {}, False)


@pytest.mark.slow
def test_the_resources_view_says_which_gpus_of_how_many_it_lists(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    console_window(monkeypatch, 60.0)
    at = run_view(PrometheusSource(fleet.prom.url, span=300, points=20), "Resources")
    captions = [plain(str(c.value)) for c in at.caption]
    listed = at.dataframe[0].value
    assert any(c.startswith(f"{len(listed)} of {HOSTS * GPUS_PER_HOST} GPUs listed, those needing attention first: "
                            "1 down") for c in captions), captions
    assert listed["uuid"].iloc[0] == "GPU-5-1" and listed["attention"].iloc[0].startswith("down")
    summary = at.dataframe[1].value
    assert list(summary["fleet"]) == ["min", "median", "max"]
    assert list(summary["temperature °C"]) == pytest.approx([40.0, 51.5, 63.0])
