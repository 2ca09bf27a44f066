"""``bench noise``: a thin command over ``bench.jobs.noise.measure_noise``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bench.cli.common import (
    DEFAULT_DB,
    DbOpt,
    DeviceOpt,
    ImageSizeOpt,
    ModelArg,
    build_workload,
    check_workload,
    console,
    err_console,
    store_in_history,
)
from bench.jobs.distributed import detect
from bench.jobs.noise import NoiseSettings, default_noise_path, measure_noise
from bench.results.store import check_history_path

# the options only this command has
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset", help="package.module:factory returning a map-style data set of (input, target)"
    ),
]
DataDirOpt = Annotated[
    str | None,
    typer.Option(
        "--data-dir", help="an ImageFolder tree, read with --data loader's decoding and augmentation"
    ),
]
CheckpointOpt = Annotated[
    str | None, typer.Option("--checkpoint", help="a state dict to load (default: the model's own weights)")
]
TrainStepsOpt = Annotated[
    int, typer.Option("--train-steps", help="SGD steps before measuring: the noise scale at a later stage")
]
LrOpt = Annotated[float, typer.Option("--lr", help="learning rate of those steps")]
SmallBatchOpt = Annotated[
    int, typer.Option("--small-batch", help="examples per micro-batch (torchrun: per rank)")
]
BigBatchOpt = Annotated[
    int | None,
    typer.Option(
        "--big-batch",
        help="examples per draw, a multiple of --small-batch (default 1024, or the data set if smaller)",
    ),
]
TargetCiOpt = Annotated[
    float, typer.Option("--target-ci", help="stop when the 95% CI half-width is within this fraction")
]
MaxTimeOpt = Annotated[float, typer.Option("--max-time", help="seconds of measuring at most")]
SeedOpt = Annotated[int, typer.Option("--seed", help="seeds the draws and the training steps")]
OutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="result JSON (default: bench_results/noise-*.json)")
]
NoHistoryOpt = Annotated[bool, typer.Option("--no-history", help="do not store in the history")]


DEFAULTS = NoiseSettings()


def _progress(banner: str, every_seconds: float = 1.0) -> Any:
    """The banner once measuring starts (bad input is the only line before it), then a line on
    stderr about once a second: draws, the estimate so far and its interval."""
    last = [-every_seconds]

    def show(p: Any) -> None:
        if p.draws == 1:
            err_console.print(banner, highlight=False)
        if p.seconds - last[0] < every_seconds:
            return
        last[0] = p.seconds
        err_console.print(f"  {p.draws:4d} draws {p.seconds:6.1f} s  {describe(p.estimate)}", highlight=False)

    return show


def describe(est: Any) -> str:
    """'B_noise 183 (95% CI 160–206, ±12%)' or why there is no value yet."""
    if est.noise_scale is None:
        return f"B_noise not resolved yet (|G|² estimate {est.gradient_sq_norm:.3g} <= 0)"
    if est.ci_low is None:
        return f"B_noise {est.noise_scale:,.0f} (no interval yet)"
    return (
        f"B_noise {est.noise_scale:,.0f} (95% CI {est.ci_low:,.0f}–{est.ci_high:,.0f}, "
        f"±{est.relative_half_width:.0%})"
    )


def noise(
    model: ModelArg,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    image_size: ImageSizeOpt = 224,
    checkpoint: CheckpointOpt = None,
    train_steps: TrainStepsOpt = DEFAULTS.train_steps,
    lr: LrOpt = DEFAULTS.train_lr,
    small_batch: SmallBatchOpt = DEFAULTS.small_batch,
    big_batch: BigBatchOpt = DEFAULTS.big_batch,
    target_ci: TargetCiOpt = DEFAULTS.target_rel_ci,
    max_time: MaxTimeOpt = (DEFAULTS.max_time_seconds),
    seed: SeedOpt = DEFAULTS.seed,
    device: DeviceOpt = None,
    out: OutOpt = None,
    db: DbOpt = DEFAULT_DB,
    no_history: NoHistoryOpt = False,
) -> None:
    """Estimate the gradient noise scale B_noise = tr(Σ)/|G|² at given weights on your data."""
    settings = NoiseSettings(
        small_batch=small_batch, big_batch=big_batch, target_rel_ci=target_ci, max_time_seconds=max_time,
        train_steps=train_steps, train_lr=lr, seed=seed,
    )  # fmt: skip
    rank_env = detect()
    settings.check(rank_env.world_size if rank_env else 1)
    workload = build_workload(model, device=device)
    check_workload(workload)
    history = None if no_history else db
    if history is not None:
        check_history_path(history)
    out_path = out or default_noise_path(model)
    is_main = rank_env is None or rank_env.is_main
    banner = f"measuring the gradient noise scale of {model} on {workload.device} at fixed weights"
    result = measure_noise(
        model, dataset, data_dir=data_dir, image_size=image_size, checkpoint=checkpoint,
        device=workload.device, settings=settings, out_path=out_path if is_main else None,
        on_progress=_progress(banner) if is_main else None,
    )  # fmt: skip
    if not is_main:
        return
    store_in_history(history, result)
    est = result.estimate
    console.print(
        f"[bold]{describe(est)}[/] — |G|² {est.gradient_sq_norm:.4g}, tr(Σ) {est.trace_sigma:.4g}; "
        f"{len(result.draws)} draws of {result.big_batch} ({result.small_batch} per small batch"
        f"{' per rank' if result.world_size > 1 else ''}) in {result.seconds:.1f} s",
        highlight=False,
    )
    for line in result.notices:
        console.print(f"[yellow]note:[/] {line}", highlight=False)
    console.print(
        f"results: {out_path}  (use it with `bench sweep ... --noise-scale {out_path}`)", highlight=False
    )
    if result.status == "interrupted":
        err_console.print(
            f"[yellow]interrupted[/]: the {len(result.draws)} draws so far are saved in {out_path}"
        )
        raise typer.Exit(130)


def register(app: typer.Typer) -> None:
    app.command()(noise)
