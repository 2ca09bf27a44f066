"""The largest batch that fits this hardware: real probes for ``bench.search``.

A probe builds a fresh model, optimizer and batch and runs full training steps (forward, backward,
optimizer step, so optimizer state is allocated), records peak memory and releases everything.

- GPU: the budget is the device memory free at the start. A probe fails on an out-of-memory error
  (``errors.is_oom``: torch.cuda.OutOfMemoryError or a cuBLAS/cuDNN allocation failure). After each
  in-process probe every reference is dropped, ``gc.collect()``, ``empty_cache()``, and allocated
  memory is checked against its baseline; a leak is recorded. ``isolate=True`` runs each probe in a
  fresh child process (a clean allocator).
- CPU: there is no OOM exception, and the kernel's OOM killer must never be reached. The budget is
  ``memory_limit`` (default: half of the RAM available now). Every probe runs in its own child
  process; the parent kills a child whose RSS exceeds the budget (a failed probe) and otherwise
  the child's own peak RSS decides.

The caller's model and optimizer are never touched: probes build their own.
"""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bench.errors import BenchError, first_line, is_oom
from bench.schema import Environment, Workload, to_dict
from bench.search import MemoryModel, Probe, search_max_batch

PROBE_STEPS = 3  # steps per probe: the optimizer state appears at step 1, steady peak by step 2-3
SOAK_STEPS = 20  # the chosen safe batch runs this long before it is reported
DEFAULT_CPU_FRACTION = 0.5  # of currently available RAM, when no --memory-limit is given

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
          "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}  # fmt: skip


def parse_bytes(text: str) -> int:
    """'4GiB' -> 4294967296, '3000MB' -> 3000000000, '512m' -> 536870912."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise BenchError(f"memory size {text!r} not understood: use e.g. 8GiB, 3000MB, 512MiB")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise BenchError(f"memory size must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class ProbeRecord:
    batch_size: int
    outcome: str  # "fit" | "oom" | "over_budget" | "error"
    peak_bytes: int | None
    seconds: float
    detail: str | None = None


@dataclass(frozen=True)
class MaxBatchResult:
    workload: Workload
    environment: Environment
    granularity: int
    budget_bytes: int
    budget_source: str  # "free device memory" | "--memory-limit" | "50% of available RAM"
    max_batch_size: int | None
    failed_batch_size: int | None  # max + granularity, probed and did not fit (or None at a cap)
    cap_reached: bool
    safe_batch_size: int | None
    headroom_fraction: float  # the safety margin applied for the safe batch, derived from measurements
    headroom_reason: str
    fixed_bytes: float | None
    per_sample_bytes: float | None
    probes: tuple[ProbeRecord, ...]
    seconds: float
    soak_steps: int
    soak_ok: bool | None
    soak_detail: str | None
    leaks: tuple[str, ...] = ()
    kind: str = "max_batch"
    schema_version: int = 1

    @property
    def probe_count(self) -> int:
        return len(self.probes)

    def to_dict(self) -> dict[str, Any]:
        d = to_dict(self)
        d["probe_count"] = self.probe_count
        d["memory_model"] = {"fixed_bytes": self.fixed_bytes, "per_sample_bytes": self.per_sample_bytes}
        return d


# --------------------------------------------------------------------------- probes


def _run_steps(workload: Workload, batch_size: int, device: Any, steps: int) -> None:
    from bench.models import resolve
    from bench.workload import precision_mode, prepare

    spec = resolve(workload.model)
    with precision_mode(workload.precision, device.kind):
        prepared = prepare(workload, spec, batch_size, device)
        try:
            for _ in range(steps):
                prepared.step()
            device.synchronize()
        finally:
            prepared.release()


def probe_in_process(workload: Workload, batch_size: int, device: Any, steps: int = PROBE_STEPS) -> ProbeRecord:
    """One probe in this process; OOM is an outcome, and memory is returned before we go on."""
    start = time.perf_counter()
    device.reset_peak()
    outcome, detail = "fit", None
    try:
        _run_steps(workload, batch_size, device, steps)
    except BenchError:
        raise
    except Exception as exc:  # classified, then dropped with its frames before cleanup below
        outcome = "oom" if is_oom(exc) else "error"
        detail = first_line(exc)
    gc.collect()
    device.empty_cache()
    peak = device.peak_reserved_bytes() if device.kind == "cuda" else None
    return ProbeRecord(batch_size, outcome, peak, time.perf_counter() - start, detail)


def _probe_child(workload: Workload, batch_size: int, steps: int, *, emit: Callable[[Any], None]) -> dict[str, Any]:
    """Child-process body: run the steps, report this process's own peak memory."""
    from bench.hw.device import open_device
    from bench.runner import own_peak_rss_bytes

    device = open_device(workload.device)
    record = probe_in_process(workload, batch_size, device, steps)
    return {
        "outcome": record.outcome,
        "detail": record.detail,
        "peak_rss_bytes": own_peak_rss_bytes(),
        "peak_device_bytes": record.peak_bytes,
    }


