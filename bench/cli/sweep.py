"""``bench sweep``: samples/sec, step time, memory and utilisation across batch sizes."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from bench.analysis.accounting import first_step_label, summary_line
from bench.cli.common import (
    DEFAULT_DB,
    DEFAULT_MODEL,
    SETTINGS,
    WORKLOAD,
    ChannelsLastOpt,
    CompileModeOpt,
    CompileOpt,
    CudnnBenchmarkLimitOpt,
    CudnnBenchmarkOpt,
    DataDirOpt,
    DataOpt,
    DatasetSizeOpt,
    DbOpt,
    DeviceOpt,
    H2dOpt,
    ImageSizeOpt,
    ModelArg,
    ModeOpt,
    OptimizerOpt,
    PrecisionOpt,
    WorkersOpt,
    build_settings,
    build_workload,
    console,
    err_console,
)
from bench.cli.help import ADVICE_PANEL, DIST_PANEL, MEASURE_PANEL, OUTPUT_PANEL
from bench.cli.launch import launch_sweep
from bench.jobs.distributed import detect, maybe_ranks, parse_timeout
from bench.jobs.sweep import check_inputs, default_out_path, parse_batch_sizes, run_sweep
from bench.measure.data import parse_workers
from bench.present.display import LiveSweep, sweep_table, workers_table
from bench.present.goodput import goodput_table
from bench.present.tables import advice_lines, recommendation_table
from bench.results.codec import dumps, load_result
from bench.results.errors import BenchError
from bench.results.noise import parse_noise_scale
from bench.results.schema import SweepResult, Workload, device_kind

# the options only this command has


BatchSizesOpt = Annotated[
    str | None,
    typer.Option(
        "--batch-sizes",
        "-b",
        help="e.g. 1,2,4,8 or a power-of-two range 8:256 (default: 1:32 on a CPU, 1:1024 on a GPU)",
        rich_help_panel=MEASURE_PANEL,
    ),
]
WarmupOpt = Annotated[
    int, typer.Option("--warmup", help="untimed warm-up steps per point", rich_help_panel=MEASURE_PANEL)
]
MinStepsOpt = Annotated[
    int, typer.Option("--min-steps", help="timed steps at least", rich_help_panel=MEASURE_PANEL)
]
MaxTimeOpt = Annotated[
    float,
    typer.Option(
        "--max-time", help="seconds of timed steps per point at most", rich_help_panel=MEASURE_PANEL
    ),
]
MinTimeOpt = Annotated[
    float | None,
    typer.Option(
        "--min-time",
        help="seconds of timed steps per point at least (default 1, or --max-time if less)",
        rich_help_panel=MEASURE_PANEL,
    ),
]
TargetCiOpt = Annotated[
    float,
    typer.Option(
        "--target-ci",
        help="stop when the 95% CI half-width is within this fraction of the median",
        rich_help_panel=MEASURE_PANEL,
    ),
]
SampleIntervalOpt = Annotated[
    float | None,
    typer.Option(
        "--sample-interval",
        help="telemetry period, seconds (default 0.05 on GPU, 0.25 on CPU)",
        rich_help_panel=MEASURE_PANEL,
    ),
]
IsolateOpt = Annotated[
    bool | None,
    typer.Option(
        "--isolate/--no-isolate",
        help="each point in a fresh process (default: on CPU)",
        rich_help_panel=MEASURE_PANEL,
    ),
]
RepeatOpt = Annotated[
    int,
    typer.Option(
        "--repeat",
        help="independent measurements of every batch size, interleaved (fresh process on CPU, fresh "
        "model on GPU); their spread is the run-to-run noise `bench compare` gates on",
        rich_help_panel=MEASURE_PANEL,
    ),
]
ContentionOpt = Annotated[
    bool,
    typer.Option(
        "--contention-check/--no-contention-check",
        help="watch other processes' CPU use over every point; a point they took 10% or more of its "
        "cores from is marked 'contended N%' and not ranked by the recommendation (default: on)",
        show_default=False,
        rich_help_panel=MEASURE_PANEL,
    ),
]
KeepGoingOpt = Annotated[
    bool,
    typer.Option("--keep-going", help="keep growing the batch after an OOM", rich_help_panel=MEASURE_PANEL),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", help="results JSON (default: bench_results/sweep-*.json)", rich_help_panel=OUTPUT_PANEL
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print the result JSON to stdout", rich_help_panel=OUTPUT_PANEL)
]
NoHistoryOpt = Annotated[
    bool, typer.Option("--no-history", help="do not store in the history", rich_help_panel=OUTPUT_PANEL)
]
NoNvtxOpt = Annotated[
    bool,
    typer.Option(
        "--no-nvtx", help="no NVTX/profiler ranges or cudaProfilerStart/Stop", rich_help_panel=MEASURE_PANEL
    ),
]
BaseBatchOpt = Annotated[
    int | None,
    typer.Option(
        "--base-batch",
        help="your current batch, for learning-rate starting points",
        rich_help_panel=ADVICE_PANEL,
    ),
]
BaseLrOpt = Annotated[
    float | None, typer.Option("--base-lr", help="your current learning rate", rich_help_panel=ADVICE_PANEL)
]
AdviseOpt = Annotated[
    bool,
    typer.Option(
        "--advise",
        help="after the sweep, measure host-bound points again with --compile (and CUDA graphs on "
        "GPU) and input-bound points with twice the loader workers; print and store the gains",
        rich_help_panel=ADVICE_PANEL,
    ),
]
NprocOpt = Annotated[
    str | None,
    typer.Option(
        "--nproc",
        help="data-parallel: run through torchrun with N processes (DDP); 1,2,4 = one run each, "
        "with scaling efficiency",
        rich_help_panel=DIST_PANEL,
    ),
]
NoiseScaleOpt = Annotated[
    str | None,
    typer.Option(
        "--noise-scale",
        help="B_noise (a number of samples, or a `bench noise` result file): adds the goodput-optimal "
        "batch, ranked by time to the same loss (B + B_noise)/samples/s",
        rich_help_panel=ADVICE_PANEL,
    ),
]
DistTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--dist-timeout",
        help="seconds any collective may wait under torchrun (default 300)",
        rich_help_panel=DIST_PANEL,
    ),
]


def sweep(
    model: ModelArg = DEFAULT_MODEL,
    batch_sizes: BatchSizesOpt = None,
    mode: ModeOpt = WORKLOAD.mode,
    precision: PrecisionOpt = WORKLOAD.precision,
    channels_last: ChannelsLastOpt = WORKLOAD.channels_last,
    compile: CompileOpt = WORKLOAD.compile,
    compile_mode: CompileModeOpt = WORKLOAD.compile_mode,
    image_size: ImageSizeOpt = WORKLOAD.image_size,
    device: DeviceOpt = None,
    h2d: H2dOpt = WORKLOAD.h2d,
    optimizer: OptimizerOpt = WORKLOAD.optimizer,
    dataset_size: DatasetSizeOpt = WORKLOAD.dataset_size,
    cudnn_benchmark: CudnnBenchmarkOpt = WORKLOAD.cudnn_benchmark,
    cudnn_benchmark_limit: CudnnBenchmarkLimitOpt = WORKLOAD.cudnn_benchmark_limit,
    data: DataOpt = WORKLOAD.data,
    workers: WorkersOpt = str(WORKLOAD.workers),
    data_dir: DataDirOpt = WORKLOAD.data_dir,
    warmup: WarmupOpt = SETTINGS.warmup_steps,
    min_steps: MinStepsOpt = SETTINGS.min_steps,
    max_time: MaxTimeOpt = SETTINGS.max_time_seconds,
    min_time: MinTimeOpt = None,
    target_ci: TargetCiOpt = SETTINGS.target_rel_ci,
    sample_interval: SampleIntervalOpt = None,
    isolate: IsolateOpt = None,
    repeat: RepeatOpt = SETTINGS.repeat,
    contention_check: ContentionOpt = SETTINGS.check_contention,
    keep_going: KeepGoingOpt = False,
    out: OutOpt = None,
    json_only: JsonOpt = False,
    db: DbOpt = DEFAULT_DB,
    no_history: NoHistoryOpt = False,
    no_nvtx: NoNvtxOpt = False,
    base_batch: BaseBatchOpt = None,
    base_lr: BaseLrOpt = None,
    noise_scale: NoiseScaleOpt = None,
    advise: AdviseOpt = False,
    nproc: NprocOpt = None,
    dist_timeout: DistTimeoutOpt = None,
    ctx: typer.Context = None,  # type: ignore[assignment]  # typer fills it in
) -> None:
    """Measure samples/sec, step time, memory and utilisation across batch sizes."""
    sizes = parse_batch_sizes(batch_sizes) if batch_sizes is not None else None
    noise = _noise_scale(noise_scale)
    worker_counts = parse_workers(workers)
    workload = build_workload(
        model, mode=mode, precision=precision, channels_last=channels_last, compile=compile,
        image_size=image_size, device=device, h2d=h2d, optimizer=optimizer,
        dataset_size=dataset_size, cudnn_benchmark=cudnn_benchmark, cudnn_benchmark_limit=cudnn_benchmark_limit,
        data=data, workers=worker_counts[0], data_dir=data_dir, compile_mode=compile_mode,
    )  # fmt: skip
    if len(worker_counts) > 1:
        return _sweep_per_worker_count(ctx, worker_counts, workload, out, json_only)
    settings = build_settings(
        warmup_steps=warmup, min_steps=min_steps, max_time_seconds=max_time,
        min_time_seconds=min_time, target_rel_ci=target_ci,
        sample_interval_seconds=sample_interval, isolate=isolate, stop_on_oom=not keep_going,
        repeat=repeat, check_contention=contention_check,
    )  # fmt: skip
    out_path = out or default_out_path(workload)
    history = None if no_history else db
    check_inputs(workload, store=history, base_batch=base_batch, base_lr=base_lr)  # before any display
    rank_env = detect()  # under torchrun: this process is one rank
    if nproc is not None:
        return launch_sweep(
            ctx, nproc, workload, out_path, history, json_only=json_only, under_torchrun=rank_env
        )
    if rank_env is not None and isolate:
        raise BenchError("--isolate does not apply under torchrun: each rank measures in its own process")
    result, saved = _measure(
        workload, sizes, settings, out_path, is_main=rank_env is None or rank_env.is_main,
        timeout=dist_timeout, kept_in_history=history is not None, annotate_steps=not no_nvtx,
        store=history, advise=advise, base_batch=base_batch, base_lr=base_lr, **noise,
    )  # fmt: skip
    if rank_env is not None and not rank_env.is_main:  # the other ranks print nothing but errors
        raise typer.Exit(1 if result.status == "failed" else 0)
    _show(result, saved, json_only)


def _measure(
    workload: Workload, sizes: Any, settings: Any, out_path: Path, *, is_main: bool, timeout: float | None,
    kept_in_history: bool, **job: Any,
) -> tuple[SweepResult, Path | None]:  # fmt: skip
    """The job (``bench.jobs.sweep.run_sweep``) under the live display; returns the result and
    where its file is now. Ctrl-C is exit 130; a hard failure after some points says what was kept."""
    saved: list[Path | None] = [out_path]  # where the results are: a failed write moves them

    def track(live: Any) -> Any:
        def on_event(event: Any) -> None:
            if event.kind == "moved":
                saved[0] = event.results_path
            if live is not None:
                live(event)

        return on_event

    try:
        with (
            maybe_ranks(workload, parse_timeout(timeout)) as (workload, ranks),
            LiveSweep(err_console) if is_main else contextlib.nullcontext() as live,
        ):
            result = run_sweep(
                workload, sizes, settings, out_path=out_path, on_event=track(live), ranks=ranks, **job
            )
    except KeyboardInterrupt:
        if is_main:
            err_console.print(f"[yellow]interrupted[/]: finished points are saved in {_saved_in(saved[0])}")
        raise typer.Exit(130) from None
    except Exception as exc:  # a later point failed hard: what was measured is kept (and stored)
        partial = getattr(exc, "partial_result", None)
        if partial is not None and partial.points and is_main:
            kept = " and the history" if kept_in_history else ""
            err_console.print(
                f"[yellow]stopped[/]: {len(partial.points)} finished point(s) kept in {_saved_in(saved[0])}{kept}"
            )
        raise
    return result, saved[0]


def _show(result: SweepResult, saved: Path | None, json_only: bool) -> None:
    """The table, the recommendation, the advice and the time summary (or the JSON)."""
    if json_only:
        print(dumps(result))
    else:
        console.print(sweep_table(result))
        best = result.best_point()
        rec = result.recommendation
        if best is not None and rec is not None and rec.best is None:  # contended or too noisy
            for note in rec.notes:
                console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
            console.print(f"[yellow]no batch size to recommend[/]; results: {_saved_in(saved)}")
        elif best is not None:
            if rec is not None:
                console.print(recommendation_table(rec))
                if rec.goodput_rows:
                    console.print(goodput_table(rec))
            pick = (
                best
                if rec is None or rec.best is None
                else next(p for p in result.points if p.batch_size == rec.best.batch_size)
            )
            console.print(
                f"best: batch {pick.batch_size} at {pick.samples_per_sec:,.1f} samples/s; "
                f"results: {_saved_in(saved)}"
            )
        if result.advice:
            console.print("[bold]measured advice[/] (after / before samples/sec at the same batch):")
            for line in advice_lines(result.advice):
                console.print(f"  {line}", highlight=False)
        _print_time_summary(result)
    if result.status == "failed":
        err_console.print(f"[red]sweep failed[/]: no batch size completed; see {_saved_in(saved)}")
        raise typer.Exit(1)


def _noise_scale(text: str | None) -> dict[str, Any]:
    """``--noise-scale``: the job's keyword arguments, parsed before anything is measured."""
    if text is None:
        return {}

    value, source = parse_noise_scale(text)
    return {"noise_scale": value, "noise_source": source}


