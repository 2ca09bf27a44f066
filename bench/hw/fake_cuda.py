"""A fake ``torch.cuda``: bench's real CUDA code (``CudaDevice``, the CUDA-event step timer, the
DDP hook's events, the memory readings) runs on a CPU against it, with numbers from bench's first
H100 run (``../shared/fixtures/h100-80gb-hbm3``).

``FakeCuda`` models what that code reads, not the GPU's arithmetic (tensors stay on the CPU):

- a **device timeline**: ``launch(seconds)`` queues device work on the current stream; the device
  runs it after what is queued (``busy_until``), while the host clock goes on. ``Event.record``
  stamps the moment the stream reaches it, ``elapsed_time`` is milliseconds between two stamps,
  ``synchronize`` moves the host clock to the end of the queued work. A host-bound step (the
  H100's batches 16-64) and a device-bound one (256 and beyond) look as they did there.
- the **caching allocator**: allocated / reserved bytes and their peaks (``reset_peak_memory_stats``),
  ``empty_cache`` returning what is cached but unused, ``mem_get_info`` with the CUDA context's
  memory outside PyTorch's counters, ``set_per_process_memory_fraction`` capping what the
  allocator may reserve, and a **cuBLAS workspace** per stream that ``empty_cache`` never returns.
- **OOM** as ``torch.cuda.OutOfMemoryError`` with CUDA's message; **sticky errors**
  (``fail("illegal memory access")``): every CUDA call after one raises it again, as a dead
  context does (``torch.AcceleratorError`` where torch has it).
- **MIG**: ``mig="3g.40gb"`` names the device as CUDA does ("NVIDIA H100 80GB HBM3 MIG 3g.40gb")
  and sizes its memory and SMs to the slice.

``install(fake)`` patches it over ``torch.cuda`` (and ``torch.cuda.profiler``) and, with
``model_steps``, charges each top-level module forward to the fake: memory ``fixed + per sample x
batch`` (scaled by image area from 224 px) and device time ``step_fixed + per sample x batch``.
``BENCH_FAKE_CUDA=h100`` (or ``h100-mig-3g``) makes ``bench.hw.device`` install one for the whole
process: the command line then runs its CUDA paths on a CPU (the GPU session's rehearsal).

This module imports nothing of bench and torch only when a fake is installed.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

MIB = 2**20
GIB = 2**30
ENV_VAR = "BENCH_FAKE_CUDA"


@dataclass(frozen=True)
class GpuProfile:
    """What the fake is: name, memory and the cost model of one training step."""

    name: str = "NVIDIA H100 80GB HBM3"
    total_bytes: int = 85_017_493_504  # torch's total_memory on the fixture's H100
    uuid: str = "af3903b0-daff-ff5e-9c3f-c8f151d43d27"  # torch's props.uuid: no "GPU-" prefix
    sm_count: int = 132
    capability: tuple[int, int] = (9, 0)
    context_bytes: int = 750 * MIB  # NVML process memory minus torch's reserved bytes (fixture: 715-776 MiB)
    cublas_workspace_bytes: int = 32 * MIB  # torch's default cuBLAS workspace on Hopper, per handle/stream
    # EfficientNet-b0 train, bf16 + channels-last, 224 px (fixture): 10.9 GiB allocated at batch 256,
    # 43.1 GiB at 1024 -> 42.93 MiB per sample and 0.17 GiB fixed
    fixed_bytes: int = 174 * MIB
    per_sample_bytes: int = 45_016_000
    reserve_overhead: float = 0.08  # reserved / allocated (11.8 / 10.9 GiB at 256, 46.6 / 43.1 at 1024)
    # device time of one step: 56.8 ms at batch 256, 207.2 ms at 1024 -> 0.196 ms/sample + 6.7 ms
    step_fixed_seconds: float = 0.0067
    step_seconds_per_sample: float = 0.000196
    mig: str | None = None  # "3g.40gb": a MIG slice of the GPU above

    def as_mig(self, slice_name: str) -> GpuProfile:
        """This GPU as a MIG slice ("1g.10gb", "3g.40gb", "7g.80gb"): CUDA's name, a "MIG-" UUID
        in NVML, its share of the SMs (of 7 compute slices) and the slice's memory."""
        g = int(slice_name.split("g.", 1)[0])
        gb = int(slice_name.split("g.", 1)[1].rstrip("gb"))
        return replace(
            self,
            name=f"{self.name} MIG {slice_name}",
            total_bytes=gb * 10**9,
            uuid="3b1c5e2a-7f00-5d1e-9a2b-0c4d6e8f1a2b",
            sm_count=self.sm_count * g // 7,
            mig=slice_name,
            step_seconds_per_sample=self.step_seconds_per_sample * 7 / g,
        )


