"""The largest training batch that fits this hardware: real probes for ``bench.analysis.maxbatch_search``.

A probe builds a fresh model, optimizer and batch and runs ``PROBE_STEPS`` full training steps
(forward, backward, optimizer step: the optimizer state exists from the first step, and the peak is
steady by the third), records peak memory and releases everything.

- GPU: the budget is the device memory free at the start (after returning our own cache). A probe
  fails on an out-of-memory error (``errors.is_oom``: torch.cuda.OutOfMemoryError or a cuBLAS/cuDNN
  allocation failure). After each in-process probe every reference is dropped, ``gc.collect()``,
  ``empty_cache()``, and the allocated bytes are compared with their value before the search; what
  is left over is recorded as a leak. ``isolate=True`` runs each probe in a fresh child process.
- CPU: there is no OOM exception, and the kernel's OOM killer must never be reached. The budget is
  ``memory_limit`` (default: half the RAM available now). Every probe runs in its own child process;
  the parent kills a child whose RSS passes the budget (a failed probe), and otherwise the child's
  own lifetime peak RSS (VmHWM) must be within the budget for the probe to fit.

The chosen max then runs ``SOAK_STEPS`` steps (memory can creep over a longer run); if it fails,
the search steps down until a size passes the soak. The safe batch leaves headroom derived from
what was measured. The caller's model and optimizer are never touched: every probe builds its own.
"""

from __future__ import annotations

import datetime as dt
import gc
import io
import json
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.analysis.maxbatch_search import ProbeResult, search_down, search_max_batch
from bench.jobs.history import StoreArg, history_path, store_run
from bench.results.errors import BenchError, first_line, is_oom
from bench.results.maxbatch import (  # the results live in the results layer; re-exported here
    ERROR,
    FIT,
    OOM,
    OVER_BUDGET,
    PROBE_STEPS,
    MaxBatchResult,
    MemoryModelInfo,
    ProbeRecord,
    SoakResult,
    load_max_batch,  # noqa: F401 - re-exported
    maxbatch_from_dict,  # noqa: F401 - re-exported
)
from bench.results.schema import Timing, Workload, device_kind

SOAK_STEPS = 20  # the chosen max runs this long before it is reported (at most; see SOAK_SHARE)
SOAK_SHARE = 0.2  # the soak takes at most this share of the search's time
CPU_GRANULARITY = 8  # default on CPU: peak RSS noise is tens of samples at the edge
DEFAULT_CPU_FRACTION = 0.5  # of the RAM available now, when no memory limit is given
CPU_LIMIT_MAX_FRACTION = 0.9  # a CPU limit above this share of available RAM risks the OOM killer
MIN_HEADROOM_FRACTION = 0.02  # the safe batch keeps at least this share of the budget free
MAX_HEADROOM_FRACTION = 0.25
RETRY_HEADROOM_FRACTION = 0.05  # extra when the caching allocator already had to retry


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
          "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}  # fmt: skip


