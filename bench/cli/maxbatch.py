"""`bench max-batch` and `bench recommend`: thin commands over ``find_max_batch`` and ``recommend``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from bench.cli.common import (
    DEFAULT_DB,
    DEFAULT_MODEL,
    WORKLOAD,
    ChannelsLastOpt,
    CompileOpt,
    CudnnBenchmarkOpt,
    DbOpt,
    DeviceOpt,
    ImageSizeOpt,
    ModelArg,
    ModeOpt,
    OptimizerOpt,
    PrecisionOpt,
    build_workload,
    check_workload,
    console,
    err_console,
    fmt_bytes,
    store_in_history,
)
from bench.results.errors import BenchError
from bench.results.schema import device_kind

if TYPE_CHECKING:
    from bench.jobs.maxbatch import MaxBatchResult, ProbeRecord
    from bench.results.schema import Workload

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
    typer.Option("--memory-limit", help="budget, e.g. 8GiB or 3000MB (CPU default: 50% of available RAM)"),
]
IsolateOpt = Annotated[
    bool, typer.Option("--isolate/--no-isolate", help="each GPU probe in a fresh process (CPU: always)")
]
CapOpt = Annotated[int | None, typer.Option("--max-batch", help="never probe above this batch")]
SoakOpt = Annotated[int, typer.Option("--soak-steps", help="steps the chosen max must survive")]


def _workload(model: str, mode: str, **flags: Any) -> Workload:
    if mode.lower() != "train":
        raise BenchError(f"--mode {mode}: the max batch is searched for training only (--mode train)")
    return build_workload(model, mode="train", h2d=False, **flags)


def print_probe(rec: ProbeRecord) -> None:
    """One live line per probe (stderr), soak runs marked."""
    from bench.jobs.maxbatch import PROBE_STEPS

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
    from bench.analysis.accounting import first_step_label, summary_line

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


def _write_json(out: Path, data: dict[str, Any]) -> None:
    """Atomically, with the same writer and file mode as sweeps: never half a file to resume from."""
    from bench.jobs.sweep import write_json_atomic

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, json.dumps(data, indent=2, allow_nan=False))
    except OSError as exc:
        raise BenchError(f"cannot write {out}: {exc.strerror}") from None


def _start_search(workload: Workload, **kwargs: Any) -> None:
    """Bad input is one line before anything starts; then the line that says what is searched."""
    from bench.jobs.maxbatch import SOAK_STEPS, check_options, default_granularity, parse_bytes

    g = kwargs["granularity"]
    if g is None:
        g = min(default_granularity(device_kind(workload.device)), kwargs["cap"] or 2**62)
    check_options(granularity=g, cap=kwargs["cap"], soak_steps=kwargs.get("soak_steps", SOAK_STEPS))
    if kwargs.get("memory_limit") is not None:
        parse_bytes(kwargs["memory_limit"])
    check_workload(workload)  # bad input is the only line printed
    err_console.print(f"searching the largest training batch of {workload.model} on {workload.device}")


def _search(workload: Workload, **kwargs: Any) -> MaxBatchResult:
    from bench.jobs.maxbatch import find_max_batch

    _start_search(workload, **kwargs)
    return find_max_batch(workload, on_probe=print_probe, **kwargs)


def register(app: typer.Typer) -> None:
    @app.command("max-batch")
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
        granularity: GranularityOpt = None,
        memory_limit: MemoryLimitOpt = None,
        isolate: IsolateOpt = False,
        cap: CapOpt = None,
        soak_steps: SoakOpt = 20,
        max_seconds: MaxSecondsOpt = None,
        out: Annotated[Path | None, typer.Option("--out", "-o", help="write the result JSON here")] = None,
        db: DbOpt = DEFAULT_DB,
        ddp: Annotated[
            bool,
            typer.Option(
                "--ddp", help="probe with the model in DistributedDataParallel (its gradient buckets)"
            ),
        ] = False,
    ) -> None:
        """Find the largest training batch that fits, exactly, in few probes; and a safe one."""
        workload = _workload(
            model, mode, precision=precision, channels_last=channels_last, compile=compile,
            image_size=image_size, device=device, optimizer=optimizer,
            cudnn_benchmark=cudnn_benchmark,
        )  # fmt: skip
        from bench.jobs.maxbatch import check_max_seconds

        check_max_seconds(max_seconds)
        if out is not None:  # an unwritable output is bad input: say so before minutes of probing
            from bench.jobs.sweep import ResultWriter

            ResultWriter(out)
        from bench.results.store import check_history_path

        check_history_path(db)
        from bench.jobs.distributed import ddp_probes

        try:
            with ddp_probes(ddp):
                res = _search(
                    workload, granularity=granularity, memory_limit=memory_limit, cap=cap, isolate=isolate,
                    soak_steps=soak_steps, max_seconds=max_seconds,
                )  # fmt: skip
            if ddp:
                from dataclasses import replace

                note = (
                    "probes ran the model in DistributedDataParallel (one-process group): buckets allocated"
                )
                res = replace(res, notices=(*res.notices, note))
        except KeyboardInterrupt:  # an unfinished search proves nothing: the probe lines above are all
            err_console.print(
                "[yellow]interrupted[/]: search stopped; nothing stored (the probes are listed above)"
            )
            raise typer.Exit(130) from None
        print_summary(res)

        store_in_history(db, res)
        if out is not None:
            _write_json(out, res.to_dict())
            console.print(f"results: {out}")
        if res.max_batch_size is None:  # recorded, but a script must not read it as an answer
            raise typer.Exit(1)

    @app.command()
    def recommend(
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
        max_time: Annotated[float, typer.Option("--max-time", help="seconds of timed steps per point")] = 5.0,
        base_batch: Annotated[int | None, typer.Option("--base-batch", help="your reference batch")] = None,
        base_lr: Annotated[float | None, typer.Option("--base-lr", help="its learning rate")] = None,
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help="sweep JSON (default: bench_results/...)")
        ] = None,
        db: DbOpt = DEFAULT_DB,
    ) -> None:
        """Max batch, then a sweep of powers of two up to the safe batch, then the batch to pick."""
        from bench.analysis.recommend import check_lr_reference, render
        from bench.jobs.profile_run import recommend_for
        from bench.jobs.sweep import default_out_path
        from bench.present.display import LiveSweep, sweep_table
        from bench.results.schema import MeasureSettings
        from bench.results.store import check_history_path

        check_lr_reference(base_batch, base_lr)
        check_history_path(db)
        settings = MeasureSettings(max_time_seconds=max_time, min_time_seconds=min(1.0, max_time))
        workload = _workload(
            model, mode, precision=precision, channels_last=channels_last, compile=compile,
            image_size=image_size, device=device, optimizer=optimizer,
        )  # fmt: skip
        search_options = {
            "granularity": granularity,
            "memory_limit": memory_limit,
            "cap": cap,
            "isolate": isolate,
        }
        _start_search(workload, **search_options)

        def show(res: MaxBatchResult) -> None:
            print_summary(res)
            store_in_history(db, res)

        run = recommend_for(
            workload, settings, out_path=out or default_out_path(workload), base_batch=base_batch,
            base_lr=base_lr, on_search=show, sweep_display=lambda: LiveSweep(err_console),
            on_probe=print_probe, **search_options,
        )  # fmt: skip
        store_in_history(db, str(run.sweep_path))
        console.print(sweep_table(run.sweep))
        console.print(render(run.recommendation))
        console.print(f"results: {run.sweep_path}")