H100 = GpuProfile()
PROFILES: dict[str, GpuProfile] = {"h100": H100, "h100-mig-3g": H100.as_mig("3g.40gb")}

STICKY_MESSAGES = {
    "illegal memory access": "CUDA error: an illegal memory access was encountered",
    "device-side assert": "CUDA error: device-side assert triggered",
    "unspecified launch failure": "CUDA error: unspecified launch failure",
}
_ASYNC_NOTE = (
    "\nCUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace "
    "below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1"
)


def _wall_clock() -> float:
    return time.perf_counter()


@dataclass
class _Stream:
    fake: FakeCuda
    priority: int = 0
    busy_until: float = 0.0  # host-clock time at which the work queued on this stream ends
    has_cublas: bool = False

    def synchronize(self) -> None:
        self.fake._check()
        self.fake._wait_until(self.busy_until)

    def wait_stream(self, other: Any) -> None:
        self.busy_until = max(self.busy_until, other.busy_until)

    def query(self) -> bool:
        return self.busy_until <= self.fake.clock()


class _Event:
    """``torch.cuda.Event``: a stamp on a stream's timeline."""

    def __init__(self, fake: FakeCuda, enable_timing: bool = False, **_: Any) -> None:
        fake._check()
        fake.events_created += 1
        self._fake = fake
        self.enable_timing = enable_timing
        self.t: float | None = None

    def record(self, stream: Any = None) -> None:
        fake = self._fake
        fake._check()
        stream = stream or fake.current
        self.t = max(stream.busy_until, fake.clock())
        fake.records += 1

    def query(self) -> bool:
        return self.t is not None and self.t <= self._fake.clock()

    def synchronize(self) -> None:
        self._fake._check()
        if self.t is not None:
            self._fake._wait_until(self.t)

    def elapsed_time(self, end: _Event) -> float:
        """Milliseconds from this event to ``end``, as torch's (both recorded, timing enabled)."""
        self._fake._check()
        if not (self.enable_timing and end.enable_timing):
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
        if self.t is None or end.t is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        if end.t > self._fake.clock():
            raise RuntimeError("CUDA error: device not ready")
        return (end.t - self.t) * 1000.0


