"""Who else used the CPU while a point ran: the machine's busy CPU time against this process
tree's own (psutil), read at the start and the end of the point.

The own tree is this process, its live descendants (an isolated point's child, DataLoader
workers) and the descendants already waited for (the kernel adds their times to this process's
``children_*``), so a point's child that finished before the second reading still counts as own.
Whatever else the machine's cores did in between was another process's work. ``FakeCpuLoad``
beside it scripts a neighbour for tests (``default_meter`` is what a sweep uses; tests replace it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import psutil


@dataclass(frozen=True)
class CpuLoadReading:
    t_seconds: float  # a monotonic clock
    machine_busy_seconds: float  # CPU time of every core, every process (steal included: a neighbour VM)
    own_busy_seconds: float  # this process tree's CPU time
    cpus: int  # logical cores


class CpuLoadMeter(Protocol):
    def read(self) -> CpuLoadReading: ...


def others_cores(start: CpuLoadReading, end: CpuLoadReading) -> float | None:
    """Cores' worth of CPU other processes used between two readings (0 .. cpus); None when no
    time passed."""
    elapsed = end.t_seconds - start.t_seconds
    if elapsed <= 0:
        return None
    others = (end.machine_busy_seconds - start.machine_busy_seconds) - (
        end.own_busy_seconds - start.own_busy_seconds
    )
    return min(max(others / elapsed, 0.0), float(end.cpus))


class PsutilCpuLoad:
    """The real meter (Linux, macOS, Windows: psutil's cpu_times)."""

    def __init__(self, pid: int | None = None) -> None:
        self._proc = psutil.Process(pid or os.getpid())
        self._cpus = psutil.cpu_count(logical=True) or 1

    def _own_seconds(self) -> float:
        total = 0.0
        for p in [self._proc, *self._descendants()]:
            try:
                t = p.cpu_times()
            except psutil.Error:  # gone between listing and reading
                continue
            total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
        return total

    def _descendants(self) -> list[psutil.Process]:
        try:
            return self._proc.children(recursive=True)
        except psutil.Error:
            return []

    def read(self) -> CpuLoadReading:
        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        guest = getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)  # already inside user/nice
        busy = sum(t) - idle - guest
        return CpuLoadReading(time.monotonic(), busy, self._own_seconds(), self._cpus)


class FakeCpuLoad:
    """A machine with ``cpus`` cores on which other processes use ``others`` cores' worth of CPU
    (a number, or a function of the reading's index) and this tree ``own`` cores, one second per
    reading: ``others_cores`` between consecutive readings is exactly the scripted value."""

    def __init__(self, others: float | Callable[[int], float] = 0.0, own: float = 1.0, cpus: int = 2) -> None:
        self._others = others if callable(others) else (lambda i, v=others: v)
        self.own = own
        self.cpus = cpus
        self.reads = 0
        self._machine = 0.0
        self._own = 0.0

    def read(self) -> CpuLoadReading:
        if self.reads:
            self._own += self.own
            self._machine += self.own + self._others(self.reads - 1)
        reading = CpuLoadReading(float(self.reads), self._machine, self._own, self.cpus)
        self.reads += 1
        return reading


def default_meter() -> CpuLoadMeter:
    """The meter a sweep watches its points with (tests/conftest.py puts an idle fake here)."""
    return PsutilCpuLoad()
