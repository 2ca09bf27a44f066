"""Rich rendering of a sweep: a live progress display while it runs and a table at the end."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from bench.analysis.contention import contended_label
from bench.analysis.diagnose import diagnose_run, mfu_note
from bench.analysis.recommend import knee_point
from bench.analysis.stats import interval_label, rel_interval_text
from bench.present.tables import words_whole
from bench.results.codec import to_dict
from bench.results.schema import OK, Diagnosis, Point, SweepResult, device_kind
from bench.results.units import fmt_bytes, fmt_seconds


class LiveSweep:
    """Consumes SweepEvents: one progress row per batch size with phase and current samples/sec."""

    def __init__(self, console: Console, progress: Progress | None = None) -> None:
        """``progress``: an optional overall progress (e.g. a profile's) shown above the points."""
        self.console = console
        self.header = progress
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]batch {task.fields[batch]:>5}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[phase]:<8} {task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
        )
        renderable = self.progress if progress is None else Group(progress, self.progress)
        # 2 Hz: progress arrives about once a second, and on a CPU run every repaint takes a core
        # from the measured child
        self.live = Live(renderable, console=console, refresh_per_second=2)
        self.tasks: dict[int, Any] = {}

    def __enter__(self) -> LiveSweep:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()
        if not self.console.is_terminal:
            self.console.file.write("\n")  # end the last progress line in logs

    def clear(self) -> None:
        """Drop the finished rows (a new configuration starts)."""
        for task in self.tasks.values():
            self.progress.remove_task(task)
        self.tasks.clear()

    def __call__(self, event: Any) -> None:
        if event.kind == "notice":
            self.live.console.print(f"[yellow]note:[/] {escape(event.message or '')}")
        elif event.kind == "warning":  # the history could not be read or written: the file has it all
            self.live.console.print(f"[yellow]warning:[/] {escape(event.message or '')}", highlight=False)
        elif event.kind == "advice":
            self.live.console.print(f"[dim]advice: {escape(event.message or '')}[/]", highlight=False)
        elif event.kind == "point_start":
            self.tasks[event.batch_size] = self.progress.add_task(
                "", total=None, batch=event.batch_size, phase="start", detail=""
            )
        elif event.kind == "progress":
            task = self.tasks.get(event.batch_size)
            p = event.progress
            if task is None or p is None:
                return
            if p.phase == "warmup":
                self.progress.update(
                    task, phase="warm-up", total=p.total_steps, completed=p.steps,
                    detail=f"{p.steps}/{p.total_steps}",
                )  # fmt: skip
            elif p.phase == "measure":
                sps = f"{p.samples_per_sec:,.1f} samples/s" if p.samples_per_sec else ""
                # the final table's ±CI95 of a single run is the same number, formatted alike
                ci = f" {rel_interval_text(p.rel_ci_half_width)}" if p.rel_ci_half_width else ""
                self.progress.update(
                    task, phase="measure", total=None,
                    detail=f"{p.steps} steps {sps}{ci}",
                )  # fmt: skip
            else:
                self.progress.update(task, phase=p.phase)
        elif event.kind == "point_done":
            task = self.tasks.get(event.batch_size)
            if task is None:
                return
            pt: Point = event.point
            if pt.status == OK:
                detail = f"[green]{pt.samples_per_sec:,.1f} samples/s[/]"
            else:
                detail = f"[red]{pt.status}[/] {escape((pt.error or '')[: 88 - len(pt.status)])}"
            self.progress.update(task, phase="done", total=1, completed=1, detail=detail)


