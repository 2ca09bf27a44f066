"""`bench max-batch` and `bench recommend`: thin commands over ``find_max_batch`` and ``recommend``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from bench.analysis.accounting import first_step_label, summary_line
from bench.cli.common import (
    DEFAULT_DB,
    DEFAULT_MODEL,
    WORKLOAD,
    ChannelsLastOpt,
    CompileOpt,
    CudnnBenchmarkLimitOpt,
    CudnnBenchmarkOpt,
    DbOpt,
    DeviceOpt,
    ImageSizeOpt,
    ModelArg,
    ModeOpt,
    OptimizerOpt,
    PrecisionOpt,
    build_workload,
    console,
    err_console,
    fmt_bytes,
)
from bench.jobs.maxbatch import PROBE_STEPS, find_max_batch
from bench.jobs.maxbatch import check_inputs as check_search_inputs
from bench.jobs.recommend import recommend_for
from bench.jobs.sweep import check_inputs as check_sweep_inputs
from bench.jobs.sweep import default_out_path
from bench.present.display import LiveSweep, sweep_table
from bench.present.tables import recommendation_table
from bench.results.errors import BenchError
from bench.results.schema import MeasureSettings, device_kind

if TYPE_CHECKING:
    from bench.jobs.maxbatch import MaxBatchResult, ProbeRecord
    from bench.results.schema import Workload

# the options only this command has
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="write the result JSON here")]
DdpOpt = Annotated[
    bool, typer.Option("--ddp", help="probe with the model in DistributedDataParallel (its gradient buckets)")
]
MaxTimeOpt = Annotated[float, typer.Option("--max-time", help="seconds of timed steps per point")]
BaseBatchOpt = Annotated[int | None, typer.Option("--base-batch", help="your reference batch")]
BaseLrOpt = Annotated[float | None, typer.Option("--base-lr", help="its learning rate")]
_OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="sweep JSON (default: bench_results/...)")]


GranularityOpt = Annotated[
    int | None,
    typer.Option(
        "--granularity",
        help="exact to this step (default: 1 on a GPU; 8 on CPU, where peak RSS varies by tens of samples)",
    ),
]
MaxSecondsOpt = Annotated[
    float | None,
    typer.Option("--max-seconds", help="stop probing after this long, with the best proven bracket so far"),
]
MemoryLimitOpt = Annotated[
    str | None,
    typer.Option(
        "--memory-limit",
        help="budget, e.g. 8GiB or 3000MB (CPU default: 50% of available RAM); on a GPU it also caps "
        "the caching allocator",
    ),
]
IsolateOpt = Annotated[
    bool, typer.Option("--isolate/--no-isolate", help="each GPU probe in a fresh process (CPU: always)")
]
CapOpt = Annotated[int | None, typer.Option("--max-batch", help="never probe above this batch")]
SoakOpt = Annotated[int, typer.Option("--soak-steps", help="steps the chosen max must survive")]
AutotuneProbesOpt = Annotated[
    bool,
    typer.Option(
        "--autotune-probes",
        help="probe with cuDNN autotuning too (default: only the soak of the chosen max autotunes, as "
        "training will; a search per new shape cost 23-32 s a probe on an H100)",
    ),
]


def _workload(model: str, mode: str, **flags: Any) -> Workload:
    if mode.lower() != "train":
        raise BenchError(f"--mode {mode}: the max batch is searched for training only (--mode train)")
    return build_workload(model, mode="train", h2d=False, **flags)


def print_probe(rec: ProbeRecord) -> None:
    """One live line per probe (stderr), soak runs marked."""
    colour = "green" if rec.fits else "red"
    what = ("repeat" if rec.repeat else "probe") if rec.steps == PROBE_STEPS else f"soak {rec.steps} steps"
    why = f"  [dim]{escape(rec.detail)}[/]" if rec.detail and not rec.fits else ""
    err_console.print(
        f"  {what:<14} batch {rec.batch_size:>6}: [{colour}]{rec.outcome:<11}[/] "
        f"peak {fmt_bytes(rec.peak_bytes):>10}  {rec.seconds:6.1f} s{why}",
        highlight=False,
    )


def print_summary(res: MaxBatchResult) -> None:
    """The answer and its proof: the max ran and fit, max + granularity ran and did not."""
    g = res.granularity
    budget = f"{fmt_bytes(res.budget_bytes)} ({res.budget_source})"
    if res.max_batch_size is None:
        console.print(f"[red]no batch fits[/]: batch {res.failed_batch_size} did not fit in {budget}")
        return
    all_runs = list(res.probes) + (list(res.soak.probes) if res.soak else [])
    fit = max((p for p in all_runs if p.batch_size == res.max_batch_size and p.fits), key=lambda p: p.steps)
    failed = next((p for p in reversed(all_runs) if p.batch_size == res.failed_batch_size), None)
    if res.cap_reached:
        proof = f"batch {fit.batch_size} fit ({fmt_bytes(fit.peak_bytes)}); it is the --max-batch cap"
    elif failed is not None:
        proof = (
            f"batch {fit.batch_size} fit ({fmt_bytes(fit.peak_bytes)}) and batch {failed.batch_size} "
            f"did not ({failed.outcome}{'' if failed.steps == fit.steps else f' in {failed.steps} steps'})"
        )
    else:
        proof = f"batch {fit.batch_size} fit; the search stopped before a failure above it"
    if res.band_low is not None and res.band_high is not None and res.band_high > res.band_low:
        console.print(
            f"[bold]max batch {res.band_low}–{res.band_high}[/] (the boundary did not repeat: peak memory "
            f"varies between runs; {res.band_low} fit every time); budget {budget}"
        )
    else:
        if res.exact:
            exact = f"exact to {g}" + (", repeated" if res.repeats else "")
        else:
            exact = f"NOT exact: the {res.stopped or 'probe limit'} stopped the search"
        console.print(f"[bold]max batch {res.max_batch_size}[/] ({exact}): {proof}; budget {budget}")
    if res.soak is not None:
        console.print(f"soak: {res.soak.detail} ({res.soak.seconds:.1f} s)")
    if res.safe_batch_size is not None:
        console.print(f"[bold]safe batch {res.safe_batch_size}[/]: {res.headroom_reason}")
    else:
        console.print(
            f"[yellow]no safe batch[/]: not even batch {g} leaves the headroom ({res.headroom_reason})"
        )
    if res.memory_model is not None:
        m = res.memory_model
        console.print(
            f"memory model: {fmt_bytes(int(m.fixed_bytes))} fixed + {fmt_bytes(int(m.per_sample_bytes))} "
            f"per sample (fits the probes within {m.max_relative_error:.1%})"
        )

    soaks = len(res.soak.probes) if res.soak is not None else 0
    what = f"{res.probe_count} probe{'s' if res.probe_count != 1 else ''}" + (
        f" + {soaks} soak run{'s' if soaks != 1 else ''}" if soaks else ""
    )
    runs = [*res.probes, *(res.soak.probes if res.soak is not None else ())]
    kind = device_kind(res.workload.device)
    line = summary_line(
        [r.timing for r in runs if r.timing is not None], res.wall_seconds, noun="probes",
        first_step=first_step_label(kind, res.workload.compile), what=what,
    ) or f"{what}, {res.seconds:.1f} s in all"  # fmt: skip
    if line:
        err_console.print(line, highlight=False)
    for line in (*res.notices, *res.leaks):
        console.print(f"[yellow]note:[/] {escape(line)}")


def _start_search(workload: Workload, **kwargs: Any) -> None:
    """Bad input is one line before anything starts; then the line that says what is searched."""
    check_search_inputs(workload, **kwargs)
    err_console.print(f"searching the largest training batch of {workload.model} on {workload.device}")


def max_batch_cmd(
    model: ModelArg = DEFAULT_MODEL,
    mode: ModeOpt = WORKLOAD.mode,
    precision: PrecisionOpt = WORKLOAD.precision,
    channels_last: ChannelsLastOpt = WORKLOAD.channels_last,
    compile: CompileOpt = WORKLOAD.compile,
    image_size: ImageSizeOpt = WORKLOAD.image_size,
    device: DeviceOpt = None,
    optimizer: OptimizerOpt = WORKLOAD.optimizer,
    cudnn_benchmark: CudnnBenchmarkOpt = WORKLOAD.cudnn_benchmark,
    cudnn_benchmark_limit: CudnnBenchmarkLimitOpt = WORKLOAD.cudnn_benchmark_limit,
    autotune_probes: AutotuneProbesOpt = False,
    granularity: GranularityOpt = None,
    memory_limit: MemoryLimitOpt = None,
    isolate: IsolateOpt = False,
    cap: CapOpt = None,
    soak_steps: SoakOpt = 20,
    max_seconds: MaxSecondsOpt = None,
    out: OutOpt = None,
    db: DbOpt = DEFAULT_DB,
    ddp: DdpOpt = False,
) -> None:
    """Find the largest training batch that fits, exactly, in few probes; and a safe one."""
    workload = _workload(
        model, mode, precision=precision, channels_last=channels_last, compile=compile,
        image_size=image_size, device=device, optimizer=optimizer,
        cudnn_benchmark=cudnn_benchmark, cudnn_benchmark_limit=cudnn_benchmark_limit,
    )  # fmt: skip
    options = {"granularity": granularity, "memory_limit": memory_limit, "cap": cap, "isolate": isolate}
    _start_search(workload, out_path=out, store=db, soak_steps=soak_steps, max_seconds=max_seconds, **options)
    try:
        res = find_max_batch(
            workload, out_path=out, store=db, ddp=ddp, on_probe=print_probe, soak_steps=soak_steps,
            max_seconds=max_seconds, autotune_probes=autotune_probes, **options,
        )  # fmt: skip
    except KeyboardInterrupt:  # an unfinished search proves nothing: the probe lines above are all
        err_console.print(
            "[yellow]interrupted[/]: search stopped; nothing stored (the probes are listed above)"
        )
        raise typer.Exit(130) from None
    print_summary(res)
    if out is not None:
        console.print(f"results: {out}")
    if res.max_batch_size is None:  # recorded, but a script must not read it as an answer
        raise typer.Exit(1)


def recommend_cmd(
    model: ModelArg = DEFAULT_MODEL,
    mode: ModeOpt = WORKLOAD.mode,
    precision: PrecisionOpt = WORKLOAD.precision,
    channels_last: ChannelsLastOpt = WORKLOAD.channels_last,
    compile: CompileOpt = WORKLOAD.compile,
    image_size: ImageSizeOpt = WORKLOAD.image_size,
    device: DeviceOpt = None,
    optimizer: OptimizerOpt = WORKLOAD.optimizer,
    granularity: GranularityOpt = None,
    memory_limit: MemoryLimitOpt = None,
    isolate: IsolateOpt = False,
    cap: CapOpt = None,
    max_time: MaxTimeOpt = 5.0,
    base_batch: BaseBatchOpt = None,
    base_lr: BaseLrOpt = None,
    out: _OutOpt = None,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Max batch, then a sweep of powers of two up to the safe batch, then the batch to pick."""
    settings = MeasureSettings(max_time_seconds=max_time, min_time_seconds=min(1.0, max_time))
    workload = _workload(
        model, mode, precision=precision, channels_last=channels_last, compile=compile,
        image_size=image_size, device=device, optimizer=optimizer,
    )  # fmt: skip
    check_sweep_inputs(workload, store=db, base_batch=base_batch, base_lr=base_lr)
    options = {"granularity": granularity, "memory_limit": memory_limit, "cap": cap, "isolate": isolate}
    _start_search(workload, **options)
    run = recommend_for(
        workload, settings, out_path=out or default_out_path(workload), base_batch=base_batch,
        base_lr=base_lr, store=db, on_search=print_summary, sweep_display=lambda: LiveSweep(err_console),
        on_probe=print_probe, **options,
    )  # fmt: skip
    for warning in run.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    console.print(sweep_table(run.sweep))
    console.print(recommendation_table(run.recommendation))
    console.print(f"results: {run.sweep_path}")


def register(app: typer.Typer) -> None:
    app.command("max-batch")(max_batch_cmd)
    app.command("recommend")(recommend_cmd)
