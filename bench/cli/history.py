"""`bench history` (list stored runs) and `bench import` (result files into the history)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.markup import escape

from bench.cli.common import DEFAULT_DB, DbOpt, console, err_console
from bench.present.display import history_table
from bench.results.errors import BenchError
from bench.results.store import import_file, list_runs


def history(
    model: Annotated[str | None, typer.Option("--model", help="only this model")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", "--device", help="GPU/CPU name contains")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO date, e.g. 2026-11-01")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """List stored runs, newest first."""
    if since is not None:
        try:
            dt.datetime.fromisoformat(since)
        except ValueError:
            raise BenchError(f"--since {since!r} is not a date: use e.g. 2026-11-01") from None
    console.print(history_table(db, list_runs(db, model=model, device=gpu, since=since, limit=limit)))


def import_cmd(
    files: Annotated[list[str], typer.Argument(help="JSON result files")],
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Import JSON result files into the history."""
    done = 0
    try:
        for f in files:
            pk = import_file(db, f)
            console.print(f"imported {escape(f)} as run {pk}", highlight=False)
            done += 1
    except KeyboardInterrupt:  # one transaction per file: each is in the history whole or not at all
        err_console.print(f"[yellow]interrupted[/]: {done} of {len(files)} file(s) imported into {db}")
        raise typer.Exit(130) from None


def register(app: typer.Typer) -> None:
    app.command()(history)
    app.command("import")(import_cmd)
