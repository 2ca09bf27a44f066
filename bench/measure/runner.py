"""Warm-up plus an adaptive, device-synchronised timed loop for one batch size.

``measure`` is the core and knows nothing about models: it takes a ``step`` callable, a clock, a
``Device`` (synchronise + step timer) and a ``Sampler``, so tests drive it with fakes of known
cost. ``run_point`` wraps it with model preparation, memory readings and OOM handling.

How a point is measured (the way timm's benchmark script and torch.utils.benchmark do it):
1. ``warmup_steps`` untimed steps: torch.compile, cuDNN autotuning, allocator growth land here.
2. Timed steps in chunks. Each chunk starts and ends with a device synchronise and a host clock
   read; inside it every step is timed individually (CUDA events on GPU, the clock on CPU) without
   synchronising per step, so the GPU queue never drains between steps.
3. After each chunk, stop once at least ``min_steps`` ran and the 95% CI half-width of the step
   time is within ``target_rel_ci`` of the median, or the window reached ``max_time_seconds``.
4. samples/sec = batch * timed steps / (sum of the chunks' synchronised wall times).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from bench.analysis import stats
from bench.hw.device import Device
from bench.hw.host import own_peak_rss_bytes
from bench.hw.nvml import GpuMonitor, NullMonitor
from bench.measure.attempt import Attempt, Failure, read_safely
from bench.measure.breakdown import PhaseTimes
from bench.measure.models import ModelSpec
from bench.measure.step import ModelCache, precision_mode, prepare
from bench.measure.telemetry import Sampler
from bench.results.schema import (
    ERROR,
    OK,
    OOM,
    MeasureSettings,
    MemoryStats,
    Point,
    Telemetry,
    Timing,
    Workload,
    default_sample_interval,
)

CHUNK_TARGET_SECONDS = 1.0  # synchronise (and check convergence) about once a second


@dataclass(frozen=True)
class Progress:
    """What the live display shows while a point runs."""

    batch_size: int
    phase: str  # "build" | "warmup" | "measure"
    steps: int  # steps done in this phase
    total_steps: int | None  # warm-up total; None while measuring (adaptive)
    samples_per_sec: float | None = None
    rel_ci_half_width: float | None = None
    window_seconds: float = 0.0


ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True)
class Window:
    """Raw result of ``measure``."""

    step_seconds: tuple[float, ...]
    window_seconds: float
    t0: float  # clock at the start of the timed window
    t1: float  # clock at its end
    energy_joules: float | None
    converged: bool
    warmup_steps: int
    first_step_seconds: float | None = None  # the first warm-up step, synchronised
    warmup_seconds: float | None = None  # the other warm-up steps


def _next_chunk(done: int, times: list[float], window: float, settings: MeasureSettings) -> int:
    if done < settings.min_steps:
        return settings.min_steps - done
    # Predict with the mean (what a chunk of steps really costs), not the median.
    per_step = window / done if done else 0.0
    if per_step <= 0:
        return 1
    per_chunk = max(1, int(CHUNK_TARGET_SECONDS / per_step))
    time_left = max(settings.max_time_seconds - window, 0.0)
    by_time = max(1, math.ceil(time_left / per_step))
    if window < settings.min_time_seconds:  # reach the minimum window in one go
        by_time = max(1, min(by_time, math.ceil((settings.min_time_seconds - window) / per_step)))
        per_chunk = max(per_chunk, by_time)
    return max(1, min(per_chunk, by_time, settings.max_steps - done))


class Hooks:
    """Optional instrumentation around steps (tracing implements this; the default does nothing).

    ``step(phase, index)`` wraps one whole step: phase is "warmup" or "measure", index counts from 0
    within the phase. ``window_start``/``window_stop`` run right after the device synchronise that
    opens/closes the timed window (e.g. cudaProfilerStart/Stop for an nsys capture range).
    """

    def step(self, phase: str, index: int) -> AbstractContextManager[Any]:
        return nullcontext()

    def window_start(self) -> None:
        pass

    def window_stop(self) -> None:
        pass


NO_HOOKS = Hooks()


class Sync:
    """Keeps the ranks of a data-parallel run measuring the same window (``bench.jobs.distributed``
    implements it with collectives); the default is a single process and changes nothing.

    Every rank must run the same number of steps, or DDP's gradient all-reduce would wait for a
    rank that has stopped: so the chunk length and the stop decision are agreed, not local.
    """

    def window_start(self) -> None:
        """Right after the synchronise that opens the timed window (ranks align here)."""

    def chunk_steps(self, steps: int) -> int:
        """The number of steps every rank runs in the next chunk (called before its clock read)."""
        return steps

    def should_stop(self, stop: bool) -> bool:
        """The stop decision every rank follows, given this rank's own."""
        return stop


