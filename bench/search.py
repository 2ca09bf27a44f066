"""Max-batch search against ``try_batch(b) -> Probe``: pure logic, no torch.

The largest batch that fits, exact to ``granularity``, in few probes:

1. Probe two small batches (g and 8g) and fit memory(b) = fixed + per_sample * b from their peaks.
2. Jump to the batch the fit predicts for the budget; probe it, and the next size up.
3. Keep a bracket: ``lo`` = largest size that fit, ``hi`` = smallest size that did not. Refit after
   every probe (a secant step) and probe the prediction inside the bracket; when the prediction
   falls outside it or was already probed, or three predictions in a row have not closed it
   (allocator rounding, workspace jumps, fragmentation, noise), bisect once. Without any failure
   yet, grow by doubling.
4. Stop when ``hi - lo == granularity`` (or ``lo`` reached the cap): ``lo`` was probed and fit, ``hi``
   was probed and did not. Only sizes that were actually run are ever reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MAX_PREDICTED_IN_A_ROW = 3  # after this many model-placed probes, one bisection step


@dataclass(frozen=True)
class Probe:
    """One probe's outcome. ``fits``: completed within the budget. ``peak_bytes`` may be None."""

    batch_size: int
    fits: bool
    peak_bytes: int | None = None
    seconds: float = 0.0
    outcome: str = ""  # "fit" | "oom" | "over_budget" | "error: ..." (free text for reports)


@dataclass(frozen=True)
class MemoryModel:
    fixed_bytes: float
    per_sample_bytes: float

    def predict(self, batch_size: int) -> float:
        return self.fixed_bytes + self.per_sample_bytes * batch_size

    def max_batch_for(self, budget_bytes: float) -> int | None:
        if self.per_sample_bytes <= 0:
            return None
        return int((budget_bytes - self.fixed_bytes) // self.per_sample_bytes)


@dataclass(frozen=True)
class SearchResult:
    max_batch_size: int | None  # None: not even the smallest size fit
    failed_batch_size: int | None  # the probed size just above the max that did not fit
    cap_reached: bool
    probes: tuple[Probe, ...]
    model: MemoryModel | None

    @property
    def probe_count(self) -> int:
        return len(self.probes)


def fit_model(points: list[tuple[int, int]]) -> MemoryModel | None:
    """Line through the largest (batch, peak) point and the one farthest below it.

    A wide baseline keeps measurement noise from dominating the slope (two adjacent batches differ
    by one sample's memory, which noise can swamp); the largest point keeps it local to the edge.
    None if the line is not increasing.
    """
    pts = sorted(set(points))
    if len(pts) < 2:
        return None
    b2, p2 = pts[-1]
    b1, p1 = pts[0]
    if b2 == b1 or p2 <= p1:
        return None
    per = (p2 - p1) / (b2 - b1)
    return MemoryModel(fixed_bytes=p1 - per * b1, per_sample_bytes=per)


def _round_down(b: int, g: int) -> int:
    return (b // g) * g


def search_max_batch(
    try_batch: Callable[[int], Probe],
    *,
    budget_bytes: float | None,
    granularity: int = 1,
    cap: int | None = None,
    max_probes: int = 64,
) -> SearchResult:
    """Find the largest multiple of ``granularity`` that fits (see module docstring)."""
    g = granularity
    if g < 1:
        raise ValueError("granularity must be >= 1")
    cap = _round_down(cap, g) if cap is not None else None
    if cap is not None and cap < g:
        raise ValueError("cap is below the granularity")
    probes: list[Probe] = []
    tried: dict[int, Probe] = {}
    lo: int | None = None  # largest size that fit
    hi: int | None = None  # smallest size that did not fit
    streak = 0  # consecutive probes placed by the memory model

    def run(b: int) -> Probe:
        nonlocal lo, hi
        if b in tried:
            return tried[b]
        p = try_batch(b)
        probes.append(p)
        tried[b] = p
        if p.fits:
            lo = b if lo is None else max(lo, b)
        else:
            hi = b if hi is None else min(hi, b)
        return p

    def current_model() -> MemoryModel | None:
        pts = [(p.batch_size, p.peak_bytes) for p in probes if p.fits and p.peak_bytes]
        return fit_model(pts)  # type: ignore[arg-type]

    def done() -> bool:
        if lo is None:
            return hi is not None and hi <= g
        if cap is not None and lo >= cap:
            return True
        return hi is not None and hi - lo <= g

    # 1. two small probes for the fit
    first = run(g)
    if first.fits and not done():
        run(min(8 * g, cap) if cap is not None else 8 * g)

    while not done() and len(probes) < max_probes:
        if lo is None:  # even a small size failed: bisect down towards g
            candidate = _round_down(max(g, hi // 2), g) if hi is not None else g
            if candidate in tried:
                candidate = max(g, candidate - g)
            run(candidate)
            continue
        model = current_model()
        candidate = None
        from_fit = False
        if streak >= MAX_PREDICTED_IN_A_ROW:  # predictions are not closing the bracket: bisect once
            streak = 0
        elif model is not None and budget_bytes is not None:
            predicted = model.max_batch_for(budget_bytes)
            if predicted is not None:
                candidate = _round_down(predicted, g)
                from_fit = True
                if candidate in tried:  # the fit's answer is known: verify its neighbour
                    candidate = candidate + g if tried[candidate].fits else candidate - g
        if candidate is None or candidate <= lo or (hi is not None and candidate >= hi) or candidate in tried:
            from_fit = False  # no usable prediction: grow (no failure yet) or bisect the bracket
            if hi is None:
                candidate = 2 * lo
            else:
                candidate = max(_round_down((lo + hi) // 2, g), lo + g)
        if cap is not None and candidate > cap:
            candidate = cap
        if candidate in tried:
            break  # nothing new to learn (cap already probed); the bracket is final
        run(candidate)
        streak = streak + 1 if from_fit else 0
        # a predicted size that fit and the refitted model still puts the edge here: probe the next
        # size up at once (the certificate); otherwise the loop takes another secant step
        if from_fit and tried[candidate].fits and not done():
            refit = current_model()
            again = refit.max_batch_for(budget_bytes) if refit is not None else None
            nxt = candidate + g
            if (again is None or _round_down(again, g) <= candidate) and (cap is None or nxt <= cap):
                run(nxt)
    return SearchResult(
        max_batch_size=lo,
        failed_batch_size=hi if (lo is not None and hi is not None and hi - lo <= g) else hi,
        cap_reached=bool(cap is not None and lo is not None and lo >= cap),
        probes=tuple(probes),
        model=current_model(),
    )