class PlainProgress:
    """Sweep events as plain lines on a stream (stderr): what a Python user calling ``run_sweep``
    without an ``on_event`` sees, from a script or a notebook, where a live display has no place."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def _say(self, text: str) -> None:

        print(f"bench: {text}", file=self.stream or sys.stderr, flush=True)

    def __call__(self, event: Any) -> None:
        if event.kind == "start" and event.result is not None:
            wl = event.result.workload
            self._say(f"measuring {wl.model} ({wl.mode}, {wl.precision}) on {wl.device}")
        elif event.kind == "point_start":
            self._say(f"batch {event.batch_size}: measuring")
        elif event.kind == "point_done" and event.point is not None:
            p = event.point
            what = f"{p.samples_per_sec:,.1f} samples/s" if p.status == OK and p.samples_per_sec else p.status
            self._say(f"batch {event.batch_size}: {what}")
        elif event.kind in ("notice", "warning", "advice") and event.message:
            self._say(f"{event.kind}: {event.message}")
        elif event.kind == "moved":
            self._say(f"results now in {event.results_path or 'memory only'}")


class ProfileProgress:
    """`bench run`'s live display: one overall bar over the configurations above the sweep's rows.
    ``on_cell`` takes ``run_profile``'s cell states; ``sweep`` its sweep events."""

    def __init__(self, console: Console, total: int) -> None:
        self.overall = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.overall.add_task("profile", total=total)
        self.sweep = LiveSweep(console, progress=self.overall)

    def __enter__(self) -> ProfileProgress:
        self.sweep.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sweep.__exit__(*exc)

    def on_cell(self, index: int, total: int, entry: Any, state: str) -> None:
        say = self.overall.console.print
        if state == "skip":
            say(f"[dim]skip (already measured): {escape(entry.label)}[/]")
            self.overall.advance(self.task)
        elif state == "start":
            self.overall.update(self.task, description=f"{entry.label}")
            self.sweep.clear()
        elif state == "trace":
            self.overall.update(self.task, description=f"{entry.label}: tracing the best batch")
        elif state == "done":
            self.overall.advance(self.task)
        elif state == "redo":
            say(f"[yellow]measuring again[/] (its saved result is unreadable): {escape(entry.label)}")
        elif state == "failed":
            say(f"[red]failed[/]: {escape(entry.label)} (the other configurations go on)")
            self.overall.advance(self.task)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}%"


def point_status(p: Point) -> str:
    """The report's status cell: "ok", "ok (budget)" (time ran out before the CI target), "contended 48%, ok"
    (other processes took that share of the cores the point needed), or the failure."""
    if p.status != OK:
        return p.status
    contended = contended_label(p.contention)
    budget = "ok" if p.converged else "ok (budget)"
    return budget if contended is None else f"{contended}, {budget}"


def sweep_table(result: SweepResult) -> SweepTable:
    """The sweep's table: one wide table where the console has room for it, else the main columns
    and a second table with the rest, so that at 80 columns no cell is cut short."""
    return SweepTable(result)


class SweepTable:
    """A rich renderable that picks its layout by the width it is given (``sweep_table``)."""

    def __init__(self, result: SweepResult) -> None:
        self.result = result

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        wide = _sweep_table(self.result, _WIDE)
        unbounded = options.update_width(10_000)  # the width every cell needs on one line
        if Measurement.get(console, unbounded, wide).maximum <= options.max_width:
            yield wide
            return
        yield _sweep_table(self.result, _MAIN, narrow=True)
        yield _sweep_table(self.result, _DETAIL, narrow=True, title="step times and utilisation")


_WIDE = ("batch", "samples/s", "step median", "p10–p90", "±CI95", "epoch (est.)", "1st step", "memory", "gpu", "MFU", "verdict", "status")  # fmt: skip
_MAIN = ("batch", "samples/s", "±CI95", "epoch (est.)", "peak", "verdict", "status")
# at 80 columns the GPU's peak reserved memory is left to the JSON, the report and wider terminals
_DETAIL = ("batch", "step median", "p10–p90", "1st step", "gpu", "MFU")


