"""NVML telemetry. The only module in bench that imports ``pynvml``.

Every query goes through ``_query``, which turns an NVML error (sensor not supported, no
permission, driver too old) into ``None``: a missing sensor is data, not a crash. The pynvml module
is injectable so tests drive this exact code with ``bench.hw.fake.FakeNvml``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.hw import fake_cuda
from bench.hw.fake import FakeNvml

# NVML constants, spelled out so the fake needs no pynvml and old pynvml versions still work.
NVML_FI_DEV_POWER_INSTANT = 186  # instantaneous power draw, mW (Hopper+ drivers)
NVML_CLOCK_SM = 1
NVML_TEMPERATURE_GPU = 0
# GPM (GPU performance monitoring, Hopper and newer) metric ids and struct version.
NVML_GPM_METRIC_SM_UTIL = 2  # share of SMs busy, 0-100
NVML_GPM_METRIC_ANY_TENSOR_UTIL = 5  # share of time the SMs ran any tensor-core instruction, 0-100
NVML_GPM_METRIC_DRAM_BW_UTIL = 10  # DRAM bandwidth used / theoretical peak, 0-100
NVML_GPM_METRICS_GET_VERSION = 1
GPM_METRICS = (NVML_GPM_METRIC_SM_UTIL, NVML_GPM_METRIC_ANY_TENSOR_UTIL, NVML_GPM_METRIC_DRAM_BW_UTIL)
# GPM metrics are rates between two samples; closer samples than this are too short an interval to
# trust, so that reading has no GPM values (the sampler's default period is 0.05 s)
GPM_MIN_INTERVAL_SECONDS = 0.1

# nvmlClocksEventReasons bits ("throttle reasons" in older NVML).
CLOCK_EVENT_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def decode_clock_event_reasons(mask: int | None) -> tuple[str, ...]:
    """Bitmask -> names, e.g. 0x24 -> ("sw_power_cap", "sw_thermal_slowdown")."""
    if not mask:
        return ()
    names = [name for bit, name in sorted(CLOCK_EVENT_REASONS.items()) if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"other_0x{unknown:x}")
    return tuple(names)


@dataclass(frozen=True)
class GpuSample:
    """One NVML reading. ``None`` for a sensor the device or driver does not offer."""

    kernel_active_percent: float | None = None  # NVML "utilization.gpu": time any kernel ran
    memory_controller_percent: float | None = None  # NVML "utilization.memory"
    power_watts: float | None = None  # instantaneous where offered, else NVML's averaged reading
    sm_clock_mhz: float | None = None
    temperature_c: float | None = None
    clock_event_mask: int | None = None
    # GPM, over the interval since the previous GPM sample (Hopper+ where the driver offers it)
    gpm_sm_active_percent: float | None = None
    gpm_tensor_active_percent: float | None = None
    gpm_dram_bandwidth_percent: float | None = None


class GpuMonitor:
    """Interface: what the sampler and the runner need from a GPU monitor."""

    available: bool = False
    reason: str | None = None  # why not available

    def sample(self) -> GpuSample:
        return GpuSample()

    def energy_millijoules(self) -> int | None:
        return None

    def process_memory_bytes(self, pid: int | None = None) -> int | None:
        return None

    process_memory_reason: str | None = None  # why the last process_memory_bytes() was None

    def memory_total_bytes(self) -> int | None:
        return None

    def memory_free_bytes(self) -> int | None:
        return None

    def name(self) -> str | None:
        return None

    def driver_version(self) -> str | None:
        return None

    def close(self) -> None:
        pass


class NullMonitor(GpuMonitor):
    """Stand-in where NVML is unavailable: every reading is None, with the reason recorded."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Gpm:
    """NVML GPM metrics between consecutive samples of one device. ``read()`` returns (SM active,
    tensor active, DRAM bandwidth) percentages, each None where not offered; the whole thing
    switches itself off for good on a device or pynvml without GPM (NotSupported, no
    ``nvmlGpmSampleGet`` in older pynvml)."""

    def __init__(
        self, nvml: Any, handle: Any, clock: Callable[[], float], min_interval_seconds: float
    ) -> None:
        self._nvml = nvml
        self._handle = handle
        self._clock = clock
        self._min_interval = min_interval_seconds
        self._lock = threading.Lock()  # the sampler thread and the window edges both sample
        self._samples: list[Any] = []  # [previous, spare] NVML sample buffers
        self._t_prev = 0.0
        self.enabled = self._start()

    def _start(self) -> bool:
        nvml = self._nvml
        needed = ("nvmlGpmQueryDeviceSupport", "nvmlGpmSampleAlloc", "nvmlGpmSampleGet", "nvmlGpmMetricsGet")
        if not all(hasattr(nvml, n) for n in needed) or not hasattr(nvml, "c_nvmlGpmMetricsGet_t"):
            return False
        try:
            if not getattr(nvml.nvmlGpmQueryDeviceSupport(self._handle), "isSupportedDevice", 0):
                return False
            self._samples = [nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()]
            nvml.nvmlGpmSampleGet(self._handle, self._samples[0])
        except Exception:  # NVMLError_NotSupported, NoPermission, ...
            self.close()
            return False
        self._t_prev = self._clock()
        return True

    def read(self) -> tuple[float | None, float | None, float | None]:
        none = (None, None, None)
        if not self.enabled:
            return none
        with self._lock:
            now = self._clock()
            if now - self._t_prev < self._min_interval:
                return none
            nvml = self._nvml
            prev, cur = self._samples
            try:
                nvml.nvmlGpmSampleGet(self._handle, cur)
                request = nvml.c_nvmlGpmMetricsGet_t()
                request.version = NVML_GPM_METRICS_GET_VERSION
                request.numMetrics = len(GPM_METRICS)
                request.sample1 = prev
                request.sample2 = cur
                for i, metric_id in enumerate(GPM_METRICS):
                    request.metrics[i].metricId = metric_id
                nvml.nvmlGpmMetricsGet(request)
            except Exception:
                return none  # this interval is lost; the next reading starts from ``prev`` again
            self._samples = [cur, prev]
            self._t_prev = now
            values = []
            for i in range(len(GPM_METRICS)):
                m = request.metrics[i]
                ok = getattr(m, "nvmlReturn", 0) == 0
                values.append(float(m.value) if ok else None)
            return values[0], values[1], values[2]

    def close(self) -> None:
        for sample in self._samples:
            try:
                self._nvml.nvmlGpmSampleFree(sample)
            except Exception:
                pass
        self._samples = []
        self.enabled = False