@dataclass
class FakeCuda:
    """One simulated GPU (``device_count`` indices share it). See the module docstring."""

    profile: GpuProfile = field(default_factory=GpuProfile)
    clock: Callable[[], float] = _wall_clock  # the host clock; a fake clock with ``advance`` in tests
    device_count: int = 1
    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    fraction: float | None = None  # set_per_process_memory_fraction
    alloc_retries: int = 0
    events_created: int = 0
    records: int = 0
    syncs: int = 0
    sticky: BaseException | None = None
    current_index: int = 0
    profiler_ranges: int = 0
    pinned: int = 0  # allocated bytes that stay allocated (cuBLAS workspaces): empty_cache keeps them
    sticky_from_batch: int | None = None  # train_step at this batch or above kills the context
    sticky_kind: str = "illegal memory access"  # a key of STICKY_MESSAGES

    def __post_init__(self) -> None:
        self.default = _Stream(self)
        self.current = self.default

    # --- the simulated hardware
    def _check(self) -> None:
        if self.sticky is not None:
            raise self.sticky

    def _wait_until(self, t: float) -> None:
        now = self.clock()
        if t > now:
            advance = getattr(self.clock, "advance", None)
            if advance is not None:
                advance(t - now)
            else:
                time.sleep(t - now)

    def launch(self, seconds: float, *, gemm: bool = False) -> None:
        """Queue ``seconds`` of device work on the current stream (a cuBLAS call allocates the
        stream's workspace first, once)."""
        self._check()
        stream = self.current
        if gemm and not stream.has_cublas:
            self._grow(self.profile.cublas_workspace_bytes, persistent=True)
            stream.has_cublas = True
        stream.busy_until = max(stream.busy_until, self.clock()) + seconds

    def fail(self, kind: str = "illegal memory access") -> None:
        """Kill the context: this call and every CUDA call after it raise the sticky error."""
        import torch

        error = getattr(torch, "AcceleratorError", RuntimeError)
        self.sticky = error(STICKY_MESSAGES[kind] + _ASYNC_NOTE)
        raise self.sticky

    def capacity_bytes(self) -> int:
        """What the allocator may reserve: the device less the context, or the fraction's cap."""
        cap = self.profile.total_bytes - self.profile.context_bytes
        if self.fraction is not None:
            cap = min(cap, int(self.profile.total_bytes * self.fraction))
        return cap

    def _oom(self, need: int) -> BaseException:
        import torch

        free = max(self.profile.total_bytes - self.profile.context_bytes - self.reserved, 0)
        text = (
            f"CUDA out of memory. Tried to allocate {need / GIB:.2f} GiB. GPU {self.current_index} has a "
            f"total capacity of {self.profile.total_bytes / GIB:.2f} GiB of which {free / GIB:.2f} GiB is "
            f"free. Including non-PyTorch memory, this process has "
            f"{(self.reserved + self.profile.context_bytes) / GIB:.2f} GiB memory in use. Of the allocated "
            f"memory {self.allocated / GIB:.2f} GiB is allocated by PyTorch, and "
            f"{(self.reserved - self.allocated) / MIB:.2f} MiB is reserved by PyTorch but unallocated."
        )
        if self.fraction is not None:
            text += f" Process has a memory fraction cap of {self.fraction:.3f}."
        return torch.cuda.OutOfMemoryError(text)

    def _grow(self, nbytes: int, *, persistent: bool = False) -> None:
        """Allocate ``nbytes``: the cache first, then new reserved memory (an OOM past capacity)."""
        self._check()
        want = self.allocated + nbytes
        if want > self.reserved:
            new_reserved = int(want * (1 + self.profile.reserve_overhead))
            if new_reserved > self.capacity_bytes():
                self.alloc_retries += 1  # the allocator frees its cache and tries once more
                new_reserved = want
                if new_reserved > self.capacity_bytes():
                    raise self._oom(nbytes)
            self.reserved = new_reserved
        self.allocated = want
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        if persistent:
            self.pinned += nbytes

    def release(self, nbytes: int) -> None:
        self.allocated = max(self.allocated - nbytes, self.pinned)

    def train_step(self, batch_size: int, pixels: int = 224 * 224) -> None:
        """One training step's cost (see ``GpuProfile``): its activations are allocated and freed
        (the cache keeps them reserved), its kernels queued with a cuBLAS call among them."""
        if self.sticky_from_batch is not None and batch_size >= self.sticky_from_batch:
            self.fail(self.sticky_kind)
        scale = pixels / (224 * 224)
        activations = self.profile.fixed_bytes + int(self.profile.per_sample_bytes * scale * batch_size)
        self._grow(activations)
        self.release(activations)
        self.launch(
            self.profile.step_fixed_seconds + self.profile.step_seconds_per_sample * scale * batch_size,
            gemm=True,
        )

    # --- torch.cuda's functions
    def synchronize(self, device: Any = None) -> None:
        self._check()
        self.syncs += 1
        self._wait_until(max(self.default.busy_until, self.current.busy_until))

    def memory_allocated(self, device: Any = None) -> int:
        self._check()
        return self.allocated

    def memory_reserved(self, device: Any = None) -> int:
        self._check()
        return self.reserved

    def max_memory_allocated(self, device: Any = None) -> int:
        self._check()
        return self.peak_allocated

    def max_memory_reserved(self, device: Any = None) -> int:
        self._check()
        return self.peak_reserved

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        self._check()
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def memory_stats(self, device: Any = None) -> dict[str, int]:
        self._check()
        return {
            "allocated_bytes.all.current": self.allocated,
            "allocated_bytes.all.peak": self.peak_allocated,
            "reserved_bytes.all.current": self.reserved,
            "reserved_bytes.all.peak": self.peak_reserved,
            "num_alloc_retries": self.alloc_retries,
            "num_ooms": 0,
        }

    def empty_cache(self) -> None:
        self._check()
        self.reserved = self.allocated

    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        """(free, total) bytes as the driver sees them: the context counts as used."""
        self._check()
        total = self.profile.total_bytes
        return total - self.profile.context_bytes - self.reserved, total

    def set_per_process_memory_fraction(self, fraction: float, device: Any = None) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"Invalid fraction value: {fraction}. Allowed range: 0~1")
        self.fraction = fraction

    def get_device_properties(self, device: Any = None) -> Any:
        p = self.profile
        return SimpleNamespace(
            name=p.name,
            total_memory=p.total_bytes,
            uuid=p.uuid,
            multi_processor_count=p.sm_count,
            major=p.capability[0],
            minor=p.capability[1],
            is_integrated=False,
        )

    def get_device_name(self, device: Any = None) -> str:
        return self.profile.name

    def get_device_capability(self, device: Any = None) -> tuple[int, int]:
        return self.profile.capability

    def set_device(self, device: Any) -> None:
        index = getattr(device, "index", device)
        index = int(index or 0) if not isinstance(index, str) else int(index.rpartition(":")[2] or 0)
        if not 0 <= index < self.device_count:
            raise RuntimeError("CUDA error: invalid device ordinal")
        self.current_index = index

    def current_stream(self, device: Any = None) -> _Stream:
        return self.current

    def default_stream(self, device: Any = None) -> _Stream:
        return self.default

    def new_stream(self, device: Any = None, priority: int = 0, **_: Any) -> _Stream:
        return _Stream(self, priority=priority)

    @contextlib.contextmanager
    def stream(self, stream: _Stream | None) -> Iterator[None]:
        previous = self.current
        self.current = stream or previous
        try:
            yield
        finally:
            self.current = previous

    def event(self, enable_timing: bool = False, **kwargs: Any) -> _Event:
        return _Event(self, enable_timing=enable_timing, **kwargs)

    def nvml_script(self) -> dict[str, Any]:
        """Keyword arguments for ``bench.hw.fake.FakeNvml`` that read like this GPU at batch 256 of
        the fixture (kernel-active 93%, 495 W, 1980 MHz)."""
        total = self.profile.total_bytes
        return {
            "name": self.profile.name,
            "memory_total": total,
            "memory_free": total - self.profile.context_bytes - self.reserved,
            "gpu_util": (93.0,),
            "mem_util": (40.0,),
            "power_mw": (495_000,),
            "sm_clock_mhz": (1980,),
            "temperature_c": (45,),
            "processes": ((os.getpid(), self.reserved + self.profile.context_bytes),),
            "driver": "580.159.04",
            "gpm": ((88.0, 35.0, 62.0),),
        }


