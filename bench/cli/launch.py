"""``bench sweep --nproc N[,M,...]``: the sweep through torchrun, and the scaling table after it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from bench.cli.common import console, err_console
from bench.jobs.launch import (
    click_args,
    finish_scaling,
    launch_sweeps,
    parse_nproc,
    run_torchrun,
    scaling_path,
)
from bench.present.display import scaling_table
from bench.results.codec import dumps
from bench.results.errors import BenchError
from bench.results.store import save_run


def launch_sweep(
    ctx: Any,
    nproc: str,
    workload: Any,
    out_path: Path | str,
    history: Path | None,
    *,
    json_only: bool,
    under_torchrun: Any,
) -> None:
    """Run the sweep of ``ctx`` through torchrun once per process count in ``nproc``."""
    if under_torchrun is not None:
        raise BenchError(
            "--nproc starts torchrun itself: leave it out when bench already runs under torchrun"
        )
    counts = parse_nproc(nproc, workload.device)
    forwarded = click_args(ctx, drop=("nproc", "out", "json_only", "device", "ctx"))
    out_path = Path(out_path)

    def args_for(n: int, path: Path) -> list[str]:
        return ["sweep", *forwarded, "--device", workload.device, "--out", str(path)]

    def run(cmd: Sequence[str]) -> int:
        return run_torchrun(cmd, quiet=json_only)  # --json: only the summary on stdout

    try:
        runs = launch_sweeps(counts, args_for, out_path, run=run)
    except KeyboardInterrupt:
        err_console.print(f"[yellow]interrupted[/]: finished runs are saved next to {out_path}")

        raise typer.Exit(130) from None
    summary = scaling_path(out_path) if len(counts) > 1 else None
    results, rows = finish_scaling(runs, summary)
    if history is not None:  # each run stored itself; store again with its efficiency filled in
        for r in results:
            try:
                save_run(history, r)
            except (BenchError, OSError) as exc:
                err_console.print(f"[yellow]warning:[/] not stored in the history: {escape(str(exc))}")
    if json_only:
        if summary is not None:
            print(summary.read_text(encoding="utf-8"))
        else:
            print(dumps(results[0]))
        return
    if 1 not in counts:
        err_console.print("[dim]no 1-process run in --nproc: no scaling efficiency (add 1, e.g. 1,2,4)[/]")

    console.print(scaling_table(rows))
    where = f"{summary} (runs: " + ", ".join(str(p) for _, p in runs) + ")" if summary else str(runs[0][1])
    console.print(f"results: {where}")
