"""Tables of an A/B result (``bench ab``): the terminal table, the pull-request comment, the live
progress line, and each side as a sweep-shaped run for ``bench report``. No torch here."""

from __future__ import annotations

from dataclasses import replace

from rich.table import Table

from bench.analysis.gate import IMPROVEMENT, INCONCLUSIVE, REGRESSION
from bench.analysis.stats import combine_repeats, epoch_seconds, summarize
from bench.results.ab import ABResult, BatchVerdict
from bench.results.schema import OK, MeasureSettings, Point, SweepResult
from bench.results.units import fmt_percent

COLOURS = {REGRESSION: "red", IMPROVEMENT: "green", INCONCLUSIVE: "yellow"}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1%}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def _ci(v: BatchVerdict) -> str:
    if v.ci_low is None or v.ci_high is None:
        return "-"
    level = f" ({v.confidence:.1%})" if v.confidence is not None else ""
    return f"{v.ci_low:+.1%} … {v.ci_high:+.1%}{level}"


def verdict_text(v: BatchVerdict) -> str:
    if v.verdict != INCONCLUSIVE:
        return v.verdict
    if v.rounds_needed:
        return f"{INCONCLUSIVE} (~{v.rounds_needed} rounds would settle it)"
    return f"{INCONCLUSIVE} (the change sits on the threshold: no round count settles it)"


def side_label(result: ABResult, name: str) -> str:
    s = result.side(name)
    parts = [s.path or "(this checkout)"]
    if s.commit:
        parts.append(s.commit[:10])
    if s.torch_version:
        parts.append(f"torch {s.torch_version}")
    if s.python:
        parts.append(s.python)
    return f"{name}: " + ", ".join(parts)


def summary(result: ABResult) -> str:
    """One line: what the gate decided, and why it stopped."""
    n = len(result.rounds)
    tail = (
        f"threshold {fmt_percent(result.threshold)}, {n} round(s), stopped: {result.stopped or result.status}"
    )
    bad = result.regressions
    if bad:
        return (
            f"**REGRESSION** at batch {', '.join(str(v.batch_size) for v in bad)} (B slower than A; {tail})"
        )
    if any(v.verdict == INCONCLUSIVE for v in result.verdicts):
        return f"INCONCLUSIVE at some batch size: no regression shown, none ruled out ({tail})"
    return f"No regression ({tail})"


def ab_table(result: ABResult) -> Table:
    table = Table(
        title=f"bench ab {result.workload.model} (B vs A, threshold {fmt_percent(result.threshold)})",
        title_justify="left",
    )
    for col in ("batch", "A samples/s", "B samples/s", "change", "interval", "rounds", "verdict"):
        table.add_column(col, justify="left" if col in ("interval", "verdict") else "right")
    for v in result.verdicts:
        colour = COLOURS.get(v.verdict, "white")
        table.add_row(
            str(v.batch_size), _num(v.a_samples_per_sec), _num(v.b_samples_per_sec),
            f"[{colour}]{_pct(v.change)}[/]", _ci(v), str(v.rounds), f"[{colour}]{verdict_text(v)}[/]",
        )  # fmt: skip
    return table


def ab_markdown(result: ABResult) -> str:
    """A pull-request comment: the verdict line, the table, the sides and how they were run."""
    lines = [
        f"### bench ab: `{result.workload.model}`\n",
        summary(result) + "\n",
        "| batch | A samples/s | B samples/s | change | interval | rounds | verdict |",
        "|---:|---:|---:|---:|---|---:|---|",
    ]
    for v in result.verdicts:
        lines.append(
            f"| {v.batch_size} | {_num(v.a_samples_per_sec)} | {_num(v.b_samples_per_sec)} | {_pct(v.change)} | "
            f"{_ci(v)} | {v.rounds} | {verdict_text(v)} |"
        )
    lines.append("")
    for name in ("A", "B"):
        lines.append(f"- {side_label(result, name)}")
    lines.append("\n> " + how_measured(result))
    for note in result.notices:
        lines.append(f"\n> {note}")
    return "\n".join(lines)


def how_measured(result: ABResult) -> str:
    """One sentence for the pull-request comment: how the rounds ran (the seed and who went first)."""
    order = " ".join("".join(r.order) for r in result.rounds)
    window = (
        f"{result.windows} timed window(s) of {result.settings.max_time_seconds:g} s per side and batch size"
    )
    if result.alternate:
        how = f"a fresh process per side, taking turns: {window}, each pair in a random order"
    else:
        how = f"a fresh process per side, one after the other: {window}"
    return (
        f"Each round ran {how} (seed {result.seed}; first: {order}); the change is the geometric "
        "mean of the per-round ratios B/A, the interval a paired t-interval (Holm across batch sizes)."
    )


def progress_line(result: ABResult) -> str:
    """The live line: round k, then per batch size the change so far and its interval."""
    parts = [f"round {len(result.rounds)}"]
    for v in result.verdicts:
        if v.change is None:
            continue
        ci = f" [{v.ci_low:+.1%} … {v.ci_high:+.1%}]" if v.ci_low is not None else ""
        state = "" if v.verdict == INCONCLUSIVE else f" {v.verdict}"
        parts.append(f"b{v.batch_size} {v.change:+.1%}{ci}{state}")
    return "  ".join(parts)


def side_sweeps(result: ABResult) -> list[SweepResult]:
    """Each side as a sweep: per batch size one point whose repeats are the side's rounds (the
    headline is their median, as ``--repeat`` writes it), so the report overlays A and B."""
    out = []
    for name in ("A", "B"):
        runs = [r.run(name) for r in result.rounds]
        points = []
        for b in result.batch_sizes:
            measured = [
                Point(
                    batch_size=b,
                    status=OK,
                    step_seconds=p.step_seconds,
                    window_seconds=p.window_seconds,
                    samples_per_sec=p.samples_per_sec,
                    step_stats=summarize(p.step_seconds) if len(p.step_seconds) >= 2 else None,
                    converged=True,
                    epoch_seconds_estimate=epoch_seconds(result.workload.dataset_size, p.samples_per_sec),
                )  # fmt: skip
                for run in runs
                if run is not None and run.status == OK
                for p in run.points
                if p.batch_size == b
            ]
            if measured:
                points.append(combine_repeats(measured, result.workload.dataset_size))
        settings: MeasureSettings = replace(result.settings, repeat=max(1, len(runs)))
        s = result.side(name)
        env = replace(result.environment, torch_version=s.torch_version or result.environment.torch_version)
        out.append(
            SweepResult(
                run_id=f"{result.run_id}-{name}",
                status=result.status,
                started_at=result.started_at,
                finished_at=result.finished_at,
                environment=env,
                workload=result.workload,
                settings=settings,
                points=tuple(points),
                notices=(side_label(result, name),),
                tool_version=result.tool_version,
            )  # fmt: skip
        )
    return out
