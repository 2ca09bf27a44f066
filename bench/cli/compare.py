"""`bench compare` (the regression gate) and `bench baseline` (named runs it gates against)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bench.cli.common import DEFAULT_DB, DbOpt, console, err_console
from bench.jobs.compare import compare_runs
from bench.present.display import baselines_table
from bench.present.tables import summary, to_markdown, to_table
from bench.results.errors import BenchError
from bench.results.store import import_file, list_baselines, set_baseline


def compare(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="BASELINE CURRENT (or only CURRENT with --baseline): file, history id, or 'latest'"
        ),
    ],
    threshold: Annotated[str, typer.Option("--threshold", help="e.g. 10% or 0.1")] = "10%",
    baseline_name: Annotated[
        str | None,
        typer.Option("--baseline", help="compare with this named baseline (bench baseline set)"),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="also fail (exit 1) when a verdict is INCONCLUSIVE")
    ] = False,
    allow_mismatch: Annotated[
        bool,
        typer.Option(
            "--allow-mismatch",
            help="compare runs of different workloads, settings or environments (warns instead of refusing)",
        ),
    ] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="print a Markdown table")] = False,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Fail (exit 1) on a real slowdown: beyond the threshold and beyond the noise between runs.

    The noise comes from --repeat measurements, else from stored runs of the same
    configuration in the history. Exit 2 when the runs are not like with like."""
    cmp = compare_runs(
        runs, db=db, threshold=threshold, baseline_name=baseline_name, allow_mismatch=allow_mismatch
    )
    for w in cmp.warnings:
        loud = w in cmp.mismatches
        err_console.print(f"[{'bold red' if loud else 'yellow'}]warning:[/] {escape(w)}")
    if markdown:
        print(to_markdown(cmp))
    else:
        console.print(to_table(cmp))
        for note in cmp.notes:
            err_console.print(f"[dim]{escape(note)}[/]")
        colour = "red" if cmp.regressions else ("yellow" if cmp.inconclusive else "green")
        console.print(f"[{colour}]{summary(cmp).replace('**', '')}[/]")
    if cmp.regressions or (strict and cmp.inconclusive):
        raise typer.Exit(1)


def baseline_cmd(
    action: Annotated[str, typer.Argument(help="set | list")],
    name: Annotated[str | None, typer.Argument(help="baseline name (set)")] = None,
    run: Annotated[
        str | None, typer.Argument(help="run to name (set): file, history id, or 'latest'")
    ] = None,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Name a stored run as a baseline (`set NAME RUN`), or list the baselines (`list`).

    A CI job then gates with `bench compare --baseline NAME CURRENT`."""
    if action == "set":
        if not name or not run:
            raise BenchError("usage: bench baseline set NAME RUN (RUN: file, history id, or 'latest')")
        if Path(run).is_file():  # a result file (a CI artifact): into the history first
            import_file(db, run)
        row = set_baseline(db, name, run)
        console.print(f"baseline [bold]{escape(name)}[/] = run {row.id} ({escape(row.run_id)})")
    elif action == "list":
        if name or run:
            raise BenchError("usage: bench baseline list")

        console.print(baselines_table(db, list_baselines(db)))
    else:
        raise BenchError(f"unknown baseline action {action!r}: use set or list")


def register(app: typer.Typer) -> None:
    app.command()(compare)
    app.command("baseline")(baseline_cmd)
