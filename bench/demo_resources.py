"""CPU and memory of ``aiwatch demo --headless`` (runner + gateway + inference), read from /proc while it runs.

    python bench/demo_resources.py            # a 60 s cycle
    python bench/demo_resources.py --quick    # a 20 s cycle
    python bench/demo_resources.py --transport http   # the HTTP hop instead of the default (gRPC with grpcio)

Samples the demo's process tree every 0.5 s: CPU = utime + stime ticks of every process in the tree (the busiest
1-second-ish window and the average over the run), memory = the sum of VmRSS of the tree (peak) and per process.
Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, cpu ticks, command name) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), name


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def tree(root: int) -> dict[int, tuple[int, str]]:
    """pid -> (cpu ticks, role) of ``root`` and its descendants."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None:
                stats[int(entry)] = found
    members = {root}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _, _) in stats.items():
            if ppid in members and pid not in members:
                members.add(pid)
                changed = True
    out = {}
    for pid in members:
        if pid in stats:
            cmd = _cmdline(pid)
            role = ("inference" if "demo.inference" in cmd else "gateway" if "demo.gateway" in cmd
                    else "runner + load generator" if pid == root else stats[pid][2])
            out[pid] = (stats[pid][1], role)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 20 s cycle instead of 60 s")
    parser.add_argument("--transport", choices=("grpc", "http"), default=None,
                        help="the demo's gateway -> inference hop (default: the demo's default)")
    args = parser.parse_args()
    duration = 20 if args.quick else 60
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "aiwatch", "demo", "--headless", "--duration", str(duration)]
    if args.transport:
        cmd += ["--transport", args.transport]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last_ticks: dict[int, int] = {}
    total_ticks = 0
    peak_rss, peak_window_cpu = 0, 0.0
    peak_role_rss: dict[str, int] = {}
    last_t = time.monotonic()
    while proc.poll() is None:
        time.sleep(0.5)
        now = time.monotonic()
        members = tree(proc.pid)
        window = 0
        rss = 0
        for pid, (ticks, role) in members.items():
            window += ticks - last_ticks.get(pid, 0)
            last_ticks[pid] = ticks
            size = _rss(pid)
            rss += size
            peak_role_rss[role] = max(peak_role_rss.get(role, 0), size)
        total_ticks += window
        peak_rss = max(peak_rss, rss)
        peak_window_cpu = max(peak_window_cpu, window / TICK / (now - last_t))
        last_t = now
    wall = time.monotonic() - start
    output = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        print(output)
        return 1
    print(output.split("\n\n", 1)[-1].strip())
    print()
    print(f"command: {' '.join(cmd[1:])}   wall {wall:.1f} s on {os.cpu_count()} CPUs")
    print(f"CPU: average {total_ticks / TICK / wall:.2f} cores over the run (start-up included), "
          f"busiest 0.5 s window {peak_window_cpu:.2f} cores")
    print(f"memory: peak RSS of the process tree {peak_rss / 2**20:.0f} MiB; per process: "
          + ", ".join(f"{role} {size / 2**20:.0f} MiB" for role, size in sorted(peak_role_rss.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
