"""Why not faster: a bottleneck verdict per point, from what the point recorded.

Pure logic over results (no torch), so it works on any stored run, including files written before
verdicts existed: they get their verdicts from the readings they kept (step times across batch
sizes, NVML kernel-active, process CPU, clock-event reasons, memory). Readings added later
(data wait, allocator retries, GPM counters) sharpen the verdict where present.

Verdicts, first match wins:

- ``contended``: other processes took a share of the CPU the point needed while it ran
  (``Point.contention``): its numbers measure the neighbour as much as the model.
- ``input-bound``: the step waited for data for a large share of its time.
- ``allocator-pressure``: the caching allocator had to free and retry cudaMalloc near the memory limit.
- ``host-bound``: the GPU idles between kernels while one CPU core is saturated (Python and kernel
  launches), and the step time hardly grows with the batch: more samples per step are nearly free.
- ``throttled``: the GPU lowered its clocks for power or temperature in the window.
- ``memory-bound``: the kernels run back to back but wait on DRAM (GPM DRAM bandwidth, or NVML's
  memory-controller busy share, high).
- ``device-bound``: kernels run back to back (high kernel-active). GPU only.
- ``cpu-bound`` (CPU device): torch's threads are all busy (process CPU near 100% per thread):
  the cores do the arithmetic, and only more cores or less arithmetic go faster.
- ``threads-idle`` (CPU device): torch's threads are busy well under their number: they wait on
  memory, on single-threaded operators or on the Python loop.
- ``unclear``: none of the above can be told from what was recorded (on a CPU, with no evidence:
  nothing there to act on).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from bench.results.schema import OK, Diagnosis, Point, SweepResult, device_kind

__all__ = ["Diagnosis", "VERDICTS", "diagnose_point", "diagnose_run", "with_diagnoses", "mfu_note"]

VERDICTS = (
    "contended",
    "input-bound",
    "allocator-pressure",
    "host-bound",
    "throttled",
    "memory-bound",
    "device-bound",
    "cpu-bound",
    "threads-idle",
    "unclear",
)

INPUT_WAIT_FRACTION = 0.3  # data wait above this share of the step: input-bound
KERNEL_ACTIVE_LOW_PERCENT = 60.0  # below: the GPU idles a good part of the window
KERNEL_ACTIVE_HIGH_PERCENT = 85.0  # at or above: kernels nearly back to back
CPU_SATURATED_PERCENT = 90.0  # process CPU; 100 = one core fully busy
CPU_THREADS_BUSY = 0.9  # CPU device: process CPU / (100 x torch threads) at or above: all threads busy
CPU_THREADS_IDLE = 0.6  # below: the threads wait a good part of the window
# Step time ~ batch^e between neighbouring points: e near 0 is flat (fixed per-step cost), near 1
# proportional (the device does the work per sample).
FLAT_EXPONENT = 0.35
PROPORTIONAL_EXPONENT = 0.7
MEMORY_BUSY_PERCENT = 60.0  # GPM DRAM bandwidth or NVML memory-controller busy share
NEAR_MEMORY_LIMIT = 0.85  # reserved / total above this counts as near the limit
THROTTLE_REASONS = frozenset(
    {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
)
TINY_MFU = 0.05  # below 5% of the dense peak the report explains why


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _exponent(a: Point, b: Point) -> float | None:
    """e in step_time ~ batch^e between two points (None when either lacks a step median)."""
    if a.step_stats is None or b.step_stats is None or a.batch_size == b.batch_size:
        return None
    ta, tb = a.step_stats.median_seconds, b.step_stats.median_seconds
    if ta <= 0 or tb <= 0:
        return None
    return math.log(tb / ta) / math.log(b.batch_size / a.batch_size)


def _scaling(point: Point, neighbours: Sequence[Point]) -> tuple[float | None, str | None]:
    """The smallest step-time exponent to a neighbouring batch size, with a sentence saying so."""
    best: tuple[float, Point] | None = None
    for other in neighbours:
        e = _exponent(point, other) if other.batch_size > point.batch_size else _exponent(other, point)
        if e is not None and (best is None or e < best[0]):
            best = (e, other)
    if best is None:
        return None, None
    e, other = best
    lo, hi = sorted((point, other), key=lambda p: p.batch_size)
    assert lo.step_stats is not None and hi.step_stats is not None
    ratio = hi.step_stats.median_seconds / lo.step_stats.median_seconds
    if e <= -FLAT_EXPONENT:  # x0.12 for x2 the samples is not "flat": one of the two is suspect
        shape = "falls as the batch grows: one of the two measurements is suspect (contention?)"
    elif e < FLAT_EXPONENT:
        shape = "nearly flat"
    else:
        shape = "proportional" if e >= PROPORTIONAL_EXPONENT else "sub-linear"
    words = (
        f"step time {_ms(lo.step_stats.median_seconds)} at batch {lo.batch_size} -> "
        f"{_ms(hi.step_stats.median_seconds)} at batch {hi.batch_size} "
        f"(x{ratio:.2f} for x{hi.batch_size / lo.batch_size:g} the samples: {shape})"
    )
    return e, words


def _data_wait(point: Point) -> float | None:
    bd = point.breakdown
    if bd is None:
        return None
    if bd.data_wait_fraction is not None:
        return bd.data_wait_fraction
    if bd.data_seconds is not None and point.step_stats is not None and point.step_stats.median_seconds > 0:
        return bd.data_seconds / point.step_stats.median_seconds
    return None


def diagnose_point(
    point: Point, neighbours: Sequence[Point] = (), *, on_gpu: bool = True, threads: int | None = None
) -> Diagnosis | None:
    """The verdict for one measured point; ``neighbours`` are the measured points at the next
    smaller and larger batch sizes (for the step-time scaling); ``threads``: torch's intra-op
    threads on a CPU device (``Environment.torch_num_threads``). None for a point that did not run."""
    if point.status != OK or point.step_stats is None:
        return None
    t = point.telemetry
    step = point.step_stats.median_seconds

    c = point.contention
    if c is not None and c.contended:
        return Diagnosis(
            "contended",
            (
                f"other processes took {c.felt_percent:.0f}% of the {c.cores_needed} core(s) it needs "
                f"(they used {c.others_cpu_percent:.0f}% of the machine)",
                "measure again when nothing else runs (see `uptime`)",
            ),
        )

    wait = _data_wait(point)
    if wait is not None and wait > INPUT_WAIT_FRACTION:
        evidence = [f"waiting for data {wait * 100:.0f}% of the step (> {INPUT_WAIT_FRACTION * 100:.0f}%)"]
        if point.breakdown is not None and point.breakdown.data_seconds is not None:
            evidence.append(f"data {_ms(point.breakdown.data_seconds)} of a {_ms(step)} step (medians)")
        if on_gpu and t.gpu_kernel_active_percent is not None:
            evidence.append(f"GPU kernel-active {t.gpu_kernel_active_percent:.0f}%")
        return Diagnosis("input-bound", tuple(evidence))

    m = point.memory
    if point.num_alloc_retries and m.device_peak_reserved_bytes and m.device_total_bytes:
        share = m.device_peak_reserved_bytes / m.device_total_bytes
        if share >= NEAR_MEMORY_LIMIT:
            return Diagnosis(
                "allocator-pressure",
                (
                    f"{point.num_alloc_retries} cudaMalloc retries (the allocator freed its cache and retried)",
                    f"peak reserved {share * 100:.0f}% of device memory (>= {NEAR_MEMORY_LIMIT * 100:.0f}%)",
                ),
            )

    exponent, scaling_words = _scaling(point, neighbours)
    active = t.gpu_kernel_active_percent
    cpu = t.process_cpu_percent

    if on_gpu:
        idle = active is not None and active < KERNEL_ACTIVE_LOW_PERCENT
        saturated = cpu is not None and cpu >= CPU_SATURATED_PERCENT
        flat = exponent is not None and -FLAT_EXPONENT < exponent < FLAT_EXPONENT
        if idle and saturated and (flat or exponent is None):
            evidence = [
                f"GPU kernel-active {active:.0f}% (< {KERNEL_ACTIVE_LOW_PERCENT:.0f}%): idle between kernels",
                f"process CPU {cpu:.0f}% of one core (saturated): Python and kernel launches set the pace",
            ]
            if scaling_words:
                evidence.append(scaling_words)
            else:
                evidence.append("no neighbouring batch size to confirm a flat step time")
            return Diagnosis("host-bound", tuple(evidence))

        throttles = sorted(THROTTLE_REASONS.intersection(t.clock_event_reasons))
        if throttles:
            evidence = [f"clock-event reasons in the window: {', '.join(throttles)}"]
            if t.sm_clock_mhz_mean is not None:
                evidence.append(f"SM clock mean {t.sm_clock_mhz_mean:.0f} MHz")
            if t.power_watts_mean is not None:
                evidence.append(f"power mean {t.power_watts_mean:.0f} W")
            if t.temperature_c_max is not None:
                evidence.append(f"temperature max {t.temperature_c_max:.0f} C")
            return Diagnosis("throttled", tuple(evidence))

        busy = active is not None and active >= KERNEL_ACTIVE_HIGH_PERCENT
        dram = t.gpm_dram_bandwidth_percent
        if busy and dram is not None and dram >= MEMORY_BUSY_PERCENT:
            evidence = [f"GPM DRAM bandwidth {dram:.0f}% (>= {MEMORY_BUSY_PERCENT:.0f}%)"]
            if t.gpm_tensor_active_percent is not None:
                evidence.append(f"tensor-core activity {t.gpm_tensor_active_percent:.0f}%")
            evidence.append(f"GPU kernel-active {active:.0f}%")
            return Diagnosis("memory-bound", tuple(evidence))
        mc = t.gpu_memory_controller_percent
        if busy and dram is None and mc is not None and mc >= MEMORY_BUSY_PERCENT:
            return Diagnosis(
                "memory-bound",
                (
                    f"NVML memory-controller busy {mc:.0f}% (>= {MEMORY_BUSY_PERCENT:.0f}%)",
                    f"GPU kernel-active {active:.0f}%",
                ),
            )
        if busy:
            evidence = [
                f"GPU kernel-active {active:.0f}% (>= {KERNEL_ACTIVE_HIGH_PERCENT:.0f}%): kernels back to back"
            ]
            if scaling_words:
                evidence.append(scaling_words)
            if point.mfu is not None:
                evidence.append(f"MFU {point.mfu * 100:.1f}% of the dense peak")
            return Diagnosis("device-bound", tuple(evidence))
        if active is None and exponent is not None and exponent >= PROPORTIONAL_EXPONENT:
            return Diagnosis("device-bound", ("no kernel-active reading", scaling_words or ""))
    else:
        return _cpu_verdict(cpu, threads, exponent, scaling_words)

    evidence = []
    if active is not None:
        evidence.append(f"GPU kernel-active {active:.0f}%")
    if cpu is not None:
        evidence.append(f"process CPU {cpu:.0f}% of one core")
    if scaling_words:
        evidence.append(scaling_words)
    if wait is not None:
        evidence.append(f"waiting for data {wait * 100:.0f}% of the step")
    if not evidence:
        evidence.append("no telemetry and no neighbouring batch size to compare with")
    return Diagnosis("unclear", tuple(evidence))


def _cpu_verdict(
    cpu: float | None, threads: int | None, exponent: float | None, scaling_words: str | None
) -> Diagnosis:
    """A CPU device: are torch's threads busy? Said with the numbers, or nothing said."""
    if cpu is None or not threads:
        return Diagnosis("unclear", ())
    busy = cpu / (100.0 * threads)
    reading = f"process CPU {cpu:.0f}%: {cpu / 100:.1f} of torch's {threads} thread(s) busy ({busy:.0%})"
    if busy >= CPU_THREADS_BUSY:
        evidence = [
            f"{reading}: the cores do the arithmetic",
            "faster takes more cores (torch.set_num_threads up to the physical cores), less arithmetic "
            "(a smaller model or image), or bf16 where the CPU has AMX or AVX-512 BF16",
        ]
        if scaling_words and exponent is not None and exponent >= PROPORTIONAL_EXPONENT:
            evidence.append(scaling_words)
        return Diagnosis("cpu-bound", tuple(evidence))
    if busy < CPU_THREADS_IDLE:
        return Diagnosis(
            "threads-idle",
            (
                f"{reading}: the threads wait",
                "on memory bandwidth, on single-threaded operators or on the Python loop between "
                "them; a larger batch gives each operator more work per call",
            ),
        )
    return Diagnosis("unclear", ())


