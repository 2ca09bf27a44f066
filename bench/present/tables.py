"""Tables of analysis results: the regression gate (terminal and Markdown), the recommended batch
sizes and the measured advice. Pure formatting over frozen results; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from bench.analysis.gate import IMPROVEMENT, INCONCLUSIVE, REGRESSION, Comparison, PointChange
from bench.results.schema import Advice, Recommendation
from bench.results.units import fmt_percent


def to_markdown(cmp: Comparison) -> str:
    lines = [
        "| batch | baseline samples/s | current samples/s | change | 95% CI | repeats | peak memory | verdict |",
        "|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for c in cmp.changes:
        mem = "-" if c.memory_change is None else f"{c.memory_change:+.1%}"
        lines.append(
            f"| {c.batch_size} | {c.baseline_samples_per_sec:,.1f} | {c.current_samples_per_sec:,.1f} | "
            f"{c.change:+.1%} | {_ci(c)} | {_repeats(c)} | {mem} | {_verdict(c)} |"
        )
    for w in cmp.warnings:
        lines.append(f"\n> warning: {w}")
    for n in cmp.notes:
        lines.append(f"\n> {n}")
    lines.append("\n" + summary(cmp))
    return "\n".join(lines)


def _ci(c: PointChange) -> str:
    """The change's 95% interval; "unknown" when it has no bound (no samples to estimate it from),
    never "inf"."""
    if not (math.isfinite(c.ci_low) and math.isfinite(c.ci_high)):
        return "unknown (no spread recorded)"
    return f"{c.ci_low:+.1%} … {c.ci_high:+.1%}"


def _repeats(c: PointChange) -> str:
    return f"{c.baseline_repeats}+{c.current_repeats}" + (" (history)" if c.evidence == "history" else "")


def _verdict(c: PointChange) -> str:
    if c.verdict == INCONCLUSIVE and c.evidence == "steps":
        return f"{INCONCLUSIVE} (between-run noise unknown: --repeat 3)"
    if c.verdict == INCONCLUSIVE:
        more = f"~{c.repeats_needed}" if c.repeats_needed else "over 50"
        return f"{INCONCLUSIVE} ({more} repeats per side would settle it)"
    return c.verdict


def summary(cmp: Comparison) -> str:
    """One line: what the gate decided."""
    n, m = len(cmp.regressions), len(cmp.inconclusive)
    unknown = any(c.evidence == "steps" for c in cmp.changes)
    noise = "between-run noise unknown: --repeat 3" if unknown else "beyond between-run noise"
    tail = f"threshold {fmt_percent(cmp.threshold)}, {noise}"
    if n:
        return f"**{n} regression(s)** ({tail})"
    if m:
        return f"No regression found, but {m} batch size(s) INCONCLUSIVE: noise wider than the threshold ({tail})."
    return f"No regression ({tail})."


def to_table(cmp: Comparison) -> Table:
    table = Table(title=f"compare (threshold {fmt_percent(cmp.threshold)})", title_justify="left")
    for col in (
        "batch",
        "baseline samples/s",
        "current samples/s",
        "change",
        "95% CI",
        "repeats",
        "peak memory",
        "verdict",
    ):
        table.add_column(col, justify="right" if col not in ("verdict", "95% CI") else "left")
    for c in cmp.changes:
        colour = {REGRESSION: "red", IMPROVEMENT: "green", INCONCLUSIVE: "yellow"}.get(c.verdict, "white")
        mem = "-" if c.memory_change is None else f"{c.memory_change:+.1%}"
        table.add_row(
            str(c.batch_size),
            f"{c.baseline_samples_per_sec:,.1f}",
            f"{c.current_samples_per_sec:,.1f}",
            f"[{colour}]{c.change:+.1%}[/]",
            _ci(c),
            _repeats(c),
            mem,
            f"[{colour}]{_verdict(c)}[/]",
        )
    return table


def recommendation_table(rec: Recommendation) -> Table:
    """A rich table of the recommendation, notes as its caption."""
    lr = rec.base_batch is not None and rec.base_lr is not None
    title = "recommended batch sizes"
    if lr:
        title += f" (learning-rate starting points scaled from {rec.base_lr:g} at batch {rec.base_batch})"
    table = Table(title=title, title_justify="left")
    table.add_column("pick")
    table.add_column("batch", justify="right")
    table.add_column("samples/s", justify="right")
    if lr:
        table.add_column("LR linear", justify="right")
        table.add_column("LR sqrt", justify="right")
    table.add_column("why")
    picks = (
        ("throughput-optimal", rec.best),
        ("goodput-optimal", rec.goodput),
        ("knee", rec.knee),
        ("safe max", rec.safe_max),
    )
    for name, c in picks:
        if c is None:
            continue
        row = [
            name,
            str(c.batch_size),
            "not measured" if c.samples_per_sec is None else f"{c.samples_per_sec:,.1f}",
        ]
        if lr:
            row += [f"{c.lr_linear:.4g}", f"{c.lr_sqrt:.4g}"]
        row.append(c.why)
        table.add_row(*row)
    if rec.notes:
        table.caption = "; ".join(rec.notes)
    return words_whole(table)


def words_whole(table: Table) -> Table:
    """Every column at least as wide as its longest word (header or cell): rich then wraps text at
    spaces and never cuts a word ("bat…") as long as the table fits the terminal (80 columns)."""
    for column in table.columns:
        cells = [Text.from_markup(str(c)).plain for c in column.cells]
        header = Text.from_markup(str(column.header)).plain
        words = [w for text in (header, *cells) for w in text.split()]
        column.min_width = max([column.min_width or 0, *(len(w) for w in words)])
        if all(len(c.split()) <= 1 for c in cells):  # one word a cell: wrapping cannot help, keep it
            column.no_wrap = True  # out of rich's shrinking, which would cut it to fit the others
            column.min_width = max([column.min_width, *(len(c) for c in cells)])
    return table


def advice_lines(advice: Sequence[Advice]) -> list[str]:
    """One line per tried change, e.g. "batch 32 (host-bound): --compile -> 1,234.5 samples/s,
    x1.42 (+42%) vs 869.0". A failed change says so and is not a suggestion."""
    lines = []
    for a in advice:
        head = f"batch {a.batch_size} ({a.verdict}): {a.change}"
        if a.gain is None or a.after_samples_per_sec is None:
            lines.append(f"{head} -> not measured ({a.status}: {a.error or 'no samples/sec'}); not suggested")
            continue
        pct = (a.gain - 1) * 100
        noise = "" if a.significant is not False else "; within noise"
        lines.append(
            f"{head} -> {a.after_samples_per_sec:,.1f} samples/s vs {a.before_samples_per_sec:,.1f}: "
            f"x{a.gain:.2f} ({pct:+.0f}%){noise}"
        )
    return lines
