"""GPU metrics from NVML: a background poller and a Prometheus collector over its latest snapshot.

    from aiwatch.signals.gpu import GpuCollector

    collector = GpuCollector()          # registers on prometheus_client's global registry, polls every 5 s

:class:`GpuPoller` initialises NVML once (through ``pynvml``, the ``nvidia-ml-py`` package) and reads every GPU on a
daemon thread at a fixed interval into an immutable :class:`GpuSnapshot`. :class:`GpuCollector` builds the
``aiwatch_gpu_*`` metric families of the contract from the latest snapshot at scrape time: a scrape never calls
NVML, takes no lock and so never waits for a slow or hung NVML call.

A hung NVML call never hides the GPU series: from the moment the poller exists, ``aiwatch_gpu_nvml_up`` and
``aiwatch_gpu_last_poll_timestamp_seconds`` are exported (before the first poll finishes: ``nvml_up 0`` and the time
the poller was created). When a poll has been stuck in NVML for ``hung_after`` seconds (default twice the interval,
at least 10 s), the poller reports NVML down (``nvml_up 0``, no per-GPU series) with the time of the last poll that
finished, so AiwatchGpuMetricsAbsent fires instead of stale readings looking healthy; the same once the poller was
stopped (``stop()``, or ``close()`` of a collector sharing it). ``stop()`` / ``close()`` never wait more than their
``timeout`` (default 0.5 s) for a hung call: the daemon thread shuts NVML down itself when the call returns.

What it does when things go wrong (it never raises into the app):

* no driver, no library, no GPU, or NVML failing as a whole: ``aiwatch_gpu_nvml_up 0`` and no per-GPU series;
  NVML is initialised again on a later poll, so a driver that loads later is picked up;
* a GPU that fell off the bus (``NVMLError_GpuIsLost``, a reset required, GPU not found), or that NVML cannot open
  because of its state (insufficient external power, an IRQ issue, a corrupted InfoROM, no permission, blocked by the
  OS, not ready), or that reports one of those states (but no permission or not ready: see below) when a field is
  read: ``aiwatch_gpu_up 0`` for that device (its XID counter stays), logged, not counted as aiwatch's error; the
  other GPUs are still read;
* the GPU list changing (NVML's device count is read on every poll): a GPU that appears (hot-plug, re-enumerated
  after a reset, more GPUs given to the container) is exported from the next poll; one that leaves NVML's list is
  exported as ``aiwatch_gpu_up 0`` under its last labels, with its XID counter, until it comes back (GPUs are
  matched by UUID, so a GPU whose index moved keeps its state) or NVML is initialised again; the list is also read
  again when a GPU read until then answers lost, or one that could not be opened can be, so that as many GPUs
  leaving as joining between two polls (the count unchanged) shows from the poll after (no NVML call added to a
  poll where nothing changed);
* a field the device does not support (``NOT_SUPPORTED``, no permission, a function the driver lacks): that series
  is skipped for that device, and not asked for again until the GPU's MIG mode changes (a GPU in MIG mode has no
  utilization; switched back, it has);
* a field NVML has no value for now (a timeout, no data, not ready): skipped for this poll, not counted;
* anything else, also a value the bindings should never return (``None``, a string, NaN) and one that is no reading
  (NVML's "not available", all ones: ``0xFFFFFFFF``; a utilization outside 0-100 %): the field is skipped for
  this poll (the other fields and GPUs are still read) and ``aiwatch_instrumentation_errors_total{component="gpu"}``
  counts it, at every poll it lasts.

Each condition is logged once when it starts (logger ``aiwatch.signals.gpu``) and once when it clears.

MIG: on a GPU in MIG mode every MIG device is reported as its own series, with labels ``mig_gi`` / ``mig_ci`` (its
GPU- and compute-instance ids) and its own UUID; NVML reports memory per MIG device but not utilization, power,
temperature or clocks (those stay on the parent GPU's series, where NVML has them).

XID errors are counted from NVML events (``nvmlEventTypeXidCriticalError``) registered on every GPU that supports
them; the poller drains the event set without waiting (timeout 0) on every poll.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aiwatch._optional import require
from aiwatch.amounts import MAX_SECONDS, as_timeout, period, shown, warn_implausible
from aiwatch.env import GPU_POLL_INTERVAL
from aiwatch.exposition import multiprocess_enabled
from aiwatch.flags import flag
from aiwatch.forksafe import renew_at_fork
from aiwatch.metrics import GPU_LABELS, SPECS, Metrics, get_metrics
from aiwatch.prefork import check_fork_hooks
from aiwatch.safety import count_error, record_error

logger = logging.getLogger("aiwatch.signals.gpu")

DEFAULT_INTERVAL = float(GPU_POLL_INTERVAL.default)
"""Seconds between two NVML polls (``$AIWATCH_GPU_POLL_INTERVAL`` overrides it)."""

MIN_HUNG_AFTER = 10.0
"""A poll stuck in NVML this long (or twice the interval, if longer) makes the poller report NVML down."""

STOP_TIMEOUT = 0.5
"""Seconds :meth:`GpuPoller.stop` waits at most for a poll in progress (a hung NVML call is left to its thread)."""

MAX_EVENTS_PER_POLL = 1000
"""Events drained from the NVML event set per poll at most (an XID storm cannot hold the poller forever)."""

MAX_GPUS = 1024
MAX_MIG_DEVICES = 64
"""NVML's GPU count and a GPU's MIG device count above these are broken readings (skipped and counted as aiwatch's
error), not a reason to open billions of devices, one NVML call each, in one poll."""

#: Clock throttle ("clocks event") reasons: NVML's bit and the ``reason`` label value.
THROTTLE_REASONS: tuple[tuple[int, str], ...] = (
    (0x0000000000000001, "gpu_idle"),
    (0x0000000000000002, "applications_clocks_setting"),
    (0x0000000000000004, "sw_power_cap"),
    (0x0000000000000008, "hw_slowdown"),
    (0x0000000000000010, "sync_boost"),
    (0x0000000000000020, "sw_thermal_slowdown"),
    (0x0000000000000040, "hw_thermal_slowdown"),
    (0x0000000000000080, "hw_power_brake_slowdown"),
    (0x0000000000000100, "display_clock_setting"),
)

_XID_EVENT = 0x0000000000000008  # nvmlEventTypeXidCriticalError
_MIG_ENABLED = 1  # NVML_DEVICE_MIG_ENABLE
_TEMPERATURE_GPU = 0  # NVML_TEMPERATURE_GPU
_CLOCK_SM = 1  # NVML_CLOCK_SM
_CLOCK_MEM = 2  # NVML_CLOCK_MEM

# NVML return codes (stable across driver versions; pynvml maps each to an NVMLError_* class).
_NOT_SUPPORTED_CODES = frozenset({3, 4, 13, 25, 26})  # not supported, no permission, function not found,
#                                                        argument version mismatch, deprecated
_TRANSIENT_CODES = frozenset({10, 21, 27})  # timeout, no data, not ready
_LOST_CODES = frozenset({15, 16, 28})  # GPU is lost, reset required, GPU not found
_UNUSABLE_CODES = frozenset({8, 11, 14, 17})  # insufficient external power, IRQ issue, corrupted InfoROM, blocked by
#                                                the OS: the GPU's state, at open or from any getter
_NVML_DOWN_CODES = frozenset({1, 9, 12, 18})  # uninitialized, driver not loaded, library not found, RM mismatch
_TIMEOUT = 10
_NOT_FOUND_CODES = frozenset({2, 6})  # invalid argument, not found (an empty MIG slot)
#: why NVML cannot open a GPU that are the GPU's state (``aiwatch_gpu_up 0``), not aiwatch's failure: lost, reset
#: required, not found, no permission, insufficient external power, an IRQ issue, a corrupted InfoROM, blocked by the
#: OS, not ready, an index no longer listed
_GPU_STATE_CODES = _LOST_CODES | _UNUSABLE_CODES | _TRANSIENT_CODES | _NOT_FOUND_CODES | frozenset({4})

UTILIZATION = "aiwatch_gpu_utilization_ratio"
MEMORY_UTILIZATION = "aiwatch_gpu_memory_utilization_ratio"
MEMORY_USED = "aiwatch_gpu_memory_used_bytes"
MEMORY_TOTAL = "aiwatch_gpu_memory_total_bytes"
MEMORY_RESERVED = "aiwatch_gpu_memory_reserved_bytes"
POWER = "aiwatch_gpu_power_watts"
ENERGY = "aiwatch_gpu_energy_joules_total"
TEMPERATURE = "aiwatch_gpu_temperature_celsius"
SM_CLOCK = "aiwatch_gpu_sm_clock_hertz"
MEMORY_CLOCK = "aiwatch_gpu_memory_clock_hertz"
VALUE_METRICS: tuple[str, ...] = (UTILIZATION, MEMORY_UTILIZATION, MEMORY_USED, MEMORY_TOTAL, MEMORY_RESERVED,
                                  POWER, ENERGY, TEMPERATURE, SM_CLOCK, MEMORY_CLOCK)
"""The per-device value series, in exposition order."""


@dataclass(frozen=True)
class GpuReading:
    """One device (a whole GPU or a MIG device) as read by one poll."""

    gpu: str
    uuid: str
    name: str
    mig_gi: str = ""
    mig_ci: str = ""
    up: bool = True
    #: contract metric name -> value in base units, only for the fields the device reported
    values: Mapping[str, float] = field(default_factory=dict)
    #: reason label -> active; empty when the device does not report throttle reasons
    throttle: Mapping[str, bool] = field(default_factory=dict)
    #: XID errors seen since polling began; ``None`` when the device delivers no XID events
    xid_errors: int | None = None

    @property
    def labels(self) -> tuple[str, str, str, str, str]:
        return (self.gpu, self.uuid, self.name, self.mig_gi, self.mig_ci)


@dataclass(frozen=True)
class GpuSnapshot:
    """Everything one poll saw. ``reason`` says why NVML is down (``nvml_up`` false)."""

    nvml_up: bool
    reason: str = ""
    devices: tuple[GpuReading, ...] = ()
    driver: str = ""
    timestamp: float = 0.0


class _DeviceLost(Exception):
    pass


class _NvmlDown(Exception):
    pass


@dataclass
class _Device:
    index: int
    handle: Any
    #: :func:`_handle_key` of the last handle it had (kept when the handle is dropped: its XID events still name it)
    key: Any = None
    uuid: str = ""
    name: str = ""
    unsupported: set[str] = field(default_factory=set)
    xid: int | None = None
    mig_mode: int | None = None  # the current MIG mode as last read
    lost: bool = False  # its last reading failed because of its state (lost, or gone from NVML's list)
    #: (gpu instance id, compute instance id) -> the fields that MIG device does not support
    mig_unsupported: dict[tuple[str, str], set[str]] = field(default_factory=dict)


def _number(value: Any) -> float:
    """An NVML reading as a finite float. What the bindings should never return (``None``, a string, a NaN, an int
    too large for a float) raises an error naming it, for the caller to skip that series and count it."""
    if value.__class__ is bool or not isinstance(value, int | float):
        raise TypeError(f"NVML returned {shown(value)}, not a number")
    number = float(value)  # OverflowError for an int beyond a float
    if not math.isfinite(number):
        raise ValueError(f"NVML returned {shown(value)}, not a finite number")
    return number


def _percent(value: Any) -> float:
    """An NVML utilization rate (a percent) as a 0-1 ratio; one beyond 0-100 is no rate (NVML's "not available"
    0xFFFFFFFF, a broken reading): an error naming it, as for :func:`_number`."""
    number = _number(value)
    if not 0.0 <= number <= 100.0:
        raise ValueError(f"NVML returned {shown(value)}, not a percent (0 to 100)")
    return number / 100.0


def _unsigned(value: Any, bits: int = 32) -> float:
    """An NVML reading of an unsigned ``bits``-bit field as a float. NVML fills such a field with all ones
    (``0xFFFFFFFF``) for a value it does not have, and an unsigned field is never negative: either is an error
    naming it, as for :func:`_number`."""
    number = _number(value)
    if not 0.0 <= number < 2.0 ** bits - 1:
        raise ValueError(f"NVML returned {shown(value)}, not a reading (NVML's 'not available' is all ones)")
    return number


def _integer(value: Any) -> int:
    """An NVML bit mask, mode or count as an int (an error naming anything else, as for :func:`_number`)."""
    if value.__class__ is bool or not isinstance(value, int):
        raise TypeError(f"NVML returned {shown(value)}, not an integer")
    return int(value)


def _count(value: Any, most: int, what: str) -> int:
    if value.__class__ is not int or not 0 <= value <= most:
        raise ValueError(f"NVML returned {shown(value)}, not a {what} count (0 to {most})")
    return int(value)


def _utilization(rates: Any) -> dict[str, float]:
    return {UTILIZATION: _percent(rates.gpu), MEMORY_UTILIZATION: _percent(rates.memory)}


def _temperature(value: Any) -> float:
    """Degrees Celsius: signed from ``nvmlDeviceGetTemperatureV``, unsigned (0xFFFFFFFF: not available) from the
    legacy getter."""
    number = _number(value)
    if number >= 0xFFFFFFFF:
        raise ValueError(f"NVML returned {shown(value)}, not a temperature (NVML's 'not available' is all ones)")
    return number


def _memory(info: Any) -> dict[str, float]:
    values = {MEMORY_USED: _unsigned(info.used, 64), MEMORY_TOTAL: _unsigned(info.total, 64)}
    reserved = getattr(info, "reserved", None)  # memory info v2 only
    if reserved is not None:
        values[MEMORY_RESERVED] = _unsigned(reserved, 64)
    return values


def _throttle(mask: Any) -> dict[str, bool]:
    bits = _integer(mask)
    return {label: bool(bits & bit) for bit, label in THROTTLE_REASONS}


def _handle_key(handle: Any) -> Any:
    """What identifies an NVML device handle: the address a pynvml handle points to (pynvml gives a new ctypes
    pointer object on every call, also in every event, so the objects are never the same), the handle itself for
    bindings whose handles are not ctypes pointers; ``None`` for no handle."""
    if isinstance(handle, ctypes._Pointer):
        return ctypes.cast(handle, ctypes.c_void_p).value
    return handle


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


#: A poll interval above this (an hour) is warned of: ``5000`` meant as milliseconds.
LONG_INTERVAL = 3600.0


def _interval(value: float | None) -> float:
    what = GPU_POLL_INTERVAL.name if value is None else "the GPU poll interval"
    interval = period(GPU_POLL_INTERVAL.seconds() if value is None else value, what)
    warn_implausible(interval, what, above=LONG_INTERVAL,
                     effect="the GPU gauges are refreshed less than once an hour, stale between polls (a hung GPU "
                            "is noticed after two intervals)")
    return interval


def _stop_timeout(timeout: Any, metrics: Metrics) -> float:
    """``timeout`` as seconds to wait (a negative one: none), or :data:`STOP_TIMEOUT` and aiwatch's error when it is
    no number of seconds: stopping never raises."""
    if timeout.__class__ is float and 0.0 <= timeout <= MAX_SECONDS:
        return float(timeout)
    seconds = as_timeout(timeout)
    if seconds is None:
        record_error("gpu", ValueError(f"a stop timeout must be a number of seconds, got {shown(timeout)}"), metrics)
        return STOP_TIMEOUT
    return seconds


class GpuPoller:
    """Reads every GPU through NVML on a background daemon thread; :attr:`snapshot` is the latest result.

    - ``interval``: seconds between polls (argument > ``$AIWATCH_GPU_POLL_INTERVAL`` > 5 s).
    - ``nvml``: the NVML bindings module (default: ``import pynvml``, from the ``gpu`` extra).
    - ``metrics`` / ``registry``: where ``aiwatch_instrumentation_errors_total`` counts unexpected failures.
    - ``hung_after``: seconds after which a poll still inside an NVML call counts as hung (default: twice the
      interval, at least :data:`MIN_HUNG_AFTER`); :meth:`status` then reports NVML down.

    :meth:`poll_once` polls synchronously (the CLI and tests use it); :meth:`start` / :meth:`stop` run the thread.
    No method raises because of NVML, and none but :meth:`poll_once` waits for it.
    """

    def __init__(self, interval: float | None = None, *, nvml: ModuleType | None = None,
                 metrics: Metrics | None = None, registry: CollectorRegistry | None = None,
                 hung_after: float | None = None) -> None:
        self.interval = _interval(interval)
        if hung_after is None:
            self.hung_after = max(2 * self.interval, MIN_HUNG_AFTER)
        else:
            self.hung_after = period(hung_after, "hung_after")
        self.created = time.time()
        self._poll_began: float | None = None  # monotonic start of the poll in progress
        self.nvml: Any = nvml if nvml is not None else require("pynvml", "gpu")
        self.metrics = metrics if metrics is not None else get_metrics(registry)
        self._error_class: type[BaseException] = getattr(self.nvml, "NVMLError", Exception)
        self._snapshot: GpuSnapshot | None = None
        self._poll_lock = threading.Lock()
        self._thread_lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = False  # by stop(), until start() or poll_once()
        self._thread: threading.Thread | None = None
        self._initialised = False
        self._driver = ""
        self._devices: list[_Device] = []  # NVML's device list as last enumerated, by index
        self._gone: list[_Device] = []  # devices that left NVML's list since init: exported as not up
        self._count: int | None = None  # NVML's device count as last read
        self._recheck = False  # read NVML's list again on the next poll, even if its count is the same
        self._event_set: Any = None
        self._reported: set[tuple[str, ...]] = set()
        self._failing: set[tuple[str, ...]] = set()
        self._resume = False  # in a forked child of a polling poller, until its first status() starts its thread
        renew_at_fork(self)

    def _renew_after_fork(self) -> None:
        # the child has no polling thread: the one that held these, and the poll in progress, are the parent's
        self._poll_lock = threading.Lock()
        self._thread_lock = threading.Lock()
        self._stop = threading.Event()
        self._poll_began = None
        # pynvml loads the library, counts nvmlInit and looks functions up under a plain module lock: held at the fork
        # (the parent's poll loading NVML), the child's first poll would wait on it for ever
        load_lock = getattr(self.nvml, "libLoadLock", None)
        if load_lock is not None and callable(getattr(load_lock, "locked", None)) and load_lock.locked():
            self.nvml.libLoadLock = threading.Lock()
        # A poller that was polling polls again in the child, from its first status() (a scrape), not here: a thread
        # started inside an at-fork hook is risky, and a child that execs at once or is never scraped needs none.
        # Not in multiprocess mode: a worker's /metrics serves the merged sample files, never this collector, and the
        # master's poller (or a sidecar) is the host's one poller. A resume still pending is kept across forks.
        polling = self._resume or (self._thread is not None and not self._stopped)
        self._resume = polling and not multiprocess_enabled()
        self._thread = None
        # NVML's handles and the XID event set are the parent's: the child forgets them without an NVML call (one on
        # them would act on what the parent still uses, e.g. drain its XID events) and initialises NVML itself at
        # its first poll, opening the devices and registering them for events again. The devices stay known (by
        # UUID), so their XID counts go on from the fork instead of starting again at 0.
        self._initialised = False
        self._event_set = None
        for dev in (*self._devices, *self._gone):
            dev.handle = None
        self._count = None
        self._recheck = False
        # the conditions the parent logged are logged again in the child, whose log may be a stream of its own
        self._reported = set()

    # --- public -------------------------------------------------------------------------------------------
    @property
    def snapshot(self) -> GpuSnapshot | None:
        """The latest poll's result (``None`` before the first poll). Reading it never blocks."""
        return self._snapshot

    def status(self) -> GpuSnapshot:
        """What to export now, never ``None`` and never blocking: the latest snapshot; before the first poll has
        finished, NVML down with the poller's creation time; while a poll has been stuck in NVML for
        ``hung_after`` seconds, or once :meth:`stop` was called (until :meth:`start` or :meth:`poll_once`), NVML
        down (no devices) with the time of the last poll that finished. In a forked child of a poller that was
        polling (outside prometheus_client's multiprocess mode), the first call starts the child's own polling
        thread; one that cannot start is counted (component ``gpu``) and tried again at the next call."""
        if self._resume:
            self._resume_in_child()
        snap = self._snapshot
        if self._stopped:
            return GpuSnapshot(False, "the GPU poller was stopped",
                               timestamp=snap.timestamp if snap is not None else self.created)
        began = self._poll_began
        if began is not None:
            stuck = time.monotonic() - began
            if stuck >= self.hung_after:
                last = snap.timestamp if snap is not None else self.created
                return GpuSnapshot(False, f"an NVML call has not returned for {stuck:.0f} s", timestamp=last)
        if snap is None:
            return GpuSnapshot(False, "the first NVML poll has not finished", timestamp=self.created)
        return snap

    def _resume_in_child(self) -> None:
        try:
            with self._thread_lock:
                if not self._resume:
                    return
                self._start_locked()
                self._resume = False
        except Exception as exc:  # a thread that cannot start (EAGAIN): the next status() tries again
            record_error("gpu", exc, self.metrics)

    def poll_once(self) -> GpuSnapshot:
        """Poll NVML now and return (and keep) the new snapshot. Never raises (but waits for NVML)."""
        self._stopped = False
        return self._poll_and_keep()

    def _poll_and_keep(self) -> GpuSnapshot:
        with self._poll_lock:
            self._poll_began = time.monotonic()
            self._failing = set()
            try:
                snap = self._poll()
            except Exception as exc:  # a bug in the poll itself: count it and report NVML down
                self._report(("poll",), exc, "GPU poll failed", count=True)
                snap = GpuSnapshot(False, f"GPU poll failed: {exc!r}", timestamp=time.time())
            for key in self._reported - self._failing:
                logger.info("aiwatch: GPU condition cleared: %s", " ".join(key))
            self._reported = set(self._failing)
            self._snapshot = snap
            self._poll_began = None
            return snap

    def start(self) -> GpuPoller:
        """Start the polling thread (idempotent); the first poll runs at once."""
        with self._thread_lock:
            self._resume = False
            self._start_locked()
        return self

    def _start_locked(self) -> None:
        self._stopped = False
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = stop = threading.Event()  # its own: a thread left in a hung call by stop() never polls again
        thread = threading.Thread(target=self._run, args=(stop,), name="aiwatch-gpu-poller", daemon=True)
        thread.start()
        self._thread = thread  # only once started: a thread that could not start is no poller
        check_fork_hooks("the GPU poller", self.metrics)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the thread and shut NVML down (idempotent; never raises). Waits ``timeout`` seconds at most: a poll
        stuck in a hung NVML call is left to its daemon thread, which shuts NVML down when the call returns. A
        ``timeout`` that is no number of seconds (NaN, infinite, a string) is counted as aiwatch's error (component
        ``gpu``) and :data:`STOP_TIMEOUT` is waited instead. From then on :meth:`status` reports NVML down (its
        last readings would only grow stale), until :meth:`start` or :meth:`poll_once`."""
        deadline = time.monotonic() + _stop_timeout(timeout, self.metrics)
        with self._thread_lock:
            thread, self._thread = self._thread, None
            self._stopped = True
            self._resume = False
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(deadline - time.monotonic(), 0.0))
        if self._poll_lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            try:
                self._shutdown()
            finally:
                self._poll_lock.release()
        else:
            logger.warning("aiwatch: the GPU poller is stuck in an NVML call; it shuts NVML down when the call "
                           "returns")

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    # --- the poll -----------------------------------------------------------------------------------------
    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._poll_and_keep()
            stop.wait(self.interval)
        with self._poll_lock:  # stop() may have given up on a hung call: NVML is shut down here once it returned
            if self._thread is None:
                self._shutdown()

    def _poll(self) -> GpuSnapshot:
        if not self._initialised:
            try:
                self._init()
            except Exception as exc:
                self._shutdown()
                return self._down(exc.__cause__ if isinstance(exc, _NvmlDown) and exc.__cause__ else exc)
        try:
            self._enumerate()
            if not self._devices:
                return self._down(None, "NVML found no GPU")
            self._drain_events()
            readings: list[GpuReading] = []
            for dev in self._devices:
                readings.extend(self._read_device(dev))
            for dev in self._gone:
                self._report(("gone", dev.uuid), None, f"GPU {dev.index} ({dev.uuid}) left NVML's device list",
                             count=False)
                readings.append(GpuReading(str(dev.index), dev.uuid, dev.name, up=False, xid_errors=dev.xid))
        except _NvmlDown as exc:
            self._shutdown()
            return self._down(exc.__cause__ or exc)
        return GpuSnapshot(True, devices=tuple(readings), driver=self._driver, timestamp=time.time())

    def _down(self, exc: BaseException | None, reason: str = "") -> GpuSnapshot:
        if not reason:
            reason = self._describe(exc)
        bug = exc is not None and self._code(exc) is None  # not an NVML error: count it as aiwatch's failure
        self._report(("nvml",), exc if bug else None, f"no NVIDIA GPU found: {reason}", count=bug)
        return GpuSnapshot(False, reason, timestamp=time.time())

    def _describe(self, exc: BaseException | None) -> str:
        if exc is None:
            return "unknown"
        if isinstance(exc, self._error_class):
            return f"{type(exc).__name__}: {exc}"
        return repr(exc)

    def _code(self, exc: BaseException) -> int | None:
        if isinstance(exc, self._error_class):
            value = getattr(exc, "value", None)
            return value if isinstance(value, int) else None
        return None

    def _init(self) -> None:
        nvml = self.nvml
        nvml.nvmlInit()
        self._initialised = True
        try:
            self._driver = _text(nvml.nvmlSystemGetDriverVersion())
        except Exception:
            self._driver = ""

    def _enumerate(self) -> None:
        """Read NVML's device count (every poll: one cheap call, so a hot-plugged GPU shows on the next poll) and,
        when it changed, open the devices again, matched by UUID: a GPU already known keeps its state (XID count
        and event registration, unsupported fields) under its new index, a new one is registered for XID events,
        and one no longer listed is kept as gone (``up`` 0, never its frozen readings)."""
        try:
            count = _count(self.nvml.nvmlDeviceGetCount(), MAX_GPUS, "GPU")
        except Exception as exc:
            code = self._code(exc)
            if self._count is None or code in _NVML_DOWN_CODES:
                raise _NvmlDown from exc
            self._report(("count",), exc, "reading NVML's GPU count failed", count=code is None)
            return  # keep the devices as last enumerated
        if count == self._count and not self._list_changed():
            return
        self._count = count
        self._recheck = False
        known = {dev.uuid: dev for dev in (*self._devices, *self._gone) if dev.uuid}
        by_index = {dev.index: dev for dev in self._devices}
        devices: list[_Device] = []
        for index in range(count):
            fresh = _Device(index, None)
            self._open(fresh, register=False)
            if fresh.uuid:
                old = known.pop(fresh.uuid, None)
            else:  # cannot be opened now: the device that had this index stays there (not up) if not seen elsewhere
                old = by_index.get(index)
                if old is not None and known.pop(old.uuid, None) is None:
                    old = None
            dev = fresh if old is None else old
            register = old is None or old.handle is None  # new, or its registration went with its handle
            if old is not None:
                old.index, old.handle, old.name = index, fresh.handle, fresh.name or old.name
                old.key = fresh.key if fresh.handle is not None else old.key
            if register and dev.handle is not None:
                self._register_events(dev)
            devices.append(dev)
        self._devices = devices
        self._gone = list(known.values())

    def _list_changed(self) -> bool:
        """Whether NVML's list may have changed although its count did not (as many GPUs left as joined): a GPU read
        until now became lost on the last poll (a GPU that left answers so), or a GPU that could not be opened can
        be now (it came back, or another GPU has its index). No NVML call but the try to open such a GPU, which
        every poll made before."""
        if self._recheck:
            return True
        for dev in self._devices:
            if dev.handle is None:
                probe = _Device(dev.index, None)
                self._open(probe, register=False)
                if probe.handle is not None:
                    return True
        return False

    def _open(self, dev: _Device, *, register: bool = True) -> None:
        """Get a device's handle, identity and (``register``) XID event registration; a device that cannot be
        opened keeps ``handle=None``."""
        nvml = self.nvml
        try:
            dev.handle = nvml.nvmlDeviceGetHandleByIndex(dev.index)
            dev.key = _handle_key(dev.handle)
            dev.uuid = _text(nvml.nvmlDeviceGetUUID(dev.handle))
            dev.name = _text(nvml.nvmlDeviceGetName(dev.handle))
        except Exception as exc:
            code = self._code(exc)
            if code in _NVML_DOWN_CODES:
                raise _NvmlDown from exc
            dev.handle = None
            self._report(("lost", str(dev.index)), exc, f"GPU {dev.index} cannot be opened",
                         count=code not in _GPU_STATE_CODES)
            return
        if register:
            self._register_events(dev)

    def _register_events(self, dev: _Device) -> None:
        nvml = self.nvml
        try:
            if self._event_set is None:
                self._event_set = nvml.nvmlEventSetCreate()
            supported = int(nvml.nvmlDeviceGetSupportedEventTypes(dev.handle))
            if supported & _XID_EVENT:
                nvml.nvmlDeviceRegisterEvents(dev.handle, _XID_EVENT, self._event_set)
                if dev.xid is None:
                    dev.xid = 0
        except Exception as exc:
            if self._code(exc) not in _NOT_SUPPORTED_CODES:
                self._report(("events", str(dev.index)), exc, f"XID events of GPU {dev.index} unavailable",
                             count=False)

    def _drain_events(self) -> None:
        if self._event_set is None:
            return
        nvml = self.nvml
        for _ in range(MAX_EVENTS_PER_POLL):
            try:
                data = nvml.nvmlEventSetWait(self._event_set, 0)
            except Exception as exc:
                code = self._code(exc)
                if code == _TIMEOUT:
                    return
                if code in _NVML_DOWN_CODES:
                    raise _NvmlDown from exc
                self._report(("events",), exc, "reading NVML events failed", count=code is None)
                return
            try:
                xid = _integer(data.eventType) & _XID_EVENT
            except Exception as exc:  # what the bindings should never return: skip that event
                self._report(("event type",), exc, "an NVML event of no known type", count=True)
                continue
            if xid:
                dev = self._event_device(data.device)
                if dev is not None and dev.xid is not None:
                    dev.xid += 1

    def _event_device(self, handle: Any) -> _Device | None:
        """The device an event names: by its handle's key (no NVML call, so also for a GPU that just fell off the
        bus or left NVML's list), else by UUID, else by NVML's index."""
        known = (*self._devices, *self._gone)
        key = _handle_key(handle)
        if key is not None:
            for dev in known:
                if dev.key is not None and dev.key == key:
                    return dev
        uuid = ""
        with contextlib.suppress(Exception):
            uuid = _text(self.nvml.nvmlDeviceGetUUID(handle))
        for dev in known:
            if uuid and dev.uuid == uuid:
                return dev
        with contextlib.suppress(Exception):
            index = int(self.nvml.nvmlDeviceGetIndex(handle))
            for dev in self._devices:
                if dev.index == index:
                    return dev
        return self._devices[0] if len(self._devices) == 1 and not self._gone else None

    def _read_device(self, dev: _Device) -> list[GpuReading]:
        key = ("lost", str(dev.index))
        if dev.handle is None:  # could not be opened when the list was read or checked this poll
            return [GpuReading(str(dev.index), dev.uuid, dev.name, up=False, xid_errors=dev.xid)]
        try:
            mig = self._read_mig_mode(dev)
            values, throttle = self._read_fields(dev.handle, dev.unsupported, str(dev.index))
            readings = [GpuReading(str(dev.index), dev.uuid, dev.name, values=values, throttle=throttle,
                                   xid_errors=dev.xid)]
            if mig:
                readings.extend(self._read_migs(dev))
            dev.lost = False
            return readings
        except _DeviceLost as lost:
            self._recheck = self._recheck or not dev.lost  # once when it gets lost: it may have left the list
            dev.lost = True
            self._report(key, lost.__cause__, f"GPU {dev.index} ({dev.uuid}) is lost or unusable", count=False)
            return [GpuReading(str(dev.index), dev.uuid, dev.name, up=False, xid_errors=dev.xid)]

    def _field(self, unsupported: set[str], where: str, name: str, fn: Callable[[], Any]) -> Any:
        """Call one NVML getter; ``None`` when the field is unavailable now or for good."""
        if name in unsupported:
            return None
        try:
            return fn()
        except Exception as exc:
            code = self._code(exc)
            if code in _NOT_SUPPORTED_CODES:
                unsupported.add(name)
                return None
            if code in _TRANSIENT_CODES:
                return None
            if code in _LOST_CODES or code in _UNUSABLE_CODES:
                raise _DeviceLost from exc
            if code in _NVML_DOWN_CODES:
                raise _NvmlDown from exc
            self._report(("field", where, name), exc, f"reading {name} of GPU {where} failed", count=True)
            return None

    def _read_fields(self, handle: Any, unsupported: set[str],
                     where: str) -> tuple[dict[str, float], dict[str, bool]]:
        nvml = self.nvml
        f = self._field
        values: dict[str, float] = {}
        # each reading is converted inside the guarded call: an odd value skips that series only
        util = f(unsupported, where, "utilization", lambda: _utilization(nvml.nvmlDeviceGetUtilizationRates(handle)))
        values.update(util or {})
        mem = f(unsupported, where, "memory_v2",
                lambda: _memory(nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)))
        if mem is None:
            mem = f(unsupported, where, "memory", lambda: _memory(nvml.nvmlDeviceGetMemoryInfo(handle)))
        values.update(mem or {})
        power = f(unsupported, where, "power", lambda: _unsigned(nvml.nvmlDeviceGetPowerUsage(handle)) / 1000.0)
        if power is not None:
            values[POWER] = power  # from milliwatts
        energy = f(unsupported, where, "energy",
                   lambda: _unsigned(nvml.nvmlDeviceGetTotalEnergyConsumption(handle), 64) / 1000.0)
        if energy is not None:
            values[ENERGY] = energy  # from millijoules
        temp = self._first(unsupported, where, _temperature, (
            ("temperature_v", getattr(nvml, "nvmlDeviceGetTemperatureV", None), (handle, _TEMPERATURE_GPU)),
            ("temperature", getattr(nvml, "nvmlDeviceGetTemperature", None), (handle, _TEMPERATURE_GPU))))
        if temp is not None:
            values[TEMPERATURE] = temp
        sm = f(unsupported, where, "sm_clock", lambda: _unsigned(nvml.nvmlDeviceGetClockInfo(handle, _CLOCK_SM)) * 1e6)
        if sm is not None:
            values[SM_CLOCK] = sm  # from MHz
        memclk = f(unsupported, where, "memory_clock",
                   lambda: _unsigned(nvml.nvmlDeviceGetClockInfo(handle, _CLOCK_MEM)) * 1e6)
        if memclk is not None:
            values[MEMORY_CLOCK] = memclk
        throttle = self._first(unsupported, where, _throttle, (  # "clocks event reasons" since driver 535
            ("throttle", getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None), (handle,)),
            ("throttle_legacy", getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None), (handle,))))
        return values, throttle or {}

    def _first(self, unsupported: set[str], where: str, convert: Callable[[Any], Any],
               candidates: Iterable[tuple[str, Callable[..., Any] | None, tuple[Any, ...]]]) -> Any:
        """The first of several NVML getters for one field that the bindings have and the device supports, its
        value through ``convert``."""
        for name, fn, args in candidates:
            if fn is None or name in unsupported:
                continue
            value = self._field(unsupported, where, name,
                                lambda fn=fn, args=args: convert(fn(*args)))  # type: ignore[misc]
            if value is not None or name not in unsupported:
                return value
        return None

    def _read_mig_mode(self, dev: _Device) -> bool:
        """Whether the GPU is in MIG mode now. When its mode changed, the fields it did not support are asked for
        again: NVML answers NOT_SUPPORTED for a GPU's utilization only while it is in MIG mode."""
        current: int | None = self._field(dev.unsupported, str(dev.index), "mig_mode",
                                          lambda: _integer(self.nvml.nvmlDeviceGetMigMode(dev.handle)[0]))
        if current is None:
            return False
        if dev.mig_mode is not None and current != dev.mig_mode:
            dev.unsupported.clear()
        dev.mig_mode = current
        return current == _MIG_ENABLED

    def _read_migs(self, dev: _Device) -> list[GpuReading]:
        nvml = self.nvml
        where = str(dev.index)
        count = self._field(dev.unsupported, where, "mig_count",
                            lambda: _count(nvml.nvmlDeviceGetMaxMigDeviceCount(dev.handle), MAX_MIG_DEVICES,
                                                 "MIG device")) or 0
        readings: list[GpuReading] = []
        for slot in range(count):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(dev.handle, slot)
            except Exception as exc:
                code = self._code(exc)
                if code in _NOT_FOUND_CODES or code in _NOT_SUPPORTED_CODES:
                    continue  # an empty MIG slot
                if code in _LOST_CODES:
                    raise _DeviceLost from exc
                if code in _NVML_DOWN_CODES:
                    raise _NvmlDown from exc
                self._report(("mig", where, str(slot)), exc, f"MIG slot {slot} of GPU {where}", count=code is None)
                continue
            try:
                gi = str(int(nvml.nvmlDeviceGetGpuInstanceId(mig)))
                ci = str(int(nvml.nvmlDeviceGetComputeInstanceId(mig)))
                uuid = _text(nvml.nvmlDeviceGetUUID(mig))
                name = _text(nvml.nvmlDeviceGetName(mig))
            except Exception as exc:
                code = self._code(exc)
                if code in _LOST_CODES:
                    raise _DeviceLost from exc
                if code in _NVML_DOWN_CODES:
                    raise _NvmlDown from exc
                if code not in _NOT_FOUND_CODES:  # the instance went away between two calls otherwise
                    self._report(("mig", where, str(slot)), exc, f"MIG slot {slot} of GPU {where}",
                                 count=code is None)
                continue
            unsupported = dev.mig_unsupported.setdefault((gi, ci), set())
            values, throttle = self._read_fields(mig, unsupported, f"{where}/mig{gi}.{ci}")
            readings.append(GpuReading(where, uuid, name, gi, ci, values=values, throttle=throttle))
        return readings

    def _shutdown(self) -> None:
        nvml = self.nvml
        if self._event_set is not None:
            with contextlib.suppress(Exception):
                nvml.nvmlEventSetFree(self._event_set)
            self._event_set = None
        if self._initialised:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()
        self._initialised = False
        self._devices = []
        self._gone = []
        self._count = None

    def _report(self, key: tuple[str, ...], exc: BaseException | None, message: str, *, count: bool) -> None:
        """Log a condition once when it starts; ``count`` also counts it as an aiwatch failure, at every poll it
        lasts: counted once, AiwatchInstrumentationErrors (an increase over 10m) resolved while the field was still
        skipped, and nothing else showed its series missing."""
        self._failing.add(key)
        if key in self._reported:
            if count and exc is not None:
                count_error("gpu", self.metrics)
            return
        self._reported.add(key)
        if count and exc is not None:
            record_error("gpu", exc, self.metrics)
        with contextlib.suppress(Exception):
            logger.warning("aiwatch: %s%s", message, f" ({self._describe(exc)})" if exc is not None else "")


