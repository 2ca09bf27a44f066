"""Hardware access, each in one place.

- ``bench.hw.nvml``: the only module that imports ``pynvml`` (GPU telemetry: utilisation, power,
  energy, clocks, per-process memory). Missing NVML is a value (``NullMonitor``), never a crash.
- ``bench.hw.device``: the only module that queries ``torch.cuda`` for device state (synchronise,
  peak memory, cache, CUDA-event timers).
- ``bench.hw.fake``: a scripted fake of the pynvml module for tests (and for users' tests).
- ``bench.hw.fake_cuda``: a fake ``torch.cuda`` (events, streams, allocator, OOM, sticky errors, MIG)
  under which the real CUDA code above runs on a CPU; ``BENCH_FAKE_CUDA=h100`` for a whole process.
"""

from bench.hw.device import Device, open_device
from bench.hw.nvml import GpuMonitor, GpuSample, NullMonitor, open_monitor

__all__ = ["Device", "GpuMonitor", "GpuSample", "NullMonitor", "open_device", "open_monitor"]
