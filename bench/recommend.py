"""Which batch size to pick: pure arithmetic over measured results (no torch).

- throughput-optimal: the ok point with the highest samples/sec;
- knee: the smallest batch within ``KNEE_FRACTION`` (95%) of the best samples/sec — smaller batches
  need less learning-rate retuning and often generalise better, for almost the same speed;
- safe max: the max-batch search's safe batch (soaked), when one was run.

Learning-rate starting points for moving from a reference batch/LR: linear scaling
(lr * B/B0, Goyal et al. 2017) and square-root scaling (lr * sqrt(B/B0), common for Adam-type
optimizers). They are starting points for tuning, not answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.schema import Point, SweepResult

KNEE_FRACTION = 0.95


@dataclass(frozen=True)
class Choice:
    batch_size: int
    samples_per_sec: float | None
    why: str
    lr_linear: float | None = None
    lr_sqrt: float | None = None


@dataclass(frozen=True)
class Recommendation:
    best: Choice | None
    knee: Choice | None
    safe_max: Choice | None
    base_batch: int | None = None
    base_lr: float | None = None


def knee_point(points: list[Point], fraction: float = KNEE_FRACTION) -> Point | None:
    """The smallest batch whose samples/sec is within ``fraction`` of the best."""
    ok = sorted((p for p in points if p.status == "ok" and p.samples_per_sec), key=lambda p: p.batch_size)
    if not ok:
        return None
    best = max(p.samples_per_sec for p in ok)
    return next(p for p in ok if p.samples_per_sec >= fraction * best)


def scaled_lr(base_lr: float, base_batch: int, batch: int) -> tuple[float, float]:
    """(linear, square-root) scaled learning rates for ``batch`` from a reference."""
    ratio = batch / base_batch
    return base_lr * ratio, base_lr * math.sqrt(ratio)


def recommend(
    sweep: SweepResult | None,
    max_result: Any = None,
    base_batch: int | None = None,
    base_lr: float | None = None,
) -> Recommendation:
    def choice(batch: int, sps: float | None, why: str) -> Choice:
        lin = sq = None
        if base_batch and base_lr:
            lin, sq = scaled_lr(base_lr, base_batch, batch)
        return Choice(batch, sps, why, lin, sq)

    best = knee = safe = None
    points = list(sweep.points) if sweep is not None else []
    top = sweep.best_point() if sweep is not None else None
    if top is not None:
        best = choice(top.batch_size, top.samples_per_sec, "highest measured samples/sec")
        k = knee_point(points)
        if k is not None:
            knee = choice(
                k.batch_size,
                k.samples_per_sec,
                f"smallest batch within {KNEE_FRACTION:.0%} of the best "
                f"({k.samples_per_sec / top.samples_per_sec:.0%})",
            )
    if max_result is not None and getattr(max_result, "safe_batch_size", None):
        measured = {p.batch_size: p.samples_per_sec for p in points if p.status == "ok"}
        safe = choice(
            max_result.safe_batch_size,
            measured.get(max_result.safe_batch_size),
            f"largest batch with {max_result.headroom_fraction:.0%} headroom below the exact max "
            f"{max_result.max_batch_size}; soaked {max_result.soak_steps} steps",
        )
    return Recommendation(best, knee, safe, base_batch, base_lr)


def render(rec: Recommendation) -> Any:
    """A rich table of the recommendation."""
    from rich.table import Table

    table = Table(title="recommended batch sizes", title_justify="left")
    table.add_column("pick")
    table.add_column("batch", justify="right")
    table.add_column("samples/s", justify="right")
    lr = bool(rec.base_batch and rec.base_lr)
    if lr:
        table.add_column(f"LR (linear, from {rec.base_lr:g} @ {rec.base_batch})", justify="right")
        table.add_column("LR (sqrt)", justify="right")
    table.add_column("why")
    for name, c in (("throughput-optimal", rec.best), ("knee", rec.knee), ("safe max", rec.safe_max)):
        if c is None:
            continue
        row = [name, str(c.batch_size), "-" if c.samples_per_sec is None else f"{c.samples_per_sec:,.1f}"]
        if lr:
            row += [f"{c.lr_linear:.4g}", f"{c.lr_sqrt:.4g}"]
        row.append(c.why)
        table.add_row(*row)
    if lr:
        table.caption = "learning rates are starting points for tuning, not answers"
    return table