def probe_isolated(
    workload: Workload, batch_size: int, budget_bytes: int | None, steps: int = PROBE_STEPS
) -> ProbeRecord:
    """One probe in a fresh child; on CPU the parent enforces the RSS budget."""
    from bench.isolate import run_isolated

    start = time.perf_counter()
    cpu = not workload.device.startswith("cuda")
    outcome = run_isolated(
        "bench.maxbatch:_probe_child",
        (workload, batch_size, steps),
        rss_limit_bytes=budget_bytes if cpu else None,
    )
    seconds = time.perf_counter() - start
    if outcome.status == "killed_rss":
        return ProbeRecord(batch_size, "over_budget", outcome.peak_rss_bytes, seconds, outcome.message)
    if outcome.status != "ok":
        kind = "oom" if outcome.exitcode == -9 else "error"
        return ProbeRecord(batch_size, kind, None, seconds, outcome.message)
    value = outcome.value
    peak = value["peak_rss_bytes"] if cpu else value["peak_device_bytes"]
    result = value["outcome"]
    if result == "fit" and cpu and budget_bytes is not None and peak > budget_bytes:
        result = "over_budget"  # a spike between the parent's RSS polls
    return ProbeRecord(batch_size, result, peak, seconds, value["detail"])


# --------------------------------------------------------------------------- search


def _budget(workload: Workload, device: Any, memory_limit: str | int | None) -> tuple[int, str]:
    if memory_limit is not None:
        value = parse_bytes(memory_limit) if isinstance(memory_limit, str) else int(memory_limit)
        return value, "--memory-limit"
    if device.kind == "cuda":
        return int(device.free_bytes() + device.allocated_bytes()), "free device memory"
    import psutil

    return int(psutil.virtual_memory().available * DEFAULT_CPU_FRACTION), "50% of available RAM"


def _headroom(device: Any, model: MemoryModel | None, probes: list[ProbeRecord]) -> tuple[float, str]:
    """Safety margin from what was measured, not a fixed guess.

    GPU: the caching allocator's overhead at the largest fitting probe (reserved/allocated - 1:
    fragmentation that can grow over a long run), plus 5% if the allocator had to retry
    (cudaMalloc failures already under pressure). CPU: the spread of peak RSS around the linear
    model (allocator and thread-pool noise). Clamped to 3%..25%.
    """
    reasons = []
    margin = 0.03
    if device.kind == "cuda":
        alloc, reserved = device.peak_allocated_bytes(), device.peak_reserved_bytes()
        if alloc and reserved and reserved > alloc:
            frag = reserved / alloc - 1
            margin = max(margin, frag)
            reasons.append(f"reserved/allocated overhead {frag:.1%}")
        retries = device.alloc_retries() or 0
        if retries:
            margin += 0.05
            reasons.append(f"{retries} allocator retries")
    elif model is not None:
        errors = [
            abs(p.peak_bytes - model.predict(p.batch_size)) / p.peak_bytes
            for p in probes
            if p.outcome == "fit" and p.peak_bytes
        ]
        if errors:
            margin = max(margin, 2 * max(errors))
            reasons.append(f"peak RSS deviates up to {max(errors):.1%} from the linear model")
    margin = min(margin, 0.25)
    return margin, ("; ".join(reasons) or "minimum margin") + f" -> {margin:.0%} headroom"


