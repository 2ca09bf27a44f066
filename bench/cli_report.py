"""`bench compare`, `bench history`, `bench import`, `bench report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bench.cli_common import console, err_console

DbOpt = Annotated[Path, typer.Option("--db", help="results history database")]


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        baseline: Annotated[str, typer.Argument(help="file, history id, or 'latest'")],
        current: Annotated[str, typer.Argument(help="file, history id, or 'latest'")],
        threshold: Annotated[str, typer.Option("--threshold", help="e.g. 5% or 0.05")] = "5%",
        markdown: Annotated[bool, typer.Option("--markdown", help="print a Markdown table")] = False,
        db: DbOpt = Path(".bench/results.db"),
    ) -> None:
        """Fail (exit 1) on a real slowdown: beyond the threshold and beyond measurement noise."""
        from bench.compare import compare as run_compare
        from bench.compare import parse_threshold, to_markdown, to_table
        from bench.store import load_run

        limit = parse_threshold(threshold)
        cmp = run_compare(load_run(baseline, db), load_run(current, db), limit)
        for w in cmp.warnings:
            err_console.print(f"[yellow]warning:[/] {w}")
        if not cmp.changes:  # a gate that compared nothing must not pass
            from bench.errors import BenchError

            raise BenchError("nothing to compare: no batch size was measured ok in both runs")
        if markdown:
            print(to_markdown(cmp))
        else:
            console.print(to_table(cmp))
            n = len(cmp.regressions)
            console.print(
                f"[red]{n} regression(s)[/]" if n else "[green]no regression[/] (beyond noise and threshold)"
            )
        if cmp.regressions:
            raise typer.Exit(1)

    @app.command()
    def report(
        runs: Annotated[
            list[str], typer.Argument(help="sweep (or max-batch) runs: JSON files, history ids, or 'latest'")
        ],
        out: Annotated[
            Path, typer.Option("--out", "-o", help="directory for index.html, report.md, PNGs")
        ] = Path("bench_report"),
        title: Annotated[str | None, typer.Option("--title", help="page title")] = None,
        screenshot: Annotated[
            bool,
            typer.Option("--screenshot", help="also render the page to report.png with headless Chromium"),
        ] = False,
        db: DbOpt = Path(".bench/results.db"),
    ) -> None:
        """Write an HTML page and a Markdown file with plots; several runs overlay on each plot."""
        from bench.report import build_report, load_runs
        from bench.report import screenshot as render_png

        loaded = load_runs(runs, db)
        files = build_report(loaded, out, title=title)
        console.print(
            f"report: [bold]{files.html}[/] (HTML) and [bold]{files.markdown}[/] (Markdown, PNG plots)"
        )
        for line in files.omitted:
            console.print(f"[dim]not plotted: {line}[/]")
        if screenshot:
            png = render_png(files.html, out / "report.png")
            console.print(f"screenshot: {png}")

    @app.command()
    def history(
        model: Annotated[str | None, typer.Option("--model", help="only this model")] = None,
        gpu: Annotated[str | None, typer.Option("--gpu", "--device", help="GPU/CPU name contains")] = None,
        since: Annotated[str | None, typer.Option("--since", help="ISO date, e.g. 2026-11-01")] = None,
        limit: Annotated[int, typer.Option("--limit")] = 50,
        db: DbOpt = Path(".bench/results.db"),
    ) -> None:
        """List stored runs, newest first."""
        from rich.table import Table

        from bench.store import list_runs

        if since is not None:
            import datetime as dt

            from bench.errors import BenchError

            try:
                dt.datetime.fromisoformat(since)
            except ValueError:
                raise BenchError(f"--since {since!r} is not a date: use e.g. 2026-11-01") from None
        rows = list_runs(db, model=model, device=gpu, since=since, limit=limit)
        table = Table(title=f"history ({db})", title_justify="left")
        for col in ("id", "when", "kind", "model", "device", "mode", "precision", "status", "best"):
            table.add_column(col)
        for r in rows:
            best = "-"
            if r.kind == "sweep" and r.best_samples_per_sec:
                best = f"b{r.best_batch_size}: {r.best_samples_per_sec:,.1f}/s"
            elif r.kind == "max_batch" and r.best_batch_size:
                best = f"max {r.best_batch_size}"
            table.add_row(
                str(r.id), r.created_at, r.kind, r.model or "-", r.device_label or "-",
                r.mode or "-", r.precision or "-", r.status or "-", best,
            )  # fmt: skip
        console.print(table)

    @app.command("import")
    def import_cmd(
        files: Annotated[list[str], typer.Argument(help="JSON result files")],
        db: DbOpt = Path(".bench/results.db"),
    ) -> None:
        """Import JSON result files into the history."""
        from bench.store import import_file

        for f in files:
            pk = import_file(db, f)
            console.print(f"imported {f} as run {pk}")