def _family(name: str, labels: Iterable[str] = GPU_LABELS) -> Metric:
    spec = SPECS[name]
    if spec.kind == "counter":
        return CounterMetricFamily(name, spec.help, labels=list(labels))
    return GaugeMetricFamily(name, spec.help, labels=list(labels))


def snapshot_families(snap: GpuSnapshot) -> list[Metric]:
    """The contract's GPU metric families for one snapshot; families without a sample are left out."""
    nvml_up = GaugeMetricFamily("aiwatch_gpu_nvml_up", SPECS["aiwatch_gpu_nvml_up"].help,
                                value=1.0 if snap.nvml_up else 0.0)
    families: list[Metric] = [nvml_up]
    if snap.timestamp:
        families.append(GaugeMetricFamily("aiwatch_gpu_last_poll_timestamp_seconds",
                                          SPECS["aiwatch_gpu_last_poll_timestamp_seconds"].help,
                                          value=snap.timestamp))
    up = _family("aiwatch_gpu_up")
    for dev in snap.devices:
        up.add_metric(dev.labels, 1.0 if dev.up else 0.0)  # type: ignore[attr-defined]
    families.append(up)
    for name in VALUE_METRICS:
        fam = _family(name)
        for dev in snap.devices:
            value = dev.values.get(name)
            if value is not None:
                fam.add_metric(dev.labels, value)  # type: ignore[attr-defined]
        families.append(fam)
    throttle = _family("aiwatch_gpu_throttle_reason", (*GPU_LABELS, "reason"))
    for dev in snap.devices:
        for reason, active in dev.throttle.items():
            throttle.add_metric((*dev.labels, reason), 1.0 if active else 0.0)  # type: ignore[attr-defined]
    families.append(throttle)
    xid = _family("aiwatch_gpu_xid_errors_total")
    for dev in snap.devices:
        if dev.xid_errors is not None:
            xid.add_metric(dev.labels, float(dev.xid_errors))  # type: ignore[attr-defined]
    families.append(xid)
    return [fam for fam in families if fam.samples]


