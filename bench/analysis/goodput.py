"""Goodput: which measured batch size trains soonest, not only which steps fastest (no torch).

McCandlish et al. 2018: to reach a given loss, steps S ≈ S_min(1 + B_noise/B) and examples
E ≈ E_min(1 + B/B_noise). Wall time is steps × step time = S_min(B + B_noise)/samples_per_sec(B),
so per measured batch the time to the same loss, relative to the best, is
(B + B_noise)/samples_per_sec(B) divided by its minimum (Pollux, OSDI 2021, calls the inverse
goodput: throughput × statistical efficiency). Valid while B_noise is the one measured, at the LR
retuned for each batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.results.schema import OK, GoodputRow, Point


def goodput_rows(points: Sequence[Point], noise_scale: float) -> tuple[GoodputRow, ...]:
    """Per measured batch (ascending): samples/s, the examples needed relative to the minimum
    (1 + B/B_noise) and the time to the same loss relative to the best batch (1.0 = best)."""
    if not noise_scale > 0:
        raise ValueError(f"noise scale must be > 0, got {noise_scale}")
    ok = sorted((p for p in points if p.status == OK and p.samples_per_sec), key=lambda p: p.batch_size)
    times = {p.batch_size: (p.batch_size + noise_scale) / p.samples_per_sec for p in ok}  # type: ignore[operator]
    best = min(times.values(), default=1.0)
    return tuple(
        GoodputRow(
            batch_size=p.batch_size,
            samples_per_sec=p.samples_per_sec,  # type: ignore[arg-type]
            samples_factor=1 + p.batch_size / noise_scale,
            relative_time=times[p.batch_size] / best,
        )
        for p in ok
    )


def goodput_best(rows: Sequence[GoodputRow]) -> GoodputRow | None:
    """The row with the shortest time to the same loss (the smaller batch on a tie)."""
    return min(rows, key=lambda r: (r.relative_time, r.batch_size), default=None)


def lost_to_efficiency(fast: GoodputRow, ref: GoodputRow) -> str:
    """How much of ``fast``'s speed over ``ref`` the extra examples it needs take back, in words."""
    speed = fast.samples_per_sec / ref.samples_per_sec
    samples = fast.samples_factor / ref.samples_factor
    net = speed / samples
    verdict = (
        f"so it reaches the same loss {net:.2f}× as fast"
        if net >= 1
        else f"so it takes {1 / net:.2f}× as long"
    )
    lost = (speed - net) / (speed - 1) if speed > 1 else 1.0
    return (
        f"batch {fast.batch_size} runs {speed:.2f}× the samples/s of batch {ref.batch_size} but needs "
        f"{samples:.2f}× the examples to reach the same loss, {verdict}: {min(lost, 1.0):.0%} of its extra "
        "speed is lost to statistical efficiency"
    )
