"""CPU time and memory of the stack's processes, read from /proc (Linux): what a benchmark phase cost them."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Stat:
    ppid: int
    cpu: float  # seconds: utime + stime + cutime + cstime (children it has waited for)


@dataclass(frozen=True, slots=True)
class Sample:
    role: str
    cpu: float  # seconds: the process, its waited-for children, and its live descendants
    rss: int  # bytes, VmRSS
    peak: int  # bytes, VmHWM


def stat(pid: int) -> Stat | None:
    """Parent and CPU seconds of one process; None once it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
    fields = text[text.rfind(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return Stat(ppid=int(fields[1]), cpu=(utime + stime + cutime + cstime) / TICKS)


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes; zeros once the process is gone."""
    values = {"VmRSS:": 0, "VmHWM:": 0}
    try:
        lines = (PROC / str(pid) / "status").read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0, 0
    for line in lines:
        key, _, rest = line.partition(":")
        key += ":"
        if key in values:
            values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS:"], values["VmHWM:"]


def all_stats() -> dict[int, Stat]:
    stats = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (found := stat(int(entry.name))) is not None:
            stats[int(entry.name)] = found
    return stats


def tree_cpu(pid: int, stats: dict[int, Stat], children: dict[int, list[int]]) -> float | None:
    """CPU seconds of ``pid`` and its live descendants. A child that exited and was waited for is in
    its parent's cutime/cstime; a live one is not yet, so adding it counts nothing twice."""
    if pid not in stats:
        return None
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        total += stats[current].cpu
        stack += children.get(current, [])
    return total


class Meter:
    """Samples the processes ``watched()`` names (pid -> role) every ``interval`` seconds.

    A process that exits keeps its last sample (up to ``interval`` old): an executor that restarts
    itself still counts with what it spent, and a new one counts from zero.
    """

    def __init__(self, watched: Callable[[], Iterable[tuple[int, str]]], interval: float = 0.5) -> None:
        self.watched = watched
        self.interval = interval
        self.samples: dict[int, Sample] = {}  # every pid ever seen, in the order first seen
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meter", daemon=True)

    def __enter__(self) -> Meter:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> dict[int, Sample]:
        """Sample the watched processes now; returns every pid's latest sample."""
        with self._lock:
            stats = all_stats()
            children: dict[int, list[int]] = {}
            for child, found in stats.items():
                children.setdefault(found.ppid, []).append(child)
            for pid, role in list(self.watched()):
                cpu = tree_cpu(pid, stats, children)
                if cpu is None:
                    continue  # gone: its last sample stands
                rss, peak = memory(pid)
                self.samples[pid] = Sample(role, cpu, rss, peak)
            return dict(self.samples)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far by role; two of these, subtracted, are a phase's cost."""
        totals: dict[str, float] = {}
        for found in self.sample().values():
            totals[found.role] = totals.get(found.role, 0.0) + found.cpu
        return totals

    def pids(self, role: str) -> list[int]:
        return [pid for pid, found in self.samples.items() if found.role == role]


def spent(before: dict[str, float], after: dict[str, float], role: str) -> float:
    return after.get(role, 0.0) - before.get(role, 0.0)
