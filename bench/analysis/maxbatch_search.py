"""Max-batch search against ``try_batch(b) -> ProbeResult``: pure logic, no torch.

Every probe of a real model costs seconds (a few training steps of a new shape; on a GPU the first
step autotunes cuDNN, on CPU a fresh process), and a probe far above the edge costs the most, so
the search spends probes where they teach the most. It finds the largest multiple of
``granularity`` that fits, with its proof:

1. Probe ``g`` and ``16g``, then grow: never further than ``MAX_GROWTH`` (8x) the largest size that
   fit. The memory model memory(b) = fixed + per_sample * b is fitted to the *steady* peaks (steps
   after the first: the first step of a new shape carries cuDNN's autotune workspace, which made
   batch 1 peak above batch 8 on an H100) and trusted only within that reach: a line through small
   batches is steep with noise, and extrapolating it 100x put the first H100 search's probe at
   3183 for a true max near 1,750.
2. Keep a bracket: ``lo`` = the largest size that fit, ``hi`` = the smallest size above it that
   did not. After every probe, refit and probe the model's edge when it lies inside the bracket.
   When the model says ``lo`` is the edge, probe ``lo + g`` once (the certificate). Where the model
   cannot place a probe (it says a size that failed fits, or four model-placed probes in a row did
   not close), gallop from the side the last probe landed on (0.5%, 1%, 2%, ... of the size, never
   past the midpoint, so the bracket halves at worst). Without peak readings: growth x8, then
   bisection.
3. Stop when ``hi - lo == granularity`` (or ``lo`` reached the cap): ``lo`` was probed and fit,
   ``hi`` was probed and did not, and no size that was not run is ever reported. Nothing is probed
   at or above a size that failed, so the answer is consistent with monotone memory even where
   memory is not. A probe limit or a time budget (``max_seconds``, summed over the probes' own
   ``seconds``) ends the search early with the best proven bracket (``exact=False``).

On GPU-shaped simulated curves (``python -m bench.benchmarks.search_sim``: +-1% per-size deviation,
autotune spikes at small batches) this is exact every time in a median of 9 probes at granularity 1
(doubling + bisection: 22), and never more than one probe above 1.25x the true maximum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SAFETY_FACTOR = 0.97  # the first model-placed probe aims at this share of the budget
MAX_PREDICTED_IN_A_ROW = 4  # after this many model-placed probes without closing, gallop once
GALLOP_FRACTION = 0.005  # first fallback step, as a share of the size it starts from
FIRST_GROWTH = 16  # the second probe is this many granules
MAX_GROWTH = 8  # never probe above this multiple of the largest size that fit


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
    steady_peak_bytes: int | None = None  # peak of the steps after the first (no autotune workspace)

    @property
    def model_bytes(self) -> int | None:
        """What the memory model is fitted to: the steady peak when the probe measured one.

        The first step of a new shape carries cuDNN's autotuning workspace, which dominates small
        batches on a GPU (measured: batch 1 peaked at 940 MiB, batch 8 at 524 MiB), so a line
        through first-step peaks is far too flat. The fit decision still uses ``peak_bytes``.
        """
        return self.steady_peak_bytes if self.steady_peak_bytes is not None else self.peak_bytes


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
    not, when ``exact``. ``exact`` is False only when the probe limit or the time budget stopped the
    search first (``stopped`` says which): then the answer lies in [max, failed)."""

    max_batch_size: int | None  # None: not even the smallest size fit
    failed_batch_size: int | None  # the smallest probed size above the max that did not fit
    cap_reached: bool
    exact: bool
    probes: tuple[ProbeResult, ...]
    model: MemoryModel | None
    stopped: str = ""  # why an inexact search stopped: "probe limit" | "time budget"

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
    probably near it. Steps double with each probe that ends the same way (0.5%, 1%, 2%, ... of the
    size), but never past the bracket's midpoint, so the bracket at least halves each time and the
    worst case stays logarithmic. ``blind`` (no memory model: no peak readings or no budget): growth
    by ``MAX_GROWTH``, then bisection.
    """
    if high is None:
        if blind:
            return MAX_GROWTH * low
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
    max_seconds: float | None = None,
) -> SearchResult:
    """Find the largest multiple of ``granularity`` that fits (see the module docstring).

    ``budget_bytes``: what the memory model aims at (None: no model, growth and bisection only).
    ``cap``: never probe above it. ``max_probes``: a guard against a pathological ``try_batch``;
    ``max_seconds``: stop once the probes' own ``seconds`` add up to this. Either stop returns the
    best proven bracket so far with ``exact=False`` (``stopped`` says why).
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
        return fit_model([(b, p.model_bytes) for b, p in tried.items() if p.fits and p.model_bytes])

    def done() -> bool:
        low, high = lo(), hi()
        if low is None:
            return high is not None and high <= g
        if cap is not None and low >= cap:
            return True
        return high is not None and high - low <= g

    def out_of_time() -> bool:
        return max_seconds is not None and sum(p.seconds for p in probes) >= max_seconds

    def clip(b: int) -> int:
        return min(b, cap) if cap is not None else b

    # 1. two small probes for the fit
    run(g)
    if not done() and not out_of_time():
        run(clip(FIRST_GROWTH * g))

    jumped = False  # the first model-placed probe aims below the edge (SAFETY_FACTOR)
    streak = 0  # consecutive model-placed probes
    since = 0  # index of the first model-placed probe: galloping counts outcomes from there on
    certified_low: int | None = None  # the last ``low`` whose certificate (low + g) was probed
    stopped = ""
    while not done():
        if len(probes) >= max_probes:
            stopped = "probe limit"
            break
        if out_of_time():
            stopped = "time budget"
            break
        low, high = lo(), hi()
        assert low is not None  # done() covers "nothing fit"
        last = probes[-1]
        run_length = 0  # how many probes in a row (since the first model-placed one) ended like the last
        for p in reversed(probes[since:]):
            if p.fits != last.fits:
                break
            run_length += 1
        # Never extrapolate further than MAX_GROWTH x the largest size that fit: a line through
        # small batches is steep with noise, and a probe far above the edge costs the most.
        reach = clip(max(MAX_GROWTH * low, low + g))

        def usable(b: int | None, low: int = low, high: int | None = high) -> bool:
            return b is not None and low < b and (high is None or b < high) and b not in tried

        candidate: int | None = None
        model = current_model()
        if streak < MAX_PREDICTED_IN_A_ROW and model is not None and budget_bytes is not None:
            predicted = model.max_batch_for(budget_bytes)
            if predicted is not None:
                edge = min(clip(_round_down(predicted, g)), reach)
                careful = model.max_batch_for(budget_bytes * SAFETY_FACTOR)
                if not jumped and careful is not None:
                    careful = min(clip(_round_down(careful, g)), reach)
                    if usable(careful):
                        edge = careful
                if usable(edge):
                    candidate = edge
                elif edge <= low and certified_low is None:
                    # the model says ``low`` is the max: probe its certificate (once; if it fits,
                    # the model is off by more than a granule and galloping is faster than creeping)
                    candidate = low + g
                    certified_low = low
        if usable(candidate):
            streak += 1
            if not jumped:
                jumped, since = True, len(probes)
        else:
            streak = 0
            blind = model is None or budget_bytes is None
            candidate = clip(min(_fallback(low, high, g, last.fits, max(run_length, 1), blind=blind), reach))
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
        stopped="" if exact else (stopped or "probe limit"),
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
