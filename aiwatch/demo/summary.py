"""Per-stage numbers from the services' metrics: latency quantiles per phase, cache hit ratio and drift.

Everything is computed from the difference between two ``/metrics`` snapshots taken at the start and the end of a
stage, never from the load generator's own clocks. Drift comes from the inference service's
:class:`aiwatch.DriftMonitor`: each stage's PSI from its fleet sketch (``aiwatch_feature_bin_total`` increase over
the stage against ``aiwatch_feature_reference_ratio``), and the verdict, which features drifted, from its own
evaluation at the stage's end (``aiwatch_drift_detected`` and ``aiwatch_drift_score{test="psi"}``, computed on a
window shorter than a stage).

Traffic classes and fallbacks, from the gateway's own series: the requests per ``traffic_class`` (real-time latency
on its own when a batch client shares the replicas, and the share of real-time requests slower than the latency
SLO's threshold, which is what aiwatch's SLO rules count: batch requests are not in it), and the share of responses
served by a fallback (``aiwatch_degraded_responses_total`` over all requests, as the degraded-share rule divides).

Each stage after the first is also diagnosed against the first (:func:`aiwatch.diagnose.diagnose_windows` on the
gateway, from the same two snapshots): the verdict and the part that added the most time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from aiwatch.console.source import histogram_quantile
from aiwatch.demo import scrape
from aiwatch.demo.drift import MIN_DRIFT_SAMPLES, MODEL, PSI_THRESHOLD
from aiwatch.demo.names import Names
from aiwatch.diagnose import DiagnoseError, Diagnosis, WindowTotals, diagnose_windows, totals_from_snapshots
from aiwatch.drift.promql import PSI_EPSILON
from aiwatch.scrape import Samples
from aiwatch.traffic import REALTIME

__all__ = ["MIN_DRIFT_SAMPLES", "MODEL", "PSI_THRESHOLD", "ROWS", "SLO_LATENCY_SECONDS", "StageStats",
           "diagnose_stages", "format_summary", "psi", "rows", "stage_stats"]

#: The demo's latency objective: a request answered within 200 ms (the demo's rules, aiwatch.demo.alerting).
SLO_LATENCY_SECONDS = 0.2

Row = tuple[str, str, str, dict[str, str]]


def rows(names: Names) -> tuple[Row, ...]:
    """(key, display label, histogram, label match) of every latency row in the summary, in display order."""
    gw, inf = names.gateway, names.inference
    return (
        ("request", "request (gateway)", "aiwatch_request_duration_seconds", {"service": gw, "route": "/recommend"}),
        ("features", "  features", "aiwatch_phase_duration_seconds", {"service": gw, "phase": "features"}),
        ("network", "  network gw->inference", "aiwatch_network_duration_seconds", {"service": gw, "peer": inf}),
        ("queue", "  queue", "aiwatch_phase_duration_seconds", {"service": inf, "phase": "queue"}),
        ("model", "  model", "aiwatch_phase_duration_seconds", {"service": inf, "phase": "inference"}),
        ("overhead_gateway", "  overhead gateway", "aiwatch_phase_duration_seconds",
         {"service": gw, "phase": "overhead"}),
        ("overhead_inference", "  overhead inference", "aiwatch_phase_duration_seconds",
         {"service": inf, "phase": "overhead"}),
    )


#: The rows of the demo's default names.
ROWS: tuple[Row, ...] = rows(Names())


@dataclass
class StageStats:
    name: str
    seconds: float
    requests: float
    latency: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    cache_hit_ratio: float | None = None
    psi: dict[str, float] = field(default_factory=dict)
    drift_samples: dict[str, float] = field(default_factory=dict)
    mean_batch: float | None = None
    #: feature -> PSI of the features the drift monitor reported drifted at the stage's end
    detected: dict[str, float] = field(default_factory=dict)
    #: wall-clock (Unix) start and end of the stage, to line it up with Prometheus' data
    started_at: float = 0.0
    ended_at: float = 0.0
    #: what the load generator did (sent, ok, failed, dropped): context only, never a latency source
    load: dict[str, float] = field(default_factory=dict)
    #: what diagnose reads about the stage (from the same two snapshots)
    window: WindowTotals | None = None
    #: this stage diagnosed against the first stage (none for the first stage itself)
    diagnosis: Diagnosis | None = None
    #: why there is no diagnosis (no traffic in a stage...)
    diagnosis_error: str | None = None
    #: the alerts Prometheus had firing during the stage, when the demo runs one ("name{labels}")
    alerts: list[str] | None = None
    #: the gateway's requests per traffic class, and each class's request latency (p50, p99)
    by_class: dict[str, float] = field(default_factory=dict)
    class_latency: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    #: per traffic class (and "all"), the share of the gateway's requests slower than :data:`SLO_LATENCY_SECONDS`
    slo_slow: dict[str, float] = field(default_factory=dict)
    #: the gateway's responses served by a fallback, per reason (aiwatch.degraded)
    degraded: dict[str, float] = field(default_factory=dict)

    @property
    def batch_share(self) -> float:
        """The share of the gateway's requests that were not real-time."""
        total = sum(self.by_class.values())
        return (total - self.by_class.get(REALTIME, 0.0)) / total if total > 0 else 0.0

    @property
    def degraded_share(self) -> float:
        """The share of the gateway's responses served by a fallback."""
        return sum(self.degraded.values()) / self.requests if self.requests > 0 else 0.0

    @property
    def drifted(self) -> list[str]:
        """The features aiwatch's drift monitor reported drifted at the end of the stage."""
        return sorted(self.detected)

    def p99_of(self, traffic_class: str) -> float | None:
        """The gateway's request p99 of one traffic class, in seconds."""
        return self.class_latency.get(traffic_class, (None, None))[1]

    def p(self, row: str, q: int) -> float | None:
        """p50 (``q=50``) or p99 (``q=99``) of a row (a key of :data:`ROWS`), in seconds."""
        p50, p99 = self.latency[row]
        return p50 if q == 50 else p99

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": self.seconds, "requests": self.requests,
                "latency_seconds": {k: {"p50": v[0], "p99": v[1]} for k, v in self.latency.items()},
                "cache_hit_ratio": self.cache_hit_ratio, "mean_batch": self.mean_batch, "psi": self.psi,
                "drift_samples": self.drift_samples, "drifted": self.drifted, "drift_score": self.detected,
                "load": self.load,
                "started_at": self.started_at, "ended_at": self.ended_at,
                "diagnosis": self.diagnosis.to_dict() if self.diagnosis is not None else None,
                "diagnosis_error": self.diagnosis_error, "alerts": self.alerts,
                "requests_by_traffic_class": self.by_class, "batch_share": self.batch_share,
                "traffic_class_latency_seconds": {k: {"p50": v[0], "p99": v[1]} for k, v in self.class_latency.items()},
                "slo_slow_share": self.slo_slow, "degraded": self.degraded, "degraded_share": self.degraded_share}


