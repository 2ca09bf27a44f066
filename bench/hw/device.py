"""The one place that queries ``torch.cuda`` for device state (and psutil for the host's free RAM).

``Device`` is the small interface the runner needs: synchronise, peak memory, cache cleanup and a
step timer. ``CpuDevice`` and ``CudaDevice`` implement it; tests pass their own fakes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psutil

from bench.hw import fake_cuda
from bench.results.errors import BenchError


class StepTimer:
    """Times individual steps. ``start``/``stop`` bracket one step; ``collect`` returns seconds.

    The default uses a host clock; callers synchronise the device around the whole window, and on
    CPU every op is synchronous, so a host clock is exact there.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._start: float | None = None
        self._pending: list[float] = []

    def start(self) -> None:
        self._start = self._clock()

    def stop(self) -> None:
        assert self._start is not None, "stop() without start()"
        self._pending.append(self._clock() - self._start)
        self._start = None

    def collect(self) -> list[float]:
        out, self._pending = self._pending, []
        return out


class CudaEventTimer(StepTimer):
    """Per-step CUDA events: recorded on the stream without a host sync, read after the window.

    Synchronising every step would insert a bubble and understate throughput; events measure the
    device's own time between the start and end markers of each step. The events are reused: those
    read by ``collect`` (called after each synchronised chunk) time the next chunk, so a point
    creates as many as its longest chunk needs, not two per step held to its end.
    """

    def __init__(self, torch: Any) -> None:
        self._torch = torch
        self._pool: list[Any] = []  # events free to record again
        self._pairs: list[tuple[Any, Any]] = []
        self._current: Any = None

    def _event(self) -> Any:
        return self._pool.pop() if self._pool else self._torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        ev = self._event()
        ev.record()
        self._current = ev

    def stop(self) -> None:
        ev = self._event()
        ev.record()
        self._pairs.append((self._current, ev))
        self._current = None

    def collect(self) -> list[float]:
        if self._pairs:
            self._pairs[-1][1].synchronize()
        out = [start.elapsed_time(end) / 1000.0 for start, end in self._pairs]  # ms -> s
        self._pool.extend(ev for pair in self._pairs for ev in pair)
        self._pairs = []
        return out


class Device:
    """Interface. ``kind`` is "cpu" or "cuda"; ``index`` is the CUDA ordinal or None."""

    kind = "cpu"
    index: int | None = None
    torch_device: str = "cpu"

    def synchronize(self) -> None:
        pass

    def make_timer(self) -> StepTimer:
        return StepTimer()

    def reset_peak(self) -> None:
        pass

    def peak_allocated_bytes(self) -> int | None:
        return None

    def peak_reserved_bytes(self) -> int | None:
        return None

    def allocated_bytes(self) -> int | None:
        return None

    def total_bytes(self) -> int | None:
        return None

    def free_bytes(self) -> int | None:
        return None

    def empty_cache(self) -> None:
        pass

    def uuid(self) -> str | None:
        return None

    def name(self) -> str | None:
        """The accelerator's name ('NVIDIA H100 80GB HBM3'); None on CPU."""
        return None

    def alloc_retries(self) -> int | None:
        return None

    def memory_fraction(self) -> float | None:
        """The share of the device the caching allocator may reserve (None: no cap to read)."""
        return None

    def set_memory_fraction(self, fraction: float) -> None:
        """Cap the caching allocator at ``fraction`` of the device (1.0: uncapped). No-op on CPU."""


class CpuDevice(Device):
    pass


