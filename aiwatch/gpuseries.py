"""GPU readings in PromQL from either source: aiwatch's NVML collector (``aiwatch_gpu_*``) or NVIDIA's
dcgm-exporter (``DCGM_FI_*``), which the GPU Operator already runs on every GPU node of a Kubernetes cluster.

The rules (``gpu.source``), the console (``--gpu-source``), the Grafana dashboards and the autoscaling examples read
GPUs through :class:`GpuSeries`, so that each reading is the same quantity in aiwatch's units whichever exporter
runs: utilization a 0-1 ratio, memory in bytes, power in watts, temperature in degrees Celsius.

What differs between the two, and how it is bridged:

- utilization: ``DCGM_FI_DEV_GPU_UTIL`` is a percent (NVML's "a kernel was running" share, what aiwatch exports
  as a ratio); with DCGM's profiling metrics on, ``DCGM_FI_PROF_SM_ACTIVE`` (a ratio) says how busy the SMs were
  and is the better saturation signal (``dcgm_utilization``);
- memory: ``DCGM_FI_DEV_FB_USED`` / ``DCGM_FI_DEV_FB_FREE`` are MiB; the total is their sum (the driver's reserved
  memory is in neither, as NVML's v1 memory info leaves it out);
- XID errors: aiwatch counts them (``aiwatch_gpu_xid_errors_total``); dcgm-exporter's ``DCGM_FI_DEV_XID_ERRORS``
  is a gauge holding the *last* XID code seen (0 for none), so a new XID shows as a change of that value and two
  XIDs of the same code in a row show once;
- labels: the GPU is ``gpu`` (index) in both; its UUID, model and host are ``uuid`` / ``name`` / ``instance`` for
  aiwatch and ``UUID`` / ``modelName`` / ``Hostname`` for dcgm-exporter, which with Kubernetes pod attribution also
  labels each GPU with the ``namespace``, ``pod`` and ``container`` using it.

    >>> print(GpuSeries("dcgm").utilization('namespace="shop"'))
    (DCGM_FI_DEV_GPU_UTIL{namespace="shop"} / 100)
    >>> print(GpuSeries().utilization())
    aiwatch_gpu_utilization_ratio
"""

from __future__ import annotations

from dataclasses import dataclass

from aiwatch.promql import Matcher, metric, number, quote, series

SOURCES = ("aiwatch", "dcgm")
"""The GPU exporters aiwatch reads: its own collector, or NVIDIA's dcgm-exporter."""

GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
SM_ACTIVE = "DCGM_FI_PROF_SM_ACTIVE"
GR_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
FB_USED = "DCGM_FI_DEV_FB_USED"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
XID_ERRORS = "DCGM_FI_DEV_XID_ERRORS"
GPU_TEMP = "DCGM_FI_DEV_GPU_TEMP"
POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"

UTILIZATION_FIELDS: dict[str, float] = {GPU_UTIL: 100.0, SM_ACTIVE: 1.0, GR_ENGINE_ACTIVE: 1.0}
"""The dcgm-exporter fields that can stand for utilization, and each one's value at a fully busy GPU."""

DCGM_METRICS = frozenset({GPU_UTIL, SM_ACTIVE, GR_ENGINE_ACTIVE, FB_USED, FB_FREE, XID_ERRORS, GPU_TEMP, POWER_USAGE})
"""Every dcgm-exporter metric aiwatch reads (the names that are not in aiwatch's own contract)."""

MIB = 1048576

POD_LABELS = ("namespace", "pod", "container")
"""The labels dcgm-exporter's Kubernetes pod attribution adds to a GPU's series: those of the pod using it."""

UP = metric("aiwatch_gpu_up")
NVML_UP = metric("aiwatch_gpu_nvml_up")
UTILIZATION = metric("aiwatch_gpu_utilization_ratio")
MEMORY_USED = metric("aiwatch_gpu_memory_used_bytes")
MEMORY_TOTAL = metric("aiwatch_gpu_memory_total_bytes")
POWER = metric("aiwatch_gpu_power_watts")
TEMPERATURE = metric("aiwatch_gpu_temperature_celsius")
XID_TOTAL = metric("aiwatch_gpu_xid_errors_total")

MatcherText = Matcher | str


@dataclass(frozen=True)
class GpuLabels:
    """What a source calls a GPU's index, UUID, model name and host."""

    gpu: str
    uuid: str
    name: str
    host: str


LABELS = {"aiwatch": GpuLabels("gpu", "uuid", "name", "instance"),
          "dcgm": GpuLabels("gpu", "UUID", "modelName", "Hostname")}