def psi(live_counts: dict[str, float], reference_share: dict[str, float]) -> float | None:
    """PSI of live bin counts against the reference shares, with Evidently's epsilon for empty shares (the same
    convention as :func:`aiwatch.drift.promql.fleet_psi_expr`). ``None`` without live values."""
    n = sum(live_counts.values())
    if n <= 0:
        return None
    result = 0.0
    for label, q in reference_share.items():
        p = live_counts.get(label, 0.0) / n
        p = p if p > 0 else PSI_EPSILON
        q = q if q > 0 else PSI_EPSILON
        result += (p - q) * math.log(p / q)
    return result


def stage_stats(name: str, seconds: float, before: Samples, after: Samples, names: Names | None = None,
                started_at: float = 0.0, ended_at: float = 0.0) -> StageStats:
    names = names or Names()
    model = names.model
    d = scrape.delta(after, before)
    requests = scrape.total(d, "aiwatch_request_duration_seconds_count", service=names.gateway, route="/recommend")
    stats = StageStats(name, seconds, requests, started_at=started_at, ended_at=ended_at,
                       window=totals_from_snapshots(before, after, started_at, ended_at or started_at + seconds))
    for key, _, histogram, match in rows(names):
        b = scrape.buckets(d, histogram, **match)
        stats.latency[key] = (histogram_quantile(0.5, b), histogram_quantile(0.99, b))
    _traffic_classes(stats, d, names.gateway)
    stats.degraded = scrape.values(d, "aiwatch_degraded_responses_total", "reason", service=names.gateway)
    results = scrape.values(d, "aiwatch_feature_cache_requests_total", "result")
    lookups = sum(results.values())
    if lookups > 0:
        stats.cache_hit_ratio = results.get("hit", 0.0) / lookups
    batches = scrape.total(d, "aiwatch_batch_size_count", model=model)
    if batches > 0:
        stats.mean_batch = scrape.total(d, "aiwatch_batch_size_sum", model=model) / batches
    features = {dict(labels)["feature"] for labels in after.get("aiwatch_feature_reference_ratio", {})
                if dict(labels).get("model") == model}
    for feature in sorted(features):
        live = scrape.values(d, "aiwatch_feature_bin_total", "bin", model=model, feature=feature)
        ref = scrape.values(after, "aiwatch_feature_reference_ratio", "bin", model=model, feature=feature)
        value = psi(live, ref)
        if value is not None:
            stats.psi[feature] = value
            stats.drift_samples[feature] = sum(live.values())
    detected = scrape.values(after, "aiwatch_drift_detected", "feature", model=model, test="psi")
    scores = scrape.values(after, "aiwatch_drift_score", "feature", model=model, test="psi")
    stats.detected = {f: scores.get(f, math.nan) for f, flag in detected.items() if flag >= 1.0}
    return stats


