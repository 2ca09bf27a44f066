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


class FakeCudaDevice:
    """A CUDA device simulated on the CPU, for tests of what only a GPU shows and for users'
    tools: memory and time follow a script shaped like the first H100 run of bench.

    Tensors live on the CPU (``torch_device`` "cpu"); a model built by ``model()`` reports every
    forward to ``run_step``, which advances ``clock`` and the simulated memory:

    - memory of a training step at batch b: ``fixed_bytes + per_sample_bytes * b`` (allocated), the
      caching allocator reserving ``reserve_overhead`` more; when the reserved bytes would pass
      ``total_bytes`` the step raises ``torch.cuda.OutOfMemoryError`` with CUDA's message.
    - the first step of a new batch shape autotunes (``cudnn_benchmark``): ``autotune_seconds``
      more, and, for batches up to ``spike_until``, a workspace spike of ``autotune_spike_bytes``
      that stays cached until ``empty_cache``. Later steps of the same shape run at the steady peak.
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
        autotune_spike_bytes: int = 900 * 2**20,
        spike_until: int = 32,
        step_overhead_seconds: float = 0.045,
        step_seconds_per_sample: float = 0.0002,
        cudnn_benchmark: bool = True,
    ) -> None:
        self.clock = clock
        self.total = total_bytes
        self.fixed = fixed_bytes
        self.per_sample = per_sample_bytes
        self.overhead = reserve_overhead
        self.autotune_seconds = autotune_seconds
        self.spike = autotune_spike_bytes
        self.spike_until = spike_until
        self.step_overhead = step_overhead_seconds
        self.per_sample_seconds = step_seconds_per_sample
        self.cudnn_benchmark = cudnn_benchmark
        self.tuned: set[int] = set()  # batch shapes autotuned so far (the process-wide cache)
        self.allocated = 0
        self.reserved = 0  # cached by the allocator; empty_cache returns it to ``allocated``
        self.peak_alloc = 0
        self.peak_res = 0
        self.steps = 0
        self.syncs = 0

    # --- what a fake model calls
    def run_step(self, batch_size: int) -> None:
        spike = 0
        if self.cudnn_benchmark and batch_size not in self.tuned:
            self.clock.advance(self.autotune_seconds)
            self.tuned.add(batch_size)
            spike = self.spike if batch_size <= self.spike_until else 0
        need = self.fixed + self.per_sample * batch_size
        if int((need + spike) * (1 + self.overhead)) > self.total:
            import torch

            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {(need + spike - self.allocated) / 2**30:.2f} GiB. "
                f"GPU 0 has a total capacity of {self.total / 2**30:.2f} GiB"
            )
        self.peak_alloc = max(self.peak_alloc, need + spike)
        self.reserved = max(self.reserved, int((need + spike) * (1 + self.overhead)))
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
        return self.total - self.reserved

    def empty_cache(self) -> None:
        self.reserved = self.allocated

    def uuid(self) -> str | None:
        return "GPU-fake"

    def alloc_retries(self) -> int | None:
        return 0
