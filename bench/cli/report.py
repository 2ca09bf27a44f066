"""`bench report` (HTML and Markdown with plots) and `bench diagnose` (why a run is not faster)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bench.analysis.diagnose import diagnose_run, mfu_note
from bench.cli.common import DEFAULT_DB, DbOpt, console
from bench.jobs.report import write_report
from bench.present.display import diagnosis_table
from bench.present.report import load_runs
from bench.present.report import screenshot as render_png
from bench.present.tables import advice_lines
from bench.results.store import load_run


def report_cmd(
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
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Write an HTML page and a Markdown file with plots; several runs overlay on each plot."""
    loaded = load_runs(runs, db)
    files = write_report(loaded, out, title=title)
    console.print(
        f"report: [bold]{escape(str(files.html))}[/] (HTML) and [bold]{escape(str(files.markdown))}[/]"
        " (Markdown, PNG plots)"
    )
    for line in files.omitted:
        console.print(f"[dim]not plotted: {escape(line)}[/]")
    if screenshot:
        png = render_png(files.html, out / "report.png")
        console.print(f"screenshot: {png}")


def diagnose_cmd(
    run: Annotated[str, typer.Argument(help="sweep run: JSON file, history id, or 'latest'")],
    as_json: Annotated[bool, typer.Option("--json", help="print the verdicts as JSON")] = False,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Why not faster: a bottleneck verdict per batch size, with the evidence behind it."""
    result = load_run(run, db)
    if as_json:
        points = [
            {
                "batch_size": p.batch_size,
                "status": p.status,
                "samples_per_sec": p.samples_per_sec,
                "diagnosis": None if d is None else {"verdict": d.verdict, "evidence": list(d.evidence)},
                "flops_per_sample": p.flops_per_sample,
                "achieved_tflops": p.achieved_tflops,
                "mfu": p.mfu,
            }
            for p, d in zip(result.points, diagnose_run(result), strict=True)
        ]
        doc = {"run_id": result.run_id, "device": result.environment.device_label, "points": points}
        doc["mfu_note"] = mfu_note(result)
        doc["advice"] = [dataclasses.asdict(a) for a in result.advice]
        print(json.dumps(doc, indent=2))
    else:
        console.print(diagnosis_table(result))
        if result.advice:
            console.print("[bold]measured advice[/] (after / before samples/sec at the same batch):")
            for line in advice_lines(result.advice):
                console.print(f"  {line}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
    app.command("diagnose")(diagnose_cmd)
