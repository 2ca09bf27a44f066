"""Where a max-batch probe runs and what it may use: in this process or in a fresh child
(``bench.measure.probe`` measures it), the budget, and the GPU allocator's cap for a memory limit.
``bench.jobs.maxbatch`` (the job) calls these and re-exports the probe functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench.hw.device import host_available_bytes, open_device
from bench.hw.host import own_peak_rss_bytes
from bench.jobs.distributed import probe_wrap
from bench.jobs.isolate import run_isolated
from bench.measure.probe import run_probe
from bench.results.errors import BenchError
from bench.results.maxbatch import ERROR, FIT, OOM, OVER_BUDGET, PROBE_STEPS, ProbeRecord
from bench.results.schema import Timing, Workload, device_kind
from bench.results.units import parse_bytes

DEFAULT_CPU_FRACTION = 0.5  # of the RAM available now, when no memory limit is given
CPU_LIMIT_MAX_FRACTION = 0.9  # a CPU limit above this share of available RAM risks the OOM killer


def probe_in_process(
    workload: Workload,
    batch_size: int,
    device: Any,
    steps: int = PROBE_STEPS,
    *,
    spec: Any = None,
    previous_allocated_bytes: int | None = None,
    ddp: bool = False,
    cudnn_benchmark: bool = False,
) -> ProbeRecord:
    """One probe in this process (``bench.measure.probe.run_probe``), with the model in DDP when
    ``ddp`` (a one-process group: its gradient buckets allocated)."""

    wrap = None
    if ddp:
        wrap = probe_wrap(device)
    return run_probe(
        workload, batch_size, device, steps, spec=spec, previous_allocated_bytes=previous_allocated_bytes,
        wrap=wrap, cudnn_benchmark=cudnn_benchmark,
    )  # fmt: skip


def _probe_child(
    workload: Workload,
    spec: Any,
    batch_size: int,
    steps: int,
    ddp: bool = False,
    cudnn_benchmark: bool = False,
    memory_fraction: float | None = None,
    *,
    emit: Callable[[Any], None],
) -> dict[str, Any]:
    """Child-process body: one probe (under the parent's allocator cap), then this process's own
    lifetime peak RSS."""

    device = open_device(workload.device)
    if memory_fraction is not None:
        device.set_memory_fraction(memory_fraction)
    record = probe_in_process(
        workload, batch_size, device, steps, spec=spec, ddp=ddp, cudnn_benchmark=cudnn_benchmark
    )
    return {"record": record, "peak_rss_bytes": own_peak_rss_bytes()}


def probe_isolated(
    workload: Workload,
    batch_size: int,
    budget_bytes: int | None,
    steps: int = PROBE_STEPS,
    *,
    spec: Any = None,
    ddp: bool = False,
    cudnn_benchmark: bool = False,
    memory_fraction: float | None = None,
) -> ProbeRecord:
    """One probe in a fresh child. On CPU the parent kills the child past ``budget_bytes`` of RSS,
    and a child that finished fits only if its own peak RSS stayed within the budget. On a GPU
    ``memory_fraction`` caps the child's caching allocator (``--memory-limit``)."""

    start = time.perf_counter()
    cpu = device_kind(workload.device) == "cpu"
    outcome = run_isolated(
        "bench.jobs.maxbatch_probes:_probe_child",
        (workload, spec, batch_size, steps, ddp, cudnn_benchmark, memory_fraction),
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


def _allocated(device: Any) -> int | None:
    try:
        return device.allocated_bytes()
    except Exception:  # noqa: BLE001 - a dead CUDA context: nothing to compare
        return None


def _cap_allocator(
    device: Any, memory_limit: str | int | None, budget: int
) -> tuple[float | None, float | None]:
    """GPU with ``memory_limit``: cap the caching allocator at the budget (plus what this process
    already held), so cuDNN and cuBLAS size their workspaces to it, as a smaller GPU would.
    Returns (the fraction set, the previous one to restore); (None, None) when nothing was capped."""
    if device.kind != "cuda" or memory_limit is None or not device.total_bytes():
        return None, None
    fraction = min(1.0, (budget + (_allocated(device) or 0)) / device.total_bytes())
    previous = device.memory_fraction()
    device.set_memory_fraction(fraction)
    return fraction, previous


def _uncap_allocator(device: Any, previous: float | None) -> None:
    try:
        device.set_memory_fraction(previous if previous is not None else 1.0)
    except Exception:  # noqa: BLE001 - after a sticky error the context is gone; so is the cap
        pass
