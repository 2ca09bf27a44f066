"""A scripted stand-in for the ``pynvml`` module, for tests and for users testing their own tools.

Pass an instance wherever bench accepts ``nvml=``. Each reading pops the next value from a script
(the last value repeats), so a test knows exactly what the sampler should average.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any


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
    ) -> None:
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

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        self._check("nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self._processes]
