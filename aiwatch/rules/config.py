"""The typed configuration of the rule renderer: SLOs, thresholds, selectors and ``for`` durations.

Every field has a default, so an empty config renders the committed files under ``alerts/``. A config file is YAML
(or JSON) with the same nesting as these dataclasses; ``for`` is written ``for`` in the file. Unknown keys, wrong
types and malformed durations or selectors are rejected with the dotted path of the offending key.

    >>> cfg = config_from_dict({"slo": {"availability_objective": 0.995}})
    >>> cfg.slo.availability_objective, cfg.slo.latency_threshold_seconds
    (0.995, 0.3)
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiwatch.metrics import LATENCY_BUCKETS
from aiwatch.promql import parse_matchers

_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


class ConfigError(ValueError):
    """A rules config value is wrong; the message names the key."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class BurnWindow:
    """One pair of windows of a multi-window burn-rate alert: both must burn faster than ``factor``."""

    long: str
    short: str
    factor: float


@dataclass
class BurnAlert:
    """A burn-rate alert: fires when any of its window pairs burns too fast."""

    windows: list[BurnWindow]
    for_: str = field(metadata=_help("how long the condition must hold"))


@dataclass
class Selectors:
    """Extra PromQL label matchers (without braces, e.g. ``service="recommender"``) for each metric family."""

    requests: str = field(default="", metadata=_help(
        "matchers on aiwatch_request_duration_seconds and aiwatch_phase_duration_seconds, "
        "e.g. service=\"recommender\""))
    network: str = field(default="", metadata=_help("matchers on aiwatch_network_duration_seconds"))
    queue: str = field(default="", metadata=_help("matchers on aiwatch_queue_depth"))
    gpu: str = field(default="", metadata=_help("matchers on aiwatch_gpu_* series"))
    cache: str = field(default="", metadata=_help("matchers on aiwatch_feature_cache_requests_total"))
    drift: str = field(default="", metadata=_help("matchers on the drift gauges and the bin sketch"))
    instrumentation: str = field(default="", metadata=_help("matchers on aiwatch_instrumentation_errors_total"))
    targets: str = field(default='job="aiwatch"', metadata=_help(
        "matchers on `up` naming the scrape job(s) of the instrumented services (equality matchers give "
        "absent() its labels)"))


def _page() -> BurnAlert:
    return BurnAlert([BurnWindow("1h", "5m", 14.4), BurnWindow("6h", "30m", 6.0)], "2m")


def _ticket() -> BurnAlert:
    return BurnAlert([BurnWindow("1d", "2h", 3.0), BurnWindow("3d", "6h", 1.0)], "1h")


@dataclass
class SLO:
    """Service level objectives over ``aiwatch_request_duration_seconds``, per ``service``."""

    availability_objective: float = field(default=0.999, metadata=_help(
        "share of requests that must not fail (0-1); the error budget is 1 - objective"))
    latency_objective: float = field(default=0.99, metadata=_help(
        "share of requests that must be faster than latency_threshold_seconds (0-1)"))
    latency_threshold_seconds: float = field(default=0.3, metadata=_help(
        "the latency SLO threshold; must be a bucket bound of aiwatch_request_duration_seconds"))
    error_status: str = field(default="5..|UNKNOWN|DEADLINE_EXCEEDED|INTERNAL|UNAVAILABLE|DATA_LOSS", metadata=_help(
        "regex of the `status` label values that count as errors (HTTP 5xx and gRPC server-side failures)"))
    period: str = field(default="30d", metadata=_help("the SLO period, used in alert texts"))
    page: BurnAlert = field(default_factory=_page, metadata=_help(
        "fast burn (critical): Google SRE workbook 1h/5m x14.4 or 6h/30m x6"))
    ticket: BurnAlert = field(default_factory=_ticket, metadata=_help(
        "slow burn (warning): 1d/2h x3 or 3d/6h x1"))


