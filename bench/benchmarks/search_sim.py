"""bench's max-batch search against doubling + bisection on GPU-shaped simulated memory curves.

The curves are shaped like the first H100 run of bench (EfficientNet-b0 bf16, ``shared/fixtures``):
memory(b) = fixed + per_sample * b (0.2-3 GiB fixed, 20-90 MiB per sample, the caching allocator's
2 MiB rounding), budgets of 22-139 GiB, +-1% deviation from the line at every size (cuDNN picks
other algorithms and workspaces for other shapes; on a GPU the same size gives the same peak again),
and a cuDNN autotune workspace spike of 0.2-1 GiB on the *first* step of small batches (the measured
batch 1 peaked at 940 MiB, above batch 8's 524 MiB). The spike is in the first-step peak a probe
reports; the steady peak (steps 2..n) is free of it. A size fits when its first-step memory is
within the budget, so near the edge fits and failures can alternate (a band one or two percent
wide): the answer is the certified pair (max fits, max + g does not), and ``true_max`` is the
largest size below which everything fits (brute force from below).

    python -m bench.benchmarks.search_sim            # 200 random curves, granularity 1 and 8

Prints probes per search (median, max), probes above 1.25x the true maximum, and exactness, for
bench's search and for doubling + bisection (what Lightning's "binsearch" scaler does).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from bench.analysis.maxbatch_search import ProbeResult, search_max_batch

MiB = 2**20
GiB = 2**30


@dataclass(frozen=True)
class GpuCurve:
    """A simulated training job's memory on one GPU (bytes)."""

    fixed_bytes: float
    per_sample_bytes: float
    budget_bytes: float
    spike_bytes: float  # autotune workspace on the first step of a new shape, at small batches
    spike_until: int  # batches up to this carry the spike
    noise: float  # relative noise of every reading (uniform +-noise)
    seed: int

    def steady(self, b: int) -> float:
        deviation = random.Random(self.seed * 1_000_003 + b).uniform(-self.noise, self.noise)
        raw = (self.fixed_bytes + self.per_sample_bytes * b) * (1 + deviation)
        return math.ceil(raw / (2 * MiB)) * 2 * MiB

    def first_step(self, b: int) -> float:
        return self.steady(b) + (self.spike_bytes if b <= self.spike_until else 0.0)

    def fits(self, b: int) -> bool:
        return self.first_step(b) <= self.budget_bytes

    def true_max(self, g: int = 1) -> int | None:
        """The largest multiple of g below which every multiple of g fits (brute force from below)."""
        b = g
        while self.fits(b):
            b += g
        return b - g if b > g else None

    def certified(self, max_batch: int | None, g: int) -> bool:
        """``max_batch`` fits and ``max_batch + g`` does not."""
        if max_batch is None:
            return not self.fits(g)
        return self.fits(max_batch) and not self.fits(max_batch + g)

    def try_batch(self) -> tuple[Callable[[int], ProbeResult], list[int]]:
        """try_batch for the search, and the list of probed sizes in order."""
        seen: list[int] = []

        def try_batch(b: int) -> ProbeResult:
            seen.append(b)
            if not self.fits(b):
                return ProbeResult(b, False, int(self.budget_bytes), outcome="oom")
            return ProbeResult(
                b, True, int(self.first_step(b)), outcome="fit", steady_peak_bytes=int(self.steady(b))
            )

        return try_batch, seen


def random_curve(seed: int, noise: float = 0.01) -> GpuCurve:
    rng = random.Random(seed)
    return GpuCurve(
        fixed_bytes=rng.uniform(0.2, 3.0) * GiB,
        per_sample_bytes=rng.uniform(20, 90) * MiB,
        budget_bytes=rng.uniform(22, 139) * GiB,
        spike_bytes=rng.uniform(0.2, 1.0) * GiB,
        spike_until=rng.choice([1, 8, 16, 32]),
        noise=noise,
        seed=seed,
    )


def doubling_bisection(try_batch: Callable[[int], ProbeResult], g: int = 1) -> int | None:
    """Grow x2 from g until a failure, then bisect to exactness (Lightning's binsearch)."""
    lo, b, hi = 0, g, None
    while hi is None:
        if try_batch(b).fits:
            lo, b = b, b * 2
        else:
            hi = b
    while hi - lo > g:
        mid = max(((lo + hi) // 2 // g) * g, lo + g)
        if try_batch(mid).fits:
            lo = mid
        else:
            hi = mid
    return lo or None


@dataclass(frozen=True)
class Tally:
    probes: list[int]
    far_above: list[int]  # probes above 1.25x the true max, per search
    exact: int
    runs: int

    def line(self, name: str) -> str:
        return (
            f"{name:<22} probes median {statistics.median(self.probes):>4.1f}  max {max(self.probes):>3}  "
            f"far above (>1.25x max): median {statistics.median(self.far_above):.0f}, "
            f"max {max(self.far_above)}  exact {self.exact}/{self.runs}"
        )


def run(curves: list[GpuCurve], g: int) -> tuple[Tally, Tally]:
    ours: list[int] = []
    ours_far: list[int] = []
    ours_exact = 0
    theirs: list[int] = []
    theirs_far: list[int] = []
    theirs_exact = 0
    for c in curves:
        truth = c.true_max(g)
        try_batch, seen = c.try_batch()
        res = search_max_batch(try_batch, budget_bytes=c.budget_bytes, granularity=g)
        ours.append(len(seen))
        ours_far.append(sum(1 for b in seen if truth and b > 1.25 * truth))
        ours_exact += res.exact and c.certified(res.max_batch_size, g)
        try_batch, seen = c.try_batch()
        answer = doubling_bisection(try_batch, g)
        theirs.append(len(seen))
        theirs_far.append(sum(1 for b in seen if truth and b > 1.25 * truth))
        theirs_exact += c.certified(answer, g)
    n = len(curves)
    return Tally(ours, ours_far, ours_exact, n), Tally(theirs, theirs_far, theirs_exact, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--curves", type=int, default=200)
    ap.add_argument("--noise", type=float, default=0.01)
    args = ap.parse_args()
    curves = [random_curve(seed, args.noise) for seed in range(args.curves)]
    for g in (1, 8):
        ours, theirs = run(curves, g)
        print(f"granularity {g}, {len(curves)} GPU-shaped curves, +-{args.noise:.0%} noise:")
        print("  " + ours.line("bench search"))
        print("  " + theirs.line("doubling + bisection"))
        ratio = statistics.median(theirs.probes) / statistics.median(ours.probes)
        print(f"  doubling + bisection needs {ratio:.1f}x the probes (median)")


if __name__ == "__main__":
    main()
