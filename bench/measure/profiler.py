"""Traced runs of one batch size: the PyTorch profiler (operator rows and a gzipped Chrome/Perfetto
trace HTA can read), the CUDA allocator's memory snapshot, and the annotated run nsys captures.
The tables of the operator rows are in ``bench.present.ops_tables``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import tempfile
import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.hw import tracing
from bench.hw.device import open_device
from bench.measure.annotate import PHASES, TraceHooks, nvtx_available
from bench.measure.models import resolve
from bench.measure.runner import run_point
from bench.results import files
from bench.results.errors import BenchError
from bench.results.schema import MAX_TIME_SECONDS, OK, MeasureSettings, Workload


class ProfilerStepHooks(TraceHooks):
    """TraceHooks that also advance a ``torch.profiler.profile`` schedule, one step per bench step.

    The profiler is started lazily at the first step (so model building is never recorded) and
    advanced at the *start* of every later step and once more in ``window_stop``. That puts the
    end of the last recorded profiler step after the runner's closing device synchronise, so
    every kernel of the last measured step has finished before the trace is collected.
    """

    def __init__(
        self, profiler: Any, batch_size: int | None, *, nvtx: bool, cuda_profiler_range: bool
    ) -> None:
        super().__init__(batch_size, nvtx=nvtx, record_function=True, cuda_profiler_range=cuda_profiler_range)
        self._profiler = profiler
        self._started = False

    def step(self, phase: str, index: int) -> AbstractContextManager[Any]:
        if not self._started:
            self._profiler.start()
            self._started = True
        else:
            self._profiler.step()
        return super().step(phase, index)

    def window_stop(self) -> None:
        super().window_stop()
        if self._started:
            self._profiler.step()

    def close(self) -> None:
        if self._started:
            self._profiler.stop()
            self._started = False


def profiler_schedule_counts(warmup_steps: int, measured_steps: int) -> tuple[int, int, int]:
    """(wait, warmup, active) for ``torch.profiler.schedule`` so only measured steps are recorded.

    bench's warm-up steps are the profiler's wait steps, except the last one, which becomes the
    profiler's own warm-up step (it sets up the tracer without recording, so recording starts
    cleanly at measured step 0).
    """
    if warmup_steps < 0 or measured_steps < 1:
        raise BenchError("need warm-up steps >= 0 and at least one measured step")
    profiler_warmup = 1 if warmup_steps >= 1 else 0
    return warmup_steps - profiler_warmup, profiler_warmup, measured_steps


@dataclass(frozen=True)
class OpRow:
    """One operator's totals over the recorded (measured) steps. Times in microseconds."""

    name: str
    calls: int
    self_host_us: float
    host_total_us: float
    self_device_us: float
    kind: str = "operator"  # "operator" (aten::..., runtime calls) | "kernel" (a GPU kernel)


@dataclass(frozen=True)
class TorchTrace:
    trace_path: Path
    ops: tuple[OpRow, ...]
    samples_per_sec: float | None
    measured_steps: int
    device_kind: str
    notices: tuple[str, ...] = field(default_factory=tuple)
    step_seconds: float | None = None  # median traced step (profiler overhead included)


def _is_annotation(name: str) -> bool:
    return name in PHASES or name.startswith("step ") or name.startswith("ProfilerStep#")


def op_rows(key_averages: Any) -> list[OpRow]:
    """Operators from ``prof.key_averages()``; bench's own ranges are not operators and are left out."""
    rows = []
    for ev in key_averages:
        if _is_annotation(ev.key):
            continue
        self_device = getattr(ev, "self_device_time_total", None)
        if self_device is None:  # torch < 2.4
            self_device = getattr(ev, "self_cuda_time_total", 0.0)
        # Kernels are events of their own (device type CUDA); an operator's self device time is the
        # time of the kernels it launched itself. Each kernel microsecond is in both, so the two
        # never share a table.
        is_kernel = str(getattr(ev, "device_type", "")).rsplit(".", 1)[-1] in ("CUDA", "PrivateUse1")
        rows.append(
            OpRow(
                name=ev.key,
                calls=int(ev.count),
                self_host_us=float(ev.self_cpu_time_total),
                host_total_us=float(ev.cpu_time_total),
                self_device_us=float(self_device or 0.0),
                kind="kernel" if is_kernel else "operator",
            )
        )
    return rows


def add_distributed_info(trace: dict[str, Any], rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Make a single-process trace loadable by Holistic Trace Analysis.

    HTA maps files to ranks through a top-level ``"distributedInfo": {"rank": N}``; torch only
    writes it when torch.distributed is initialised, and HTA refuses a trace without it.
    """
    info = trace.get("distributedInfo")
    if not isinstance(info, dict):
        info = {}
    info.setdefault("rank", rank)
    info.setdefault("world_size", world_size)
    trace["distributedInfo"] = info
    return trace


def export_trace_gz(prof: Any, path: Path) -> Path:
    """Export Chrome/Perfetto JSON, add ``distributedInfo``, write gzipped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".trace-", suffix=".json", dir=path.parent)
    os.close(fd)
    try:
        prof.export_chrome_trace(tmp)
        with open(tmp, encoding="utf-8") as fh:
            data = json.load(fh)
    finally:
        os.unlink(tmp)
    add_distributed_info(data)
    with files.atomic_file(path) as raw, gzip.open(raw, "wt", encoding="utf-8") as fh:
        json.dump(data, fh)
    return path


