"""The host's processes through psutil: a process's CPU share and RSS, a process tree's RSS, killing
a tree, the system's CPU load. A process that has gone (or cannot be read) is data, never a crash:
the readings are None (or 0 bytes for a tree) and a kill of a gone process is a no-op.

The host's RAM and the environment record are in ``hw.device`` and ``hw.env``.
"""

from __future__ import annotations

import os
import resource
import sys

import psutil


class ProcessProbe:
    """Readings of one process (default: this one). ``cpu_percent`` is psutil's share since the
    previous call (the first call primes it and is meaningless), 100 = one core."""

    def __init__(self, pid: int | None = None) -> None:
        self._proc = psutil.Process(os.getpid() if pid is None else pid)

    def cpu_and_rss(self) -> tuple[float | None, int | None]:
        """(CPU percent since the last call, resident set in bytes); (None, None) once it is gone."""
        try:
            return self._proc.cpu_percent(interval=None), self._proc.memory_info().rss
        except psutil.Error:
            return None, None

    def tree_rss_bytes(self) -> int:
        """RSS of the process and every descendant (DataLoader workers) in bytes; the ones gone
        count 0."""
        total = 0
        try:
            family = [self._proc, *self._proc.children(recursive=True)]
        except psutil.Error:
            return 0
        for p in family:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total


def descendants(pid: int | None = None) -> list[psutil.Process]:
    """Every process ``pid`` (default: this one) started, recursively; [] when it is gone."""
    try:
        return psutil.Process(os.getpid() if pid is None else pid).children(recursive=True)
    except psutil.Error:
        return []


def kill_all(processes: list[psutil.Process]) -> None:
    """SIGKILL each process; one already gone is skipped."""
    for p in processes:
        try:
            p.kill()
        except psutil.Error:
            pass


def system_cpu_percent(interval_seconds: float | None = None) -> float:
    """The whole machine's CPU load, 0-100: over ``interval_seconds`` (blocking), or since the
    previous call when None."""
    return psutil.cpu_percent(interval=interval_seconds)


def own_peak_rss_bytes() -> int:
    """This process's peak RSS since it started its program (bytes). Honest only in a process that ran
    one point.

    On Linux this is ``VmHWM``: the high-water mark of this program's own address space. Not
    ``ru_maxrss``, which a child keeps from before its ``exec`` -- the RSS it had as a fork of its
    parent -- so a probe child of a 1.4 GB pytest process "peaked" at 1.4 GB whatever its batch.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB
