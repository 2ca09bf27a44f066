"""Background sampler: NVML (through a GpuMonitor) and psutil, every ``interval_seconds``.

It runs for a whole point (so host peak RSS covers warm-up too) and the runner marks the timed
window; ``summary(t0, t1)`` averages only samples taken inside it. One sample is taken
synchronously at each window edge so even a short window has readings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.hw import host
from bench.hw.nvml import GpuMonitor, GpuSample, NullMonitor, decode_clock_event_reasons
from bench.results.schema import Telemetry


@dataclass(frozen=True)
class Reading:
    t: float  # seconds on the sampler's clock
    gpu: GpuSample
    process_cpu_percent: float | None
    system_cpu_percent: float | None
    rss_bytes: int | None


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _max(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


class Sampler:
    """start() -> (run) -> stop(); then summary(t0, t1) and peak_rss_bytes()."""

    def __init__(
        self,
        monitor: GpuMonitor | None = None,
        interval_seconds: float = 0.05,
        clock: Callable[[], float] = time.perf_counter,
        process: host.ProcessProbe | None = None,
        cpu_percent: Callable[[], float] | None = None,
    ) -> None:
        self.monitor = monitor or NullMonitor("no GPU in use")
        self.interval_seconds = interval_seconds
        self.clock = clock
        self._proc = process or host.ProcessProbe()
        self._system_cpu = cpu_percent or host.system_cpu_percent
        self.readings: list[Reading] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> Reading:
        proc_cpu, rss = self._proc.cpu_and_rss()
        try:
            sys_cpu: float | None = self._system_cpu()
        except Exception:
            sys_cpu = None
        return Reading(self.clock(), self.monitor.sample(), proc_cpu, sys_cpu, rss)

    def sample_now(self) -> None:
        reading = self._read()
        with self._lock:
            self.readings.append(reading)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            self.sample_now()

    def start(self) -> Sampler:
        self._read()  # prime psutil's cpu_percent deltas; the first reading is meaningless
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def peak_rss_bytes(self) -> int | None:
        with self._lock:
            return _max([r.rss_bytes for r in self.readings])  # type: ignore[return-value]

    def summary(self, t0: float, t1: float) -> Telemetry:
        """Averages over readings taken within [t0, t1] (the timed window)."""
        with self._lock:
            inside = [r for r in self.readings if t0 <= r.t <= t1]
        if not inside:
            return Telemetry()
        gpu = [r.gpu for r in inside]
        mask = 0
        for g in gpu:
            mask |= g.clock_event_mask or 0
        # "gpu_idle" in a busy window is only the sampler catching a gap; keep it, it is data.
        return Telemetry(
            samples=len(inside),
            gpu_kernel_active_percent=_mean([g.kernel_active_percent for g in gpu]),
            gpu_memory_controller_percent=_mean([g.memory_controller_percent for g in gpu]),
            power_watts_mean=_mean([g.power_watts for g in gpu]),
            power_watts_max=_max([g.power_watts for g in gpu]),
            sm_clock_mhz_mean=_mean([g.sm_clock_mhz for g in gpu]),
            temperature_c_max=_max([g.temperature_c for g in gpu]),
            clock_event_reasons=decode_clock_event_reasons(mask),
            process_cpu_percent=_mean([r.process_cpu_percent for r in inside]),
            system_cpu_percent=_mean([r.system_cpu_percent for r in inside]),
            gpm_sm_active_percent=_mean([g.gpm_sm_active_percent for g in gpu]),
            gpm_tensor_active_percent=_mean([g.gpm_tensor_active_percent for g in gpu]),
            gpm_dram_bandwidth_percent=_mean([g.gpm_dram_bandwidth_percent for g in gpu]),
        )


BUSY_CPU_PERCENT = 25.0  # other processes using more than this share of all cores: warn


def busy_cpu_notice(
    interval_seconds: float = 0.5, cpu_percent: Callable[[float], float] | None = None
) -> str | None:
    """A notice when the machine is already busy before measuring starts (None when it is idle).

    On a CPU run, another CPU-bound process competes for the same cores, and with PyTorch's
    spinning worker threads that can slow steps down several-fold: the numbers would measure the
    neighbour, not the model. ``cpu_percent(interval)`` is psutil's system-wide reading (0-100).
    """
    read = cpu_percent or host.system_cpu_percent
    busy = read(interval_seconds)
    if busy is None or busy <= BUSY_CPU_PERCENT:
        return None
    return (
        f"the machine was {busy:.0f}% busy before the sweep started (other processes): "
        "CPU-bound numbers will be slower and noisier than on an idle machine"
    )