@dataclass(frozen=True)
class GpuSeries:
    """The PromQL of each GPU reading from ``source`` (``aiwatch`` or ``dcgm``); with ``dcgm``,
    ``dcgm_utilization`` is the field read as utilization (one of :data:`UTILIZATION_FIELDS`)."""

    source: str = "aiwatch"
    dcgm_utilization: str = GPU_UTIL

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"GPU source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.dcgm_utilization not in UTILIZATION_FIELDS:
            raise ValueError(f"the DCGM utilization field must be one of {', '.join(UTILIZATION_FIELDS)}, got "
                             f"{self.dcgm_utilization!r}")

    @property
    def dcgm(self) -> bool:
        return self.source == "dcgm"

    @property
    def labels(self) -> GpuLabels:
        return LABELS[self.source]

    @property
    def presence(self) -> str:
        """The series a host exports while its GPU metrics flow (their disappearance is AiwatchGpuMetricsAbsent)."""
        return self.dcgm_utilization if self.dcgm else NVML_UP.name

    def utilization(self, *matchers: MatcherText) -> str:
        """Share of time the GPU was busy, 0-1, per GPU."""
        if not self.dcgm:
            return series(UTILIZATION, *matchers)
        return _scaled(series(self.dcgm_utilization, *matchers), UTILIZATION_FIELDS[self.dcgm_utilization])

    def utilization_avg(self, window: str, *matchers: MatcherText) -> str:
        """Utilization averaged over ``window``, per GPU."""
        name = self.dcgm_utilization if self.dcgm else UTILIZATION.name
        averaged = f"avg_over_time({series(name, *matchers)}[{window}])"
        return _scaled(averaged, UTILIZATION_FIELDS[name]) if self.dcgm else averaged

    def averaged(self, reading: str, window: str, *matchers: MatcherText, at: str = "") -> str:
        """``utilization``, ``memory_used_bytes``, ``power_watts`` or ``temperature_celsius`` averaged over
        ``window`` (ending ``at``: PromQL's ``@``, e.g. ``end()``), per GPU series, in aiwatch's units: the average
        of the exported series, scaled after (the scales are linear), so no subquery."""
        dcgm = self.dcgm
        names: dict[str, tuple[str, str]] = {
            "utilization": (self.dcgm_utilization if dcgm else UTILIZATION.name,
                            f" / {number(full)}" if dcgm and (full := UTILIZATION_FIELDS[self.dcgm_utilization]) != 1
                            else ""),
            "memory_used_bytes": (FB_USED if dcgm else MEMORY_USED.name, f" * {MIB}" if dcgm else ""),
            "power_watts": (POWER_USAGE if dcgm else POWER.name, ""),
            "temperature_celsius": (GPU_TEMP if dcgm else TEMPERATURE.name, ""),
        }
        if reading not in names:
            raise ValueError(f"no averaged GPU reading {reading!r}; known: {', '.join(names)}")
        name, scale = names[reading]
        averaged = f"avg_over_time({series(name, *matchers)}[{window}]{f' @ {at}' if at else ''})"
        return f"({averaged}{scale})" if scale else averaged

    def memory_used_bytes(self, *matchers: MatcherText) -> str:
        if not self.dcgm:
            return series(MEMORY_USED, *matchers)
        return f"({series(FB_USED, *matchers)} * {MIB})"

    def memory_total_bytes(self, *matchers: MatcherText) -> str:
        if not self.dcgm:
            return series(MEMORY_TOTAL, *matchers)
        return f"(({series(FB_USED, *matchers)} + {series(FB_FREE, *matchers)}) * {MIB})"

    def memory_headroom(self, *matchers: MatcherText) -> str:
        """The free share of device memory, 0-1, per GPU (GPUs reporting no memory left out)."""
        if not self.dcgm:
            return f"1 - {series(MEMORY_USED, *matchers)} / ({series(MEMORY_TOTAL, *matchers)} > 0)"
        free = series(FB_FREE, *matchers)
        return f"{free} / (({series(FB_USED, *matchers)} + {free}) > 0)"

    def power_watts(self, *matchers: MatcherText) -> str:
        return series(POWER_USAGE if self.dcgm else POWER.name, *matchers)

    def temperature_celsius(self, *matchers: MatcherText) -> str:
        return series(GPU_TEMP if self.dcgm else TEMPERATURE.name, *matchers)

    def up(self, *matchers: MatcherText) -> str:
        """1 per GPU that answered (aiwatch: its latest NVML poll; dcgm: it is reported at all)."""
        if not self.dcgm:
            return series(UP, *matchers)
        return f"({series(self.dcgm_utilization, *matchers)} * 0 + 1)"

    def new_xid(self, window: str, *matchers: MatcherText) -> str:
        """Per GPU that reported an XID error within ``window``: aiwatch's count of them; for dcgm, the XID code
        itself (the gauge changed to a non-zero code within the window)."""
        if not self.dcgm:
            return f"increase({series(XID_TOTAL, *matchers)}[{window}]) > 0"
        xid = series(XID_ERRORS, *matchers)
        return f"{xid} > 0 and changes({xid}[{window}]) > 0"

    def with_aiwatch_labels(self, expr: str) -> str:
        """``expr`` with the GPU's UUID and model under aiwatch's label names (``uuid``, ``name``), for the panels
        that show both sources alike."""
        if not self.dcgm:
            return expr
        for ours, theirs in (("uuid", self.labels.uuid), ("name", self.labels.name)):
            expr = f'label_replace({expr}, {quote(ours)}, "$1", {quote(theirs)}, "(.*)")'
        return expr


def _scaled(expr: str, full: float) -> str:
    return expr if full == 1 else f"({expr} / {number(full)})"