# --------------------------------------------------------------------------- installing it

_active: list[FakeCuda] = []
_lock = threading.Lock()


def active() -> FakeCuda | None:
    """The fake installed over torch.cuda now, or None."""
    return _active[-1] if _active else None


def _top_level_forward_hooks(torch: Any, fake: FakeCuda) -> Callable[[], None]:
    """Global module hooks charging each outermost forward (training mode) as one step."""
    from torch.nn.modules import module as nn_module

    depth = threading.local()

    def pre(module: Any, args: Any) -> None:
        level = getattr(depth, "n", 0)
        depth.n = level + 1
        if level or not module.training or not torch.is_grad_enabled():
            return
        x = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if x is None or x.device.type == "meta" or x.dim() == 0:
            return
        pixels = int(x.shape[-1] * x.shape[-2]) if x.dim() == 4 else 224 * 224
        fake.train_step(int(x.shape[0]), pixels)

    def post(module: Any, args: Any, out: Any) -> None:
        depth.n = max(getattr(depth, "n", 1) - 1, 0)

    handles = [
        nn_module.register_module_forward_pre_hook(pre),
        nn_module.register_module_forward_hook(post, always_call=True),
    ]
    return lambda: [h.remove() for h in handles] and None


@contextlib.contextmanager
def install(fake: FakeCuda, *, model_steps: bool = False) -> Iterator[FakeCuda]:
    """Patch ``fake`` over ``torch.cuda`` for the duration (tests: ``with install(FakeCuda(...))``).

    ``model_steps``: every outermost training forward is charged as one step of the profile."""
    undo = _patch(fake, model_steps)
    try:
        yield fake
    finally:
        undo()


