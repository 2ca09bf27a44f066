"""`bench ab`: one workload under two builds, interleaved, until the change is settled."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from bench.analysis.gate import INCONCLUSIVE, parse_threshold
from bench.cli.common import (
    DEFAULT_DB,
    WORKLOAD,
    DbOpt,
    DeviceOpt,
    ImageSizeOpt,
    ModeOpt,
    PrecisionOpt,
    build_settings,
    build_workload,
    console,
    err_console,
    store_in_history,
)
from bench.jobs.ab import (
    DEFAULT_SETTINGS,
    MAX_ROUNDS,
    MAX_TIME_SECONDS,
    MIN_ROUNDS,
    WINDOWS,
    ABSideFailed,
    default_out_path,
    run_ab,
    side,
)
from bench.jobs.sweep import parse_batch_sizes
from bench.present.ab import ab_markdown, ab_table, progress_line, summary
from bench.results.store import check_history_path

# the options only this command has
ModelOpt = Annotated[
    str, typer.Argument(help="model name as in bench sweep (e.g. resnet18, pkg.mod:factory)")
]
BatchSizesOpt = Annotated[str, typer.Option("--batch-sizes", "-b", help="e.g. 8,32")]
AOpt = Annotated[str | None, typer.Option("--a", help="side A's directory, first on its PYTHONPATH")]
BOpt = Annotated[str | None, typer.Option("--b", help="side B's directory, first on its PYTHONPATH")]
APythonOpt = Annotated[str | None, typer.Option("--a-python", help="side A's interpreter")]
BPythonOpt = Annotated[str | None, typer.Option("--b-python", help="side B's interpreter")]
ThresholdOpt = Annotated[str, typer.Option("--threshold", help="e.g. 10% or 0.1")]
MinRoundsOpt = Annotated[int, typer.Option("--min-rounds", help="rounds before any verdict")]
MaxRoundsOpt = Annotated[int, typer.Option("--max-rounds", help="stop INCONCLUSIVE after this many")]
MaxTimeOpt = Annotated[float, typer.Option("--max-time", help="seconds for the whole comparison at most")]
WindowOpt = Annotated[float, typer.Option("--window", help="seconds of one timed window")]
WindowsOpt = Annotated[int, typer.Option("--windows", help="timed windows per side, batch size and round")]
SequentialOpt = Annotated[
    bool,
    typer.Option(
        "--sequential",
        help="run a round's two children one after the other (alternating ones hold GPU memory together)",
    ),
]
WarmupOpt = Annotated[int, typer.Option("--warmup", help="untimed steps per child")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="of the random side order (recorded)")]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="also fail (exit 1) when a batch size is INCONCLUSIVE")
]
MarkdownOpt = Annotated[bool, typer.Option("--markdown", help="print a pull-request comment")]
OutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="results JSON (default bench_results/ab-*.json)")
]
NoHistoryOpt = Annotated[bool, typer.Option("--no-history", help="do not store in the history")]


def ab_cmd(
    model: ModelOpt,
    batch_sizes: BatchSizesOpt = "8,32",
    a: AOpt = None,
    b: BOpt = None,
    a_python: APythonOpt = None,
    b_python: BPythonOpt = None,
    threshold: ThresholdOpt = "10%",
    min_rounds: MinRoundsOpt = MIN_ROUNDS,
    max_rounds: MaxRoundsOpt = MAX_ROUNDS,
    max_time: MaxTimeOpt = MAX_TIME_SECONDS,
    window: WindowOpt = DEFAULT_SETTINGS.max_time_seconds,
    warmup: WarmupOpt = DEFAULT_SETTINGS.warmup_steps,
    windows: WindowsOpt = WINDOWS,
    sequential: SequentialOpt = False,
    seed: SeedOpt = None,
    mode: ModeOpt = WORKLOAD.mode,
    precision: PrecisionOpt = WORKLOAD.precision,
    image_size: ImageSizeOpt = WORKLOAD.image_size,
    device: DeviceOpt = None,
    strict: StrictOpt = False,
    markdown: MarkdownOpt = False,
    out: OutOpt = None,
    db: DbOpt = DEFAULT_DB,
    no_history: NoHistoryOpt = False,
) -> None:
    """Does B change the speed of MODEL against A? Exit 1 on a REGRESSION (B slower beyond the threshold).

    Each round starts a fresh process per side; the two take turns, short timed windows in a random
    order; rounds go on until, per batch size, the interval of the paired change lies inside
    +-threshold, or wholly beyond it."""
    limit = parse_threshold(threshold)
    sizes = parse_batch_sizes(batch_sizes)
    sides = side("A", a, a_python), side("B", b, b_python)
    workload = build_workload(model, mode=mode, precision=precision, image_size=image_size, device=device)
    settings = build_settings(
        warmup_steps=warmup, min_steps=DEFAULT_SETTINGS.min_steps, max_time_seconds=window,
        min_time_seconds=window, isolate=True,
    )  # fmt: skip
    history = None if no_history else db
    if history is not None:
        check_history_path(history)
    out_path = out or default_out_path(workload)
    try:
        with _Live() as live:
            result = run_ab(
                workload, sizes, *sides, threshold=limit, settings=settings, min_rounds=min_rounds,
                max_rounds=max_rounds, max_time_seconds=max_time, windows=windows, alternate=not sequential,
                seed=seed, out_path=out_path, on_event=live,
            )  # fmt: skip
    except (ABSideFailed, KeyboardInterrupt) as exc:
        partial = getattr(exc, "partial_result", None)
        if partial is not None:
            store_in_history(history, partial)
            err_console.print(f"[yellow]kept[/]: {len(partial.rounds)} round(s) in {out_path}")
        if isinstance(exc, KeyboardInterrupt):
            raise typer.Exit(130) from None
        raise
    store_in_history(history, result)
    if markdown:
        print(ab_markdown(result))
    else:
        console.print(ab_table(result))
        colour = "red" if result.regressions else "green"
        console.print(f"[{colour}]{escape(summary(result).replace('**', ''))}[/]  results: {out_path}")
    if result.regressions or (strict and any(v.verdict == INCONCLUSIVE for v in result.verdicts)):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("ab")(ab_cmd)


class _Live:
    """Progress on stderr: on a terminal one live line (round k, the side running, per batch size
    the change so far and its interval); in a CI log one line per finished round."""

    def __enter__(self) -> Any:
        self._line = ""
        self._live = None
        if err_console.is_terminal:
            self._live = Live(Text("round 1"), console=err_console, transient=True, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __call__(self, event: Any) -> None:
        if event.kind == "round" and event.result is not None:
            self._line = progress_line(event.result)
            if self._live is None:
                err_console.print(self._line, highlight=False)
        elif event.kind == "side":
            self._line = f"round {event.round}: side {event.side}  " + self._line.partition("  ")[2]
        if self._live is not None:
            self._live.update(Text(self._line))

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            if self._line:
                err_console.print(self._line, highlight=False)