def parse_bytes(text: str | int) -> int:
    """'4GiB' -> 4294967296, '3000MB' -> 3000000000, '512m' -> 536870912 (bare letters are binary)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise BenchError(f"memory size must be positive, got {text}")
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise BenchError(f"memory size {text!r} not understood: use e.g. 8GiB, 3000MB, 512MiB")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise BenchError(f"memory size must be positive, got {text!r}")
    return value


# --------------------------------------------------------------------------- probes


@dataclass(frozen=True)
class _ModuleBytes:
    """A caller's model, serialised once: every call builds an independent copy on the CPU.

    Picklable, so a child process can build copies too; the caller's module is never touched (no
    deepcopy of a CUDA module, which would allocate on the device the search is measuring).
    """

    data: bytes

    def __call__(self) -> Any:
        import torch

        return torch.load(io.BytesIO(self.data), map_location="cpu", weights_only=False)


def _spec_for_module(module: Any, input_shape: tuple[int, ...] | None) -> tuple[str, Any]:
    import torch

    from bench.measure.models import ModelSpec

    label = f"{type(module).__module__}.{type(module).__qualname__}"
    buf = io.BytesIO()
    try:
        torch.save(module, buf)
    except Exception as exc:  # pickling: a class defined inside a function, a lambda attribute, ...
        raise BenchError(
            f"cannot copy the model {label} ({first_line(exc)}): define its class at module level, "
            "or pass a factory name 'package.module:function'"
        ) from None
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    spec = ModelSpec(
        name=f"{label}#{uuid.uuid4().hex[:8]}",  # unique: prepare() caches the class count per name
        source="module",
        build=_ModuleBytes(buf.getvalue()),
        input_shape=shape,
    )
    return label, spec


def _classes_in_main(module: Any) -> list[str]:
    """The module's classes (its own and its submodules') defined in ``__main__``: a script run as a
    program, or a notebook. A probe child cannot load them: it never imports the caller's
    ``__main__`` (a script without a main guard would run again there)."""
    modules = module.modules() if callable(getattr(module, "modules", None)) else [module]
    return sorted({type(m).__qualname__ for m in modules if type(m).__module__ == "__main__"})


def _in_main_message(label: str, names: list[str]) -> str:
    which = ", ".join(names)
    return (
        f"cannot search {label}: class {which} is defined in __main__ (your script or notebook), and on "
        "CPU every probe runs in a child process, which cannot import __main__. Define the class in a "
        "module you import (e.g. mymodels.py) and pass the model or the factory name "
        "'mymodels:build'; on a GPU (device='cuda', isolate=False, the default) the probes run in "
        "this process and take the model as it is"
    )


def _run_steps(
    workload: Workload,
    spec: Any,
    batch_size: int,
    device: Any,
    steps: int,
    seen: dict[str, Any],
    ddp: bool = False,
) -> None:
    """Build, run ``steps`` training steps, release. ``seen`` collects timings and peaks as they
    happen, so a probe that runs out of memory half-way still says what it got to.

    After the first step (a new shape: cuDNN autotunes there, trying algorithms with workspaces)
    the cache is emptied and the peak counters reset, so the steps after it give the steady peak
    that training runs at; the first-step peak is kept too, for the fit decision.
    """
    from bench.jobs.distributed import probe_wrap
    from bench.measure.step import precision_mode, prepare

    clock = time.perf_counter
    with precision_mode(workload.precision, device.kind, workload.cudnn_benchmark):
        t = clock()
        prepared = prepare(workload, spec, batch_size, device, wrap=probe_wrap(device) if ddp else None)
        seen["build_seconds"] = clock() - t
        try:
            t = clock()
            prepared.step()
            device.synchronize()
            seen["first_step_seconds"] = clock() - t
            seen["first_reserved"] = device.peak_reserved_bytes()
            seen["first_allocated"] = device.peak_allocated_bytes()
            if steps > 1:
                device.empty_cache()  # drop the autotune workspaces the first step left cached
                device.reset_peak()
                t = clock()
                for _ in range(steps - 1):
                    prepared.step()
                device.synchronize()
                seen["warmup_seconds"] = clock() - t
                seen["steady_reserved"] = device.peak_reserved_bytes()
                seen["steady_allocated"] = device.peak_allocated_bytes()
        finally:
            t = clock()
            prepared.release()
            seen["teardown_seconds"] = clock() - t


def _larger(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def probe_in_process(
    workload: Workload,
    batch_size: int,
    device: Any,
    steps: int = PROBE_STEPS,
    *,
    spec: Any = None,
    baseline_allocated_bytes: int | None = None,
    ddp: bool = False,
) -> ProbeRecord:
    """One probe in this process; OOM is an outcome, and memory is returned before we go on.

    ``baseline_allocated_bytes``: what was allocated before the search; anything above it after
    cleanup is reported as ``leaked_bytes``.
    """
    from bench.measure.models import resolve

    spec = spec if spec is not None else resolve(workload.model)
    start = time.perf_counter()
    retries_before = device.alloc_retries()
    device.reset_peak()
    outcome, detail = FIT, None
    seen: dict[str, Any] = {}
    try:
        _run_steps(workload, spec, batch_size, device, steps, seen, ddp)
    except BenchError:
        raise
    except Exception as exc:  # classified here; ``exc`` and the frames holding tensors die below
        outcome = OOM if is_oom(exc) else ERROR
        detail = first_line(exc)
    gc.collect()  # outside the except block: the traceback is gone, so are its tensors
    device.empty_cache()
    # the peak since the last reset: the steady steps', or the failed/first step's
    allocated, reserved = device.peak_allocated_bytes(), device.peak_reserved_bytes()
    steady = seen.get("steady_reserved")
    if "first_reserved" in seen and steps > 1:  # counters were reset after the first step
        allocated = _larger(seen.get("first_allocated"), allocated)
        reserved = _larger(seen.get("first_reserved"), reserved)
    retries_after = device.alloc_retries()
    leaked = None
    now = device.allocated_bytes()
    if baseline_allocated_bytes is not None and now is not None:
        leaked = max(0, now - baseline_allocated_bytes)
    seconds = time.perf_counter() - start
    return ProbeRecord(
        batch_size=batch_size,
        outcome=outcome,
        peak_bytes=reserved,
        seconds=seconds,
        steps=steps,
        peak_allocated_bytes=allocated,
        peak_reserved_bytes=reserved,
        alloc_retries=(retries_after - retries_before)
        if retries_after is not None and retries_before is not None
        else None,
        leaked_bytes=leaked,
        detail=detail,
        first_step_peak_bytes=seen.get("first_reserved"),
        steady_peak_bytes=steady if outcome == FIT else None,
        timing=Timing(
            build_seconds=seen.get("build_seconds"),
            first_step_seconds=seen.get("first_step_seconds"),
            warmup_seconds=seen.get("warmup_seconds"),  # the steps after the first
            teardown_seconds=seen.get("teardown_seconds"),
            total_seconds=seconds,
        ),
    )


def _probe_child(
    workload: Workload,
    spec: Any,
    batch_size: int,
    steps: int,
    ddp: bool = False,
    *,
    emit: Callable[[Any], None],
) -> dict[str, Any]:
    """Child-process body: one probe, then this process's own lifetime peak RSS."""
    from bench.hw.device import open_device
    from bench.measure.runner import own_peak_rss_bytes

    device = open_device(workload.device)
    record = probe_in_process(workload, batch_size, device, steps, spec=spec, ddp=ddp)
    return {"record": record, "peak_rss_bytes": own_peak_rss_bytes()}


