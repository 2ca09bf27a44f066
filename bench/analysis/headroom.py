"""The max-batch search's arithmetic around the proof (pure, no torch): the memory model fitted to
the probes, the headroom the safe batch leaves, the safe batch, the band when the boundary did not
repeat, and the soak's length. ``bench.jobs.maxbatch`` measures; this decides.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.results.maxbatch import PROBE_STEPS, MemoryModelInfo, ProbeRecord

SOAK_SHARE = 0.2  # the soak takes at most this share of the search's time
MIN_HEADROOM_FRACTION = 0.02  # the safe batch keeps at least this share of the budget free
MAX_HEADROOM_FRACTION = 0.25
RETRY_HEADROOM_FRACTION = 0.05  # extra when the caching allocator already had to retry


def fit_memory_model(probes: Sequence[ProbeRecord]) -> MemoryModelInfo | None:
    """memory(b) = fixed + per_sample * b over every probe that fit (repeats and all), for the
    report and the safe batch: a least-squares line weighted by the square of the batch size, so the
    points near the edge count most and one noisy small batch (CPU RSS at batch 1 varies by tens of
    MiB, more on a busy machine) does not set the slope. Fitted to the steady peaks where probes
    measured them (not the first step's autotune workspace), and its error is measured against the
    same readings."""
    pts = [(p.batch_size, float(p.steady_peak_bytes if p.steady_peak_bytes is not None else p.peak_bytes))
           for p in probes if p.fits and (p.steady_peak_bytes or p.peak_bytes)]  # fmt: skip
    if len({b for b, _ in pts}) < 2:
        return None
    weight = {b: float(b) ** 2 for b, _ in pts}
    w = sum(weight[b] for b, _ in pts)
    mean_b = sum(weight[b] * b for b, _ in pts) / w
    mean_y = sum(weight[b] * y for b, y in pts) / w
    var = sum(weight[b] * (b - mean_b) ** 2 for b, _ in pts)
    per = sum(weight[b] * (b - mean_b) * (y - mean_y) for b, y in pts) / var
    if per <= 0:
        return None
    fixed = mean_y - per * mean_b
    errors = [abs(y - (fixed + per * b)) / y for b, y in pts]
    return MemoryModelInfo(fixed, per, max(errors, default=0.0))


def autotune_workspace_bytes(
    probes: Sequence[ProbeRecord], soak: Sequence[ProbeRecord], model: MemoryModelInfo | None = None
) -> int | None:
    """How much more steady memory a batch took with cuDNN autotuning (the soak, run the way training
    runs) than without it (the probes at that batch, else the memory model fitted to them): the
    autotuned algorithms' workspaces. None: nothing to compare."""
    without = {p.batch_size: p.steady_peak_bytes for p in probes if p.fits and p.steady_peak_bytes}
    extra = []
    for s in soak:
        if not (s.fits and s.steady_peak_bytes):
            continue
        base = without.get(s.batch_size)
        if base is None and model is not None:
            base = model.fixed_bytes + model.per_sample_bytes * s.batch_size
        if base is not None:
            extra.append(int(s.steady_peak_bytes - base))
    return max(0, max(extra)) if extra else None


def headroom(
    device_kind: str,
    model: MemoryModelInfo | None,
    probes: Sequence[ProbeRecord],
    *,
    budget_bytes: int | None = None,
    workspace_bytes: int | None = None,
) -> tuple[float, str]:
    """The share of the budget the safe batch leaves free, from what was measured, not a guess.

    - GPU: the caching allocator's overhead at the largest probe that fit (peak reserved /
      allocated - 1): fragmentation that can grow over a long run; plus 5% if the allocator had to
      retry (cudaMalloc failed and the cache was flushed: already under pressure); plus the
      autotuned algorithms' extra workspace (``workspace_bytes``, over ``budget_bytes``): probes run
      without cuDNN autotuning, training with it.
    - Both: twice the largest deviation of a measured peak from the linear model (noise, and the
      curvature the model does not capture).
    Clamped to 2%..25%. The safe batch also stays at least one granule of samples below the max.
    """
    margin = MIN_HEADROOM_FRACTION
    reasons = []
    fitting = [p for p in probes if p.fits]
    top = max(fitting, key=lambda p: p.batch_size, default=None)
    if device_kind == "cuda" and top is not None:
        if (
            top.peak_allocated_bytes
            and top.peak_reserved_bytes
            and top.peak_reserved_bytes > top.peak_allocated_bytes
        ):
            overhead = top.peak_reserved_bytes / top.peak_allocated_bytes - 1
            margin = max(margin, overhead)
            reasons.append(f"allocator reserved {overhead:.1%} over allocated at batch {top.batch_size}")
        retries = sum(p.alloc_retries or 0 for p in fitting)
        if retries:
            margin += RETRY_HEADROOM_FRACTION
            reasons.append(f"{retries} allocator retries")
    if workspace_bytes and budget_bytes:
        share = workspace_bytes / budget_bytes
        margin += share
        reasons.append(f"cuDNN autotuning's workspace {share:.1%} of the budget")
    if model is not None and model.max_relative_error > 0:
        margin = max(margin, 2 * model.max_relative_error)
        reasons.append(f"peaks deviate up to {model.max_relative_error:.1%} from the linear model")
    margin = min(margin, MAX_HEADROOM_FRACTION)
    return margin, ("; ".join(reasons) or "minimum margin") + f": {margin:.0%} headroom"


def safe_batch(
    max_batch_size: int, granularity: int, budget_bytes: int, model: MemoryModelInfo | None, margin: float
) -> int | None:
    """The largest multiple of ``granularity`` below the max whose predicted memory leaves ``margin``
    of the budget free (None if not even ``granularity`` does)."""
    g = granularity
    below_max = max_batch_size - g
    if model is not None and model.per_sample_bytes > 0:
        fit = int((budget_bytes * (1 - margin) - model.fixed_bytes) // model.per_sample_bytes)
        size = min((fit // g) * g, below_max)
    else:
        size = min(int(max_batch_size * (1 - margin)) // g * g, below_max)
    if size >= g:
        return size
    return (
        g
        if model is None or model.fixed_bytes + model.per_sample_bytes * g <= budget_bytes * (1 - margin)
        else None
    )


def band(records: Sequence[ProbeRecord]) -> tuple[int | None, int | None]:
    """(low, high): every probed size up to ``low`` fit every time it ran, and nothing below it
    ever failed; ``high`` is the largest size that fit at least once."""
    failed = [r.batch_size for r in records if not r.fits]
    lowest_failure = min(failed, default=None)
    always = [
        r.batch_size for r in records
        if r.fits and (lowest_failure is None or r.batch_size < lowest_failure)
    ]  # fmt: skip
    ever = [r.batch_size for r in records if r.fits]
    return (max(always) if always else None), (max(ever) if ever else None)


def proven_bracket(records: Sequence[ProbeRecord]) -> tuple[int | None, int | None]:
    """(fit, failed) from the probes so far: the largest size that fit below every failure, and the
    smallest failure above it (for a search stopped early)."""
    low, _ = band(records)
    above = [r.batch_size for r in records if not r.fits and (low is None or r.batch_size > low)]
    return low, min(above, default=None)


def soak_steps_for(wanted: int, search_seconds: float, records: Sequence[ProbeRecord], batch: int) -> int:
    """The soak's length: ``wanted`` steps, time-boxed to ``SOAK_SHARE`` of the search so far
    (measured: two 20-step CPU soaks took 398 s after a 307 s search), and never shorter than one
    step more than a probe (or it proves nothing a probe did not)."""
    at = [r for r in records if r.batch_size == batch and r.fits and r.timing is not None]
    per_step = None
    for r in at:
        t = r.timing
        if t is not None and t.warmup_seconds is not None and r.steps > 1:
            per_step = t.warmup_seconds / (r.steps - 1)
    if per_step is None or per_step <= 0:
        return wanted
    boxed = int(SOAK_SHARE * search_seconds / per_step)
    return max(min(wanted, boxed), min(wanted, PROBE_STEPS + 1))