class GpuCollector(Collector):
    """A prometheus_client collector exporting the ``aiwatch_gpu_*`` metrics of the contract.

    ``GpuCollector()`` creates a :class:`GpuPoller` (``interval``, ``nvml``), starts its thread (``start=True``)
    and registers on ``registry`` (default prometheus_client's global one; ``None`` registers nowhere). Pass an
    existing ``poller`` to share one. It exports :meth:`GpuPoller.status`: from the start, ``aiwatch_gpu_nvml_up``
    and the last-poll timestamp are there, even while the first NVML call hangs.
    """

    def __init__(self, poller: GpuPoller | None = None, *, interval: float | None = None,
                 nvml: ModuleType | None = None, registry: CollectorRegistry | None = REGISTRY,
                 metrics: Metrics | None = None, start: bool = True) -> None:
        start = flag(start, "start")
        if metrics is None:
            metrics = get_metrics(registry)
        self.poller = poller if poller is not None else GpuPoller(interval, nvml=nvml, metrics=metrics)
        self.metrics = metrics
        self._cached: tuple[GpuSnapshot, list[Metric]] | None = None
        self._registry = registry
        if registry is not None:
            registry.register(self)
        if start:
            self.poller.start()

    def describe(self) -> Iterable[Metric]:
        names = ["aiwatch_gpu_up", *VALUE_METRICS, "aiwatch_gpu_xid_errors_total"]
        yield GaugeMetricFamily("aiwatch_gpu_nvml_up", SPECS["aiwatch_gpu_nvml_up"].help)
        yield GaugeMetricFamily("aiwatch_gpu_last_poll_timestamp_seconds",
                                SPECS["aiwatch_gpu_last_poll_timestamp_seconds"].help)
        yield _family("aiwatch_gpu_throttle_reason", (*GPU_LABELS, "reason"))
        for name in names:
            yield _family(name)

    def collect(self) -> Iterator[Metric]:
        snap = self.poller.status()
        cached = self._cached
        if cached is not None and cached[0] is snap:
            return iter(cached[1])  # snapshots are immutable: build a snapshot's families once
        try:
            families = snapshot_families(snap)
        except Exception as exc:
            record_error("gpu", exc, self.metrics)
            return iter(())
        self._cached = (snap, families)
        return iter(families)

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the poller (waiting ``timeout`` seconds at most, as for :meth:`GpuPoller.stop`) and unregister from
        the registry (idempotent; never raises)."""
        self.poller.stop(timeout)
        registry, self._registry = self._registry, None
        if registry is not None:
            with contextlib.suppress(KeyError):
                registry.unregister(self)


class _Subset(Collector):
    def __init__(self, source: CollectorRegistry, names: set[str]) -> None:
        self.source = source
        self.names = names

    def collect(self) -> Iterable[Metric]:
        return [fam for fam in self.source.collect() if fam.name in self.names]


class GpuMetricsServer:
    """What :func:`serve_gpu_metrics` started: the collector (with its poller) and the HTTP server."""

    def __init__(self, collector: GpuCollector, server: Any, thread: threading.Thread) -> None:
        self.collector = collector
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop serving and polling (idempotent; never raises), in about ``timeout`` seconds at most even when NVML
        hangs (a ``timeout`` that is no number of seconds: as for :meth:`GpuPoller.stop`)."""
        timeout = _stop_timeout(timeout, self.collector.metrics)
        # the HTTP server notices a shutdown within its 0.5 s poll: stop it while the poller stops
        shutdown = threading.Thread(target=self.server.shutdown, name="aiwatch-gpu-http-shutdown", daemon=True)
        shutdown.start()
        self.collector.close(timeout)
        shutdown.join()
        self.server.server_close()
        self.thread.join(timeout)


