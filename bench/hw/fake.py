"""A scripted stand-in for the ``pynvml`` module, for tests and for users testing their own tools.

Pass an instance wherever bench accepts ``nvml=``. Each reading pops the next value from a script
(the last value repeats), so a test knows exactly what the sampler should average.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from bench.hw.device import StepTimer


class FakeNVMLError(Exception):
    """Raised for a sensor the fake was told is unsupported (like NVMLError_NotSupported)."""


@dataclass
class _Series:
    values: list[Any]
    i: int = 0

    def next(self) -> Any:
        value = self.values[min(self.i, len(self.values) - 1)]
        self.i += 1
        return value


class FakeNvml:
    """Fake pynvml. ``unsupported`` names NVML functions that raise, as on drivers without them."""

    def __init__(
        self,
        *,
        name: str = "Fake GPU 80GB",
        memory_total: int = 80 * 2**30,
        memory_free: int = 70 * 2**30,
        gpu_util: Sequence[float] = (50.0,),
        mem_util: Sequence[float] = (20.0,),
        power_mw: Sequence[int] = (300_000,),
        sm_clock_mhz: Sequence[int] = (1980,),
        temperature_c: Sequence[int] = (60,),
        clock_event_mask: Sequence[int] = (0,),
        energy_mj: Sequence[int] = (1_000_000,),
        processes: Sequence[tuple[int, int]] = (),
        driver: str = "999.99",
        unsupported: Sequence[str] = (),
        init_error: Exception | None = None,
        gpm: Sequence[tuple[float | None, float | None, float | None]] = (),
        gpm_api: bool = True,
    ) -> None:
        """``gpm``: GPM readings (SM active %, tensor active %, DRAM bandwidth %) returned by
        successive ``nvmlGpmMetricsGet`` calls, None for a metric NVML reports unsupported; empty:
        the device is not GPM-capable (``isSupportedDevice`` 0, as before Hopper). ``gpm_api``
        False: a pynvml too old to have the GPM functions at all."""
        self._name = name
        self._memory_total = memory_total
        self._memory_free = memory_free
        self._util = _Series(list(zip(gpu_util, mem_util, strict=False)) or [(0, 0)])
        self._power = _Series(list(power_mw))
        self._clock = _Series(list(sm_clock_mhz))
        self._temp = _Series(list(temperature_c))
        self._mask = _Series(list(clock_event_mask))
        self._energy = _Series(list(energy_mj))
        self._processes = list(processes)
        self._driver = driver
        self._unsupported = set(unsupported)
        self._init_error = init_error
        self.calls: list[str] = []
        self._gpm = _Series(list(gpm)) if gpm else None
        self.gpm_samples_live = 0  # allocated and not yet freed
        if gpm_api:  # bound per instance so an "older pynvml" has no such attributes
            self.nvmlGpmQueryDeviceSupport = self._gpm_query_device_support
            self.nvmlGpmSampleAlloc = self._gpm_sample_alloc
            self.nvmlGpmSampleFree = self._gpm_sample_free
            self.nvmlGpmSampleGet = self._gpm_sample_get
            self.nvmlGpmMetricsGet = self._gpm_metrics_get
            self.c_nvmlGpmMetricsGet_t = _FakeGpmMetricsGet

    def _check(self, fn: str) -> None:
        self.calls.append(fn)
        if fn in self._unsupported:
            raise FakeNVMLError(f"{fn}: Not Supported")

    def nvmlInit(self) -> None:
        if self._init_error is not None:
            raise self._init_error
        self._check("nvmlInit")

    def nvmlShutdown(self) -> None:
        self._check("nvmlShutdown")

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        self._check("nvmlDeviceGetHandleByIndex")
        if index != 0:
            raise FakeNVMLError("Invalid Argument")
        return "handle0"

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        self._check("nvmlDeviceGetHandleByUUID")
        return "handle0"

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        self._check("nvmlDeviceGetUUID")
        return "GPU-00000000-0000-0000-0000-000000000000"

    def nvmlDeviceGetName(self, handle: Any) -> str:
        self._check("nvmlDeviceGetName")
        return self._name

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check("nvmlSystemGetDriverVersion")
        return self._driver

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        self._check("nvmlDeviceGetMemoryInfo")
        total, free = self._memory_total, self._memory_free
        return SimpleNamespace(total=total, free=free, used=total - free)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        self._check("nvmlDeviceGetUtilizationRates")
        gpu, mem = self._util.next()
        return SimpleNamespace(gpu=gpu, memory=mem)

    def nvmlDeviceGetFieldValues(self, handle: Any, field_ids: list[int]) -> list[Any]:
        self._check("nvmlDeviceGetFieldValues")
        power = self._power.next()
        return [SimpleNamespace(nvmlReturn=0, value=SimpleNamespace(uiVal=power)) for _ in field_ids]

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        self._check("nvmlDeviceGetPowerUsage")
        return self._power.next()

    def nvmlDeviceGetClockInfo(self, handle: Any, clock_type: int) -> int:
        self._check("nvmlDeviceGetClockInfo")
        return self._clock.next()

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        self._check("nvmlDeviceGetTemperature")
        return self._temp.next()

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        self._check("nvmlDeviceGetCurrentClocksEventReasons")
        return self._mask.next()

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        self._check("nvmlDeviceGetTotalEnergyConsumption")
        return self._energy.next()

    # --- GPM (Hopper+)
    def _gpm_query_device_support(self, handle: Any) -> Any:
        self._check("nvmlGpmQueryDeviceSupport")
        return SimpleNamespace(version=1, isSupportedDevice=1 if self._gpm is not None else 0)

    def _gpm_sample_alloc(self) -> Any:
        self._check("nvmlGpmSampleAlloc")
        self.gpm_samples_live += 1
        return SimpleNamespace(taken=0)

    def _gpm_sample_free(self, sample: Any) -> None:
        self._check("nvmlGpmSampleFree")
        self.gpm_samples_live -= 1

    def _gpm_sample_get(self, handle: Any, sample: Any) -> None:
        self._check("nvmlGpmSampleGet")
        sample.taken += 1

    def _gpm_metrics_get(self, request: Any) -> Any:
        self._check("nvmlGpmMetricsGet")
        if request.sample1 is request.sample2 or not (request.sample1.taken and request.sample2.taken):
            raise FakeNVMLError("nvmlGpmMetricsGet: Invalid Argument (two distinct samples needed)")
        assert self._gpm is not None
        values = dict(zip((2, 5, 10), self._gpm.next(), strict=True))  # SM_UTIL, ANY_TENSOR, DRAM_BW
        for m in request.metrics[: request.numMetrics]:
            value = values.get(m.metricId)
            m.nvmlReturn, m.value = (3, 0.0) if value is None else (0, float(value))  # 3: NotSupported
        return request

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        self._check("nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self._processes]


class _FakeGpmMetricsGet:
    """pynvml's ``c_nvmlGpmMetricsGet_t``: the request and the answers of ``nvmlGpmMetricsGet``."""

    def __init__(self) -> None:
        self.version = 0
        self.numMetrics = 0
        self.sample1: Any = None
        self.sample2: Any = None
        self.metrics = [SimpleNamespace(metricId=0, nvmlReturn=0, value=0.0) for _ in range(8)]


