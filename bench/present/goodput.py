"""Goodput in the terminal and the report: samples/s beside time to the same loss (no torch)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from bench.results.schema import Recommendation

CAPTION = (
    "Goodput = samples/s ÷ (1 + B/B_noise): the examples per second that count toward the loss, given the "
    "gradient noise scale B_noise measured by `bench noise` (McCandlish et al. 2018). Its peak (star) is the "
    "batch that reaches the same loss soonest, at a learning rate retuned for it; B_noise grows as training "
    "proceeds."
)


def goodput_table(rec: Recommendation) -> Any:
    """Per measured batch: samples/s, the examples it needs, and its time to the same loss."""
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
