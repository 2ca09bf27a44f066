"""Max-batch search against ``try_batch(b) -> ProbeResult``: pure logic, no torch.

Every probe of a real model costs seconds (a fresh model, optimizer and a few training steps, on CPU
in a fresh process), so the search spends probes where they teach the most. It finds the largest
multiple of ``granularity`` that fits, exactly, usually in five probes:

1. Probe two small batches (``g`` and ``8g``) and fit memory(b) = fixed + per_sample * b through the
   peaks that fit.
2. Jump to the batch the fit predicts for ``SAFETY_FACTOR`` (97%) of the budget. Landing just below
   the edge, the jump usually fits and puts a measured point near the edge, so the refitted line
   is interpolated there rather than extrapolated from small batches (where CPU RSS and allocator
   rounding are least linear).
3. Keep a bracket: ``lo`` = the largest size that fit, ``hi`` = the smallest size that did not.
   After every probe, refit and probe the model's edge when it lies inside the bracket (a secant
   step). When the model says ``lo`` is already the edge, probe ``lo + g`` (the certificate); when
   it says a size that just failed should fit, probe ``hi - g`` once. Where the model is poor
   (allocator rounding, workspace jumps, fragmentation, noise) or after four model-placed probes
   in a row, gallop from the side the last probe landed on (2%, 4%, 8%, ... of the size, never past
   the midpoint, so the bracket halves at worst). Without peak readings: doubling, then bisection.
4. Stop when ``hi - lo == granularity`` (or ``lo`` reached the cap). ``lo`` was probed and fit, ``hi``
   was probed and did not: the answer comes with its proof, and no size that was not run is ever
   reported. Nothing is probed at or above a size that failed, so the probes are consistent with
   monotone memory even where memory is not (a hole below the edge yields the size below the hole,
   as brute force from below would).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SAFETY_FACTOR = 0.97  # the first model-placed probe aims at this share of the budget
MAX_PREDICTED_IN_A_ROW = 4  # after this many model-placed probes without closing, gallop once
GALLOP_FRACTION = 0.02  # first fallback step, as a share of the size it starts from
FIRST_GROWTH = 8  # the second probe is this many granules


@dataclass(frozen=True)
class ProbeResult:
    """One probe's outcome, as the caller's ``try_batch`` measured it.

    ``fits``: the steps completed within the budget. ``peak_bytes``: the peak memory the budget is
    compared against (None when it could not be read; the search then grows and bisects).
    ``outcome`` is free text for reports: "fit", "oom", "over_budget", ...
    """

    batch_size: int
    fits: bool
    peak_bytes: int | None = None
    seconds: float = 0.0
    outcome: str = ""


@dataclass(frozen=True)
class MemoryModel:
    """memory(b) ≈ fixed_bytes + per_sample_bytes * b, fitted to probes that fit."""

    fixed_bytes: float
    per_sample_bytes: float

    def predict(self, batch_size: int) -> float:
        return self.fixed_bytes + self.per_sample_bytes * batch_size

    def max_batch_for(self, budget_bytes: float) -> int | None:
        """The largest batch whose predicted memory is within ``budget_bytes`` (None: no slope)."""
        if self.per_sample_bytes <= 0:
            return None
        return int((budget_bytes - self.fixed_bytes) // self.per_sample_bytes)


@dataclass(frozen=True)
class SearchResult:
    """``max_batch_size`` was run and fit; ``failed_batch_size`` (max + granularity) was run and did
    not, when ``exact``. ``exact`` is False only when the cap or the probe limit stopped the search
    first (``cap_reached`` says which)."""

    max_batch_size: int | None  # None: not even the smallest size fit
    failed_batch_size: int | None  # the smallest probed size above the max that did not fit
    cap_reached: bool
    exact: bool
    probes: tuple[ProbeResult, ...]
    model: MemoryModel | None

    @property
    def probe_count(self) -> int:
        return len(self.probes)


def fit_model(points: list[tuple[int, int]]) -> MemoryModel | None:
    """Line through the largest (batch, peak) point and the smallest one.

    A wide baseline keeps measurement noise from dominating the slope (two adjacent batches differ
    by one sample's memory, which noise can swamp); the largest point keeps it anchored at the edge.
    None with fewer than two batches or a line that does not increase.
    """
    by_batch: dict[int, int] = {}
    for b, peak in points:
        by_batch[b] = max(peak, by_batch.get(b, peak))
    if len(by_batch) < 2:
        return None
    b1, b2 = min(by_batch), max(by_batch)
    p1, p2 = by_batch[b1], by_batch[b2]
    if p2 <= p1:
        return None
    per = (p2 - p1) / (b2 - b1)
    return MemoryModel(fixed_bytes=p1 - per * b1, per_sample_bytes=per)


def _round_down(b: int, g: int) -> int:
    return (b // g) * g


def _fallback(low: int, high: int | None, g: int, last_fit: bool, run_length: int, blind: bool) -> int:
    """The next size when the memory model cannot place one.

    Gallop from the side the last probe landed on: the model was last wrong there, so the edge is
    probably near it. Steps double with each probe that ends the same way (2%, 4%, 8%, ... of the
    size), but never past the bracket's midpoint, so the bracket at least halves each time and the
    worst case stays logarithmic. ``blind`` (no memory model: no peak readings or no budget): plain
    doubling, then bisection.
    """
    if high is None:
        if blind:
            return 2 * low
        step = max(g, _round_down(int(GALLOP_FRACTION * low * 2 ** (run_length - 1)), g))
        return low + min(step, low)
    mid = max(_round_down((low + high) // 2, g), low + g)
    if blind:
        return mid
    if last_fit:
        step = max(g, _round_down(int(GALLOP_FRACTION * low * 2 ** (run_length - 1)), g))
        return min(low + step, mid)
    step = max(g, _round_down(int(GALLOP_FRACTION * high * 2 ** (run_length - 1)), g))
    return max(high - step, mid)


def search_max_batch(
    try_batch: Callable[[int], ProbeResult],
    *,
    budget_bytes: float | None,
    granularity: int = 1,
    cap: int | None = None,
    max_probes: int = 40,
) -> SearchResult:
    """Find the largest multiple of ``granularity`` that fits (see the module docstring).

    ``budget_bytes``: what the memory model aims at (None: no model, growth and bisection only).
    ``cap``: never probe above it. ``max_probes``: a guard against a pathological ``try_batch``;
    the result says ``exact=False`` if it was hit.
    """
    g = granularity
    if g < 1:
        raise ValueError("granularity must be >= 1")
    if cap is not None:
        cap = _round_down(cap, g)
        if cap < g:
            raise ValueError("cap is below the granularity")
    probes: list[ProbeResult] = []
    tried: dict[int, ProbeResult] = {}

    def lo() -> int | None:
        fit = [b for b, p in tried.items() if p.fits]
        return max(fit) if fit else None

    def hi() -> int | None:
        low = lo()
        failed = [b for b, p in tried.items() if not p.fits and (low is None or b > low)]
        return min(failed) if failed else None

    def run(b: int) -> ProbeResult:
        p = try_batch(b)
        probes.append(p)
        tried[b] = p
        return p

    def current_model() -> MemoryModel | None:
        return fit_model([(b, p.peak_bytes) for b, p in tried.items() if p.fits and p.peak_bytes])

    def done() -> bool:
        low, high = lo(), hi()
        if low is None:
            return high is not None and high <= g
        if cap is not None and low >= cap:
            return True
        return high is not None and high - low <= g

    def clip(b: int) -> int:
        return min(b, cap) if cap is not None else b

    # 1. two small probes for the fit
    run(g)
    if not done():
        run(clip(FIRST_GROWTH * g))

    jumped = False  # the first model-placed probe aims below the edge (SAFETY_FACTOR)
    streak = 0  # consecutive model-placed probes
    while not done() and len(probes) < max_probes:
        low, high = lo(), hi()
        assert low is not None  # done() covers "nothing fit"
        last = probes[-1]
        run_length = 0  # how many probes in a row ended like the last one
        for p in reversed(probes):
            if p.fits != last.fits:
                break
            run_length += 1

        def usable(b: int | None, low: int = low, high: int | None = high) -> bool:
            return b is not None and low < b and (high is None or b < high) and b not in tried

        candidate: int | None = None
        model = current_model()
        if streak < MAX_PREDICTED_IN_A_ROW and model is not None and budget_bytes is not None:
            predicted = model.max_batch_for(budget_bytes)
            if predicted is not None:
                edge = clip(_round_down(predicted, g))
                careful = model.max_batch_for(budget_bytes * SAFETY_FACTOR)
                if not jumped and careful is not None and usable(clip(_round_down(careful, g))):
                    edge = clip(_round_down(careful, g))
                if usable(edge):
                    candidate = edge
                elif edge <= low:  # the model says ``low`` is the max: probe its certificate
                    candidate = low + g
                elif not last.fits and run_length == 1:  # the model overshot by a little, perhaps
                    candidate = high - g if high is not None else None
        if usable(candidate):
            streak += 1
            jumped = True
        else:
            streak = 0
            candidate = _fallback(
                low, high, g, last.fits, run_length, blind=model is None or budget_bytes is None
            )
            candidate = clip(candidate)
            if not usable(candidate):
                break  # cannot happen with a consistent bracket; never loop without probing
        assert candidate is not None
        run(candidate)

    low, high = lo(), hi()
    cap_reached = bool(cap is not None and low is not None and low >= cap)
    exact = (low is None and high is not None and high <= g) or cap_reached
    exact = exact or (low is not None and high is not None and high - low <= g)
    return SearchResult(
        max_batch_size=low,
        failed_batch_size=high,
        cap_reached=cap_reached,
        exact=exact,
        probes=tuple(probes),
        model=current_model(),
    )


def search_down(
    try_batch: Callable[[int], ProbeResult],
    *,
    failed_batch_size: int,
    granularity: int = 1,
) -> SearchResult:
    """The largest multiple of ``granularity`` below ``failed_batch_size`` that passes, exactly.

    Used when the chosen max fails a longer run (the soak): memory that creeps over steps makes the
    short probes' answer too optimistic. Steps down by 1, 2, 4, ... granules until a size passes,
    then bisects between it and the smallest failure above it, so the answer again carries a
    certificate (max passed, max + granularity failed) under the stricter test.
    """
    g = granularity
    probes: list[ProbeResult] = []
    passed: int | None = None
    failed = failed_batch_size
    step = g
    b = _round_down(failed_batch_size - g, g)
    while b >= g:
        p = try_batch(b)
        probes.append(p)
        if p.fits:
            passed = b
            break
        failed = b
        step *= 2
        b = _round_down(failed_batch_size - step, g) if failed_batch_size - step >= g else (g if b > g else 0)
    if passed is not None:
        while failed - passed > g:
            mid = max(_round_down((passed + failed) // 2, g), passed + g)
            p = try_batch(mid)
            probes.append(p)
            if p.fits:
                passed = mid
            else:
                failed = mid
    return SearchResult(
        max_batch_size=passed,
        failed_batch_size=failed,
        cap_reached=False,
        exact=passed is None or failed - passed <= g,
        probes=tuple(probes),
        model=None,
    )