# --------------------------------------------------------------------------- a simulated CUDA device


STICKY_MESSAGE = (  # what torch raises after an out-of-bounds kernel access (a sticky error)
    "CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be asynchronously "
    "reported at some other API call, so the stacktrace below might be incorrect.\nFor debugging "
    "consider passing CUDA_LAUNCH_BLOCKING=1"
)


class FakeCudaDevice:
    """A CUDA device simulated on the CPU, for tests of what only a GPU shows and for users'
    tools: memory and time follow a script shaped like the first H100 run of bench (``h100``).

    Tensors live on the CPU (``torch_device`` "cpu"); a model built by ``model()`` reports every
    forward to ``run_step``, which advances ``clock`` and the simulated memory:

    - memory of a training step at batch b: ``fixed_bytes + per_sample_bytes * b`` (allocated), the
      caching allocator reserving ``reserve_overhead`` more; when the reserved bytes would pass
      the capacity (``total_bytes``, or the cap ``set_memory_fraction`` set) the step raises
      ``torch.cuda.OutOfMemoryError`` with CUDA's message.
    - cuDNN autotuning, only while ``torch.backends.cudnn.benchmark`` is on (as ``precision_mode``
      sets it; ``cudnn_benchmark`` True/False overrides): the first step of a new batch shape (cached
      per shape, for the life of the device) costs ``autotune_seconds`` more, scaled by the share of
      ``autotune_algorithms`` that ``torch.backends.cudnn.benchmark_limit`` lets it try (at torch's
      default of 10: ``autotune_seconds``; 0 tries all), and, for batches up to ``spike_until``,
      carries a workspace of ``autotune_spike_bytes``, cut to what the device has left (PyTorch skips
      algorithms whose workspace it cannot allocate), cached until ``empty_cache``. Steady steps of a
      tuned shape hold ``benchmark_workspace_bytes`` more (the fastest algorithms' workspace).
    - cuBLAS's workspace (``cublas_workspace_bytes``) is allocated at the first step and stays
      allocated: ``empty_cache`` never returns it, as on a real device.
    - ``sticky_at``: a step at that batch raises the illegal-memory-access error torch raises
      (``torch.AcceleratorError``); from then on every step, ``synchronize`` and ``empty_cache``
      raise it too (the context is dead), while the memory counters still read.
    - a step takes ``step_overhead_seconds + step_seconds_per_sample * b`` of the fake clock.

    It implements ``bench.hw.device.Device`` (kind "cuda") and is a plain class here so this module
    keeps importing nothing of torch at import time.
    """

    kind = "cuda"
    index = 0
    torch_device = "cpu"

    def __init__(
        self,
        clock: Any,
        *,
        total_bytes: int = 80 * 2**30,
        fixed_bytes: int = 300 * 2**20,
        per_sample_bytes: int = 40 * 2**20,
        reserve_overhead: float = 0.05,
        autotune_seconds: float = 20.0,
        autotune_algorithms: int = 10,
        autotune_spike_bytes: int = 900 * 2**20,
        spike_until: int = 32,
        benchmark_workspace_bytes: int = 0,
        cublas_workspace_bytes: int = 0,
        step_overhead_seconds: float = 0.045,
        step_seconds_per_sample: float = 0.0002,
        cudnn_benchmark: bool | None = None,
        sticky_at: int | None = None,
    ) -> None:
        self.clock = clock
        self.total = total_bytes
        self.fixed = fixed_bytes
        self.per_sample = per_sample_bytes
        self.overhead = reserve_overhead
        self.autotune_seconds = autotune_seconds
        self.autotune_algorithms = autotune_algorithms
        self.spike = autotune_spike_bytes
        self.spike_until = spike_until
        self.benchmark_workspace = benchmark_workspace_bytes
        self.cublas_workspace = cublas_workspace_bytes
        self.step_overhead = step_overhead_seconds
        self.per_sample_seconds = step_seconds_per_sample
        self.cudnn_benchmark = cudnn_benchmark
        self.sticky_at = sticky_at
        self.dead: str | None = None  # the sticky error's message, once one happened
        self.tuned: set[int] = set()  # batch shapes autotuned so far (the process-wide cache)
        self.autotune_seconds_spent = 0.0
        self.fraction = 1.0  # torch.cuda.set_per_process_memory_fraction
        self.fractions_set: list[float] = []
        self.allocated = 0  # held between steps (cuBLAS's workspace)
        self.reserved = 0  # cached by the allocator; empty_cache returns it to ``allocated``
        self.peak_alloc = 0
        self.peak_res = 0
        self.steps = 0
        self.syncs = 0

    @classmethod
    def h100(cls, clock: Any, **overrides: Any) -> FakeCudaDevice:
        """Shaped like EfficientNet-b0 bf16 channels-last on the first H100 run
        (``fixtures/h100-80gb-hbm3``): 79.18 GiB; steady 524 MiB at batch 8 and about 43 MiB a sample
        (2.83 GiB at 64); batch 1's first step with autotuning 940 MiB; 20-40 s of autotuning per new
        shape; 45 ms steps up to batch 64 (host-bound); a 32 MiB cuBLAS workspace (Hopper). Reserved:
        524 MiB steady at batch 8, 940 MiB in batch 1's first step, 885 MiB at 16 (906 measured)."""
        shape: dict[str, Any] = dict(
            total_bytes=int(79.18 * 2**30), fixed_bytes=123 * 2**20, per_sample_bytes=43 * 2**20,
            reserve_overhead=0.05, autotune_seconds=25.0, autotune_spike_bytes=697 * 2**20, spike_until=8,
            cublas_workspace_bytes=32 * 2**20, step_overhead_seconds=0.045, step_seconds_per_sample=0.0002,
        )  # fmt: skip
        return cls(clock, **{**shape, **overrides})

    def _benchmark(self) -> bool:
        if self.cudnn_benchmark is not None:
            return self.cudnn_benchmark
        import torch

        return bool(torch.backends.cudnn.benchmark)

    def _autotune_cost(self) -> float:
        import torch

        limit = int(torch.backends.cudnn.benchmark_limit)
        tried = self.autotune_algorithms if limit == 0 else min(limit, self.autotune_algorithms)
        return self.autotune_seconds * tried / min(10, self.autotune_algorithms)

    def _sticky(self) -> None:
        if self.dead is not None:
            import torch

            raise torch.AcceleratorError(self.dead)

    # --- what a fake model calls
    def run_step(self, batch_size: int) -> None:
        self._sticky()
        if self.sticky_at is not None and batch_size == self.sticky_at:
            self.dead = STICKY_MESSAGE
            self._sticky()
        cap = self.total * self.fraction
        if not self.steps and self.cublas_workspace:  # cublasCreate's workspace, kept for good
            self.allocated += self.cublas_workspace
        need = self.fixed + self.per_sample * batch_size
        spike = 0
        benchmark = self._benchmark()
        if benchmark and batch_size not in self.tuned:
            cost = self._autotune_cost()
            self.clock.advance(cost)
            self.autotune_seconds_spent += cost
            self.tuned.add(batch_size)
            room = int(cap / (1 + self.overhead)) - self.allocated - need
            spike = max(0, min(self.spike if batch_size <= self.spike_until else 0, room))
        elif benchmark:
            need += self.benchmark_workspace
        held = self.allocated + need + spike
        if int(held * (1 + self.overhead)) > cap:
            import torch

            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {(need + spike) / 2**30:.2f} GiB. "
                f"GPU 0 has a total capacity of {self.total / 2**30:.2f} GiB"
            )
        self.peak_alloc = max(self.peak_alloc, held)
        self.reserved = max(self.reserved, int(held * (1 + self.overhead)))
        self.peak_res = max(self.peak_res, self.reserved)
        self.steps += 1
        self.clock.advance(self.step_overhead + self.per_sample_seconds * batch_size)

    def model(self) -> Any:
        """An ``nn.Module`` (3x8x8 images, 10 classes) whose forward drives this device."""
        import torch
        from torch import nn

        device = self

        class GpuLike(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3, padding=1)
                self.bn = nn.BatchNorm2d(4)
                self.head = nn.Linear(4, 10)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                if x.device.type != "meta":
                    device.run_step(int(x.shape[0]))
                x = torch.relu(self.bn(self.conv(x)))
                return self.head(x.mean(dim=(2, 3)))

        return GpuLike()

    # --- bench.hw.device.Device
    def synchronize(self) -> None:
        self._sticky()
        self.syncs += 1

    def make_timer(self) -> Any:
        return StepTimer(self.clock)

    def reset_peak(self) -> None:
        self.peak_alloc, self.peak_res = self.allocated, self.reserved

    def peak_allocated_bytes(self) -> int | None:
        return self.peak_alloc

    def peak_reserved_bytes(self) -> int | None:
        return self.peak_res

    def allocated_bytes(self) -> int | None:
        return self.allocated

    def total_bytes(self) -> int | None:
        return self.total

    def free_bytes(self) -> int | None:
        self._sticky()
        return self.total - self.reserved

    def empty_cache(self) -> None:
        self._sticky()
        self.reserved = self.allocated

    def uuid(self) -> str | None:
        return "GPU-fake"

    def alloc_retries(self) -> int | None:
        return 0

    def memory_fraction(self) -> float | None:
        return self.fraction

    def set_memory_fraction(self, fraction: float) -> None:
        self._sticky()
        self.fraction = fraction
        self.fractions_set.append(fraction)
