#!/usr/bin/env python3
"""What each console view and ``aiwatch diagnose`` ask of a real Prometheus holding a fleet of replicas.

Writes a fleet's history as OpenMetrics (``--replicas`` scrape targets across ``--services`` services, a 30 s
scrape from 16 minutes before now to 20 minutes after it, so that the console's "now" falls inside the data however
long the backfill takes): each replica's request histogram (two statuses), phase sums and counts, event loop delay
histogram and sampler gauges, in-flight and queue depth, ``--gpus`` GPUs, and one model's drift gauges, feature bins
and reference ratios over ``--features`` features; backfills it (``promtool tsdb create-blocks-from openmetrics``, as
``bench/drift_rules_scale.py``) and starts Prometheus on it. Then it renders each console view with Streamlit's
AppTest from a :class:`PrometheusSource`, and runs ``diagnose`` (the library, both windows), recording every HTTP
call the Prometheus client makes, asked with ``stats=all``: per view, the queries, the samples Prometheus scanned
(``totalQueryableSamples``), the bytes of the answers, the series returned and the wall time; and any query asked
more than once in one view.

    PYTHONPATH=. python bench/console_fleet_scale.py --replicas 200
    PYTHONPATH=. python bench/console_fleet_scale.py --replicas 500 --top 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiwatch import promapi  # noqa: E402
from aiwatch.metrics import EVENT_LOOP_DELAY_BUCKETS, LATENCY_BUCKETS  # noqa: E402
from tests.servers import Process, free_port, http_get, require_binary, running  # noqa: E402

STEP = 30
BEFORE, AFTER = 16 * 60, 20 * 60
BINS = 10
PHASES = ("preprocess", "inference", "overhead")


def write_openmetrics(path: Path, replicas: int, services: int, gpus: int, features: int, now: int) -> int:
    stamps = list(range(now - BEFORE, now + AFTER + 1, STEP))
    k = list(range(len(stamps)))
    n = 0
    with path.open("w") as out:
        def family(name: str, kind: str) -> None:
            out.write(f"# TYPE {name} {kind}\n")

        def series(name: str, labels: str, values: list[float]) -> None:
            nonlocal n
            out.writelines(f"{name}{{{labels}}} {v!r} {t}\n" for t, v in zip(stamps, values, strict=True))
            n += 1

        def rep(r: int) -> str:
            return f'job="aiwatch",instance="10.0.{r // 250}.{r % 250}:8000",service="svc-{r % services}"'

        les = [*(f"{b:g}" for b in LATENCY_BUCKETS), "+Inf"]
        family("aiwatch_request_duration_seconds", "histogram")
        for r in range(replicas):
            for status, per in (("200", 30.0), ("500", 1.0)):
                lab = f'{rep(r)},status="{status}",traffic_class="realtime"'
                for i, le in enumerate(les):
                    share = min(1.0, (i + 1) / (len(les) - 2))
                    series("aiwatch_request_duration_seconds_bucket", f'{lab},le="{le}"', [per * share * j for j in k])
                series("aiwatch_request_duration_seconds_count", lab, [per * j for j in k])
                series("aiwatch_request_duration_seconds_sum", lab, [per * 0.05 * j for j in k])
        family("aiwatch_phase_duration_seconds", "histogram")
        for r in range(replicas):
            for p in PHASES:
                series("aiwatch_phase_duration_seconds_count", f'{rep(r)},phase="{p}"', [30.0 * j for j in k])
                series("aiwatch_phase_duration_seconds_sum", f'{rep(r)},phase="{p}"', [0.4 * j for j in k])
        loop_les = [*(f"{b:g}" for b in EVENT_LOOP_DELAY_BUCKETS), "+Inf"]
        family("aiwatch_event_loop_delay_seconds", "histogram")
        for r in range(replicas):
            for i, le in enumerate(loop_les):
                series("aiwatch_event_loop_delay_seconds_bucket", f'{rep(r)},le="{le}"',
                       [300.0 * min(1.0, (i + 1) / (len(loop_les) - 1)) * j for j in k])
            series("aiwatch_event_loop_delay_seconds_count", rep(r), [300.0 * j for j in k])
            series("aiwatch_event_loop_delay_seconds_sum", rep(r), [0.03 * j for j in k])
        family("aiwatch_event_loop_sampled_seconds", "counter")
        for r in range(replicas):
            series("aiwatch_event_loop_sampled_seconds_total", rep(r), [30.0 * j for j in k])
        for name, value in (("aiwatch_event_loop_stalled_ratio", 0.001), ("aiwatch_requests_in_flight", 3.0)):
            family(name, "gauge")
            for r in range(replicas):
                series(name, rep(r), [value] * len(k))
        family("aiwatch_event_loop_last_sample_timestamp_seconds", "gauge")
        for r in range(replicas):
            series("aiwatch_event_loop_last_sample_timestamp_seconds", rep(r), [float(t) for t in stamps])
        family("aiwatch_queue_depth", "gauge")
        for r in range(replicas):
            series("aiwatch_queue_depth", f'{rep(r)},queue="batcher"', [float(r % 7)] * len(k))
        for name, value in (("aiwatch_gpu_up", 1.0), ("aiwatch_gpu_nvml_up", 1.0),
                            ("aiwatch_gpu_utilization_ratio", 0.5), ("aiwatch_gpu_memory_used_bytes", 4e10),
                            ("aiwatch_gpu_memory_total_bytes", 8e10), ("aiwatch_gpu_power_watts", 300.0),
                            ("aiwatch_gpu_temperature_celsius", 60.0)):
            family(name, "gauge")
            for r in range(replicas):
                if name == "aiwatch_gpu_nvml_up":
                    series(name, rep(r), [value] * len(k))
                    continue
                for g in range(gpus):
                    series(name, f'{rep(r)},gpu="{g}",uuid="GPU-{r:04d}-{g}",name="H100"', [value] * len(k))
        for name, value in (("aiwatch_drift_score", 0.05), ("aiwatch_drift_pvalue", 0.5),
                            ("aiwatch_drift_detected", 0.0)):
            family(name, "gauge")
            for r in range(replicas):
                for f in range(features):
                    series(name, f'{rep(r)},model="m",feature="f{f}",test="psi"', [value] * len(k))
        family("aiwatch_feature_bin", "counter")
        for r in range(replicas):
            for f in range(features):
                for b in range(BINS):
                    series("aiwatch_feature_bin_total", f'{rep(r)},model="m",feature="f{f}",bin="{b}",reference="ref1"',
                           [float((3 + (b + r + f) % 5) * j) for j in k])
        family("aiwatch_feature_reference_ratio", "gauge")
        for r in range(replicas):
            for f in range(features):
                for b in range(BINS):
                    series("aiwatch_feature_reference_ratio",
                           f'{rep(r)},model="m",feature="f{f}",bin="{b}",reference="ref1"', [0.1] * len(k))
        out.write("# EOF\n")
    return n


@dataclass
class Call:
    path: str
    query: str | None
    at: str
    ms: float
    size: int
    samples: int
    series: int


CALLS: list[Call] = []
_LOCK = threading.Lock()
_LOCAL = threading.local()


def instrument() -> None:
    """Every PrometheusAPI call asks stats=all and is recorded."""
    data_of, read_of = promapi.PrometheusAPI._data, promapi.PrometheusAPI._read

    def _read(self: Any, resp: Any, started: float, what: str, limit: int | None = None) -> bytes:
        raw: bytes = read_of(self, resp, started, what, limit)
        _LOCAL.size = len(raw)
        return raw

    def _data(self: Any, path: str, params: dict[str, str] | None) -> Any:
        query = (params or {}).get("query")
        if query is not None:
            params = {**(params or {}), "stats": "all"}
        started = time.perf_counter()
        data = data_of(self, path, params)
        ms = (time.perf_counter() - started) * 1000
        samples = series = 0
        if isinstance(data, dict):
            stats = data.pop("stats", None)
            if isinstance(stats, dict):
                samples = int(stats.get("samples", {}).get("totalQueryableSamples", 0))
            result = data.get("result")
            series = len(result) if isinstance(result, list) else 0
            if path.endswith("/targets"):
                series = len(data.get("activeTargets", []))
        with _LOCK:
            at = ",".join((params or {}).get(k, "") for k in ("time", "start", "end"))
            CALLS.append(Call(path, query, at, ms, getattr(_LOCAL, "size", 0), samples, series))
        return data

    promapi.PrometheusAPI._data = _data  # type: ignore[method-assign]
    promapi.PrometheusAPI._read = _read  # type: ignore[method-assign]


def render(source: Any, view: str) -> float:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "aiwatch" / "console" / "app.py"), default_timeout=300)
    at.session_state["aiwatch_source"] = source
    at.session_state["view"] = view
    started = time.perf_counter()
    at.run()
    if at.exception:
        raise RuntimeError(f"{view}: {[e.value for e in at.exception]}")
    return (time.perf_counter() - started) * 1000


def report(name: str, calls: list[Call], wall_ms: float, top: int) -> None:
    # the same query at the same time (or over the same range) more than once
    repeated = {q: c for (q, _), c in Counter((c.query, c.at) for c in calls if c.query).items() if c > 1}
    print(f"{name:<22} {len(calls):>4} calls {sum(c.samples for c in calls):>11,} samples "
          f"{sum(c.size for c in calls) / 1e6:>8.2f} MB {sum(c.series for c in calls):>8,} series "
          f"{wall_ms:>8.0f} ms wall; repeated: {sum(repeated.values()) - len(repeated)}")
    for c in sorted(calls, key=lambda c: -c.size)[:top]:
        print(f"    {c.size / 1e3:>9.1f} kB {c.samples:>10,} samples {c.series:>6} series {c.ms:>7.0f} ms "
              f"{c.path.rsplit('/', 1)[-1]:<12} {(c.query or '')[:150]}")
    for q, count in repeated.items():
        print(f"    asked {count}x: {q[:150]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--replicas", type=int, default=200)
    parser.add_argument("--services", type=int, default=5)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--features", type=int, default=2)
    parser.add_argument("--top", type=int, default=5, help="the largest answers listed per view")
    parser.add_argument("--views", default="Latency,AI traffic,Resources,Drift,Alerts")
    args = parser.parse_args()
    os.environ.setdefault("AIWATCH_CONSOLE_WINDOW", "60")
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    from aiwatch.console import PrometheusSource
    from aiwatch.diagnose import PrometheusWindows, diagnose

    tmp = Path(tempfile.mkdtemp(prefix="aiwatch-console-fleet-"))
    now = int(time.time())
    t0 = time.monotonic()
    n = write_openmetrics(tmp / "data.om", args.replicas, args.services, args.gpus, args.features, now)
    subprocess.run([require_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(tmp / "data.om"),
                    str(tmp / "data")], check=True, capture_output=True)
    (tmp / "data.om").unlink()
    print(f"{args.replicas} replicas, {n} series backfilled in {time.monotonic() - t0:.0f} s", flush=True)
    port = free_port()
    (tmp / "prometheus.yml").write_text("global:\n  scrape_interval: 30s\n")
    proc = Process([require_binary("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=30d"], tmp / "prometheus.log")
    url = f"http://127.0.0.1:{port}"
    instrument()
    with running(proc, lambda: http_get(f"{url}/-/ready")[0] == 200, 300, "Prometheus"):
        _, body = http_get(f"{url}/api/v1/query?query=count(%7B__name__%3D~%22aiwatch_.%2B%22%7D)")
        print("aiwatch series in Prometheus:", json.loads(body)["data"]["result"][0]["value"][1])
        for view in args.views.split(","):
            source = PrometheusSource(url, timeout=60.0)
            render(source, view)  # warm-up
            CALLS.clear()
            wall = render(source, view)
            report(view, list(CALLS), wall, args.top)
        CALLS.clear()
        started = time.perf_counter()
        d = diagnose(PrometheusWindows(url, timeout=60.0), "svc-0", at=float(now - 60), incident=300, baseline=600)
        report("diagnose svc-0", list(CALLS), (time.perf_counter() - started) * 1000, args.top)
        gpu = {s.labels["gpu"]: s.incident for s in d.signals if s.name == "GPU utilization"}
        print(f"diagnose: GPU utilization per GPU index (every GPU is 0.5 busy): {gpu}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
