"""`bench compare`, `bench history`, `bench import`, `bench report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bench.cli.common import DEFAULT_DB, DbOpt, console, err_console


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(
        runs: Annotated[
            list[str],
            typer.Argument(
                help="BASELINE CURRENT (or only CURRENT with --baseline): file, history id, or 'latest'"
            ),
        ],
        threshold: Annotated[str, typer.Option("--threshold", help="e.g. 5% or 0.05")] = "5%",
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
        from bench.analysis.gate import compare as run_compare
        from bench.analysis.gate import parse_threshold, summary, to_markdown, to_table
        from bench.results.errors import BenchError
        from bench.results.store import load_run

        limit = parse_threshold(threshold)
        if baseline_name is not None:
            if len(runs) != 1:
                raise BenchError(
                    "with --baseline NAME give one run to compare: bench compare --baseline NAME CURRENT"
                )
            base = _load_baseline(db, baseline_name)
            cur = load_run(runs[0], db)
        else:
            if len(runs) != 2:
                raise BenchError("give two runs: bench compare BASELINE CURRENT (or --baseline NAME CURRENT)")
            base, cur = load_run(runs[0], db), load_run(runs[1], db)
        noise = _history_noise(db, base, cur)
        cmp = run_compare(base, cur, limit, history_noise=noise)
        if cmp.mismatches and not allow_mismatch:
            raise BenchError(
                "not like with like: "
                + "; ".join(cmp.mismatches)
                + " (pass --allow-mismatch to compare anyway)"
            )
        if not cmp.changes:  # a gate that compared nothing must not pass; one line says why
            raise BenchError("nothing to compare: no batch size was measured ok in both runs")
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

    @app.command("baseline")
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
        from bench.results.errors import BenchError
        from bench.results.store import list_baselines, set_baseline

        if action == "set":
            if not name or not run:
                raise BenchError("usage: bench baseline set NAME RUN (RUN: file, history id, or 'latest')")
            if Path(run).is_file():  # a result file (a CI artifact): into the history first
                from bench.results.store import import_file

                import_file(db, run)
            row = set_baseline(db, name, run)
            console.print(f"baseline [bold]{escape(name)}[/] = run {row.id} ({escape(row.run_id)})")
        elif action == "list":
            if name or run:
                raise BenchError("usage: bench baseline list")
            from rich.table import Table

            table = Table(title=escape(f"baselines ({db})"), title_justify="left")
            for col in ("name", "run", "named at", "model", "device", "best"):
                table.add_column(col)
            for item in list_baselines(db):
                table.add_row(*_baseline_cells(item))
            console.print(table)
        else:
            raise BenchError(f"unknown baseline action {action!r}: use set or list")

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
        db: DbOpt = DEFAULT_DB,
    ) -> None:
        """Write an HTML page and a Markdown file with plots; several runs overlay on each plot."""
        from bench.present.report import build_report, load_runs
        from bench.present.report import screenshot as render_png

        loaded = load_runs(runs, db)
        files = build_report(loaded, out, title=title)
        console.print(
            f"report: [bold]{escape(str(files.html))}[/] (HTML) and [bold]{escape(str(files.markdown))}[/]"
            " (Markdown, PNG plots)"
        )
        for line in files.omitted:
            console.print(f"[dim]not plotted: {escape(line)}[/]")
        if screenshot:
            png = render_png(files.html, out / "report.png")
            console.print(f"screenshot: {png}")

    @app.command()
    def diagnose(
        run: Annotated[str, typer.Argument(help="sweep run: JSON file, history id, or 'latest'")],
        as_json: Annotated[bool, typer.Option("--json", help="print the verdicts as JSON")] = False,
        db: DbOpt = DEFAULT_DB,
    ) -> None:
        """Why not faster: a bottleneck verdict per batch size, with the evidence behind it."""
        from bench.analysis.diagnose import diagnose_run, mfu_note
        from bench.present.display import diagnosis_table
        from bench.results.store import load_run

        result = load_run(run, db)
        if as_json:
            import dataclasses
            import json

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
                from bench.jobs.advise import advice_lines

                console.print("[bold]measured advice[/] (after / before samples/sec at the same batch):")
                for line in advice_lines(result.advice):
                    console.print(f"  {line}", highlight=False)

    @app.command()
    def history(
        model: Annotated[str | None, typer.Option("--model", help="only this model")] = None,
        gpu: Annotated[str | None, typer.Option("--gpu", "--device", help="GPU/CPU name contains")] = None,
        since: Annotated[str | None, typer.Option("--since", help="ISO date, e.g. 2026-11-01")] = None,
        limit: Annotated[int, typer.Option("--limit")] = 50,
        db: DbOpt = DEFAULT_DB,
    ) -> None:
        """List stored runs, newest first."""
        from rich.table import Table

        from bench.results.store import list_runs

        if since is not None:
            import datetime as dt

            from bench.results.errors import BenchError

            try:
                dt.datetime.fromisoformat(since)
            except ValueError:
                raise BenchError(f"--since {since!r} is not a date: use e.g. 2026-11-01") from None
        rows = list_runs(db, model=model, device=gpu, since=since, limit=limit)
        table = Table(title=escape(f"history ({db})"), title_justify="left")
        for col in ("id", "when", "kind", "model", "device", "mode", "precision", "status", "best"):
            table.add_column(col)
        for r in rows:
            best = "-"
            if r.kind == "sweep" and r.best_samples_per_sec:
                best = f"b{r.best_batch_size}: {r.best_samples_per_sec:,.1f}/s"
            elif r.kind == "max_batch" and r.best_batch_size:
                best = f"max {r.best_batch_size}"
            device_label = r.device_label or "-"
            if r.world_size > 1:  # a data-parallel run: never read as one device's figure
                device_label = f"{r.world_size}x {device_label} (DDP)"
            cells = (str(r.id), r.created_at, r.kind, r.model or "-", device_label,
                     r.mode or "-", r.precision or "-", r.status or "-", best)  # fmt: skip
            table.add_row(*(escape(str(c)) for c in cells))  # stored text is text, never rich markup
        console.print(table)

    @app.command("import")
    def import_cmd(
        files: Annotated[list[str], typer.Argument(help="JSON result files")],
        db: DbOpt = DEFAULT_DB,
    ) -> None:
        """Import JSON result files into the history."""
        from bench.results.store import import_file

        done = 0
        try:
            for f in files:
                pk = import_file(db, f)
                console.print(f"imported {escape(f)} as run {pk}", highlight=False)
                done += 1
        except KeyboardInterrupt:  # one transaction per file: each is in the history whole or not at all
            err_console.print(f"[yellow]interrupted[/]: {done} of {len(files)} file(s) imported into {db}")
            raise typer.Exit(130) from None


def _load_baseline(db: Path, name: str):
    """The sweep a named baseline points at."""
    from bench.results.errors import BenchError
    from bench.results.schema import result_from_dict
    from bench.results.store import get_baseline

    where, data = get_baseline(db, name)
    if data.get("kind", "sweep") != "sweep":
        raise BenchError(f"baseline {name!r} ({where}) is a {data.get('kind')} run, not a sweep")
    try:
        return result_from_dict(data)
    except BenchError as exc:
        raise BenchError(f"baseline {name!r} ({where}): {exc}") from None


HISTORY_NOISE_RUNS = 200  # newest stored sweeps of the model looked at for the noise floor


def _history_noise(db: Path, baseline, current) -> dict:
    """The history's noise floor for the configuration being compared (empty without a history).
    A stored run that no longer loads is skipped: the history only helps here."""
    from bench.analysis.gate import noise_floor
    from bench.results.errors import BenchError
    from bench.results.schema import result_from_dict
    from bench.results.store import list_runs, load_run_data

    if not Path(db).is_file():
        return {}
    stored = []
    for row in list_runs(db, model=current.workload.model, kind="sweep", limit=HISTORY_NOISE_RUNS):
        try:
            stored.append(result_from_dict(load_run_data(str(row.id), db)[1]))
        except (BenchError, TypeError, ValueError, KeyError):
            continue
    return noise_floor(stored, current, exclude=(baseline.run_id, current.run_id))


def _baseline_cells(item) -> list[str]:
    """Table cells for one ``store.Baseline`` (name, the run, when it was named)."""
    row = item.run
    best = "-"
    if row.best_samples_per_sec:
        best = f"b{row.best_batch_size}: {row.best_samples_per_sec:,.1f}/s"
    cells = [
        item.name,
        f"#{row.id} {row.run_id}",
        item.created_at,
        row.model or "-",
        row.device_label or "-",
        best,
    ]
    return [escape(c) for c in cells]  # stored text is text, never rich markup