class NvmlMonitor(GpuMonitor):
    available = True

    def __init__(
        self,
        nvml: Any,
        handle: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        gpm_min_interval_seconds: float = GPM_MIN_INTERVAL_SECONDS,
    ) -> None:
        self._nvml = nvml
        self._handle = handle
        self._power_instant = True  # switched off after the first failure
        self._gpm_args = (clock, gpm_min_interval_seconds)
        self._gpm: _Gpm | None = None  # started on the first sample (system_gpus never needs it)

    def _query(self, fn_name: str, *args: Any) -> Any:
        fn = getattr(self._nvml, fn_name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except Exception:  # NVMLError_NotSupported, NoPermission, ... -> not available
            return None

    def _power_watts(self) -> float | None:
        if self._power_instant:
            values = self._query("nvmlDeviceGetFieldValues", self._handle, [NVML_FI_DEV_POWER_INSTANT])
            try:
                fv = values[0]
                if getattr(fv, "nvmlReturn", 0) == 0:
                    return float(fv.value.uiVal) / 1000.0
            except (TypeError, IndexError, AttributeError):
                pass
            self._power_instant = False
        mw = self._query("nvmlDeviceGetPowerUsage", self._handle)
        return None if mw is None else float(mw) / 1000.0

    def sample(self) -> GpuSample:
        util = self._query("nvmlDeviceGetUtilizationRates", self._handle)
        clock = self._query("nvmlDeviceGetClockInfo", self._handle, NVML_CLOCK_SM)
        temp = self._query("nvmlDeviceGetTemperature", self._handle, NVML_TEMPERATURE_GPU)
        mask = self._query("nvmlDeviceGetCurrentClocksEventReasons", self._handle)
        if mask is None:
            mask = self._query("nvmlDeviceGetCurrentClocksThrottleReasons", self._handle)
        if self._gpm is None:
            self._gpm = _Gpm(self._nvml, self._handle, *self._gpm_args)
        sm, tensor, dram = self._gpm.read()
        return GpuSample(
            kernel_active_percent=None if util is None else float(util.gpu),
            memory_controller_percent=None if util is None else float(util.memory),
            power_watts=self._power_watts(),
            sm_clock_mhz=None if clock is None else float(clock),
            temperature_c=None if temp is None else float(temp),
            clock_event_mask=None if mask is None else int(mask),
            gpm_sm_active_percent=sm,
            gpm_tensor_active_percent=tensor,
            gpm_dram_bandwidth_percent=dram,
        )

    def energy_millijoules(self) -> int | None:
        value = self._query("nvmlDeviceGetTotalEnergyConsumption", self._handle)
        return None if value is None else int(value)

    def process_memory_bytes(self, pid: int | None = None) -> int | None:
        """Device memory the driver charges to this process (or ``pid``), in bytes.

        NVML lists processes by their PID in the host's namespace; inside a container (a PID
        namespace) ``os.getpid()`` is another number. Then the outermost PID of ``NSpid`` in
        /proc/self/status is tried (it is the host's when /proc shows the outer namespaces);
        when neither is listed the reading is None and ``process_memory_reason`` says why.
        """
        self.process_memory_reason = None
        procs = self._query("nvmlDeviceGetComputeRunningProcesses", self._handle)
        if procs is None:
            self.process_memory_reason = "NVML does not list the processes on this device"
            return None
        by_pid = {getattr(p, "pid", None): getattr(p, "usedGpuMemory", None) for p in procs}
        candidates = [pid] if pid is not None else _own_pids()
        for candidate in candidates:
            if candidate in by_pid:
                used = by_pid[candidate]
                return None if used is None else int(used)
        listed = ", ".join(str(p) for p in sorted(k for k in by_pid if k is not None)) or "none"
        self.process_memory_reason = (
            f"NVML lists PIDs {listed} on this GPU, not this process's {'/'.join(map(str, candidates))}: "
            "in a PID namespace (a container) NVML reports host PIDs, which the container cannot see "
            "(run with --pid=host to read it)"
        )
        return None

    def memory_total_bytes(self) -> int | None:
        info = self._query("nvmlDeviceGetMemoryInfo", self._handle)
        return None if info is None else int(info.total)

    def memory_free_bytes(self) -> int | None:
        info = self._query("nvmlDeviceGetMemoryInfo", self._handle)
        return None if info is None else int(info.free)

    def name(self) -> str | None:
        value = self._query("nvmlDeviceGetName", self._handle)
        return value.decode() if isinstance(value, bytes) else value

    def driver_version(self) -> str | None:
        value = self._query("nvmlSystemGetDriverVersion")
        return value.decode() if isinstance(value, bytes) else value

    def close(self) -> None:
        if self._gpm is not None:
            self._gpm.close()
        self._query("nvmlShutdown")


def _own_pids(status_path: str = "/proc/self/status") -> list[int]:
    """This process's PIDs, ``os.getpid()`` first, then its PIDs in the outer PID namespaces that
    /proc shows (``NSpid``: outermost first)."""
    pids = [os.getpid()]
    try:
        with open(status_path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("NSpid:"):
                    pids += [int(v) for v in line.split()[1:] if int(v) not in pids]
    except (OSError, ValueError):
        pass
    return pids


def _fake_nvml() -> Any | None:
    """The fake NVML that goes with ``bench.hw.fake_cuda``'s fake GPU, when one is installed."""
    fake = fake_cuda.active()
    if fake is None:
        return None
    return FakeNvml(**fake.nvml_script())


def _import_pynvml() -> Any:
    import pynvml  # noqa: PLC0415 - the one import of pynvml in the project

    return pynvml


def _handle_by_uuid(nvml: Any, uuid: str) -> Any | None:
    """NVML's handle for torch's device UUID: a whole GPU ("GPU-...") or a MIG slice ("MIG-..."),
    whichever NVML knows; torch gives the bare UUID."""
    bare = uuid[4:] if uuid[:4] in ("GPU-", "MIG-") else uuid
    keys = [uuid] if uuid != bare else []
    keys += [f"GPU-{bare}", f"MIG-{bare}"]
    for key in dict.fromkeys(keys):
        try:
            return nvml.nvmlDeviceGetHandleByUUID(key)
        except Exception:
            continue
    return None


def open_monitor(cuda_index: int | None, uuid: str | None = None, nvml: Any | None = None) -> GpuMonitor:
    """Monitor for one CUDA device, or a NullMonitor saying why not.

    ``uuid`` (from torch's device properties) picks the right NVML device even when
    CUDA_VISIBLE_DEVICES reorders indices, and a MIG slice by its "MIG-" UUID; without a UUID
    (an old torch) ``cuda_index`` is used. A UUID NVML does not know is a NullMonitor, never
    the device at the same index (power and utilisation would come from another GPU).
    """
    if cuda_index is None:
        return NullMonitor("no GPU in use")
    try:
        nvml = nvml or _fake_nvml() or _import_pynvml()
    except ImportError:
        return NullMonitor("pynvml (nvidia-ml-py) is not installed")
    try:
        nvml.nvmlInit()
    except Exception as exc:  # no driver, no libnvidia-ml.so in the container, ...
        return NullMonitor(f"NVML could not start ({exc})")
    handle = None
    if uuid:
        handle = _handle_by_uuid(nvml, uuid)
        if handle is None:  # never fall back to the index: NVML's device N may be another GPU
            return NullMonitor(
                f"NVML has no device with UUID {uuid} (tried GPU- and MIG- forms); "
                f"not reading NVML device {cuda_index}, which may be another GPU"
            )
    else:
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(cuda_index)
        except Exception as exc:
            return NullMonitor(f"NVML has no device {cuda_index} ({exc})")
    return NvmlMonitor(nvml, handle)


def system_gpus(nvml: Any | None = None) -> tuple[str | None, list[dict[str, Any]], str | None]:
    """(driver version, [{index, name, memory_total_bytes, uuid}], reason if NVML is unavailable)."""
    try:
        nvml = nvml or _fake_nvml() or _import_pynvml()
        nvml.nvmlInit()
    except Exception as exc:
        return None, [], f"NVML unavailable ({exc})"
    try:
        mon = NvmlMonitor(nvml, None)
        driver = mon.driver_version()
        count = mon._query("nvmlDeviceGetCount") or 0
        gpus = []
        for i in range(count):
            dev = NvmlMonitor(nvml, nvml.nvmlDeviceGetHandleByIndex(i))
            uuid = dev._query("nvmlDeviceGetUUID", dev._handle)
            gpus.append(
                {
                    "index": i,
                    "name": dev.name() or "unknown GPU",
                    "memory_total_bytes": dev.memory_total_bytes(),
                    "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid,
                }
            )
        return driver, gpus, None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass
