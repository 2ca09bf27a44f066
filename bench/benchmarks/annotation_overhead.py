"""Cost of bench's per-step instrumentation: samples/sec with and without it, side by side.

Same model, batch and device; each round measures both variants (the order alternates between
rounds, so drift and thermal state hit both alike) with bench's own runner. Prints each round,
the median of the per-round ratios annotated / plain (1.000 = free; the bar for turning the
annotations on by default in sweeps is >= 0.99), and the cost of one step's ranges measured
directly in microseconds, which is what to compare with a GPU step time.

The annotated variant is what a sweep runs: ``bench.measure.annotate.sweep_instrumentation(True, kind)``
(NVTX + record_function ranges on CUDA, + cudaProfilerStart/Stop on the window; record_function
ranges on CPU) and the step breakdown's phase timing (reused CUDA events per phase on GPU, the
host clock on CPU and for the data wait). The plain variant has neither. No profiler is attached,
as in a normal sweep.

    python -m bench.benchmarks.annotation_overhead                 # resnet18, 64 px, batch 8, CPU
    python -m bench.benchmarks.annotation_overhead --device cuda --image-size 224 --batch-size 128
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.hw.device import Device, open_device
from bench.measure.annotate import PHASES, step_range_name, sweep_instrumentation
from bench.measure.breakdown import PhaseTimes
from bench.measure.models import resolve
from bench.measure.runner import run_point
from bench.results.schema import MeasureSettings, Workload


def range_cost_us_per_step(device: Device, batch_size: int, repeats: int = 20_000) -> float:
    """Microseconds the instrumentation of one training step costs on the host (1 step range + 3
    phase ranges, each phase timed as a sweep times it; its events read every 1,000 steps)."""
    annotate, hooks = sweep_instrumentation(True, device.kind, batch_size)
    phase_times = PhaseTimes(device)
    timed = phase_times.wrap(annotate)
    phases = [p for p in PHASES if p != "data"]  # "data" only runs with --h2d or --data loader
    t0 = time.perf_counter()
    for i in range(repeats):
        with hooks.step("measure", i):
            for name in phases:
                with timed(name):
                    pass
        if i % 1000 == 999:
            device.synchronize()
            phase_times.collect()
    return (time.perf_counter() - t0) / repeats * 1e6


def measure_once(workload: Workload, batch_size: int, settings: MeasureSettings, annotated: bool) -> float:
    device = open_device(workload.device)
    annotate, hooks = sweep_instrumentation(annotated, device.kind, batch_size)
    point = run_point(
        workload, resolve(workload.model), batch_size, settings, device,
        annotate=annotate, hooks=hooks, phase_timing=annotated,
    )  # fmt: skip
    if point.samples_per_sec is None:
        raise SystemExit(f"batch {batch_size} failed: {point.error}")
    return point.samples_per_sec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed window per measurement")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--range-repeats", type=int, default=20_000, help="steps for the direct cost")
    args = parser.parse_args(argv)

    workload = Workload(model=args.model, image_size=args.image_size, device=args.device)
    settings = MeasureSettings(
        warmup_steps=args.warmup,
        min_steps=10,
        max_time_seconds=args.seconds,
        min_time_seconds=args.seconds,
        target_rel_ci=0.001,  # run the full window: equal windows for both variants
    )
    print(
        f"{args.model} image {args.image_size} batch {args.batch_size} on {args.device}: "
        f"{args.rounds} rounds x {args.seconds:.1f} s per variant"
    )
    ratios, plain_all, annotated_all = [], [], []
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        got = {annotated: measure_once(workload, args.batch_size, settings, annotated) for annotated in order}
        plain_all.append(got[False])
        annotated_all.append(got[True])
        ratios.append(got[True] / got[False])
        print(
            f"round {r + 1}: plain {got[False]:8.2f}  annotated {got[True]:8.2f} samples/s  "
            f"ratio {ratios[-1]:.4f}"
        )
    per_step_us = range_cost_us_per_step(open_device(args.device), args.batch_size, args.range_repeats)
    step_ms = 1000 * args.batch_size / statistics.median(plain_all)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    print(f"step ranges: {step_range_name(args.batch_size, 0, 'measure')!r} + {', '.join(PHASES[1:])}")
    print(
        f"median plain {statistics.median(plain_all):.2f}, annotated {statistics.median(annotated_all):.2f} samples/s"
    )
    print(f"ratio annotated/plain: median {statistics.median(ratios):.4f} (IQR {q[0]:.4f}-{q[2]:.4f})")
    print(
        f"instrumentation cost measured directly: {per_step_us:.1f} us per step "
        f"= {100 * per_step_us / 1000 / step_ms:.3f}% of this {step_ms:.1f} ms step"
    )


if __name__ == "__main__":
    main()
