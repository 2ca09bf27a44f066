"""One max-batch probe in this process: a fresh model, optimizer and batch, ``PROBE_STEPS`` full
training steps, the peaks, and everything released (``bench.measure.attempt``).

The orchestration (``bench.jobs.maxbatch``) decides where a probe runs (here, or in a child) and
what its outcome means for the search; this module only measures one.

- cuDNN autotuning: off by default in a probe (``cudnn_benchmark=False``): each new batch shape
  would pay cuDNN's search (23-32 s per probe on the H100) for an answer about memory. The soak of
  the chosen max runs with the workload's own setting, the way training will.
- Peaks: after the first step (a new shape; with autotuning its workspace lands there) the cache
  is emptied and the counters reset, so the steps after it give the steady peak that training runs
  at. The steady reserved peak is what the budget is compared with; the first step's is kept.
- Leaks: the allocated bytes left after this probe's clean-up, compared with those left after the
  previous probe (``previous_allocated_bytes``), not with the bytes before the search: cuBLAS keeps
  a workspace per handle and stream in the caching allocator that ``empty_cache`` never returns.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.measure.attempt import Attempt
from bench.measure.models import ModelSpec, resolve
from bench.measure.module_copy import ModuleBytes
from bench.measure.step import precision_mode, prepare
from bench.results.maxbatch import ERROR, FIT, OOM, PROBE_STEPS, ProbeRecord
from bench.results.schema import Timing, Workload


def spec_for_module(module: Any, input_shape: tuple[int, ...] | None) -> tuple[str, ModelSpec]:
    """(label, spec) for a caller's ``nn.Module``: probes build copies of it from one serialised CPU
    copy (``module_copy.ModuleBytes``, the one way bench copies a user's module: never a second
    copy on the device the search is measuring, and picklable for a probe child)."""
    label = f"{type(module).__module__}.{type(module).__qualname__}"
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    spec = ModelSpec(
        name=f"{label}#{uuid.uuid4().hex[:8]}",  # unique: prepare() caches the class count per name
        source="module",
        build=ModuleBytes.of(module),
        input_shape=shape,
    )
    return label, spec


def classes_in_main(module: Any) -> list[str]:
    """The module's classes (its own and its submodules') defined in ``__main__``: a script run as a
    program, or a notebook. A probe child cannot load them: it never imports the caller's
    ``__main__`` (a script without a main guard would run again there)."""
    modules = module.modules() if callable(getattr(module, "modules", None)) else [module]
    return sorted({type(m).__qualname__ for m in modules if type(m).__module__ == "__main__"})


def _run_steps(
    workload: Workload,
    spec: ModelSpec,
    batch_size: int,
    device: Any,
    steps: int,
    seen: dict[str, Any],
    attempt: Attempt,
    wrap: Callable[[Any], Any] | None,
    cudnn_benchmark: bool,
) -> None:
    """Build, run ``steps`` training steps. ``seen`` collects timings as they happen, so a probe
    that runs out of memory half-way still says what it got to."""
    clock = time.perf_counter
    with precision_mode(workload.precision, device.kind, cudnn_benchmark, workload.cudnn_benchmark_limit):
        t = clock()
        prepared = attempt.hold(prepare(workload, spec, batch_size, device, wrap=wrap))
        seen["build_seconds"] = clock() - t
        t = clock()
        prepared.step()
        device.synchronize()
        seen["first_step_seconds"] = clock() - t
        if steps > 1:
            attempt.end_first_step()  # the autotune workspace the first step left cached goes
            t = clock()
            for _ in range(steps - 1):
                prepared.step()
            device.synchronize()
            seen["warmup_seconds"] = clock() - t
            seen["steady"] = True


def run_probe(
    workload: Workload,
    batch_size: int,
    device: Any,
    steps: int = PROBE_STEPS,
    *,
    spec: ModelSpec | None = None,
    previous_allocated_bytes: int | None = None,
    wrap: Callable[[Any], Any] | None = None,
    cudnn_benchmark: bool = False,
) -> ProbeRecord:
    """One probe in this process; OOM is an outcome, and memory is returned before we go on.

    ``previous_allocated_bytes``: what was allocated after the previous probe's clean-up; anything
    above it now is reported as ``leaked_bytes`` (None: not judged, as for the first probe).
    ``wrap``: the DDP wrapper for probes with gradient buckets. ``cudnn_benchmark``: autotune (the
    soak passes the workload's setting). A sticky CUDA error is an ERROR outcome whose ``detail``
    says so (``errors.classify_message``): the caller ends the search on it.
    """

    spec = spec if spec is not None else resolve(workload.model)
    start = time.perf_counter()
    seen: dict[str, Any] = {}
    attempt = Attempt(device)
    with attempt:
        _run_steps(workload, spec, batch_size, device, steps, seen, attempt, wrap, cudnn_benchmark)
    t = time.perf_counter()
    attempt.release()  # outside the handler: the failure's frames (and their tensors) are gone
    teardown = time.perf_counter() - t
    failure = attempt.failure
    outcome = FIT if failure is None else (OOM if failure.oom else ERROR)
    steady = seen.get("steady", False)
    first = attempt.first_step_peak_reserved_bytes
    # the fit decision reads the steady peak; a probe that failed (or ran one step) has only its own
    reserved = attempt.peak_reserved_bytes
    allocated = attempt.peak_allocated_bytes
    if not steady or outcome != FIT:
        reserved = max((v for v in (first, reserved) if v is not None), default=None)
        allocated = max(
            (v for v in (attempt.first_step_peak_allocated_bytes, allocated) if v is not None), default=None
        )
    now = device.allocated_bytes() if failure is None or not failure.sticky else None
    leaked = (
        max(0, now - previous_allocated_bytes)
        if now is not None and previous_allocated_bytes is not None
        else None
    )
    seconds = time.perf_counter() - start
    return ProbeRecord(
        batch_size=batch_size,
        outcome=outcome,
        peak_bytes=reserved,
        seconds=seconds,
        steps=steps,
        peak_allocated_bytes=allocated,
        peak_reserved_bytes=reserved,
        alloc_retries=attempt.alloc_retries,
        leaked_bytes=leaked,
        detail=failure.message if failure is not None else None,
        first_step_peak_bytes=first if first is not None else (reserved if steps == 1 else None),
        steady_peak_bytes=reserved if outcome == FIT and steady else None,
        timing=Timing(
            build_seconds=seen.get("build_seconds"),
            first_step_seconds=seen.get("first_step_seconds"),
            warmup_seconds=seen.get("warmup_seconds"),  # the steps after the first
            teardown_seconds=teardown,
            total_seconds=seconds,
        ),
    )
