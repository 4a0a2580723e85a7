"""What the matrix reads from its Prometheus: a cell's windows for diagnose, its phases' p99s, and the alerts that
fired (each one told to its cell by the names in its labels)."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from aiwatch.console.source import duration
from aiwatch.demo import alerting
from aiwatch.demo.matrix.cells import Cell
from aiwatch.demo.processes import HOST
from aiwatch.diagnose import READS, Read, WindowTotals, sources
from aiwatch.diagnose.sources import aggregate
from aiwatch.diagnose.window import Key
from aiwatch.promql import eq


def read_promql(read: Read, seconds: float, cell: str) -> str:
    """The instant query answering ``read`` for the window of ``seconds`` ending at the query's time, for one cell's
    series (``cell`` is the label Prometheus' scrape config gives each cell's targets): diagnose's own query
    (:func:`aiwatch.diagnose.sources.read_promql`, each read kind as it reads it), over that cell's series alone."""
    return sources.read_promql(read, seconds, str(eq("cell", cell)))


def prometheus_window(prometheus_url: str, cell: str, start: float, end: float) -> WindowTotals:
    """Every read of :data:`aiwatch.diagnose.READS` for ``[start, end]``, one instant query each at ``end``: what
    :func:`aiwatch.diagnose.prometheus_totals` asks, restricted to one cell's series (it has no selector)."""

    def answer(read: Read) -> dict[Key, float]:
        rows = alerting.query(prometheus_url, read_promql(read, end - start, cell), at=end)
        return aggregate(read, ((row["metric"], float(row["value"][1])) for row in rows
                                if not math.isnan(float(row["value"][1]))))

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(answer, READS))
    return WindowTotals(start, end, {read.key: found for read, found in zip(READS, answers, strict=True)})


def phase_p99s(prometheus_url: str, cell: str, *windows: tuple[float, float]) -> dict[
        str, tuple[float | None, ...]]:
    """``service/phase`` (and ``service/network``) -> the p99 over each window, for one cell."""
    out: dict[str, list[float | None]] = {}
    for i, (start, end) in enumerate(windows):
        w = duration(end - start)
        for metric, label in (("aiwatch_phase_duration_seconds", "phase"), ("aiwatch_network_duration_seconds",
                                                                             "peer")):
            promql = (f"histogram_quantile(0.99, sum by (service, {label}, le) "
                      f"(increase({metric}_bucket{{cell={json.dumps(cell)}}}[{w}])))")
            for row in alerting.query(prometheus_url, promql, at=end):
                name = row["metric"].get(label, "")
                key = f"{row['metric'].get('service', '')}/{'network' if label == 'peer' else name}"
                value = float(row["value"][1])
                out.setdefault(key, [None] * len(windows))[i] = None if math.isnan(value) else value
    return {k: tuple(v) for k, v in sorted(out.items())}


class AlertLog:
    """Polls Prometheus' alerts every second on a thread and keeps when each firing alert was seen."""

    def __init__(self, prometheus_url: str) -> None:
        self.url = prometheus_url
        self.seen: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aiwatch-matrix-alerts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/alerts", timeout=5) as resp:
                    alerts = json.loads(resp.read())["data"]["alerts"]
            except (OSError, ValueError, KeyError):
                continue
            now = time.time()
            self.seen += [(now, dict(a["labels"])) for a in alerts if a.get("state") == "firing"]

    def between(self, start: float, end: float) -> list[dict[str, str]]:
        unique: dict[str, dict[str, str]] = {}
        for t, labels in self.seen:
            if start <= t <= end:
                unique[json.dumps(labels, sort_keys=True)] = labels
        return list(unique.values())


def belongs_to(labels: Mapping[str, str], cell: Cell) -> bool:
    """The alert is about one of the cell's services, its model / queue, its cache or its scrape targets."""
    names = cell.names
    mine = {names.gateway, names.inference, names.model, names.cache}
    targets = {f"{HOST}:{cell.gateway_port}", f"{HOST}:{cell.inference_port}"}
    return (any(labels.get(k) in mine for k in ("service", "model", "queue", "cache"))
            or labels.get("cell") == cell.key or labels.get("instance") in targets)