def _traffic_classes(stats: StageStats, d: Samples, gateway: str) -> None:
    match = {"service": gateway, "route": "/recommend"}
    hist = "aiwatch_request_duration_seconds"
    stats.by_class = {c: n for c, n in scrape.values(d, f"{hist}_count", "traffic_class", **match).items() if n > 0}
    for cls in [*sorted(stats.by_class), "all"]:
        b = scrape.buckets(d, hist, **match) if cls == "all" else scrape.buckets(d, hist, **match, traffic_class=cls)
        if cls != "all":
            stats.class_latency[cls] = (histogram_quantile(0.5, b), histogram_quantile(0.99, b))
        total = b[-1][1] if b else 0.0
        fast = next((n for le, n in b if math.isclose(le, SLO_LATENCY_SECONDS)), None)
        if total > 0 and fast is not None:
            stats.slo_slow[cls] = 1.0 - fast / total


def diagnose_stages(stages: list[StageStats], service: str) -> None:
    """Diagnose every stage after the first against the first (``service``: the entry service, the gateway)."""
    if not stages or stages[0].window is None:
        return
    for stage in stages[1:]:
        if stage.window is None:
            continue
        try:
            stage.diagnosis = diagnose_windows(stages[0].window, stage.window, service)
        except DiagnoseError as exc:
            stage.diagnosis_error = str(exc)


def _ms(value: float | None) -> str:
    return f"{'-':>7}" if value is None else f"{value * 1000:7.1f}"


def format_summary(stages: list[StageStats], names: Names | None = None) -> str:
    """A table: one column pair (p50 / p99 in ms) per stage, then cache hit ratio and drift per stage; then each
    stage's diagnosis against the first and, with Prometheus, the alerts that fired."""
    width = 26
    head = f"{'':<{width}}" + "".join(f"| {s.name:^17}" for s in stages)
    sub = f"{'latency (ms)':<{width}}" + "".join(f"| {'p50':>7} {'p99':>8} " for _ in stages)
    lines = [head, sub, "-" * len(sub)]
    lines.append(f"{'requests/s':<{width}}" + "".join(
        f"| {s.requests / s.seconds if s.seconds else 0.0:>16.1f} " for s in stages))
    for key, label, _, _ in rows(names or Names()):
        lines.append(f"{label:<{width}}" + "".join(f"| {_ms(s.p(key, 50))} {_ms(s.p(key, 99))} " for s in stages))
    if any(s.batch_share > 0 for s in stages):
        for cls in sorted({c for s in stages for c in s.class_latency}, key=lambda c: (c != REALTIME, c)):
            lines.append(f"{'  ' + cls + ' requests':<{width}}" + "".join(
                f"| {_ms(s.class_latency.get(cls, (None, None))[0])} {_ms(s.class_latency.get(cls, (None, None))[1])} "
                for s in stages))
        lines.append(f"{'batch share of requests':<{width}}" + "".join(
            f"| {s.batch_share:>16.0%} " for s in stages))
    lines.append(f"{'degraded (cached answer)':<{width}}" + "".join(
        f"| {s.degraded_share:>16.1%} " for s in stages))
    lines.append(f"{'mean batch size':<{width}}" + "".join(
        f"| {'-' if s.mean_batch is None else f'{s.mean_batch:.2f}':>16} " for s in stages))
    lines.append(f"{'feature cache hit ratio':<{width}}" + "".join(
        f"| {'-' if s.cache_hit_ratio is None else f'{s.cache_hit_ratio:.0%}':>16} " for s in stages))
    features = sorted({f for s in stages for f in s.psi})
    for feature in features:
        lines.append(f"{'PSI ' + feature:<{width}}" + "".join(
            f"| {_psi_cell(s, feature):>16} " for s in stages))
    lines.append(f"(PSI of each stage against the training data's deciles; drift: aiwatch's drift monitor found "
                 f"PSI >= {PSI_THRESHOLD} in its window at the stage's end, with at least {MIN_DRIFT_SAMPLES} values)")
    lines.append("")
    for s in stages:
        drifted = ", ".join(f"{f} (PSI {s.detected[f]:.2f})" for f in s.drifted) or "none"
        lines.append(f"drifted features during {s.name}: {drifted}")
    lines += _slo_lines(stages)
    lines += _degraded_lines(stages)
    lines += _diagnosis_lines(stages)
    if any(s.alerts is not None for s in stages):
        lines += ["", "alerts firing in Prometheus (the demo's rules):"]
        lines += [f"  {s.name + ':':<15} {', '.join(s.alerts) or 'none'}" for s in stages if s.alerts is not None]
    return "\n".join(lines)


