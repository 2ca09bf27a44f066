"""Regenerate the synthetic GPU result files beside this script (run once; the outputs are committed).

``cpu_resnet18.json`` is a real CPU sweep (``bench sweep resnet18 -b 1,2,4 --image-size 32
--max-time 1 --min-time 0.3``). There is no GPU where the tests run, so the GPU runs are modelled:
a step costs ``overhead + batch * per_sample`` seconds with 1% seeded Gaussian noise, memory grows
linearly with the batch until it no longer fits an 80 GB card (an OOM point), and power, kernel-active
utilisation and energy follow the step time. Every derived number (samples/sec, step statistics,
epoch time, joules per sample) is computed from the raw ``step_seconds`` with ``bench.analysis.stats``, the
way a real sweep computes it, so the files are internally consistent.

    python tests/data/make_fixtures.py
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from bench.analysis.stats import epoch_seconds, samples_per_sec, summarize
from bench.results.codec import dumps, load_result
from bench.results.schema import OK, OOM, GpuInfo, MemoryStats, Point, Telemetry

HERE = Path(__file__).parent
GPU_TOTAL_BYTES = 80 * 2**30
GIB = 2**30


def gpu_run(
    run_id: str,
    precision: str,
    overhead_seconds: float,
    per_sample_seconds: float,
    bytes_per_sample: float,
    slowdown: float = 1.0,
    seed: int = 0,
):
    base = load_result(str(HERE / "cpu_resnet18.json"))
    rng = random.Random(seed)
    env = replace(
        base.environment,
        hostname="gpu-node-7",
        cpu_model="AMD EPYC 7763 64-Core Processor",
        gpu_count=1,
        gpus=(GpuInfo(index=0, name="NVIDIA A100-SXM4-80GB", memory_total_bytes=GPU_TOTAL_BYTES),),
        gpu_driver_version="550.54.15",
    )
    workload = replace(base.workload, model="resnet50", precision=precision, image_size=224, device="cuda")
    points = []
    for b in (8, 16, 32, 64, 128, 256, 512):
        alloc = int(0.4 * GIB + b * bytes_per_sample)
        if alloc > 0.97 * GPU_TOTAL_BYTES:
            points.append(
                Point(batch_size=b, status=OOM, error="torch.cuda.OutOfMemoryError: CUDA out of memory")
            )
            break
        mean_step = (overhead_seconds + b * per_sample_seconds) * slowdown
        steps = tuple(mean_step * (1 + rng.gauss(0, 0.01)) for _ in range(60))
        window = sum(steps)
        sps = samples_per_sec(b, len(steps), window)
        active = 100.0 * (1 - 0.6 * overhead_seconds / mean_step)  # launch gaps idle the GPU
        power = 90.0 + 3.1 * active
        energy = power * window
        points.append(
            Point(
                batch_size=b,
                status=OK,
                warmup_steps=5,
                step_seconds=steps,
                window_seconds=window,
                samples_per_sec=sps,
                step_stats=summarize(steps),
                converged=True,
                epoch_seconds_estimate=epoch_seconds(workload.dataset_size, sps),
                energy_joules=energy,
                joules_per_sample=energy / (b * len(steps)),
                memory=MemoryStats(
                    device_peak_allocated_bytes=alloc,
                    device_peak_reserved_bytes=int(alloc * 1.08),
                    device_process_used_bytes=int(alloc * 1.08 + 0.5 * GIB),
                    device_total_bytes=GPU_TOTAL_BYTES,
                    host_peak_rss_bytes=int(3.2 * GIB),
                    host_rss_method="sampled",
                ),
                telemetry=Telemetry(
                    samples=int(window / 0.05),
                    gpu_kernel_active_percent=active,
                    gpu_memory_controller_percent=active * 0.55,
                    power_watts_mean=power,
                    power_watts_max=power * 1.06,
                    sm_clock_mhz_mean=1410.0,
                    temperature_c_max=61.0,
                    process_cpu_percent=101.0,
                    system_cpu_percent=3.0,
                ),
            )
        )
    return replace(
        base,
        run_id=run_id,
        started_at="2026-11-20T09:00:00+00:00" if slowdown == 1.0 else "2026-11-21T09:00:00+00:00",
        finished_at="2026-11-20T09:04:00+00:00" if slowdown == 1.0 else "2026-11-21T09:04:00+00:00",
        environment=env,
        workload=workload,
        points=tuple(points),
        notices=(),
    )


def main() -> None:
    fp32 = dict(overhead_seconds=0.012, per_sample_seconds=0.00105, bytes_per_sample=0.21 * GIB)
    bf16 = dict(overhead_seconds=0.010, per_sample_seconds=0.00042, bytes_per_sample=0.12 * GIB)
    runs = {
        "gpu_resnet50_fp32.json": gpu_run("a100-resnet50-fp32", "fp32", **fp32, seed=1),
        "gpu_resnet50_bf16.json": gpu_run("a100-resnet50-bf16", "bf16", **bf16, seed=2),
        "gpu_resnet50_fp32_slow10.json": gpu_run(
            "a100-resnet50-fp32-slow10", "fp32", **fp32, slowdown=1 / 0.9, seed=3
        ),
    }
    for name, result in runs.items():
        (HERE / name).write_text(dumps(result) + "\n")
        print(name, [(p.batch_size, round(p.samples_per_sec or 0)) for p in result.points])


if __name__ == "__main__":
    main()