class CudaDevice(Device):
    kind = "cuda"

    def __init__(self, torch: Any, index: int, tensor_device: str | None = None) -> None:
        """``tensor_device``: where tensors go, when not this GPU (``bench.hw.fake_cuda``: the CPU)."""
        self._torch = torch
        self.index = index
        self.torch_device = tensor_device or f"cuda:{index}"
        torch.cuda.set_device(index)

    def synchronize(self) -> None:
        self._torch.cuda.synchronize(self.index)

    def make_timer(self) -> StepTimer:
        return CudaEventTimer(self._torch)

    def reset_peak(self) -> None:
        self._torch.cuda.reset_peak_memory_stats(self.index)

    def peak_allocated_bytes(self) -> int | None:
        return int(self._torch.cuda.max_memory_allocated(self.index))

    def peak_reserved_bytes(self) -> int | None:
        return int(self._torch.cuda.max_memory_reserved(self.index))

    def allocated_bytes(self) -> int | None:
        return int(self._torch.cuda.memory_allocated(self.index))

    def total_bytes(self) -> int | None:
        return int(self._torch.cuda.get_device_properties(self.index).total_memory)

    def free_bytes(self) -> int | None:
        free, _total = self._torch.cuda.mem_get_info(self.index)
        return int(free)

    def empty_cache(self) -> None:
        self._torch.cuda.empty_cache()

    def uuid(self) -> str | None:
        uuid = getattr(self._torch.cuda.get_device_properties(self.index), "uuid", None)
        return None if uuid is None else str(uuid)

    def name(self) -> str | None:
        return str(self._torch.cuda.get_device_name(self.index))

    def alloc_retries(self) -> int | None:
        """Times the caching allocator had to free its cache and retry (a sign of pressure)."""
        stats = self._torch.cuda.memory_stats(self.index)
        return int(stats.get("num_alloc_retries", 0))

    def memory_fraction(self) -> float | None:
        get = getattr(self._torch.cuda, "get_per_process_memory_fraction", None)  # torch >= 2.9
        return float(get(self.index)) if get is not None else None

    def set_memory_fraction(self, fraction: float) -> None:
        """``torch.cuda.set_per_process_memory_fraction``: an allocation past the cap raises
        torch.cuda.OutOfMemoryError, and cuDNN/cuBLAS size their workspaces to what is left, as on a
        device of that size (``--memory-limit`` on a GPU)."""
        self._torch.cuda.set_per_process_memory_fraction(fraction, self.index)


def parse_device(spec: str) -> tuple[str, int | None]:
    """'cpu' -> ('cpu', None); 'cuda' -> ('cuda', 0); 'cuda:1' -> ('cuda', 1)."""
    text = spec.strip().lower()
    if text == "cpu":
        return "cpu", None
    if text == "cuda":
        return "cuda", 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return "cuda", int(text[5:])
    raise BenchError(f"unknown device {spec!r}: use cpu, cuda or cuda:N")


def _torch() -> Any:
    """torch, with ``bench.hw.fake_cuda``'s fake over torch.cuda when ``BENCH_FAKE_CUDA`` asks for it."""
    import torch

    try:
        fake_cuda.install_from_env()
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    return torch


def cuda_device_count() -> int:
    """CUDA devices torch can see (0 without a GPU or a CUDA build)."""
    return int(_torch().cuda.device_count())


def host_available_bytes() -> int:
    """RAM a new allocation can have now without swapping, in bytes (psutil's ``available``)."""

    return int(psutil.virtual_memory().available)


def default_device() -> str:
    torch = _torch()
    return "cuda" if torch.cuda.is_available() else "cpu"


def open_device(spec: str) -> Device:
    """The Device for 'cpu' / 'cuda' / 'cuda:N'; BenchError if that GPU is not there."""
    kind, index = parse_device(spec)
    if kind == "cpu":
        return CpuDevice()
    torch = _torch()
    if not torch.cuda.is_available():
        raise BenchError(f"--device {spec} asked for a GPU, but torch sees no CUDA device here")
    count = torch.cuda.device_count()
    if index is None or index >= count:
        raise BenchError(f"--device {spec}: only {count} CUDA device(s) visible")

    return CudaDevice(torch, index, "cpu" if fake_cuda.active() is not None else None)


def check_device(spec: str) -> None:
    """Validate a device string without initialising CUDA state we keep."""
    kind, index = parse_device(spec)
    if kind == "cuda":
        torch = _torch()
        if not torch.cuda.is_available():
            raise BenchError(f"--device {spec} asked for a GPU, but torch sees no CUDA device here")
        if index is not None and index >= torch.cuda.device_count():
            raise BenchError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible")
