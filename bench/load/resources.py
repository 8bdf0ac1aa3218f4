"""CPU time and memory of server processes, read from /proc (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def memory_bytes(pid: int) -> int:
    """Proportional set size (shared pages split between their users) where the kernel
    tells it, else the resident set size."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pids_named(name: str) -> list[int]:
    """Every process whose command name is `name` (PostgreSQL's postmaster and backends)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@dataclass
class ResourceMeter:
    """CPU used by a set of processes between start() and stop(), and their peak memory
    among the samples taken."""

    pids: list[int]
    _first: dict[int, float] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)
    started_at: float = 0.0
    peak_bytes: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0

    def start(self, now: float) -> None:
        self.started_at = now
        for pid in self.pids:
            try:
                self._first[pid] = cpu_seconds(pid)
            except OSError:
                continue
        self.sample()

    def sample(self) -> None:
        """Memory now, and each process's CPU so far (a process that exits keeps the CPU it
        was last seen to have used)."""
        total = 0
        for pid in self._first:
            try:
                total += memory_bytes(pid)
                self._last[pid] = cpu_seconds(pid)
            except OSError:
                continue
        self.peak_bytes = max(self.peak_bytes, total)

    def stop(self, now: float) -> dict[str, float]:
        self.sample()
        self.cpu_s = sum(self._last.get(pid, cpu) - cpu for pid, cpu in self._first.items())
        self.wall_s = now - self.started_at
        return {"cpu_seconds": round(self.cpu_s, 2),
                "cpu_cores": round(self.cpu_s / self.wall_s, 2) if self.wall_s else 0.0,
                "memory_mib": round(self.peak_bytes / 2**20, 1)}
