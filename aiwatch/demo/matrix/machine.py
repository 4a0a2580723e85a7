"""How busy the machine was while the matrix ran: its own CPU, other work's, and the CPU pressure."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from aiwatch.demo.processes import Supervisor


class CpuMeter:
    """CPU time on this machine (Linux ``/proc``): the matrix's own (this process and its children) and everyone
    else's, so a result can say how busy the machine was with other work while the matrix ran."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.tick = os.sysconf("SC_CLK_TCK")
        self.started = time.process_time()

    def ours(self) -> dict[str, float]:
        """CPU seconds of each kind of child so far, and of this process since the meter was made."""
        out: dict[str, float] = {}
        for child in self.supervisor.children:
            try:
                fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            kind = child.name.rsplit("-", 1)[-1]
            out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / self.tick
        out["matrix runner"] = time.process_time() - self.started
        return out

    def machine_busy(self) -> float:
        """CPU seconds the whole machine has been busy (every CPU, every process)."""
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError):
            return math.nan
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / self.tick

    def reading(self) -> tuple[float, float, float, float]:
        """(wall time, machine busy seconds, our CPU seconds, CPU pressure stall seconds) now."""
        return time.monotonic(), self.machine_busy(), sum(self.ours().values()), self.stalled()

    @staticmethod
    def stalled() -> float:
        """Seconds during which some task waited for a CPU (Linux pressure stall information), ``nan`` without."""
        try:
            some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
            return int(some.rsplit("total=", 1)[1]) / 1e6
        except (OSError, IndexError, ValueError):
            return math.nan

    @staticmethod
    def pressure(before: tuple[float, ...], after: tuple[float, ...]) -> float:
        """Share of the time between two readings during which some task waited for a CPU."""
        wall = after[0] - before[0]
        return (after[3] - before[3]) / wall if wall > 0 else math.nan

    @staticmethod
    def others_cores(before: tuple[float, ...], after: tuple[float, ...]) -> float:
        """Cores other work kept busy on average between two readings."""
        wall = after[0] - before[0]
        return max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / wall if wall > 0 else math.nan