def serve_gpu_metrics(port: int, addr: str = "127.0.0.1", *, interval: float | None = None,
                      nvml: ModuleType | None = None) -> GpuMetricsServer:
    """Poll the GPUs and serve only the ``aiwatch_gpu_*`` metrics on ``http://addr:port/metrics`` from daemon
    threads (``port=0`` picks a free port: see ``.port``). This is the one-poller-per-host setup: call it once per
    machine, e.g. in gunicorn's master (``when_ready``) or through ``aiwatch gpu --serve PORT`` as a sidecar, and
    add the port as a second scrape target. A ``port`` that is no integer from 0 to 65535 raises ``ValueError``."""
    import prometheus_client

    if port.__class__ is not int or not 0 <= port <= 65535:  # the socket's own errors for these are cryptic
        raise ValueError(f"the GPU metrics port must be 0-65535, got {shown(port)}")

    registry = CollectorRegistry()
    # private: of the direct metrics only the error counter is served, here and only here (in memory, not in
    # PROMETHEUS_MULTIPROC_DIR, which the workers of a gunicorn master running this merge into their /metrics)
    metrics = Metrics(CollectorRegistry(), in_process=True)
    registry.register(_Subset(metrics.registry, {"aiwatch_instrumentation_errors"}))
    collector = GpuCollector(interval=interval, nvml=nvml, registry=registry, metrics=metrics, start=False)
    server, thread = prometheus_client.start_http_server(port, addr=addr, registry=registry)
    collector.poller.start()
    return GpuMetricsServer(collector, server, thread)


