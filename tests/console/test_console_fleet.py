"""The console on a fleet: several hosts' series in a real Prometheus (backfilled, so the hosts need not run)."""

from __future__ import annotations

import time

from aiwatch.console import PrometheusSource
from tests.console.conftest import run_view
from tests.diagnose.backfill import backfilled_prometheus


def test_the_gpu_table_tells_apart_gpu_0_of_every_host() -> None:
    # two hosts, each with a GPU 0; the one on host b is hot and busy: the row must say which GPU it is
    now = int(time.time())
    stamps = range(now - 600, now + 600, 15)  # "now" inside the data however long the backfill takes
    lines = []
    for name, busy in (("aiwatch_gpu_utilization_ratio", (0.1, 0.99)), ("aiwatch_gpu_temperature_celsius", (40, 91))):
        lines.append(f"# TYPE {name} gauge")
        lines += [f'{name}{{job="gpu",instance="host-{h}:8000",gpu="0",uuid="GPU-{h}",name="H100"}} {busy[i]} {t}'
                  for i, h in enumerate("ab") for t in stamps]
    with backfilled_prometheus("\n".join(lines) + "\n# EOF\n") as prom:
        at = run_view(PrometheusSource(prom.url), "Resources")
    gpus = at.dataframe[0].value
    assert list(gpus["GPU"]) == ["0", "0"]
    rows = {r["uuid"]: (r["utilization %"], r["temperature °C"]) for _, r in gpus.iterrows()}
    assert rows == {"GPU-a": (10.0, 40.0), "GPU-b": (99.0, 91.0)}
