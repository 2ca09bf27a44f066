"""Regression gate: compare two sweeps per batch size. No torch here.

A slowdown is a regression only when it is both larger than the threshold and larger than the
measurement noise. Noise comes from the raw step times each run recorded: a seeded bootstrap
resamples both runs' step times and gives a 95% interval for the throughput ratio
current/baseline (throughput = batch / mean step time; the batch cancels). The change is
significant when that interval excludes 1. So a 10% drop measured on steady steps fails the gate,
while a 3% wobble (inside a 5% threshold) or a 10% change on wildly noisy steps does not.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from bench.errors import BenchError
from bench.schema import Point, SweepResult

BOOTSTRAP_SAMPLES = 2000
SEED = 1234


def parse_threshold(text: str | float) -> float:
    """'5%' -> 0.05, '0.05' -> 0.05, 5 -> 0.05 (a bare number above 1 is read as percent)."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise BenchError(f"threshold {text!r} not understood: use e.g. 5% or 0.05") from None
    if not raw.endswith("%") and value > 1:
        value /= 100
    if not 0 < value < 1:
        raise BenchError(f"threshold must be between 0% and 100%, got {text!r}")
    return value


@dataclass(frozen=True)
class PointChange:
    batch_size: int
    baseline_samples_per_sec: float
    current_samples_per_sec: float
    change: float  # current/baseline - 1 (negative = slower)
    ci_low: float  # 95% bootstrap interval of current/baseline - 1
    ci_high: float
    significant: bool  # the interval excludes 0
    regression: bool
    improvement: bool
    baseline_peak_bytes: int | None
    current_peak_bytes: int | None
    memory_change: float | None


@dataclass(frozen=True)
class Comparison:
    threshold: float
    changes: tuple[PointChange, ...]
    warnings: tuple[str, ...]
    only_in_baseline: tuple[int, ...]
    only_in_current: tuple[int, ...]

    @property
    def regressions(self) -> list[PointChange]:
        return [c for c in self.changes if c.regression]


def _peak(p: Point) -> int | None:
    return p.memory.device_peak_allocated_bytes or p.memory.host_peak_rss_bytes


def bootstrap_ratio_ci(
    base: tuple[float, ...], cur: tuple[float, ...], samples: int = BOOTSTRAP_SAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """95% interval of mean(base)/mean(cur): the throughput ratio current/baseline."""
    rng = random.Random(seed)
    nb, nc = len(base), len(cur)
    ratios = []
    for _ in range(samples):
        mb = sum(base[rng.randrange(nb)] for _ in range(nb)) / nb
        mc = sum(cur[rng.randrange(nc)] for _ in range(nc)) / nc
        ratios.append(mb / mc)
    ratios.sort()
    return ratios[int(0.025 * samples)], ratios[int(0.975 * samples) - 1]


def compare(baseline: SweepResult, current: SweepResult, threshold: float = 0.05) -> Comparison:
    warnings = []
    bw, cw = baseline.workload, current.workload
    if bw.model != cw.model:
        warnings.append(f"different models: {bw.model} vs {cw.model}")
    for field in ("mode", "precision", "channels_last", "compile", "image_size"):
        if getattr(bw, field) != getattr(cw, field):
            warnings.append(f"different {field}: {getattr(bw, field)} vs {getattr(cw, field)}")
    bl, cl = baseline.environment.device_label, current.environment.device_label
    if bl != cl:
        warnings.append(f"different hardware: {bl} vs {cl}")
    base_pts = {p.batch_size: p for p in baseline.points if p.status == "ok" and p.samples_per_sec}
    cur_pts = {p.batch_size: p for p in current.points if p.status == "ok" and p.samples_per_sec}
    changes = []
    for b in sorted(set(base_pts) & set(cur_pts)):
        bp, cp = base_pts[b], cur_pts[b]
        change = cp.samples_per_sec / bp.samples_per_sec - 1
        if len(bp.step_seconds) >= 2 and len(cp.step_seconds) >= 2:
            lo, hi = bootstrap_ratio_ci(bp.step_seconds, cp.step_seconds)
            lo, hi = lo - 1, hi - 1
        else:  # no raw samples: no noise estimate, so nothing can be called significant
            lo, hi = float("-inf"), float("inf")
        significant = lo > 0 or hi < 0
        bpk, cpk = _peak(bp), _peak(cp)
        changes.append(
            PointChange(
                batch_size=b,
                baseline_samples_per_sec=bp.samples_per_sec,
                current_samples_per_sec=cp.samples_per_sec,
                change=change,
                ci_low=lo,
                ci_high=hi,
                significant=significant,
                regression=significant and change < -threshold and hi < 0,
                improvement=significant and change > threshold and lo > 0,
                baseline_peak_bytes=bpk,
                current_peak_bytes=cpk,
                memory_change=(cpk / bpk - 1) if bpk and cpk else None,
            )
        )
    if not changes:
        warnings.append("no batch size was measured ok in both runs: nothing to compare")
    return Comparison(
        threshold=threshold,
        changes=tuple(changes),
        warnings=tuple(warnings),
        only_in_baseline=tuple(sorted(set(base_pts) - set(cur_pts))),
        only_in_current=tuple(sorted(set(cur_pts) - set(base_pts))),
    )


def _verdict(c: PointChange) -> str:
    if c.regression:
        return "REGRESSION"
    if c.improvement:
        return "faster"
    if c.significant:
        return "within threshold"
    return "noise"


def to_markdown(cmp: Comparison) -> str:
    lines = [
        "| batch | baseline samples/s | current samples/s | change | 95% CI | peak memory | verdict |",
        "|---:|---:|---:|---:|---|---:|---|",
    ]
    for c in cmp.changes:
        mem = "-" if c.memory_change is None else f"{c.memory_change:+.1%}"
        lines.append(
            f"| {c.batch_size} | {c.baseline_samples_per_sec:,.1f} | {c.current_samples_per_sec:,.1f} | "
            f"{c.change:+.1%} | {c.ci_low:+.1%} … {c.ci_high:+.1%} | {mem} | {_verdict(c)} |"
        )
    for w in cmp.warnings:
        lines.append(f"\n> warning: {w}")
    n = len(cmp.regressions)
    lines.append(
        f"\n**{n} regression(s)** (threshold {cmp.threshold:.0%}, beyond measurement noise)"
        if n
        else f"\nNo regression (threshold {cmp.threshold:.0%}, beyond measurement noise)."
    )
    return "\n".join(lines)


def to_table(cmp: Comparison):
    from rich.table import Table

    table = Table(title=f"compare (threshold {cmp.threshold:.0%})", title_justify="left")
    for col in (
        "batch",
        "baseline samples/s",
        "current samples/s",
        "change",
        "95% CI",
        "peak memory",
        "verdict",
    ):
        table.add_column(col, justify="right" if col not in ("verdict", "95% CI") else "left")
    for c in cmp.changes:
        colour = "red" if c.regression else ("green" if c.improvement else "white")
        mem = "-" if c.memory_change is None else f"{c.memory_change:+.1%}"
        table.add_row(
            str(c.batch_size),
            f"{c.baseline_samples_per_sec:,.1f}",
            f"{c.current_samples_per_sec:,.1f}",
            f"[{colour}]{c.change:+.1%}[/]",
            f"{c.ci_low:+.1%} … {c.ci_high:+.1%}",
            mem,
            f"[{colour}]{_verdict(c)}[/]",
        )
    return table


def median_change(cmp: Comparison) -> float | None:
    return statistics.median(c.change for c in cmp.changes) if cmp.changes else None