def _patch(fake: FakeCuda, model_steps: bool) -> Callable[[], None]:
    import torch
    import torch.cuda.profiler as cuda_profiler

    def event_class(enable_timing: bool = False, blocking: bool = False, interprocess: bool = False) -> Any:
        return fake.event(enable_timing=enable_timing)

    def stream_class(device: Any = None, priority: int = 0, **kw: Any) -> Any:
        return fake.new_stream(device, priority)

    def start() -> None:
        fake._check()
        fake.profiler_ranges += 1

    patches: dict[tuple[Any, str], Any] = {
        (torch.cuda, "is_available"): lambda: True,
        (torch.cuda, "device_count"): lambda: fake.device_count,
        (torch.cuda, "current_device"): lambda: fake.current_index,
        (torch.cuda, "is_bf16_supported"): lambda *a, **k: True,
        (torch.cuda, "Event"): event_class,
        (torch.cuda, "Stream"): stream_class,
        (cuda_profiler, "start"): start,
        (cuda_profiler, "stop"): fake._check,
    }
    for name in (
        "synchronize memory_allocated memory_reserved max_memory_allocated max_memory_reserved "
        "reset_peak_memory_stats memory_stats empty_cache mem_get_info set_per_process_memory_fraction "
        "get_device_properties get_device_name get_device_capability set_device current_stream "
        "default_stream stream"
    ).split():
        patches[(torch.cuda, name)] = getattr(fake, name)
    saved = {key: getattr(*key) for key in patches}
    with _lock:
        for (owner, name), value in patches.items():
            setattr(owner, name, value)
        _active.append(fake)
    unhook = _top_level_forward_hooks(torch, fake) if model_steps else (lambda: None)

    def undo() -> None:
        unhook()
        with _lock:
            for (owner, name), value in saved.items():
                setattr(owner, name, value)
            if fake in _active:
                _active.remove(fake)

    return undo


def install_from_env(environ: dict[str, str] | None = None) -> FakeCuda | None:
    """Install a process-wide fake when ``BENCH_FAKE_CUDA`` names a profile (once); None when unset.
    An unknown name is a ValueError naming the ones there are."""
    name = (environ if environ is not None else os.environ).get(ENV_VAR, "").strip().lower()
    if not name:
        return None
    if active() is not None:
        return active()
    if name not in PROFILES:
        raise ValueError(f"{ENV_VAR}={name!r}: use one of {', '.join(sorted(PROFILES))}")
    fake = FakeCuda(PROFILES[name])
    _env_undo.append(_patch(fake, model_steps=True))  # for the life of the process
    return fake


_env_undo: list[Callable[[], None]] = []


def remove_env_fake() -> None:
    """Take off the fake ``install_from_env`` put on (tests; a process otherwise keeps it)."""
    while _env_undo:
        _env_undo.pop()()
