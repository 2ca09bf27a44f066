"""Goodput in the terminal and the report: samples/s beside time to the same loss (no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.results.schema import Recommendation

CAPTION = (
    "Goodput = samples/s ÷ (1 + B/B_noise): the examples per second that count toward the loss, given the "
    "gradient noise scale B_noise measured by `bench noise` (McCandlish et al. 2018). Its peak (star) is the "
    "batch that reaches the same loss soonest, at a learning rate retuned for it; B_noise grows as training "
    "proceeds."
)


def goodput_table(rec: Recommendation) -> Any:
    """Per measured batch: samples/s, the examples it needs, and its time to the same loss."""
    from rich.table import Table

    src = (
        f", {rec.noise_scale_source}" if rec.noise_scale_source and rec.noise_scale_source != "given" else ""
    )
    table = Table(title=f"goodput at B_noise {rec.noise_scale:,.0f}{src}", title_justify="left")
    for name in ("batch", "samples/s", "examples needed (× min)", "time to same loss (× best)"):
        table.add_column(name, justify="right")
    best = min(rec.goodput_rows, key=lambda r: r.relative_time, default=None)
    for r in rec.goodput_rows:
        mark = " ← goodput-optimal" if best is not None and r.batch_size == best.batch_size else ""
        table.add_row(
            str(r.batch_size),
            f"{r.samples_per_sec:,.1f}",
            f"{r.samples_factor:.2f}",
            f"{r.relative_time:.2f}{mark}",
        )
    return table


def plot_goodput(runs: Sequence[Any]) -> Any | None:
    """samples/s and goodput (samples/s ÷ (1 + B/B_noise)) against batch size, for runs that have B_noise."""
    from bench.present.report import _batch_axis, _colors, _figure, _legend

    rows = [(run, run.result.recommendation) for run in runs]
    rows = [(run, rec) for run, rec in rows if rec is not None and rec.goodput_rows]
    if not rows:
        return None
    fig, (ax,) = _figure("Goodput: samples/sec and useful samples/sec vs batch size")
    for (run, rec), color in zip(rows, _colors(len(rows)), strict=True):
        xs = [r.batch_size for r in rec.goodput_rows]
        good = [r.samples_per_sec / r.samples_factor for r in rec.goodput_rows]
        ax.plot(xs, [r.samples_per_sec for r in rec.goodput_rows], "o-", color=color, alpha=0.45,
                label=f"{run.label}: samples/s")  # fmt: skip
        ax.plot(xs, good, "s-", color=color, label=f"{run.label}: goodput (B_noise {rec.noise_scale:,.0f})")
        top = max(zip(good, xs, strict=True))
        ax.plot([top[1]], [top[0]], "*", color=color, markersize=14, markeredgecolor="black")
    _batch_axis(ax, [run for run, _ in rows])
    ax.set_ylim(bottom=0)
    ax.set_ylabel("samples/sec")
    _legend(ax)
    return fig
