"""How much Prometheus time aiwatch's default rules cost per evaluation, against the cost of scraping the same
target (the baseline, measured in the same run on the same Prometheus).

A synthetic exporter serves the contract's metrics for a mid-sized fleet (4 services x 3 routes x 2 statuses x 2
traffic classes, 4 phases x 2 models, 3 queues, 2 caches, 8 GPUs, the drift sketch of 2 models x 20 features x 10
bins, and 2 prediction logs losing a fifth of their records), with counters moving every second. A real Prometheus
scrapes it every second and evaluates the default rules (alerts/*.rules.yml) every second, the drift recording group
included (by default it runs once a minute); the script samples Prometheus' own
``prometheus_rule_group_last_duration_seconds`` and ``scrape_duration_seconds`` and prints the mean per group and
its ratio to the scrape.

Note: with only a short run of data, the long windows (1d, 3d) hold few samples, so this measures the per-series
cost of the expressions, not the cost of scanning days of samples.

    python bench/alerts_rule_eval.py            # 30 s
    python bench/alerts_rule_eval.py --quick    # 10 s
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiwatch.metrics import GPU_LABELS, SPECS, Metrics
from aiwatch.rules import RulesConfig, render
from tests.servers import free_port, http_get, prometheus

SERVICES = [f"svc{i}" for i in range(4)]
MODELS = ["ranker", "retriever"]
FEATURES = [f"f{i}" for i in range(20)]
BINS = [str(b) for b in range(10)]


class Gpus:
    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name in ("aiwatch_gpu_utilization_ratio", "aiwatch_gpu_memory_used_bytes",
                     "aiwatch_gpu_memory_total_bytes", "aiwatch_gpu_up"):
            family = GaugeMetricFamily(name, SPECS[name].help, labels=list(GPU_LABELS))
            for g in range(8):
                family.add_metric([str(g), f"GPU-{g}", "H100", "", ""], random.random())
            yield family
        yield GaugeMetricFamily("aiwatch_gpu_nvml_up", "", value=1)


def traffic(m: Metrics, stop: threading.Event) -> None:
    while not stop.wait(0.2):
        for svc in SERVICES:
            for route in ("/predict", "/rank", "/health"):
                for status in ("200", "500"):
                    for traffic_class in ("realtime", "batch"):
                        m.request_duration.labels(svc, route, "POST", status, traffic_class).observe(
                            random.expovariate(20))
            for model in MODELS:
                for phase in ("queue", "features", "inference", "overhead"):
                    m.phase_duration.labels(svc, model, "v1", phase).observe(random.expovariate(30))
            m.network_duration.labels(svc, "gateway", "call").observe(random.expovariate(100))
            m.requests_in_flight.labels(svc).set(random.randint(0, 10))
        for q in ("predict", "batch", "rerank"):
            m.queue_depth.labels(q).set(random.randint(0, 30))
        for cache in ("features", "embeddings"):
            for result in ("hit", "miss", "error"):
                m.feature_cache_requests.labels(cache, result).inc(random.randint(0, 20))
        for model in MODELS:
            for feature in FEATURES:
                for b in BINS:
                    m.feature_bin.labels(model, feature, b, "r1").inc(random.randint(0, 5))
                    m.feature_reference_ratio.labels(model, feature, b, "r1").set(0.1)
                m.drift_detected.labels(model, feature, "psi").set(0)
                m.drift_score.labels(model, feature, "psi").set(random.random() / 10)
        for log in ("predictions", "shadow"):
            for result, records in (("sampled_out", 90), ("queued", 9), ("written", 8), ("dropped", 1),
                                    ("failed", 1), ("lost", 0)):
                m.prediction_log_records.labels(log, result).inc(records)
        m.instrumentation_errors.labels("metrics").inc(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s instead of 30 s")
    args = parser.parse_args()
    seconds = 10 if args.quick else 30

    registry = CollectorRegistry()
    m = Metrics(registry)
    registry.register(Gpus())  # type: ignore[arg-type]
    port = free_port()
    start_http_server(port, addr="127.0.0.1", registry=registry)
    stop = threading.Event()
    thread = threading.Thread(target=traffic, args=(m, stop), daemon=True)
    thread.start()
    time.sleep(0.5)
    if not thread.is_alive():  # the labels no longer match the contract: no traffic, nothing measured
        print("the traffic thread failed (above); nothing was measured", file=sys.stderr)
        return 1

    # the default rules, but the drift recording group evaluated at every interval like the others (its default
    # `drift.interval` of 1m would give it one evaluation or none in the run): its cost per evaluation is measured
    cfg = RulesConfig()
    cfg.drift.interval = "1s"
    rules_dir = Path(tempfile.mkdtemp(prefix="aiwatch-rules-bench-"))
    for name, text in render(cfg).items():
        (rules_dir / name).write_text(text)
    rule_files = sorted(rules_dir.glob("*.rules.yml"))
    samples: dict[str, list[float]] = defaultdict(list)
    with prometheus([f"127.0.0.1:{port}"], rule_files) as prom:
        time.sleep(3)  # let rate() windows get two samples
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            _, body = http_get(f"{prom.url}/metrics")
            for group, value in re.findall(
                    r'prometheus_rule_group_last_duration_seconds\{rule_group="[^"]*;([^"]+)"\} (\S+)', body.decode()):
                samples[group].append(float(value))
            scrape = prom.query('scrape_duration_seconds{job="aiwatch"}')
            if scrape:
                samples["(baseline) scrape of the target"].append(float(scrape[0]["value"][1]))
            time.sleep(1)
        series = prom.value('scrape_samples_scraped{job="aiwatch"}')
    stop.set()
    if not thread.is_alive():
        print("the traffic thread failed during the run (above); the figures are not valid", file=sys.stderr)
        return 1

    baseline = sum(samples["(baseline) scrape of the target"]) / len(samples["(baseline) scrape of the target"])
    print(f"target: {series:.0f} samples per scrape; {seconds} s run, 1 s scrape and evaluation interval")
    print(f"{'rule group':<34} {'mean ms':>9} {'x scrape':>9}")
    total = 0.0
    for group, values in sorted(samples.items()):
        mean = sum(values) / len(values)
        if not group.startswith("(baseline)"):
            total += mean
        print(f"{group:<34} {mean * 1000:9.2f} {mean / baseline:9.2f}")
    print(f"{'all aiwatch groups':<34} {total * 1000:9.2f} {total / baseline:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