def _slo_lines(stages: list[StageStats]) -> list[str]:
    """When batch traffic shared the replicas: real-time latency on its own, and what the real-time SLO counts."""
    if not any(s.batch_share > 0 for s in stages):
        return []
    threshold = f"{SLO_LATENCY_SECONDS * 1000:g} ms"
    lines = ["", f"real-time vs batch (gateway, traffic_class label): the latency SLO (answered within {threshold}) "
                 "counts real-time requests only, batch requests have no latency objective:"]
    for s in stages:
        line = (f"  {s.name + ':':<15} real-time p99 {_ms(s.p99_of(REALTIME)).strip()} ms, "
                f"batch {s.batch_share:.0%} of requests")
        if REALTIME in s.slo_slow:
            line += f"; SLO: {s.slo_slow[REALTIME]:.1%} of real-time requests slower than {threshold}"
            if s.batch_share > 0 and "all" in s.slo_slow:
                line += f" (counting batch too it would say {s.slo_slow['all']:.1%})"
        lines.append(line)
    return lines


def _degraded_lines(stages: list[StageStats]) -> list[str]:
    """The gateway's fallbacks per stage, by reason."""
    if not any(s.degraded for s in stages):
        return []
    lines = ["", "degraded responses (gateway, aiwatch_degraded_responses_total: too little of the deadline was left, "
                 "the answer came from recent answers):"]
    for s in stages:
        reasons = ", ".join(f"{r} {n:.0f}" for r, n in sorted(s.degraded.items()) if n > 0) or "none"
        lines.append(f"  {s.name + ':':<15} {s.degraded_share:.1%} of {s.requests:.0f} responses ({reasons})")
    return lines


def _diagnosis_lines(stages: list[StageStats]) -> list[str]:
    later = stages[1:]
    if not later or all(s.diagnosis is None and s.diagnosis_error is None for s in later):
        return []
    lines = ["", f"diagnosis (aiwatch diagnose, each stage against {stages[0].name}):"]
    for s in later:
        head = f"  {s.name + ':':<15} "
        if s.diagnosis is None:
            lines.append(head + f"no diagnosis: {s.diagnosis_error or 'no data'}")
            continue
        d = s.diagnosis
        lines.append(head + d.verdict)
        moved = d.moved
        if moved:
            top = moved[0]
            lines.append(f"  {'':<15} top contributor: {d.cause} {top.delta_seconds * 1000:+.1f} ms "
                         f"({top.share:.0%} of the added time)")
        else:
            lines.append(f"  {'':<15} top contributor: {d.cause} (nothing moved by more than "
                         f"{d.noise_floor_seconds * 1000:.1f} ms)")
    return lines


def _psi_cell(stage: StageStats, feature: str) -> str:
    value = stage.psi.get(feature)
    if value is None:
        return "-"
    if feature in stage.detected:
        return f"{value:.3f} DRIFT"
    n = stage.drift_samples.get(feature, 0)
    if n < MIN_DRIFT_SAMPLES:
        return f"{value:.3f} (n={n:.0f})"
    return f"{value:.3f}"
