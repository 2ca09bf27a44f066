"""`bench max-batch` and `bench recommend`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bench.cli_common import (
    ChannelsLastOpt,
    CompileOpt,
    DeviceOpt,
    ImageSizeOpt,
    ModelArg,
    OptimizerOpt,
    PrecisionOpt,
    build_workload,
    console,
    err_console,
    fmt_bytes,
)

GranularityOpt = Annotated[int, typer.Option("--granularity", help="exact to this step (e.g. 8)")]
MemoryLimitOpt = Annotated[
    str | None, typer.Option("--memory-limit", help="budget, e.g. 8GiB (CPU default: 50% of available RAM)")
]
IsolateOpt = Annotated[
    bool, typer.Option("--isolate/--no-isolate", help="each GPU probe in a fresh process (CPU: always)")
]
CapOpt = Annotated[int | None, typer.Option("--max-batch", help="never probe above this batch")]


def _print_probe(rec) -> None:
    colour = "green" if rec.outcome == "fit" else "red"
    peak = fmt_bytes(rec.peak_bytes)
    err_console.print(
        f"  probe batch {rec.batch_size:>6}: [{colour}]{rec.outcome:<11}[/] peak {peak:>11}  {rec.seconds:6.1f} s"
    )


def _summary(res) -> None:
    g = res.granularity
    if res.max_batch_size is None:
        console.print(f"[red]no batch fits[/]: batch {g} did not fit in {fmt_bytes(res.budget_bytes)}")
        return
    proof = (
        f"batch {res.max_batch_size} fit and batch {res.failed_batch_size} did not"
        if not res.cap_reached
        else f"batch {res.max_batch_size} fit (the --max-batch cap)"
    )
    console.print(
        f"[bold]max batch {res.max_batch_size}[/] (exact to {g}: {proof}); "
        f"[bold]safe batch {res.safe_batch_size}[/] ({res.headroom_reason}; {res.soak_detail})"
    )
    if res.per_sample_bytes:
        console.print(
            f"memory model: {fmt_bytes(int(res.fixed_bytes))} fixed + {fmt_bytes(int(res.per_sample_bytes))}"
            f" per sample; budget {fmt_bytes(res.budget_bytes)} ({res.budget_source})"
        )
    console.print(f"{res.probe_count} probes in {res.seconds:.1f} s")
    for leak in res.leaks:
        console.print(f"[yellow]leak:[/] {leak}")


def register(app: typer.Typer) -> None:
    @app.command("max-batch")
    def max_batch_cmd(
        model: ModelArg = "efficientnet_b0",
        precision: PrecisionOpt = "fp32",
        channels_last: ChannelsLastOpt = False,
        compile: CompileOpt = False,
        image_size: ImageSizeOpt = 224,
        device: DeviceOpt = None,
        optimizer: OptimizerOpt = "sgd",
        granularity: GranularityOpt = 1,
        memory_limit: MemoryLimitOpt = None,
        isolate: IsolateOpt = False,
        cap: CapOpt = None,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="write the result JSON here")] = None,
        db: Annotated[Path, typer.Option("--db", help="results history")] = Path(".bench/results.db"),
    ) -> None:
        """Find the largest training batch that fits, exactly, in few probes; and a safe one."""
        from bench.maxbatch import find_max_batch

        workload = build_workload(
            model, mode="train", precision=precision, channels_last=channels_last, compile=compile,
            image_size=image_size, device=device, h2d=False, optimizer=optimizer, dataset_size=1,
        )  # fmt: skip
        err_console.print(f"searching the max training batch of {workload.model} on {workload.device}")
        res = find_max_batch(
            workload, granularity=granularity, memory_limit=memory_limit, cap=cap, isolate=isolate,
            on_probe=_print_probe,
        )  # fmt: skip
        _summary(res)
        from bench.cli import _store

        _store(db, res)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res.to_dict(), indent=2), encoding="utf-8")
            console.print(f"results: {out}")

    @app.command()
    def recommend(
        model: ModelArg = "efficientnet_b0",
        precision: PrecisionOpt = "fp32",
        channels_last: ChannelsLastOpt = False,
        compile: CompileOpt = False,
        image_size: ImageSizeOpt = 224,
        device: DeviceOpt = None,
        granularity: GranularityOpt = 1,
        memory_limit: MemoryLimitOpt = None,
        max_time: Annotated[float, typer.Option("--max-time", help="seconds per sweep point")] = 5.0,
        base_batch: Annotated[int | None, typer.Option("--base-batch", help="reference batch")] = None,
        base_lr: Annotated[float | None, typer.Option("--base-lr", help="reference learning rate")] = None,
    ) -> None:
        """Max batch, then a sweep up to it, then the batch to pick (best, knee, safe max)."""
        from bench.display import LiveSweep, sweep_table
        from bench.maxbatch import find_max_batch
        from bench.recommend import recommend as make_rec
        from bench.recommend import render
        from bench.schema import MeasureSettings
        from bench.suite import powers_of_two_up_to
        from bench.sweep import default_out_path, run_sweep

        if (base_batch is None) != (base_lr is None):
            from bench.errors import BenchError

            raise BenchError("give both --base-batch and --base-lr, or neither")
        workload = build_workload(
            model, mode="train", precision=precision, channels_last=channels_last, compile=compile,
            image_size=image_size, device=device, h2d=False, optimizer="sgd", dataset_size=1_281_167,
        )  # fmt: skip
        res = find_max_batch(
            workload, granularity=granularity, memory_limit=memory_limit, on_probe=_print_probe
        )
        _summary(res)
        if not res.safe_batch_size:
            raise typer.Exit(1)
        sizes = powers_of_two_up_to(res.safe_batch_size)
        out = default_out_path(workload)
        with LiveSweep(err_console) as live:
            result = run_sweep(
                workload, sizes, MeasureSettings(max_time_seconds=max_time), out_path=out, on_event=live
            )
        console.print(sweep_table(result))
        console.print(render(make_rec(result, res, base_batch, base_lr)))
        console.print(f"results: {out}")