def fixed_step_settings(warmup_steps: int, measured_steps: int) -> Any:
    """MeasureSettings for exactly ``measured_steps`` timed steps (a trace, not a convergence run)."""

    if measured_steps < 2:
        raise BenchError(f"--steps must be at least 2, got {measured_steps}")
    if warmup_steps < 0:
        raise BenchError(f"--warmup must be >= 0, got {warmup_steps}")
    return MeasureSettings(
        warmup_steps=warmup_steps,
        min_steps=measured_steps,
        max_steps=measured_steps,
        max_time_seconds=MAX_TIME_SECONDS,  # the step count decides, never the clock
        min_time_seconds=0.0,
        target_rel_ci=0.5,
    )


def _point_or_raise(point: Any, what: str) -> Any:

    if point.status != OK:
        raise BenchError(f"{what} failed at batch {point.batch_size} ({point.status}): {point.error}")
    return point


def record_torch_trace(
    workload: Any,
    batch_size: int,
    measured_steps: int,
    warmup_steps: int,
    trace_path: Path,
    *,
    nvtx: bool | None = None,
    device: Any = None,
) -> TorchTrace:
    """Run the workload under torch.profiler, recording the measured steps only.

    Writes ``trace_path`` (gzipped Chrome/Perfetto JSON with ``distributedInfo``) and returns the
    operator totals. The samples/sec it returns includes profiler overhead: a structure reading,
    not a throughput figure.
    """
    if os.environ.get("KINETO_LOG_LEVEL") is None:
        # Kineto logs "gpuGetDeviceCount failed" as an ERROR on every CPU-only trace; keep only fatal
        # messages unless the user asked for more.
        os.environ["KINETO_LOG_LEVEL"] = "5"
    import torch

    settings = fixed_step_settings(warmup_steps, measured_steps)
    spec = resolve(workload.model)
    device = device or open_device(workload.device)
    on_cuda = device.kind == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU]
    if on_cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    wait, warm, active = profiler_schedule_counts(warmup_steps, measured_steps)
    captured: dict[str, Any] = {}

    def on_ready(prof: Any) -> None:
        captured["rows"] = op_rows(prof.key_averages())
        captured["path"] = export_trace_gz(prof, trace_path)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "profiler won't be using warmup" when warm-up is 0
        prof = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=wait, warmup=warm, active=active, repeat=1),
            on_trace_ready=on_ready,
        )
        hooks = ProfilerStepHooks(prof, batch_size, nvtx=bool(nvtx and on_cuda), cuda_profiler_range=False)
        try:
            point = run_point(
                workload, spec, batch_size, settings, device, annotate=hooks.annotate, hooks=hooks
            )
        finally:
            hooks.close()
    _point_or_raise(point, "the traced run")
    if "path" not in captured:
        raise BenchError("the profiler recorded no steps (the run ended before the measured steps)")
    return TorchTrace(
        trace_path=captured["path"],
        ops=tuple(captured["rows"]),
        samples_per_sec=point.samples_per_sec,
        measured_steps=measured_steps,
        device_kind=device.kind,
        step_seconds=point.step_stats.median_seconds if point.step_stats is not None else None,
    )


def run_annotated(workload: Any, batch_size: int, measured_steps: int, warmup_steps: int) -> Any:
    """The nsys child's body: the workload with NVTX ranges and the cudaProfilerStart/Stop window."""

    settings = fixed_step_settings(warmup_steps, measured_steps)
    device = open_device(workload.device)
    on_cuda = device.kind == "cuda"
    # On CPU nsys records the whole run; NVTX still frames the steps when it is available.
    hooks = TraceHooks(
        batch_size, nvtx=on_cuda or nvtx_available(), record_function=False, cuda_profiler_range=on_cuda
    )
    point = run_point(
        workload, resolve(workload.model), batch_size, settings, device, annotate=hooks.annotate, hooks=hooks
    )
    return _point_or_raise(point, "the run under nsys")


def record_memory_snapshot(
    workload: Any,
    batch_size: int,
    measured_steps: int,
    warmup_steps: int,
    path: Path,
    *,
    max_entries: int = 100_000,
) -> Path:
    """Allocator history of one traced point (build, warm-up, measured steps) as a pickle.

    Open it at https://pytorch.org/memory_viz. A separate run from the profiler trace: recording
    a stack per allocation would distort the operator times.
    """
    device = open_device(workload.device)
    if device.kind != "cuda":
        raise BenchError("--memory needs CUDA: the snapshot records the CUDA caching allocator")
    settings = fixed_step_settings(warmup_steps, measured_steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tracing.allocator_history(max_entries) as dump:
        point = run_point(workload, resolve(workload.model), batch_size, settings, device)
        dump(path)
    _point_or_raise(point, "the memory-snapshot run")
    return path


def default_trace_dir(workload: Workload, batch_size: int, started: dt.datetime | None = None) -> Path:
    """``bench_traces/trace-<model>-<device>-b<N>-<time>``: one folder per trace, named so a listing sorts by model."""
    started = started or dt.datetime.now()
    model = files.slug(workload.model)
    device = workload.device.replace(":", "")
    return Path("bench_traces") / f"trace-{model}-{device}-b{batch_size}-{started.strftime('%Y%m%d-%H%M%S')}"