def find_max_batch(
    workload: Workload | str,
    *,
    granularity: int = 1,
    memory_limit: str | int | None = None,
    cap: int | None = None,
    isolate: bool | None = None,
    soak_steps: int = SOAK_STEPS,
    on_probe: Callable[[ProbeRecord], None] | None = None,
) -> MaxBatchResult:
    """Largest training batch that fits, exact to ``granularity``, plus a safe batch that soaked.

    ``workload``: a Workload, or a model name (train, fp32, default device). The returned result
    proves the answer: ``max_batch_size`` was probed and fit, ``failed_batch_size`` (max +
    granularity) was probed and did not.
    """
    from bench import env as env_mod
    from bench.hw.device import check_device, default_device, open_device
    from bench.models import resolve

    if isinstance(workload, str):
        workload = Workload(model=workload, device=default_device())
    if workload.mode != "train":
        workload = replace(workload, mode="train")  # the max that matters is the training one
    if granularity < 1:
        raise BenchError(f"granularity must be a positive integer, got {granularity}")
    if cap is not None and cap < granularity:
        raise BenchError(f"--max-batch {cap} is below the granularity {granularity}")
    check_device(workload.device)
    resolve(workload.model)
    device = open_device(workload.device)
    cpu = device.kind == "cpu"
    isolate = True if cpu else bool(isolate)
    budget, source = _budget(workload, device, memory_limit)
    started = time.perf_counter()
    records: list[ProbeRecord] = []
    leaks: list[str] = []
    baseline = device.allocated_bytes()

    def probe(b: int, steps: int = PROBE_STEPS) -> ProbeRecord:
        if isolate:
            rec = probe_isolated(workload, b, budget, steps)
        else:
            rec = probe_in_process(workload, b, device, steps)
            now = device.allocated_bytes()
            if baseline is not None and now is not None and now > baseline:
                leaks.append(f"after batch {b}: {now - baseline} bytes still allocated")
        return rec

    def try_batch(b: int) -> Probe:
        rec = probe(b)
        records.append(rec)
        if on_probe is not None:
            on_probe(rec)
        if rec.outcome == "error":
            raise BenchError(f"batch {b} failed for a reason other than memory: {rec.detail}")
        return Probe(b, rec.outcome == "fit", rec.peak_bytes, rec.seconds, rec.outcome)

    result = search_max_batch(try_batch, budget_bytes=budget, granularity=granularity, cap=cap)
    model = result.model
    margin, why = _headroom(device, model, records)
    safe = None
    soak_ok = None
    soak_detail = None
    if result.max_batch_size is not None:
        mx = result.max_batch_size
        safe = mx
        if model is not None:
            by_model = model.max_batch_for(budget * (1 - margin))
            if by_model is not None:
                safe = max(granularity, min(mx, (by_model // granularity) * granularity))
        else:
            safe = max(granularity, int(mx * (1 - margin)) // granularity * granularity)
        # soak: run the safe batch for longer than a probe; step down if it fails
        while safe is not None and soak_steps > 0:
            rec = probe(safe, soak_steps)
            if rec.outcome == "fit":
                soak_ok, soak_detail = True, f"{soak_steps} steps at batch {safe} completed"
                break
            soak_ok, soak_detail = False, f"batch {safe} failed during {soak_steps} steps ({rec.outcome})"
            safe = safe - granularity if safe > granularity else None
    return MaxBatchResult(
        workload=workload,
        environment=env_mod.collect(),
        granularity=granularity,
        budget_bytes=budget,
        budget_source=source,
        max_batch_size=result.max_batch_size,
        failed_batch_size=result.failed_batch_size,
        cap_reached=result.cap_reached,
        safe_batch_size=safe,
        headroom_fraction=margin,
        headroom_reason=why,
        fixed_bytes=model.fixed_bytes if model else None,
        per_sample_bytes=model.per_sample_bytes if model else None,
        probes=tuple(records),
        seconds=time.perf_counter() - started,
        soak_steps=soak_steps,
        soak_ok=soak_ok,
        soak_detail=soak_detail,
        leaks=tuple(leaks),
    )