NO_SYNC = Sync()


def measure(
    step: Callable[[], None],
    batch_size: int,
    settings: MeasureSettings,
    *,
    device: Device,
    clock: Callable[[], float] = time.perf_counter,
    monitor: GpuMonitor | None = None,
    on_progress: ProgressFn | None = None,
    hooks: Hooks = NO_HOOKS,
    sync: Sync = NO_SYNC,
    on_first_step: Callable[[], None] | None = None,
    on_synchronized: Callable[[], None] | None = None,
) -> Window:
    """Warm up, then time steps until the CI target or the time budget is met.

    ``on_first_step`` runs right after the first warm-up step (synchronised, timed): ``run_point``
    keeps that step's peak memory apart there (``Attempt.end_first_step``).
    ``on_synchronized`` runs after the warm-up and after every chunk, right after the device
    synchronise (the step breakdown reads its CUDA events there and reuses them)."""
    after_sync = on_synchronized or (lambda: None)
    monitor = monitor or NullMonitor("no GPU")
    report = on_progress or (lambda p: None)
    w0 = clock()
    first_step: float | None = None
    for i in range(settings.warmup_steps):
        with hooks.step("warmup", i):
            step()
        device.synchronize()
        if i == 0:  # a new shape's first step: cuDNN autotuning and compilation land here
            first_step = clock() - w0
            if on_first_step is not None:
                on_first_step()
        report(Progress(batch_size, "warmup", i + 1, settings.warmup_steps))
    warmup = clock() - w0 - (first_step or 0.0) if settings.warmup_steps else None
    after_sync()

    timer = device.make_timer()
    times: list[float] = []
    window = 0.0
    device.synchronize()
    hooks.window_start()
    sync.window_start()
    energy0 = monitor.energy_millijoules()
    t_start = clock()
    t_end = t_start
    is_converged = False
    while True:
        n = _next_chunk(len(times), times, window, settings)
        device.synchronize()
        n = sync.chunk_steps(n)
        c0 = clock()
        for i in range(len(times), len(times) + n):
            with hooks.step("measure", i):
                timer.start()
                step()
                timer.stop()
        device.synchronize()
        t_end = clock()
        window += t_end - c0
        times.extend(timer.collect())
        after_sync()
        is_converged = stats.converged(times, settings.target_rel_ci)
        report(
            Progress(
                batch_size,
                "measure",
                len(times),
                None,
                samples_per_sec=stats.samples_per_sec(batch_size, len(times), window) if window > 0 else None,
                rel_ci_half_width=stats.summarize(times).rel_ci_half_width if len(times) > 1 else None,
                window_seconds=window,
            )
        )
        stop = len(times) >= settings.max_steps or (
            len(times) >= settings.min_steps
            and window >= settings.min_time_seconds
            and (is_converged or window >= settings.max_time_seconds)
        )
        if sync.should_stop(stop):
            break
    energy1 = monitor.energy_millijoules()
    hooks.window_stop()
    energy = (energy1 - energy0) / 1000.0 if energy0 is not None and energy1 is not None else None
    return Window(
        step_seconds=tuple(times),
        window_seconds=window,
        t0=t_start,
        t1=t_end,
        energy_joules=energy,
        converged=is_converged,
        warmup_steps=settings.warmup_steps,
        first_step_seconds=first_step,
        warmup_seconds=warmup,
    )


def point_from_window(
    batch_size: int, win: Window, dataset_size: int, memory: MemoryStats, sampler: Sampler | None
) -> Point:
    """Derive the statistics of a point from its raw window."""
    throughput = (
        stats.samples_per_sec(batch_size, len(win.step_seconds), win.window_seconds)
        if win.window_seconds > 0
        else None
    )
    samples = batch_size * len(win.step_seconds)
    return Point(
        batch_size=batch_size,
        status=OK,
        warmup_steps=win.warmup_steps,
        step_seconds=win.step_seconds,
        window_seconds=win.window_seconds,
        samples_per_sec=throughput,
        step_stats=stats.summarize(win.step_seconds),
        converged=win.converged,
        epoch_seconds_estimate=stats.epoch_seconds(dataset_size, throughput) if throughput else None,
        energy_joules=win.energy_joules,
        joules_per_sample=(win.energy_joules / samples) if win.energy_joules is not None else None,
        memory=memory,
        telemetry=sampler.summary(win.t0, win.t1) if sampler is not None else Telemetry(),
    )


