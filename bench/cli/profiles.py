"""`bench run PROFILE`: a declarative suite in one command."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from bench.analysis.accounting import summary_line
from bench.cli.common import DEFAULT_DB, DbOpt, console, err_console
from bench.jobs.profile_run import finish_profile, run_profile
from bench.jobs.profiles import available_profiles, load_profile
from bench.present.display import ProfileProgress
from bench.results.errors import BenchError
from bench.results.store import check_history_path


def _print_time_summary(suite: Any, wall_seconds: float) -> None:
    """Where the profile's wall time went, over every configuration measured in this run."""
    timings = [p.timing for c in suite.cells if c.sweep is not None and not c.skipped for p in c.sweep.points]
    line = summary_line(timings, wall_seconds)
    if line:
        err_console.print(line, highlight=False)


def profiles_cmd() -> None:
    """List the shipped profiles, one line each (`bench run NAME` runs one; a path runs your own)."""
    for name, desc in available_profiles():
        console.print(f"[bold]{escape(name):<16}[/] {escape(desc)}")


def run_cmd(
    profile: Annotated[
        str | None, typer.Argument(help="profiles/NAME.toml, or a shipped profile's NAME")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="skip cells already measured here with this configuration")
    ] = False,
    device: Annotated[str | None, typer.Option("--device", help="override the profile's device")] = None,
    db: DbOpt = DEFAULT_DB,
    out: Annotated[
        Path | None, typer.Option("--out", help="report directory (default: the profile's report)")
    ] = None,
    list_profiles: Annotated[bool, typer.Option("--list", help="list the shipped profiles")] = False,
) -> None:
    """Run a profile: every model x mode x precision x layout it names, then one report."""
    if list_profiles or profile is None:
        for name, desc in available_profiles():
            console.print(f"[bold]{escape(name):<16}[/] {escape(desc)}")
        if profile is None and not list_profiles:
            raise BenchError("name a profile to run, e.g. `bench run quickstart`")
        return
    prof = load_profile(profile, device_override=device)

    check_history_path(db)  # a mistyped --db folder: one line, before any measuring
    err_console.print(
        f"[bold]{escape(prof.name)}[/]: {len(prof.entries)} configuration(s) from {escape(str(prof.path))}"
        + (f" — {escape(prof.description)}" if prof.description else ""),
        highlight=False,
    )
    live = ProfileProgress(err_console, len(prof.entries))
    started = time.perf_counter()
    try:
        with live:
            suite = run_profile(
                prof, resume=resume, on_cell=live.on_cell, on_sweep_event=live.sweep, db_path=db
            )
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/]: finished configurations are saved and in the history; `--resume` continues"
        )
        raise typer.Exit(130) from None
    finish_profile(suite, db_path=db, report_dir=out, console=console)
    _print_time_summary(suite, time.perf_counter() - started)
    if suite.history_warning:
        err_console.print(f"[yellow]warning:[/] not stored in the history: {suite.history_warning}")
    for note in suite.notices:
        err_console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)
    if suite.cells and not any(c.sweep is not None and c.sweep.best_point() for c in suite.cells):
        err_console.print("[red]profile failed[/]: no configuration measured any batch size")
        raise typer.Exit(1)  # as `bench sweep` does: a CI gate on a profile must not pass
    failed = [c.label for c in suite.cells if c.error]
    if failed:
        err_console.print(
            f"[red]profile incomplete[/]: {len(failed)} of {len(suite.cells)} configuration(s) failed "
            "(their measured points are kept); `bench run --resume` measures them again"
        )
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("profiles")(profiles_cmd)
    app.command("run")(run_cmd)