def _sweep_table(
    result: SweepResult, columns: Sequence[str], *, narrow: bool = False, title: str = ""
) -> Table:
    wl = result.workload
    env = result.environment
    on_gpu = device_kind(wl.device) == "cuda"
    head = (
        f"{wl.model} · {wl.mode} · {wl.precision}{' · channels-last' if wl.channels_last else ''}"
        f"{' · compiled' if wl.compile else ''} · {env.device_label} ({wl.device})"
    )
    table = Table(
        title=escape(f"{head}: {title}" if title else head),
        title_justify="left",
        box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD,
        show_edge=not narrow,
    )
    names: list[str] = []
    for col in columns:
        if col == "memory":
            names += ["peak alloc", "peak reserved"] if on_gpu else ["peak RSS"]
        elif col == "peak":
            names.append("peak alloc" if on_gpu else "peak RSS")
        elif col == "reserved":
            names += ["peak reserved"] if on_gpu else []
        elif col == "gpu":
            names += ["kernel active", "power", "J/sample"] if on_gpu else ["CPU (proc)"]
        elif col in ("MFU", "1st step") and not on_gpu:
            continue  # no dense peak for a CPU: always "-"; its first step is in the JSON
        else:
            names.append(col)
    for name in names:
        left = name in ("verdict", "status")
        # words_whole below: the longest word of a header or a cell is the least a column gets
        table.add_column(
            name, justify="left" if left else "right", overflow="fold", no_wrap=name == "verdict"
        )
    best = result.best_point()
    for p, verdict in zip(result.points, diagnose_run(result), strict=True):
        cells = _cells(p, verdict, on_gpu, best)
        table.add_row(*(cells.get(n, "-") for n in names))
    words_whole(table)
    for column in table.columns:
        if column.header == "verdict":  # one word, or "contended 48%": never split
            column.no_wrap = True
            column.min_width = max([column.min_width or 0, *(len(_plain(c)) for c in column.cells)])
    if "±CI95" in names:
        table.caption = (
            "epoch = dataset_size / samples/s (estimate); ±CI95 = 95% interval of samples/s relative to it: "
            "from the spread between repeats where there are some (N runs), else the step times' CI "
            "(run-to-run noise unseen); 'ok (budget)' = time budget hit before the CI target; "
            "verdict 'contended N%' = other processes took N% of the cores the point needed"
            + (
                "; 1st step = the first step of the shape (cuDNN autotuning, compiling), never in the "
                "window; peaks are the steady steps' (the first step's are in the JSON); kernel active = "
                "NVML utilisation (time any kernel ran, not SM occupancy)"
                if on_gpu
                else ""
            )
            + ("; MFU = model FLOP/s / dense peak" if on_gpu else "")
            + "; verdict: `bench diagnose` for the evidence"
        )
    return table


def _range(low: str, high: str) -> str:
    """ "53.52–62.34 ms" (one unit when both ends share it), else "980 ms–1.02 s"."""
    lo, _, lo_unit = low.rpartition(" ")
    hi, _, hi_unit = high.rpartition(" ")
    return f"{lo}–{hi} {hi_unit}" if lo and lo_unit == hi_unit else f"{low}–{high}"


def _plain(cell: Any) -> str:
    return Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)


def _cells(p: Point, verdict: Diagnosis | None, on_gpu: bool, best: Point | None) -> dict[str, str]:
    """Every column's cell of one point, by column name."""
    if p.status != OK or p.step_stats is None:
        return {"batch": str(p.batch_size), "status": f"[red]{escape(p.status)}[/]"}
    st = p.step_stats
    sps = f"{p.samples_per_sec:,.1f}"
    t = p.telemetry
    contended = contended_label(p.contention)
    cells = {
        "batch": str(p.batch_size),
        "samples/s": f"[bold green]{sps}[/]" if best is not None and p is best else sps,
        "step median": fmt_seconds(st.median_seconds),
        "p10–p90": _range(fmt_seconds(st.p10_seconds), fmt_seconds(st.p90_seconds)),
        "±CI95": interval_label(p).lstrip("±"),  # between repeats when there are some, else steps
        "epoch (est.)": fmt_seconds(p.epoch_seconds_estimate),
        "MFU": _mfu(p.mfu),
        # a contended point's verdict cell carries the share: "contended 48%"
        "verdict": f"[red]{contended}[/]" if contended else _verdict(verdict),
        "status": "ok" if p.converged else "ok (budget)",
    }
    if on_gpu:
        cells |= {
            # cuDNN autotuning (and compile) of the new shape
            "1st step": fmt_seconds(p.timing.first_step_seconds),
            "peak alloc": fmt_bytes(p.memory.device_peak_allocated_bytes),
            "peak reserved": fmt_bytes(p.memory.device_peak_reserved_bytes),
            "kernel active": _pct(t.gpu_kernel_active_percent),
            "power": "-" if t.power_watts_mean is None else f"{t.power_watts_mean:.0f} W",
            "J/sample": "-" if p.joules_per_sample is None else f"{p.joules_per_sample:.3f}",
        }
    else:
        cells |= {
            "peak RSS": fmt_bytes(p.memory.host_peak_rss_bytes),
            "CPU (proc)": _pct(t.process_cpu_percent),
        }
    return cells