def run_point(
    workload: Workload,
    spec: ModelSpec,
    batch_size: int,
    settings: MeasureSettings,
    device: Device,
    monitor: GpuMonitor | None = None,
    *,
    on_progress: ProgressFn | None = None,
    annotate: Callable[[str], AbstractContextManager[Any]] | None = None,
    hooks: Hooks = NO_HOOKS,
    clock: Callable[[], float] = time.perf_counter,
    own_process: bool = False,
    wrap: Callable[[Any], Any] | None = None,
    sync: Sync = NO_SYNC,
    model_cache: ModelCache | None = None,
    phase_timing: bool = True,
) -> Point:
    """Measure one batch size end to end. OOM becomes a Point with status "oom", never a raise.

    ``own_process``: this process exists only for this point, so its lifetime peak RSS is the
    point's peak (exact); otherwise host peak RSS is the sampler's maximum (sampled).
    ``wrap`` and ``sync``: a data-parallel run's model wrapper (DDP) and rank agreement.
    ``model_cache``: reuse one model across the points of an in-process sweep (``ModelCache``).
    ``phase_timing``: the step breakdown (forward, backward, optimizer on the device's timer, the
    data wait on the host clock); False leaves the step without it (its cost:
    ``python -m bench.benchmarks.annotation_overhead``).
    The point's ``timing`` says where its wall time went (build, first step, warm-up, window,
    teardown).
    """

    monitor = monitor or NullMonitor("no GPU")
    report = on_progress or (lambda p: None)
    prepared = None
    interval = settings.sample_interval_seconds or default_sample_interval(workload.device)
    sampler = Sampler(monitor, interval, clock=clock)
    point: Point | None = None
    win: Window | None = None
    process_used: int | None = None
    t_begin = clock()
    build_seconds: float | None = None
    phases = PhaseTimes(device, clock) if phase_timing else None  # the step breakdown
    if phases is not None:
        annotate = phases.wrap(annotate)
    attempt = Attempt(device)
    # the first step's peaks apart from the steady ones; the cache is emptied there only when
    # warm-up steps follow to grow it again outside the window
    first_step = partial(attempt.end_first_step, empty_cache=settings.warmup_steps > 1)
    sampler.start()
    try:
        with (
            attempt,
            precision_mode(
                workload.precision, device.kind, workload.cudnn_benchmark, workload.cudnn_benchmark_limit
            ),
        ):
            report(Progress(batch_size, "build", 0, None))
            t_build = clock()
            prepared = attempt.hold(
                prepare(
                    workload, spec, batch_size, device, annotate=annotate, wrap=wrap, model_cache=model_cache
                )
            )
            build_seconds = clock() - t_build
            win = measure(
                prepared.step, batch_size, settings, device=device, clock=clock, monitor=monitor,
                on_progress=report, hooks=hooks, sync=sync, on_first_step=first_step,
                on_synchronized=phases.collect if phases is not None else None,
            )  # fmt: skip
            sampler.sample_now()
            process_used = monitor.process_memory_bytes()  # while the model still lives
            point = point_from_window(batch_size, win, workload.dataset_size, MemoryStats(), sampler)
            point = replace(
                point, breakdown=phases.breakdown(win.step_seconds) if phases is not None else None
            )
    finally:
        sampler.stop()
    # Outside the handler: the exception (and the frames holding tensors) is gone now.
    t_teardown = clock()
    prepared = None
    attempt.release()
    t_end = clock()
    timing = Timing(
        build_seconds=build_seconds,
        first_step_seconds=win.first_step_seconds if win is not None else None,
        warmup_seconds=win.warmup_seconds if win is not None else None,
        measure_seconds=(win.t1 - win.t0) if win is not None else None,
        teardown_seconds=t_end - t_teardown,
        total_seconds=t_end - t_begin,
    )
    memory = MemoryStats(
        device_peak_allocated_bytes=attempt.peak_allocated_bytes,
        device_peak_reserved_bytes=attempt.peak_reserved_bytes,
        device_total_bytes=read_safely(device.total_bytes),
        first_step_peak_allocated_bytes=attempt.first_step_peak_allocated_bytes,
        first_step_peak_reserved_bytes=attempt.first_step_peak_reserved_bytes,
    )
    if point is not None and attempt.failure is None:
        memory = replace(
            memory,
            device_process_used_bytes=process_used,
            host_peak_rss_bytes=own_peak_rss_bytes() if own_process else sampler.peak_rss_bytes(),
            host_rss_method="child-maxrss" if own_process else "sampled",
        )
        return replace(point, timing=timing, memory=memory, num_alloc_retries=attempt.alloc_retries)
    failure = attempt.failure or Failure(ERROR, "unknown failure")
    return Point(
        timing=timing,
        batch_size=batch_size,
        status=OOM if failure.oom else ERROR,  # a sticky error is an error; the sweep stops on it
        error=failure.message,
        memory=memory,
    )
