#!/usr/bin/env python3
"""Check aiwatch's GPU collector against the real NVML on a machine with an NVIDIA GPU.

    python scripts/gpu_check.py                  # needs aiwatch (this checkout), nvidia-ml-py, prometheus-client
    python scripts/gpu_check.py --allow-missing aiwatch_gpu_energy_joules_total   # a card without the counter

It polls through the real pynvml, scrapes the collector, checks every ``aiwatch_gpu_*`` metric of the contract is
present for every whole GPU with a plausible value, runs the background poller for a moment (the energy counter
must not go down, the poll timestamp must advance, a scrape must not call NVML), forks a child that must poll NVML
itself from its first scrape (as a gunicorn worker does), prints a table and exits 1 on any failure (including when
NVML sees no GPU). MIG devices are checked for what NVML reports on them (memory), and for reporting nothing else.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry, generate_latest

from aiwatch.metrics import Metrics
from aiwatch.signals.gpu import THROTTLE_REASONS, GpuCollector, GpuReading, format_table

GIB = 1024.0**3
#: metric -> (low, high) plausible range, checked on every whole GPU
RANGES: dict[str, tuple[float, float]] = {
    "aiwatch_gpu_utilization_ratio": (0.0, 1.0),
    "aiwatch_gpu_memory_utilization_ratio": (0.0, 1.0),
    "aiwatch_gpu_memory_total_bytes": (1 * GIB, 512 * GIB),
    "aiwatch_gpu_memory_used_bytes": (0.0, 512 * GIB),
    "aiwatch_gpu_memory_reserved_bytes": (0.0, 64 * GIB),
    "aiwatch_gpu_power_watts": (1.0, 2000.0),
    "aiwatch_gpu_energy_joules_total": (0.0, 1e15),
    "aiwatch_gpu_temperature_celsius": (5.0, 110.0),
    "aiwatch_gpu_sm_clock_hertz": (1e7, 5e9),
    "aiwatch_gpu_memory_clock_hertz": (1e7, 2e10),
}
WHOLE_GPU_ONLY = ("aiwatch_gpu_utilization_ratio", "aiwatch_gpu_memory_utilization_ratio", "aiwatch_gpu_power_watts",
                  "aiwatch_gpu_energy_joules_total", "aiwatch_gpu_temperature_celsius", "aiwatch_gpu_sm_clock_hertz",
                  "aiwatch_gpu_memory_clock_hertz")
MIG_RANGES = {k: RANGES[k] for k in ("aiwatch_gpu_memory_total_bytes", "aiwatch_gpu_memory_used_bytes")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow-missing", action="append", default=[], metavar="METRIC",
                        help="a metric this GPU model does not report (repeatable)")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to run the background poller")
    parser.add_argument("--fork-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long past its own wait a forked child may take to exit before it counts as hung "
                             "and is killed")
    args = parser.parse_args(argv)

    failures: list[str] = []
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    collector = GpuCollector(registry=registry, metrics=metrics, interval=0.5, start=False)
    poller = collector.poller
    t0 = time.perf_counter()
    snap = poller.poll_once()
    first_poll = time.perf_counter() - t0
    print(format_table(snap))
    print(f"\nfirst poll (NVML init + read): {first_poll * 1000:.1f} ms")
    if not snap.nvml_up:
        print(f"FAIL: NVML is down: {snap.reason}")
        return 1
    v = registry.get_sample_value

    def check(dev: GpuReading, ranges: dict[str, tuple[float, float]]) -> None:
        lab = dict(zip(("gpu", "uuid", "name", "mig_gi", "mig_ci"), dev.labels, strict=True))
        where = f"gpu {dev.gpu}" + (f" mig {dev.mig_gi}.{dev.mig_ci}" if dev.mig_gi else "")
        if v("aiwatch_gpu_up", lab) != 1.0:
            failures.append(f"{where}: aiwatch_gpu_up is {v('aiwatch_gpu_up', lab)}")
            return
        if not dev.uuid.startswith(("GPU-", "MIG-")):
            failures.append(f"{where}: odd uuid {dev.uuid!r}")
        for name, (low, high) in ranges.items():
            value = v(name, lab)
            if value is None:
                if name not in args.allow_missing:
                    failures.append(f"{where}: {name} missing")
            elif not low <= value <= high:
                failures.append(f"{where}: {name} = {value} outside [{low}, {high}]")
        if dev.mig_gi:
            # NVML has these for the whole GPU only (the collector's MIG tests assume NOT_SUPPORTED on a MIG handle):
            # a MIG device with one of them would repeat its parent's reading under its own labels
            extra = [name for name in WHOLE_GPU_ONLY if v(name, lab) is not None]
            if extra:
                failures.append(f"{where}: a MIG device reports {', '.join(extra)}")
            return
        used, total = v("aiwatch_gpu_memory_used_bytes", lab), v("aiwatch_gpu_memory_total_bytes", lab)
        if used is not None and total is not None and used > total:
            failures.append(f"{where}: memory used {used} > total {total}")
        reasons = [v("aiwatch_gpu_throttle_reason", {**lab, "reason": r}) for _, r in THROTTLE_REASONS]
        if any(r is None for r in reasons) and "aiwatch_gpu_throttle_reason" not in args.allow_missing:
            failures.append(f"{where}: aiwatch_gpu_throttle_reason missing")
        elif any(r not in (0.0, 1.0) for r in reasons if r is not None):
            failures.append(f"{where}: throttle reasons not 0/1: {reasons}")
        xid = v("aiwatch_gpu_xid_errors_total", lab)
        if xid is None and "aiwatch_gpu_xid_errors_total" not in args.allow_missing:
            failures.append(f"{where}: aiwatch_gpu_xid_errors_total missing (XID events not registered)")

    for dev in snap.devices:
        mig_parent = any(d.mig_gi and d.gpu == dev.gpu for d in snap.devices)
        if dev.mig_gi:
            check(dev, MIG_RANGES)
        elif mig_parent:  # NVML reports no utilization for a GPU in MIG mode
            check(dev, {k: r for k, r in RANGES.items() if "utilization" not in k})
        else:
            check(dev, RANGES)
    if v("aiwatch_gpu_nvml_up") != 1.0:
        failures.append("aiwatch_gpu_nvml_up is not 1")
    errors = v("aiwatch_instrumentation_errors_total", {"component": "gpu"})
    if errors:
        failures.append(f"aiwatch_instrumentation_errors_total{{component=gpu}} = {errors}")

    # the background poller: timestamps advance, energy never goes down, scrapes are cheap
    energy0 = {d.gpu: d.values.get("aiwatch_gpu_energy_joules_total") for d in snap.devices if not d.mig_gi}
    ts0 = snap.timestamp
    poller.start()
    time.sleep(args.seconds)
    scrapes = 50
    t0 = time.perf_counter()
    for _ in range(scrapes):
        body = generate_latest(registry)
    scrape_ms = (time.perf_counter() - t0) / scrapes * 1000
    latest = poller.snapshot
    failures += forked_child_polls(collector, registry, args.seconds, args.fork_timeout)
    collector.close()
    assert latest is not None
    if not latest.timestamp > ts0:
        failures.append("the background poller did not poll")
    for d in latest.devices:
        before, after = energy0.get(d.gpu), d.values.get("aiwatch_gpu_energy_joules_total")
        if not d.mig_gi and before is not None and after is not None and after < before:
            failures.append(f"gpu {d.gpu}: energy counter went down ({before} -> {after})")
    print(f"scrape of {len(body)} bytes: {scrape_ms:.3f} ms (no NVML call); polls ran for {args.seconds:.1f} s")
    print("\n" + "\n".join(line for line in body.decode().splitlines() if line.startswith("aiwatch_gpu")))
    if failures:
        print("\nFAIL:\n  " + "\n  ".join(failures))
        return 1
    print(f"\nOK: every aiwatch_gpu_* metric present and plausible on {len(snap.devices)} device(s)")
    return 0


def forked_child_polls(collector: GpuCollector, registry: CollectorRegistry, seconds: float,
                       timeout: float = 30.0) -> list[str]:
    """Fork; the child scrapes (which starts its own poller, NVML initialised in the child) and must export a poll
    made after the fork with NVML up. A child still running ``timeout`` seconds after its own wait (e.g. stuck on a
    lock another thread held at the fork) is killed and reported. The failures, if any (none where os.fork does not
    exist)."""
    if not hasattr(os, "fork") or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return []
    at_fork = collector.poller.snapshot
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            registry.get_sample_value("aiwatch_gpu_up")  # the first scrape starts the child's poller
            deadline = time.monotonic() + max(seconds, 3.0)
            while time.monotonic() < deadline and collector.poller.snapshot is at_fork:
                time.sleep(0.05)
            snap = collector.poller.status()
            ok = snap is not at_fork and snap.nvml_up and registry.get_sample_value("aiwatch_gpu_nvml_up") == 1.0
        finally:
            os._exit(0 if ok else 1)
    limit = max(seconds, 3.0) + timeout
    deadline = time.monotonic() + limit
    done, status = os.waitpid(pid, os.WNOHANG)
    while done == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        done, status = os.waitpid(pid, os.WNOHANG)
    if done == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return [f"a forked child had not exited {limit:.0f} s after the fork (hung, e.g. on a lock another thread "
                "held at the fork): killed it"]
    if os.waitstatus_to_exitcode(status) != 0:
        return ["a forked child did not poll NVML itself (stale or NVML down in the child)"]
    print("forked child: polled NVML itself after the fork")
    return []


if __name__ == "__main__":
    sys.exit(main())