def format_table(snap: GpuSnapshot) -> str:
    """A human-readable table of a snapshot (what ``aiwatch gpu`` prints)."""
    if not snap.nvml_up:
        return f"no NVIDIA GPU found: {snap.reason}"
    head = ("gpu", "mig", "name", "up", "util", "mem used/total GiB", "power W", "temp C", "sm MHz", "throttle",
            "xid")
    rows: list[tuple[str, ...]] = [head]
    gib = 1024.0 ** 3

    def num(dev: GpuReading, name: str, scale: float = 1.0, fmt: str = "{:.0f}") -> str:
        value = dev.values.get(name)
        return "-" if value is None else fmt.format(value / scale)

    for dev in snap.devices:
        mig = f"{dev.mig_gi}.{dev.mig_ci}" if dev.mig_gi else ""
        util = dev.values.get(UTILIZATION)
        used, total = dev.values.get(MEMORY_USED), dev.values.get(MEMORY_TOTAL)
        mem = "-" if used is None or total is None else f"{used / gib:.1f}/{total / gib:.1f}"
        active = ",".join(r for r, on in dev.throttle.items() if on) or ("none" if dev.throttle else "-")
        rows.append((dev.gpu, mig, dev.name, "yes" if dev.up else "LOST",
                     "-" if util is None else f"{util:.0%}", mem, num(dev, POWER, fmt="{:.1f}"),
                     num(dev, TEMPERATURE), num(dev, SM_CLOCK, 1e6), active,
                     "-" if dev.xid_errors is None else str(dev.xid_errors)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"NVIDIA driver {snap.driver or 'unknown'}, {sum(1 for d in snap.devices if not d.mig_gi)} GPU(s)"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)