@dataclass
class Latency:
    """The latency split: the model's own time versus everything else."""

    window: str = field(default="5m", metadata=_help("rate window of the phase quantiles"))
    model_phases: str = field(default="inference", metadata=_help("regex of the phases that are the model's time"))
    model_p99_seconds: float = field(default=0.5, metadata=_help("AiwatchModelLatencyHigh: p99 of the model phases"))
    model_for: str = "10m"
    non_model_p99_seconds: float = field(default=0.25, metadata=_help(
        "AiwatchNonModelLatencyHigh: p99 of any other phase (queue, features, overhead, ...) or of the network"))
    non_model_for: str = "10m"


@dataclass
class Queue:
    """Queue backlog and the autoscaling signal (queue depth per replica)."""

    per_replica_warning: float = field(default=20.0, metadata=_help("AiwatchQueueBacklog warning: items per replica"))
    per_replica_critical: float = field(default=100.0, metadata=_help("AiwatchQueueBacklog critical"))
    for_: str = "5m"
    target_per_replica: float = field(default=5.0, metadata=_help(
        "the autoscaling target: desired replicas = ceil(total queue depth / target_per_replica)"))


@dataclass
class GPU:
    """GPU saturation, memory headroom, absent metrics and XID errors."""

    window: str = field(default="5m", metadata=_help("window of the utilization average"))
    utilization_saturated: float = field(default=0.95, metadata=_help("AiwatchGpuSaturated: average utilization"))
    saturated_for: str = "15m"
    memory_headroom_warning: float = field(default=0.10, metadata=_help(
        "AiwatchGpuMemoryNearlyFull warning: free share of device memory"))
    memory_headroom_critical: float = field(default=0.03, metadata=_help("AiwatchGpuMemoryNearlyFull critical"))
    memory_for: str = "5m"
    absent_lookback: str = field(default="1h", metadata=_help(
        "AiwatchGpuMetricsAbsent fires for a target that exported GPU metrics within this lookback and is up, "
        "but no longer does"))
    absent_for: str = "5m"
    xid_window: str = "10m"
    xid_for: str = "1m"
    target_utilization: float = field(default=0.8, metadata=_help(
        "the autoscaling target: desired replicas = ceil(replicas x average utilization / target)"))


@dataclass
class Cache:
    """Feature-cache hit ratio."""

    window: str = "10m"
    hit_ratio_min: float = field(default=0.5, metadata=_help("AiwatchFeatureCacheHitRatioLow below this ratio"))
    min_requests_per_second: float = field(default=1.0, metadata=_help("ignore caches with less traffic"))
    for_: str = "15m"


@dataclass
class Drift:
    """Input drift: local (per replica, exact tests) and fleet (PSI over the bin sketch)."""

    windows: list[str] = field(default_factory=lambda: ["1h", "1d"], metadata=_help(
        "windows of the fleet PSI / JS recording rules"))
    psi_window: str = field(default="1h", metadata=_help("the window AiwatchFleetInputDrift reads (one of windows)"))
    interval: str = field(default="1m", metadata=_help(
        "evaluation interval of the fleet PSI / JS recording group: the expressions are heavy and hour-long windows "
        "need no finer resolution"))
    psi_threshold: float = field(default=0.2, metadata=_help("PSI above this is a significant shift"))
    fleet_for: str = "15m"
    local_for: str = "15m"


@dataclass
class Meta:
    """aiwatch's own health and the scrape targets."""

    instrumentation_window: str = "10m"
    instrumentation_for: str = "10m"
    target_down_for: str = "5m"
    target_absent_for: str = "5m"