def probe_isolated(
    workload: Workload,
    batch_size: int,
    budget_bytes: int | None,
    steps: int = PROBE_STEPS,
    *,
    spec: Any = None,
    ddp: bool = False,
) -> ProbeRecord:
    """One probe in a fresh child. On CPU the parent kills the child past ``budget_bytes`` of RSS,
    and a child that finished fits only if its own peak RSS stayed within the budget."""
    from bench.jobs.isolate import run_isolated

    start = time.perf_counter()
    cpu = device_kind(workload.device) == "cpu"
    outcome = run_isolated(
        "bench.jobs.maxbatch:_probe_child",
        (workload, spec, batch_size, steps, ddp),
        rss_limit_bytes=budget_bytes if cpu else None,
    )
    seconds = time.perf_counter() - start
    if outcome.status == "killed_rss":  # stopped mid-step: only its total time is known
        return ProbeRecord(
            batch_size, OVER_BUDGET, outcome.peak_rss_bytes, seconds, steps, detail=outcome.message,
            timing=Timing(total_seconds=seconds),
        )  # fmt: skip
    if outcome.status != "ok":  # "died": SIGKILL is the kernel's OOM killer; anything else an error
        kind = OOM if outcome.exitcode == -9 else ERROR
        return ProbeRecord(
            batch_size,
            kind,
            None,
            seconds,
            steps,
            detail=outcome.message,
            timing=Timing(total_seconds=seconds),
        )
    record: ProbeRecord = outcome.value["record"]
    if record.timing is not None:  # what starting the child and importing torch there cost
        inner = record.timing.total_seconds or 0.0
        record = replace(
            record,
            timing=replace(record.timing, spawn_seconds=max(seconds - inner, 0.0), total_seconds=seconds),
        )
    if not cpu:
        return replace(record, seconds=seconds)
    peak = int(outcome.value["peak_rss_bytes"])
    result = record.outcome
    if result == FIT and budget_bytes is not None and peak > budget_bytes:
        result = OVER_BUDGET  # a spike between the parent's RSS polls: the child's maxrss saw it
    # CPU: one lifetime peak RSS per child; no steady peak to tell apart
    return replace(record, outcome=result, peak_bytes=peak, seconds=seconds, steady_peak_bytes=None)