_VERDICT_STYLE = {
    "host-bound": "yellow",
    "input-bound": "yellow",
    "allocator-pressure": "red",
    "throttled": "red",
    "memory-bound": "cyan",
    "device-bound": "green",
    "cpu-bound": "green",
    "threads-idle": "cyan",
    "contended": "red",
    "unclear": "dim",
}


def _verdict(d: Diagnosis | None) -> str:
    if d is None:
        return "-"
    style = _VERDICT_STYLE.get(d.verdict, "")
    return f"[{style}]{d.verdict}[/]" if style else d.verdict


def _mfu(mfu: float | None) -> str:
    if mfu is None:
        return "-"
    return f"{mfu * 100:.2f}%" if mfu < 0.1 else f"{mfu * 100:.0f}%"


def diagnosis_table(result: SweepResult) -> Table:
    """One row per point: verdict, the evidence behind it, achieved TFLOP/s and MFU."""
    wl = result.workload
    title = f"why not faster: {wl.model} · {wl.mode} · {wl.precision} · {result.environment.device_label}"
    table = Table(title=escape(title), title_justify="left", show_lines=True)  # stored text is text
    table.add_column("batch", justify="right")
    table.add_column("samples/s", justify="right")
    table.add_column("verdict")
    table.add_column("evidence")
    table.add_column("TFLOP/s", justify="right")
    table.add_column("MFU", justify="right")
    for p, d in zip(result.points, diagnose_run(result), strict=True):
        if d is None:
            table.add_row(
                str(p.batch_size), "-", f"[red]{escape(p.status)}[/]", escape(p.error or ""), "-", "-"
            )
            continue
        table.add_row(
            str(p.batch_size),
            "-" if p.samples_per_sec is None else f"{p.samples_per_sec:,.1f}",
            _verdict(d),
            escape("\n".join(d.evidence)),
            "-" if p.achieved_tflops is None else f"{p.achieved_tflops:.2f}",
            _mfu(p.mfu),
        )
    note = mfu_note(result)
    if note:
        table.caption = note
    return words_whole(table)


def workers_table(results: list[SweepResult]) -> Table:
    """``--workers 0,2,4``: samples/sec per batch size for each worker count side by side, with the
    share of the step spent waiting for data; where more workers stop helping, the model sets the pace."""
    table = Table(title="input pipeline: samples/s (data wait) by loader workers", title_justify="left")
    table.add_column("batch", justify="right")
    for r in results:
        table.add_column(f"{r.workload.workers} workers", justify="right")
    sizes = sorted({p.batch_size for r in results for p in r.points})
    for b in sizes:
        row = [str(b)]
        for r in results:
            p = next((p for p in r.points if p.batch_size == b), None)
            if p is None or p.status != OK or p.samples_per_sec is None:
                row.append("-" if p is None else f"[red]{p.status}[/]")
                continue
            wait = p.breakdown.data_wait_fraction if p.breakdown is not None else None
            cell = f"{p.samples_per_sec:,.1f}"
            row.append(cell if wait is None else f"{cell} ({wait * 100:.0f}%)")
        table.add_row(*row)
    return table


def profile_table(name: str, cells: Sequence[Any]) -> Table:
    """One row per configuration of a profile (``bench.jobs.profile_run.CellOutcome``): the
    recommendation's best and knee batch (never a contended or too-noisy point), the searched max
    and safe max. Narrow enough for 80 columns: the results files follow as lines."""
    table = Table(title=escape(f"{name}: recommendations"), title_justify="left")
    for col in ("configuration", "best batch", "samples/s", "knee batch", "max batch", "safe max"):
        table.add_column(col, justify="left" if col == "configuration" else "right", overflow="fold")
    for cell in cells:
        rec = cell.sweep.recommendation if cell.sweep is not None else None
        best = rec.best if rec is not None else None
        knee = rec.knee if rec is not None else None
        if cell.sweep is not None and rec is None:  # a result from before recommendations
            top, k = cell.sweep.best_point(), knee_point(list(cell.sweep.points))
            best = (
                SimpleNamespace(batch_size=top.batch_size, samples_per_sec=top.samples_per_sec)
                if top
                else None
            )
            knee = SimpleNamespace(batch_size=k.batch_size) if k else None
        search = cell.search
        table.add_row(
            escape(cell.label) + (" [dim](resumed)[/]" if cell.skipped else ""),
            str(best.batch_size) if best else "-",
            f"{best.samples_per_sec:,.1f}" if best and best.samples_per_sec else "-",
            str(knee.batch_size) if knee else "-",
            str(search.max_batch_size or "-") if search is not None else "-",
            str(search.safe_batch_size or "-") if search is not None else "-",
        )
    return table