def diagnose_run(result: SweepResult) -> list[Diagnosis | None]:
    """One verdict per point of a run, in the run's point order (None for points that did not run)."""
    on_gpu = device_kind(result.workload.device) == "cuda"
    ok = sorted(
        (p for p in result.points if p.status == OK and p.step_stats is not None), key=lambda p: p.batch_size
    )
    index = {id(p): i for i, p in enumerate(ok)}
    out: list[Diagnosis | None] = []
    for p in result.points:
        i = index.get(id(p))
        if i is None:
            out.append(None)
            continue
        neighbours = [ok[k] for k in (i - 1, i + 1) if 0 <= k < len(ok)]
        out.append(diagnose_point(p, neighbours, on_gpu=on_gpu, threads=result.environment.torch_num_threads))
    return out


def with_diagnoses(result: SweepResult, *, recompute: bool = True) -> SweepResult:
    """The run with each point's ``diagnosis`` filled in (all recomputed, or only missing ones)."""
    verdicts = diagnose_run(result)
    points = tuple(
        p if (p.diagnosis is not None and not recompute) else dataclasses.replace(p, diagnosis=d)
        for p, d in zip(result.points, verdicts, strict=True)
    )
    return dataclasses.replace(result, points=points)


def mfu_note(result: SweepResult) -> str | None:
    """A sentence for the report when the best point's MFU is tiny, saying why it can be."""
    values = [p.mfu for p in result.points if p.status == OK and p.mfu is not None]
    if not values:
        return None
    best = max(values)
    if best >= TINY_MFU:
        return None
    return (
        f"MFU is at most {best * 100:.1f}% of the device's dense peak. Few FLOPs per byte moved keep it low: "
        "depthwise convolutions, normalisation and elementwise layers (EfficientNet, MobileNet) are "
        "memory-bound, and tensor cores idle on them; host-bound points add idle time on top."
    )