# --------------------------------------------------------------------------- search


def _budget(device: Any, memory_limit: str | int | None) -> tuple[int, str, list[str]]:
    notices: list[str] = []
    if device.kind == "cuda":
        device.empty_cache()  # our own cached blocks are free for the probes
        free = int(device.free_bytes())
        held = device.allocated_bytes() or 0
        if held:
            notices.append(
                f"{held} bytes were allocated by this process before the search (your tensors); "
                "they stay resident and are not part of the budget"
            )
        if memory_limit is None:
            return free, "free device memory", notices
        limit = parse_bytes(memory_limit)
        if limit > free:
            notices.append(f"the memory limit {limit} bytes is above the {free} bytes free")
        return limit, "memory limit", notices
    from bench.hw.device import host_available_bytes

    available = host_available_bytes()
    if memory_limit is None:
        return int(available * DEFAULT_CPU_FRACTION), f"{DEFAULT_CPU_FRACTION:.0%} of available RAM", notices
    limit = parse_bytes(memory_limit)
    if limit > available * CPU_LIMIT_MAX_FRACTION:
        raise BenchError(
            f"memory limit {limit / 2**30:.2f} GiB is more than {CPU_LIMIT_MAX_FRACTION:.0%} of the "
            f"{available / 2**30:.2f} GiB of RAM available now; the kernel's OOM killer could "
            "strike first: give a smaller --memory-limit"
        )
    return limit, "memory limit", notices


def _model_info(probes: list[ProbeRecord]) -> MemoryModelInfo | None:
    """memory(b) = fixed + per_sample * b over every probe that fit (repeats and all), for the
    report and the safe batch: a least-squares line weighted by the square of the batch size, so the
    points near the edge count most and one noisy small batch (CPU RSS at batch 1 varies by tens of
    MiB, more on a busy machine) does not set the slope. Fitted to the steady peaks where probes measured them (not the first step's
    autotune workspace), and its error is measured against the same readings."""
    pts = [(p.batch_size, float(p.steady_peak_bytes if p.steady_peak_bytes is not None else p.peak_bytes))
           for p in probes if p.fits and (p.steady_peak_bytes or p.peak_bytes)]  # fmt: skip
    if len({b for b, _ in pts}) < 2:
        return None
    weight = {b: float(b) ** 2 for b, _ in pts}
    w = sum(weight[b] for b, _ in pts)
    mean_b = sum(weight[b] * b for b, _ in pts) / w
    mean_y = sum(weight[b] * y for b, y in pts) / w
    var = sum(weight[b] * (b - mean_b) ** 2 for b, _ in pts)
    per = sum(weight[b] * (b - mean_b) * (y - mean_y) for b, y in pts) / var
    if per <= 0:
        return None
    fixed = mean_y - per * mean_b
    errors = [abs(y - (fixed + per * b)) / y for b, y in pts]
    return MemoryModelInfo(fixed, per, max(errors, default=0.0))


def headroom(device_kind: str, model: MemoryModelInfo | None, probes: list[ProbeRecord]) -> tuple[float, str]:
    """The share of the budget the safe batch leaves free, from what was measured, not a guess.

    - GPU: the caching allocator's overhead at the largest probe that fit (peak reserved /
      allocated - 1): fragmentation that can grow over a long run; plus 5% if the allocator had to
      retry (cudaMalloc failed and the cache was flushed: already under pressure).
    - Both: twice the largest deviation of a measured peak from the linear model (noise, and the
      curvature the model does not capture).
    Clamped to 2%..25%. The safe batch also stays at least one granule of samples below the max.
    """
    margin = MIN_HEADROOM_FRACTION
    reasons = []
    fitting = [p for p in probes if p.fits]
    top = max(fitting, key=lambda p: p.batch_size, default=None)
    if device_kind == "cuda" and top is not None:
        if (
            top.peak_allocated_bytes
            and top.peak_reserved_bytes
            and top.peak_reserved_bytes > top.peak_allocated_bytes
        ):
            overhead = top.peak_reserved_bytes / top.peak_allocated_bytes - 1
            margin = max(margin, overhead)
            reasons.append(f"allocator reserved {overhead:.1%} over allocated at batch {top.batch_size}")
        retries = sum(p.alloc_retries or 0 for p in fitting)
        if retries:
            margin += RETRY_HEADROOM_FRACTION
            reasons.append(f"{retries} allocator retries")
    if model is not None and model.max_relative_error > 0:
        margin = max(margin, 2 * model.max_relative_error)
        reasons.append(f"peaks deviate up to {model.max_relative_error:.1%} from the linear model")
    margin = min(margin, MAX_HEADROOM_FRACTION)
    return margin, ("; ".join(reasons) or "minimum margin") + f": {margin:.0%} headroom"