def profile_lines(cells: Sequence[Any], files: Any) -> list[str]:
    """What follows a profile's table: each configuration's caveats (as `bench sweep` says them),
    where the report and traces are, and what failed."""
    lines = [f"results of {escape(c.label)}: {escape(c.sweep_path)}" for c in cells if c.sweep_path]
    for cell in cells:
        rec = cell.sweep.recommendation if cell.sweep is not None else None
        for note in rec.notes if rec is not None else ():
            lines.append(f"[yellow]note[/] {escape(cell.label)}: {escape(note)}")
    if files is not None:
        lines.append(f"report: {escape(str(files.html))} (HTML) and {escape(str(files.markdown))} (Markdown)")
    lines += [
        f"trace of {escape(c.label)}: {escape(c.trace_dir)} (PyTorch profiler, ops.md)"
        for c in cells
        if c.trace_dir
    ]
    for cell in cells:
        if cell.error:
            kept = sum(1 for p in cell.sweep.points if p.samples_per_sec) if cell.sweep is not None else 0
            lines.append(
                f"[red]failed[/] {escape(cell.label)}: {escape(cell.error)}"
                + (f" ({kept} measured point(s) kept)" if kept else "")
            )
    return lines


def history_table(db: Any, rows: Sequence[Any]) -> Table:
    """`bench history`: one row per stored run (``store.RunRow``), newest first."""
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
    return table


def baselines_table(db: Any, items: Sequence[Any]) -> Table:
    """`bench baseline list`: each name (``store.Baseline``), the run it names, when it was named."""
    table = Table(title=escape(f"baselines ({db})"), title_justify="left")
    for col in ("name", "run", "named at", "model", "device", "best"):
        table.add_column(col)
    for item in items:
        row = item.run
        best = (
            f"b{row.best_batch_size}: {row.best_samples_per_sec:,.1f}/s" if row.best_samples_per_sec else "-"
        )
        cells = (
            item.name,
            f"#{row.id} {row.run_id}",
            item.created_at,
            row.model or "-",
            row.device_label or "-",
            best,
        )
        table.add_row(*(escape(str(c)) for c in cells))  # stored text is text, never rich markup
    return table


def scaling_table(rows: Sequence[Any]) -> Table:
    """Global samples/sec per world size and per-rank batch, with efficiency against 1 process."""
    table = Table(title="data-parallel scaling", title_justify="left")
    for name in ("batch/rank", "ranks", "global batch", "global samples/s", "x 1 rank", "efficiency"):
        table.add_column(name, justify="right")
    for row in rows:
        rate = row.global_samples_per_sec
        speedup = (
            rate / row.single_device_samples_per_sec if rate and row.single_device_samples_per_sec else None
        )
        table.add_row(
            str(row.batch_size),
            str(row.world_size),
            str(row.global_batch_size),
            f"{rate:,.1f}" if rate else row.status,
            f"{speedup:.2f}x" if speedup else "-",
            f"{row.efficiency:.0%}" if row.efficiency is not None else "-",
        )
    return table


def environment_table(info: Any) -> Table:
    """`bench env`: every field of the recorded ``Environment``, one row each (GPUs one row apiece)."""
    table = Table(show_header=False, title="environment", title_justify="left")
    for key, value in to_dict(info).items():
        if key == "gpus":
            for g in info.gpus:
                table.add_row(f"gpu {g.index}", f"{g.name} ({fmt_bytes(g.memory_total_bytes)})")
            continue
        if key == "ram_total_bytes":
            value = fmt_bytes(value)
        table.add_row(key, "-" if value is None else str(value))
    return table