def _saved_in(path: Path | None) -> str:
    """Where a sweep's results file is (``ResultWriter.where``) for the closing lines."""
    return str(path) if path is not None else "memory only (no file could be written; see the note above)"


def _sweep_per_worker_count(
    ctx: typer.Context, counts: list[int], workload: Workload, out: Path | None, json_only: bool
) -> None:
    """``--workers 0,2,4``: the whole sweep once per worker count, one result file each (the worker
    count is part of the workload, so `bench compare` and `bench report` tell the runs apart), then
    samples/sec side by side."""
    if workload.data != "loader":
        raise BenchError("a list of --workers needs --data loader")
    if json_only:
        raise BenchError("--json prints one run: give one --workers count (a list writes one file per count)")
    base = Path(out) if out is not None else default_out_path(workload)
    paths = []
    for n in counts:
        path = base.with_name(f"{base.stem}-w{n}{base.suffix}")
        err_console.print(f"[bold]--workers {n}[/]: results in {path}", highlight=False)
        code = 0
        try:
            sweep(**{**ctx.params, "workers": str(n), "out": path, "ctx": ctx})
        except typer.Exit as exc:
            code = exc.exit_code
        if code not in (0, None):
            err_console.print(f"[yellow]--workers {n}[/]: the sweep failed (exit {code})")
        paths.append(path)
    results = [load_result(str(p)) for p in paths if p.is_file()]
    if results:
        console.print(workers_table(results))


def _print_time_summary(result: SweepResult) -> None:
    """ "7 points in 84 s: 21 s measuring, 48 s first steps (cuDNN autotune), 15 s building"."""
    kind = device_kind(result.workload.device)
    line = summary_line(
        [p.timing for p in result.points],
        result.wall_seconds,
        first_step=first_step_label(kind, result.workload.compile),
    )
    if line:
        err_console.print(line, highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(sweep)