def safe_batch(
    max_batch_size: int, granularity: int, budget_bytes: int, model: MemoryModelInfo | None, margin: float
) -> int | None:
    """The largest multiple of ``granularity`` below the max whose predicted memory leaves ``margin``
    of the budget free (None if not even ``granularity`` does)."""
    g = granularity
    below_max = max_batch_size - g
    if model is not None and model.per_sample_bytes > 0:
        fit = int((budget_bytes * (1 - margin) - model.fixed_bytes) // model.per_sample_bytes)
        size = min((fit // g) * g, below_max)
    else:
        size = min(int(max_batch_size * (1 - margin)) // g * g, below_max)
    if size >= g:
        return size
    return (
        g
        if model is None or model.fixed_bytes + model.per_sample_bytes * g <= budget_bytes * (1 - margin)
        else None
    )


def check_options(*, granularity: int, cap: int | None, soak_steps: int) -> None:
    """Validate the search options where they enter (BenchError, one line)."""
    if not isinstance(granularity, int) or granularity < 1:
        raise BenchError(f"granularity must be a positive integer, got {granularity!r}")
    if cap is not None and (not isinstance(cap, int) or cap < granularity):
        raise BenchError(f"the batch cap {cap!r} is below the granularity {granularity}")
    if not isinstance(soak_steps, int) or soak_steps < 0:
        raise BenchError(f"soak steps must be a non-negative integer, got {soak_steps!r}")


def check_max_seconds(max_seconds: float | None) -> None:
    """The search's time budget: None, or a finite number of seconds > 0 (BenchError, one line)."""
    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        raise BenchError(f"--max-seconds must be a finite number > 0, got {max_seconds!r}")


def _band(records: list[ProbeRecord], g: int) -> tuple[int | None, int | None]:
    """(low, high): every probed size up to ``low`` fit every time it ran, and nothing below it
    ever failed; ``high`` is the largest size that fit at least once."""
    failed = [r.batch_size for r in records if not r.fits]
    lowest_failure = min(failed, default=None)
    always = [
        r.batch_size for r in records
        if r.fits and (lowest_failure is None or r.batch_size < lowest_failure)
    ]  # fmt: skip
    ever = [r.batch_size for r in records if r.fits]
    return (max(always) if always else None), (max(ever) if ever else None)


def _soak_steps(wanted: int, search_seconds: float, records: list[ProbeRecord], batch: int) -> int:
    """The soak's length: ``wanted`` steps, time-boxed to ``SOAK_SHARE`` of the search so far
    (measured: two 20-step CPU soaks took 398 s after a 307 s search), and never shorter than one
    step more than a probe (or it proves nothing a probe did not)."""
    at = [r for r in records if r.batch_size == batch and r.fits and r.timing is not None]
    per_step = None
    for r in at:
        t = r.timing
        if t is not None and t.warmup_seconds is not None and r.steps > 1:
            per_step = t.warmup_seconds / (r.steps - 1)
    if per_step is None or per_step <= 0:
        return wanted
    boxed = int(SOAK_SHARE * search_seconds / per_step)
    return max(min(wanted, boxed), min(wanted, PROBE_STEPS + 1))


def default_granularity(device_kind: str) -> int:
    """GPU: exact to one sample (the caching allocator gives the same peak again). CPU: peak RSS of
    the same steps varies +-4% within minutes (~15% over a day), i.e. tens of samples at the edge,
    so a granularity of 1 would claim a precision the machine does not have."""
    return 1 if device_kind == "cuda" else CPU_GRANULARITY


def find_max_batch(
    model_or_workload: Any,
    *,
    out_path: Path | str | None = None,
    store: StoreArg = None,
    ddp: bool = False,
    **options: Any,
) -> MaxBatchResult:
    """The max-batch job, called by ``bench max-batch``, ``bench recommend``, profiles and Python
    users: the search (``_search``, whose options this takes), then the result file (``out_path``)
    and the history (``store``: True for the default history, a path for another).

    ``ddp``: probe with the model in DistributedDataParallel (one-process group), so its gradient
    buckets are allocated as in data-parallel training. A history that cannot take the result is
    a notice in it, never a lost search. An interrupted search (KeyboardInterrupt) proves nothing
    and is neither written nor stored.
    """
    from bench.jobs.distributed import check_ddp_probes
    from bench.jobs.sweep_loop import ResultWriter, write_json_atomic

    db = history_path(store)
    if out_path is not None:  # an unwritable output is bad input: said before minutes of probing
        ResultWriter(out_path)
    if ddp:
        check_ddp_probes()
    result = _search(model_or_workload, ddp=ddp, **options)
    if ddp:
        note = "probes ran the model in DistributedDataParallel (one-process group): buckets allocated"
        result = replace(result, notices=(*result.notices, note))
    if (warning := store_run(db, result)) is not None:
        result = replace(result, notices=(*result.notices, warning))
    if out_path is not None:
        try:
            write_json_atomic(out_path, json.dumps(result.to_dict(), indent=2, allow_nan=False))
        except OSError as exc:
            raise BenchError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    return result


def check_inputs(
    workload: Workload,
    *,
    out_path: Path | str | None = None,
    store: StoreArg = None,
    granularity: int | None = None,
    cap: int | None = None,
    soak_steps: int = SOAK_STEPS,
    memory_limit: str | int | None = None,
    max_seconds: float | None = None,
    **_: Any,
) -> None:
    """Bad input to ``find_max_batch`` as one BenchError line before anything starts (the command
    calls it before it says what it searches): options, device, model, output file, history."""
    from bench.hw.device import check_device
    from bench.measure.models import resolve

    g = granularity
    if g is None:
        g = min(default_granularity(device_kind(workload.device)), cap or 2**62)
    check_options(granularity=g, cap=cap, soak_steps=soak_steps)
    check_max_seconds(max_seconds)
    if memory_limit is not None:
        parse_bytes(memory_limit)
    check_device(workload.device)
    resolve(workload.model)
    if out_path is not None:
        from bench.jobs.sweep_loop import ResultWriter

        ResultWriter(out_path)
    history_path(store)


def _search(
    model_or_workload: Any,
    *,
    granularity: int | None = None,
    memory_limit: str | int | None = None,
    cap: int | None = None,
    isolate: bool | None = None,
    soak_steps: int = SOAK_STEPS,
    input_shape: tuple[int, ...] | None = None,
    on_probe: Callable[[ProbeRecord], None] | None = None,
    max_seconds: float | None = None,
    repeat_boundary: bool | None = None,
    ddp: bool = False,
    **workload_options: Any,
) -> MaxBatchResult:
    """Largest training batch that fits, exact to ``granularity``, plus a safe batch to train with.

    ``model_or_workload``: a ``Workload``; a model name ("resnet50", "timm:...", "pkg.mod:factory");
    or your ``nn.Module`` (copied through serialisation: your model, its gradients and your optimizer
    are never touched; the search builds its own optimizer per ``optimizer=``). ``workload_options``
    are ``Workload`` fields (device, precision, image_size, channels_last, optimizer, ...), applied
    on top. ``input_shape``: the per-sample input shape for a module that is not a 3xHxW image
    classifier. ``memory_limit``: bytes or "8GiB"; on CPU the default is half the available RAM.
    ``cap``: never probe above it. ``on_probe`` sees every probe as it finishes (soak runs too).
    ``granularity``: None = 1 on a GPU, ``CPU_GRANULARITY`` on CPU (no finer than RSS noise).
    ``max_seconds``: stop probing once the probes took this long, with the best bracket so far
    (``exact=False``, ``stopped="time budget"``). ``repeat_boundary`` (default: on CPU) runs the
    max and max + granularity once more: where they do not repeat, the result is a band
    (``band_low``..``band_high``), never "exact". A module whose class is defined in ``__main__``
    (a script or notebook) is probed in this process on a GPU (``isolate=True`` is then a notice);
    on CPU, where probes need a child, it is a BenchError saying to move the class into a module.

    The result proves the answer: ``max_batch_size`` was run and fit, ``failed_batch_size`` (max +
    granularity) was run and did not. The soak is time-boxed to ``SOAK_SHARE`` of the search.
    """
    from bench.hw import env as env_mod
    from bench.hw.device import check_device, default_device, open_device
    from bench.measure.models import resolve

    started_wall = dt.datetime.now(dt.timezone.utc)
    started = time.perf_counter()
    spec = None
    try:
        if isinstance(model_or_workload, Workload):
            workload = replace(model_or_workload, **workload_options)
        elif isinstance(model_or_workload, str):
            workload_options.setdefault("device", default_device())
            workload = Workload(model=model_or_workload, **workload_options)
        elif hasattr(model_or_workload, "state_dict") and callable(model_or_workload):
            label, spec = _spec_for_module(model_or_workload, input_shape)
            workload_options.setdefault("device", default_device())
            workload = Workload(model=label, **workload_options)
        else:
            raise BenchError(
                f"find_max_batch takes a Workload, a model name or an nn.Module, "
                f"not {type(model_or_workload).__name__}"
            )
    except TypeError as exc:
        raise BenchError(f"find_max_batch: {exc}") from None
    if input_shape is not None and spec is None:
        raise BenchError("input_shape applies to an nn.Module; a named model brings its own input")
    if workload.mode != "train":
        raise BenchError("max-batch searches the training batch: use mode 'train'")
    check_device(workload.device)
    if granularity is None:
        granularity = default_granularity(device_kind(workload.device))
        granularity = min(granularity, cap) if cap is not None and cap >= 1 else granularity
    check_options(granularity=granularity, cap=cap, soak_steps=soak_steps)
    check_max_seconds(max_seconds)
    if spec is None:
        resolve(workload.model)  # a bad name is the user's to fix, before any probe
    in_main = _classes_in_main(model_or_workload) if spec is not None else []
    if in_main and device_kind(workload.device) == "cpu":  # CPU probes need a child: no way round
        raise BenchError(_in_main_message(workload.model, in_main))
    device = open_device(workload.device)
    isolate = True if device.kind == "cpu" else bool(isolate)  # CPU: the RSS budget needs a child
    budget, source, notices = _budget(device, memory_limit)
    if in_main and isolate:  # GPU: in-process probes load it; a child could not
        isolate = False
        notices.append(
            f"isolate=True not honoured: class {', '.join(in_main)} is defined in __main__, which a "
            "child process cannot import; the probes ran in this process"
        )
    enforce_budget = device.kind == "cpu" or memory_limit is not None
    gc.collect()
    baseline = device.allocated_bytes()
    records: list[ProbeRecord] = []
    leaks: list[str] = []

    def probe(b: int, steps: int) -> ProbeRecord:
        if isolate:
            rec = probe_isolated(
                workload, b, budget if device.kind == "cpu" else None, steps, spec=spec, ddp=ddp
            )
        else:
            rec = probe_in_process(
                workload, b, device, steps, spec=spec, baseline_allocated_bytes=baseline, ddp=ddp
            )
            if rec.leaked_bytes:
                leaks.append(f"after batch {b}: {rec.leaked_bytes} bytes still allocated")
        if rec.fits and enforce_budget and rec.peak_bytes is not None and rec.peak_bytes > budget:
            rec = replace(rec, outcome=OVER_BUDGET)
        if rec.outcome == ERROR and b == granularity and steps == PROBE_STEPS:
            hint = ""
            if b == 1 and "value per channel" in (rec.detail or ""):
                hint = " (BatchNorm cannot train on one sample here: use --granularity 2 or a larger --image-size)"
            raise BenchError(
                f"{workload.model} failed at batch {b} for a reason other than memory: {rec.detail}{hint}"
            )
        if on_probe is not None:
            on_probe(rec)
        return rec

    def try_batch(b: int) -> ProbeResult:
        rec = probe(b, PROBE_STEPS)
        records.append(rec)
        # a non-memory error at a large batch (e.g. a 32-bit index limit in a kernel) also bounds it
        return ProbeResult(
            b, rec.fits, rec.peak_bytes, rec.seconds, rec.outcome, steady_peak_bytes=rec.steady_peak_bytes
        )

    result = search_max_batch(
        try_batch, budget_bytes=budget, granularity=granularity, cap=cap, max_seconds=max_seconds
    )
    max_b, failed_b, exact = result.max_batch_size, result.failed_batch_size, result.exact
    model = _model_info(records)
    search_seconds = time.perf_counter() - started

    band_low = band_high = None
    repeats: bool | None = None
    if repeat_boundary is None:
        repeat_boundary = device.kind == "cpu"
    if repeat_boundary and exact and max_b is not None and failed_b is not None:
        # Does the certificate repeat? Run both sides once more.
        again = {}
        for b in (max_b, failed_b):
            rec = replace(probe(b, PROBE_STEPS), repeat=True)
            records.append(rec)
            again[b] = rec.fits
        repeats = again[max_b] and not again[failed_b]
        if not repeats:
            band_low, band_high = _band(records, granularity)
            max_b = band_low
            failed_b = min((r.batch_size for r in records if not r.fits and r.batch_size > (band_low or 0)),
                           default=None)  # fmt: skip
            exact = False
            flipped = ", ".join(
                f"batch {b} {'fit' if ok else 'failed'} on the second run" for b, ok in again.items()
                if ok != (b == result.max_batch_size)
            )  # fmt: skip
            notices.append(
                f"the boundary did not repeat ({flipped}: peak memory varies between runs); reporting "
                f"{band_low}, the largest size that fit every time it ran; {band_high} fit at least once"
            )

    soak = None
    if max_b is not None and soak_steps > 0:
        soak_steps = _soak_steps(soak_steps, search_seconds, records, max_b)
        soak_start = time.perf_counter()
        soaked: list[ProbeRecord] = []

        def try_soak(b: int) -> ProbeResult:
            rec = probe(b, soak_steps)
            soaked.append(rec)
            return ProbeResult(b, rec.fits, rec.peak_bytes, rec.seconds, rec.outcome)

        first = try_soak(max_b)
        if first.fits:
            detail = f"{soak_steps} steps at batch {max_b} completed"
        else:
            down = search_down(try_soak, failed_batch_size=max_b, granularity=granularity)
            detail = f"batch {max_b} failed during {soak_steps} steps ({first.outcome}); " + (
                f"batch {down.max_batch_size} passed" if down.max_batch_size else "no smaller batch passed"
            )
            max_b, failed_b, exact = down.max_batch_size, down.failed_batch_size, down.exact
        soak = SoakResult(
            batch_size=max_b,
            steps=soak_steps,
            ok=max_b is not None,
            seconds=time.perf_counter() - soak_start,
            detail=detail,
            probes=tuple(soaked),
        )

    margin, why = headroom(device.kind, model, records)
    safe = safe_batch(max_b, granularity, budget, model, margin) if max_b is not None else None
    return MaxBatchResult(
        workload=workload,
        environment=env_mod.collect(),
        max_batch_size=max_b,
        safe_batch_size=safe,
        granularity=granularity,
        budget_bytes=budget,
        memory_model=model,
        probes=tuple(records),
        seconds=time.perf_counter() - started,
        soak=soak,
        failed_batch_size=failed_b,
        exact=exact,
        cap_reached=result.cap_reached and max_b == result.max_batch_size,
        budget_source=source,
        headroom_fraction=margin,
        headroom_reason=why,
        leaks=tuple(leaks),
        notices=tuple(notices),
        band_low=band_low,
        band_high=band_high,
        repeats=repeats,
        stopped=result.stopped,
        wall_seconds=time.perf_counter() - started,
        run_id=f"maxbatch-{started_wall.strftime('%Y%m%d-%H%M%S')}-{workload.model}-{workload.device}-{uuid.uuid4().hex[:8]}",
        started_at=started_wall.isoformat(timespec="seconds"),
    )
