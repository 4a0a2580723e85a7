"""A stand-in for the ``pynvml`` module, for machines without an NVIDIA GPU.

It implements exactly the NVML calls :mod:`aiwatch.signals.gpu` makes, returns values from plain Python objects the
test controls, and raises the *real* ``pynvml`` error classes (``pynvml.NVMLError(code)`` builds the right
``NVMLError_*`` subclass), so the collector's error handling is the code that runs against a real driver.

    nvml = FakeNVML.with_gpus(8)
    nvml.gpus[3].lost = True                          # GPU 3 fell off the bus
    nvml.gpus[1].fail["power"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    nvml.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    nvml.gpus.append(fake_gpu(8))                     # a GPU hot-plugged: NVML's count grows (pop() shrinks it)
    nvml.hang["nvmlInit"] = threading.Event()         # nvmlInit hangs until the test sets that event
"""

from __future__ import annotations

import collections
import ctypes
import threading
import types
from dataclasses import dataclass, field
from typing import Any

import pynvml

NVMLError = pynvml.NVMLError


def err(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


@dataclass
class FakeMig:
    gi: int
    ci: int
    uuid: str
    name: str
    memory_total: int = 10 * 1024**3
    memory_used: int = 1 * 1024**3
    memory_reserved: int = 64 * 1024**2
    #: what NVML's handle of this device points to: every handle of it has this address
    device: pynvml.struct_c_nvmlDevice_t = field(default_factory=pynvml.struct_c_nvmlDevice_t, repr=False,
                                                 compare=False)


@dataclass
class FakeGpu:
    index: int
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    util_gpu: int = 50
    util_memory: int = 25
    memory_total: int = 80 * 1024**3
    memory_used: int = 20 * 1024**3
    memory_reserved: int = 512 * 1024**2
    power_mw: int = 300_000
    energy_mj: int = 1_000_000
    temperature: int = 55
    sm_mhz: int = 1980
    mem_mhz: int = 2619
    throttle: int = 0x4  # sw_power_cap
    events: int = pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypeSingleBitEccError
    lost: bool = False
    mig_mode: int | None = None  # None: MIG not supported (raises NOT_SUPPORTED)
    migs: list[FakeMig] = field(default_factory=list)
    max_migs: int = 7
    #: field name -> NVML error code to raise from that getter
    fail: dict[str, int] = field(default_factory=dict)
    #: a driver that answers a MIG handle's whole-GPU fields (power, temperature, clocks, ...) with this GPU's
    mig_reports_whole_gpu: bool = False
    #: what NVML's handle of this GPU points to: every handle of it has this address
    device: pynvml.struct_c_nvmlDevice_t = field(default_factory=pynvml.struct_c_nvmlDevice_t, repr=False,
                                                 compare=False)


def fake_gpu(i: int) -> FakeGpu:
    """GPU ``i`` as :meth:`FakeNVML.with_gpus` makes it (its UUID, power and temperature derive from ``i``)."""
    return FakeGpu(i, f"GPU-{i:08d}-aaaa-bbbb-cccc-{i:012d}", util_gpu=10 * i % 101, power_mw=100_000 + 10_000 * i,
                   energy_mj=5_000_000 + i, temperature=40 + i)


class Handle(pynvml.c_nvmlDevice_t):  # type: ignore[misc]  # pynvml has no type hints
    """A device handle as pynvml's: a new ctypes pointer object on every call (never the same Python object twice),
    pointing to the same address for the same device. ``gpu`` / ``mig`` are for the fake's own bookkeeping."""

    _type_ = pynvml.struct_c_nvmlDevice_t

    def __init__(self, gpu: FakeGpu, mig: FakeMig | None = None) -> None:
        super().__init__((mig or gpu).device)
        self.gpu = gpu
        self.mig = mig


def address(handle: Any) -> int | None:
    return ctypes.cast(handle, ctypes.c_void_p).value


class EventData:
    def __init__(self, device: Handle, event_type: int, data: int) -> None:
        # what pynvml's c_nvmlEventData_t.device gives: a plain pointer to the device, none of the fake's attributes
        self.device = pynvml.c_nvmlDevice_t(device.contents)
        self.eventType = event_type
        self.eventData = data
        self.gpuInstanceId = 0xFFFFFFFF
        self.computeInstanceId = 0xFFFFFFFF


class FakeNVML(types.ModuleType):
    """A module object with the pynvml names the collector uses."""

    def __init__(self, gpus: list[FakeGpu] | None = None) -> None:
        super().__init__("pynvml")
        for name in dir(pynvml):  # constants and error classes come from the real module
            if name.startswith(("NVML_", "NVMLError", "nvmlEventType", "nvmlClocks", "nvmlMemory")):
                setattr(self, name, getattr(pynvml, name))
        self.gpus: list[FakeGpu] = gpus or []
        self.init_error: int | None = None
        self.count_error: int | None = None
        self.event_set_error: int | None = None
        self.initialised = False
        self.calls: collections.Counter[str] = collections.Counter()
        self.events: collections.deque[EventData] = collections.deque()
        self.block: threading.Event | None = None  # when set, nvmlDeviceGetPowerUsage waits on it
        self.blocked = threading.Event()
        #: NVML function name -> an event the call waits for (a hung driver call); ``blocked`` is set on entry
        self.hang: dict[str, threading.Event] = {}
        self.driver = "550.54.15"
        #: as pynvml's: loading the library and counting nvmlInit happen under it
        self.libLoadLock = threading.Lock()

    @classmethod
    def with_gpus(cls, n: int) -> FakeNVML:
        return cls([fake_gpu(i) for i in range(n)])

    def xid(self, gpu: int, code: int = 79) -> None:
        """The driver reports XID ``code`` on GPU ``gpu``."""
        self.events.append(EventData(Handle(self.gpus[gpu]), pynvml.nvmlEventTypeXidCriticalError, code))

    # --- helpers --------------------------------------------------------------------------------------------
    def _call(self, name: str) -> None:
        self.calls[name] += 1
        hang = self.hang.get(name)
        if hang is not None:
            self.blocked.set()
            hang.wait()
        if not self.initialised and name not in ("nvmlInit", "nvmlShutdown"):
            raise err(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: Any) -> FakeGpu | None:
        """The listed GPU a handle points to (by address, as NVML knows its handles), ``None`` if none is."""
        return next((g for g in self.gpus if address(handle) == ctypes.addressof(g.device)), None)

    def _dev(self, handle: Handle, fieldname: str) -> FakeGpu:
        gpu = getattr(handle, "gpu", None) or self._gpu(handle)
        # a handle of a GPU removed from the list: lost too
        if gpu is None or gpu.lost or not any(g is gpu for g in self.gpus):
            raise err(pynvml.NVML_ERROR_GPU_IS_LOST)
        if fieldname in gpu.fail:
            raise err(gpu.fail[fieldname])
        return gpu

    # --- the NVML API -------------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        with self.libLoadLock:
            self._call("nvmlInit")
            if self.init_error is not None:
                raise err(self.init_error)
            self.initialised = True

    def nvmlShutdown(self) -> None:
        self._call("nvmlShutdown")
        if not self.initialised:
            raise err(pynvml.NVML_ERROR_UNINITIALIZED)
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._call("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        self._call("nvmlDeviceGetCount")
        if self.count_error is not None:
            raise err(self.count_error)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        self._call("nvmlDeviceGetHandleByIndex")
        if index >= len(self.gpus):
            raise err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        if gpu.lost:
            raise err(pynvml.NVML_ERROR_GPU_IS_LOST)
        if "handle" in gpu.fail:
            raise err(gpu.fail["handle"])
        return Handle(gpu)

    def nvmlDeviceGetIndex(self, handle: Handle) -> int:
        self._call("nvmlDeviceGetIndex")
        gpu = self._gpu(handle)
        for index, listed in enumerate(self.gpus):  # NVML's index is the position in its current list
            if listed is gpu:
                return index
        raise err(pynvml.NVML_ERROR_GPU_IS_LOST)

    def nvmlDeviceGetUUID(self, handle: Handle) -> str:
        self._call("nvmlDeviceGetUUID")
        mig: FakeMig | None = getattr(handle, "mig", None)  # an event's handle is a plain pointer
        if mig is not None:
            return mig.uuid
        return self._dev(handle, "uuid").uuid

    def nvmlDeviceGetName(self, handle: Handle) -> bytes:
        self._call("nvmlDeviceGetName")
        name = handle.mig.name if handle.mig is not None else self._dev(handle, "name").name
        return name.encode()  # older pynvml versions return bytes: the collector decodes either

    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> Any:
        self._call("nvmlDeviceGetUtilizationRates")
        gpu = self._dev(handle, "utilization")
        if handle.mig is not None or gpu.mig_mode == pynvml.NVML_DEVICE_MIG_ENABLE:
            raise err(pynvml.NVML_ERROR_NOT_SUPPORTED)  # as NVML answers for a GPU in MIG mode, too
        return types.SimpleNamespace(gpu=gpu.util_gpu, memory=gpu.util_memory)

    def nvmlDeviceGetMemoryInfo(self, handle: Handle, version: int | None = None) -> Any:
        self._call("nvmlDeviceGetMemoryInfo")
        gpu = self._dev(handle, "memory_v2" if version else "memory")
        src: Any = handle.mig if handle.mig is not None else gpu
        free = src.memory_total - src.memory_used - src.memory_reserved
        if version:
            assert version == pynvml.nvmlMemory_v2
            return types.SimpleNamespace(version=version, total=src.memory_total, reserved=src.memory_reserved,
                                         free=free, used=src.memory_used)
        return types.SimpleNamespace(total=src.memory_total, free=free, used=src.memory_used)

    def _whole_gpu_only(self, handle: Handle, fieldname: str) -> FakeGpu:
        gpu = self._dev(handle, fieldname)
        if handle.mig is not None and not gpu.mig_reports_whole_gpu:
            raise err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def nvmlDeviceGetPowerUsage(self, handle: Handle) -> int:
        self._call("nvmlDeviceGetPowerUsage")
        if self.block is not None:
            self.blocked.set()
            self.block.wait()
        return self._whole_gpu_only(handle, "power").power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Handle) -> int:
        self._call("nvmlDeviceGetTotalEnergyConsumption")
        return self._whole_gpu_only(handle, "energy").energy_mj

    def nvmlDeviceGetTemperature(self, handle: Handle, sensor: int) -> int:
        self._call("nvmlDeviceGetTemperature")
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._whole_gpu_only(handle, "temperature").temperature

    def nvmlDeviceGetClockInfo(self, handle: Handle, clock: int) -> int:
        self._call("nvmlDeviceGetClockInfo")
        if clock == pynvml.NVML_CLOCK_SM:
            return self._whole_gpu_only(handle, "sm_clock").sm_mhz
        assert clock == pynvml.NVML_CLOCK_MEM
        return self._whole_gpu_only(handle, "memory_clock").mem_mhz

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Handle) -> int:
        self._call("nvmlDeviceGetCurrentClocksEventReasons")
        return self._whole_gpu_only(handle, "throttle").throttle

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Handle) -> int:
        self._call("nvmlDeviceGetCurrentClocksThrottleReasons")
        return self._whole_gpu_only(handle, "throttle_legacy").throttle

    def nvmlDeviceGetMigMode(self, handle: Handle) -> list[int]:
        self._call("nvmlDeviceGetMigMode")
        gpu = self._dev(handle, "mig_mode")
        if gpu.mig_mode is None:
            raise err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [gpu.mig_mode, gpu.mig_mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Handle) -> int:
        self._call("nvmlDeviceGetMaxMigDeviceCount")
        return self._dev(handle, "mig_count").max_migs

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Handle, index: int) -> Handle:
        self._call("nvmlDeviceGetMigDeviceHandleByIndex")
        gpu = self._dev(handle, "mig_handle")
        if index >= len(gpu.migs):
            raise err(pynvml.NVML_ERROR_NOT_FOUND)
        return Handle(gpu, gpu.migs[index])

    def nvmlDeviceGetGpuInstanceId(self, handle: Handle) -> int:
        self._call("nvmlDeviceGetGpuInstanceId")
        if handle.mig is None:
            raise err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle.mig.gi

    def nvmlDeviceGetComputeInstanceId(self, handle: Handle) -> int:
        self._call("nvmlDeviceGetComputeInstanceId")
        if handle.mig is None:
            raise err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle.mig.ci

    def nvmlEventSetCreate(self) -> object:
        self._call("nvmlEventSetCreate")
        if self.event_set_error is not None:
            raise err(self.event_set_error)
        return object()

    def nvmlEventSetFree(self, event_set: object) -> None:
        self._call("nvmlEventSetFree")

    def nvmlDeviceGetSupportedEventTypes(self, handle: Handle) -> int:
        self._call("nvmlDeviceGetSupportedEventTypes")
        return self._dev(handle, "events").events

    def nvmlDeviceRegisterEvents(self, handle: Handle, event_types: int, event_set: object) -> None:
        self._call("nvmlDeviceRegisterEvents")
        gpu = self._dev(handle, "register_events")
        if event_types & ~gpu.events:
            raise err(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlEventSetWait(self, event_set: object, timeout_ms: int) -> EventData:
        self._call("nvmlEventSetWait")
        assert timeout_ms == 0, "the poller must never wait for events"
        if not self.events:
            raise err(pynvml.NVML_ERROR_TIMEOUT)
        return self.events.popleft()