@dataclass
class RulesConfig:
    """Everything the renderer reads. ``RulesConfig()`` is the default config."""

    runbook_base_url: str = field(default="https://github.com/aiwatch/aiwatch/blob/main", metadata=_help(
        "runbook_url = <runbook_base_url>/docs/runbooks/<AlertName>.md"))
    selectors: Selectors = field(default_factory=Selectors)
    slo: SLO = field(default_factory=SLO)
    latency: Latency = field(default_factory=Latency)
    queue: Queue = field(default_factory=Queue)
    gpu: GPU = field(default_factory=GPU)
    cache: Cache = field(default_factory=Cache)
    drift: Drift = field(default_factory=Drift)
    meta: Meta = field(default_factory=Meta)

    def validate(self) -> RulesConfig:
        """Check values that types cannot; returns ``self``."""
        for path, value in _walk(self):
            leaf = path.rsplit(".", 1)[-1]
            if isinstance(value, str) and (leaf in {"window", "period", "long", "short", "absent_lookback",
                                                    "xid_window", "psi_window", "instrumentation_window",
                                                    "interval"}
                                           or leaf.endswith("for")):
                _check_duration(path, value)
            if path.startswith("selectors."):
                _check_selector(path, value)
        for i, window in enumerate(self.drift.windows):
            _check_duration(f"drift.windows[{i}]", window)
        for name in ("availability_objective", "latency_objective"):
            value = getattr(self.slo, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"slo.{name}: must be between 0 and 1 (exclusive), got {value}")
        if self.slo.latency_threshold_seconds not in LATENCY_BUCKETS:
            raise ConfigError(f"slo.latency_threshold_seconds: {self.slo.latency_threshold_seconds} is not a bucket "
                              f"bound of aiwatch_request_duration_seconds; choose one of {list(LATENCY_BUCKETS)}")
        for name in ("page", "ticket"):
            if not getattr(self.slo, name).windows:
                raise ConfigError(f"slo.{name}.windows: at least one window pair is needed")
        if self.drift.psi_window not in self.drift.windows:
            raise ConfigError(f"drift.psi_window: {self.drift.psi_window!r} is not one of drift.windows "
                              f"{self.drift.windows}")
        for name in ("queue.target_per_replica", "gpu.target_utilization"):
            section, attr = name.split(".")
            if getattr(getattr(self, section), attr) <= 0:
                raise ConfigError(f"{name}: must be positive")
        return self


def _check_selector(path: str, value: str) -> None:
    try:
        parse_matchers(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: {value!r} is not a list of PromQL label matchers like 'service=\"x\"' "
                          f"({exc})") from None


def _check_duration(path: str, value: str) -> None:
    if not _DURATION.match(value):
        raise ConfigError(f"{path}: {value!r} is not a Prometheus duration such as 30s, 5m, 1h, 1d")


def _key(f: dataclasses.Field[Any]) -> str:
    return f.name[:-1] if f.name.endswith("_") else f.name


def _walk(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            out += _walk(getattr(obj, f.name), f"{prefix}{_key(f)}" if not prefix else f"{prefix}.{_key(f)}")
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            out += _walk(item, f"{prefix}[{i}]")
    else:
        out.append((prefix, obj))
    return out


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, path)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported type {tp}")  # pragma: no cover - a bug in this module


def _build(cls: type[Any], data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {_key(f): f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {fields[k].name: _convert(hints[fields[k].name], v, f"{path}.{k}" if path else k)
              for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{path or 'config'}: {exc}") from None


def config_from_dict(data: dict[str, Any] | None) -> RulesConfig:
    """A validated :class:`RulesConfig` from parsed YAML/JSON; missing keys keep their defaults."""
    cfg: RulesConfig = _build(RulesConfig, data or {}, "")
    return cfg.validate()


def load_config(path: str | Path) -> RulesConfig:
    """Read a YAML (needs PyYAML: ``pip install "aiwatch[rules]"``) or JSON rules config."""
    text = Path(path).read_text()
    if str(path).endswith(".json"):
        data = json.loads(text)
    else:
        from aiwatch._optional import require

        yaml = require("yaml", "rules")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return config_from_dict(data)


def config_to_dict(cfg: RulesConfig) -> dict[str, Any]:
    """The config as plain data (file keys: ``for`` rather than ``for_``)."""
    return typing.cast(dict[str, Any], _plain(cfg))


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {_key(f): _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def config_comments() -> dict[str, str]:
    """Dotted key path -> help text, for the commented default config."""
    out: dict[str, str] = {}

    def visit(cls: type[Any], prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            path = f"{prefix}.{_key(f)}" if prefix else _key(f)
            tp = hints[f.name]
            if "help" in f.metadata:
                out[path] = f.metadata["help"]
            elif dataclasses.is_dataclass(tp) and tp.__doc__:
                out[path] = tp.__doc__.strip().splitlines()[0]
            if dataclasses.is_dataclass(tp) and isinstance(tp, type) and tp is not BurnAlert:
                visit(tp, path)

    visit(RulesConfig, "")
    return out
