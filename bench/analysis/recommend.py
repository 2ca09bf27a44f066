"""Which batch size to pick: pure arithmetic over measured results (no torch).

- throughput-optimal: the measured batch with the highest samples/sec;
- knee: the smallest batch within ``KNEE_FRACTION`` (95%) of the best samples/sec. Past the knee
  a bigger batch buys little speed but costs memory and learning-rate retuning (and large batches
  often generalise worse), so the knee is usually the better default;
- safe max: the max-batch search's safe batch (headroom below a soaked exact max), when one ran.

Learning-rate starting points for moving from a reference batch/LR to each pick: linear scaling
(lr * B/B0, Goyal et al. 2017, for SGD) and square-root scaling (lr * sqrt(B/B0), often better
for Adam-type optimizers). They are starting points for tuning, not answers.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bench.analysis.contention import contended_label
from bench.analysis.goodput import goodput_best, goodput_rows, lost_to_efficiency
from bench.analysis.stats import rel_interval_text, relative_interval, throughput_interval
from bench.results.errors import BenchError
from bench.results.schema import OK, OOM, Choice, Point, Recommendation, SweepResult  # the records: schema

if TYPE_CHECKING:
    from bench.results.maxbatch import MaxBatchResult

KNEE_FRACTION = 0.95
# A point whose 95% interval reaches ±100% of its value cannot be ranked (for a single run: the
# step times' CI half-width reaches their median, so its throughput has no upper bound). On the
# shared 2-core VM a neighbour made one run's batches read ±95% (steps; ±1850% as the throughput
# interval's far side), and the run still named a best batch; the contention check catches that
# cause, this catches the rest.
NOISY_REL_INTERVAL = 1.0


def unrankable(p: Point) -> str | None:
    """Why a measured point cannot be ranked as if clean (None: it can): contended, or too noisy."""
    label = contended_label(p.contention)
    if label is not None:
        return label
    found = relative_interval(p)
    if found is not None and found[0] >= NOISY_REL_INTERVAL:
        return f"95% interval {rel_interval_text(found[0])}"
    return None


def _rankable(measured: list[Point]) -> tuple[list[Point], tuple[int, ...], list[str]]:
    """(the points the picks are made from, the batches left out, notes saying why)."""
    why = {p.batch_size: reason for p in measured if (reason := unrankable(p)) is not None}
    clean = [p for p in measured if p.batch_size not in why]
    notes = []
    if why:
        listed = ", ".join(f"batch {b} ({reason})" for b, reason in why.items())
        contended = any(r.startswith("contended") for r in why.values())
        meaning = " ('contended N%': other processes took N% of the cores it needed)" if contended else ""
        notes.append(f"not ranked: {listed}{meaning}; measure again on a quiet machine, or with --repeat 3")
    top = max((p.samples_per_sec or 0.0 for p in clean), default=None)
    if measured and (
        top is None or any((p.samples_per_sec or 0.0) > top for p in measured if p not in clean)
    ):
        # an unranked batch read faster than every clean one: it may be the best, or the knee
        what = (
            "every measured batch was" if top is None else "a batch that read faster than the clean ones was"
        )
        notes.append(f"cannot recommend a batch size: {what} contended or too noisy to rank")
        clean = []
    return clean, tuple(why), notes


def confidence(ok: list[Point], top: Point) -> tuple[tuple[int, ...], tuple[int, ...], list[str]]:
    """(batches indistinguishable from ``top``, unconverged batches, notes saying so)."""
    notes = []
    unconverged = tuple(p.batch_size for p in ok if p.step_stats is not None and not p.converged)
    best = throughput_interval(top)  # from the repeats when the point has them
    same: tuple[int, ...] = ()
    if best is not None:
        same = tuple(
            p.batch_size for p in ok if (iv := throughput_interval(p)) is not None and iv[1] >= best[0]
        )
    if len(same) > 1:
        notes.append(
            f"batches {', '.join(map(str, same))} are indistinguishable within their 95% intervals: "
            "the measurements do not support picking one of them over the others (measure longer "
            "with --max-time, or on a quieter machine)"
        )
    if unconverged:
        notes.append(
            f"batch {', '.join(map(str, unconverged))} did not reach the CI target (time budget ran out): "
            "treat their numbers as rough"
        )
    return (same if len(same) > 1 else ()), unconverged, notes


def check_lr_reference(base_batch: int | None, base_lr: float | None) -> None:
    """Both or neither, and positive (BenchError, one line)."""
    if (base_batch is None) != (base_lr is None):
        raise BenchError("give both --base-batch and --base-lr (your current batch and its LR), or neither")
    if base_batch is not None and base_batch < 1:
        raise BenchError(f"--base-batch must be a positive integer, got {base_batch}")
    if base_lr is not None and not (base_lr > 0 and math.isfinite(base_lr)):
        raise BenchError(f"--base-lr must be a positive number, got {base_lr}")


def _ok(points: list[Point]) -> list[Point]:
    return sorted((p for p in points if p.status == OK and p.samples_per_sec), key=lambda p: p.batch_size)


def knee_point(points: list[Point], fraction: float = KNEE_FRACTION) -> Point | None:
    """The smallest batch whose samples/sec is within ``fraction`` of the best (None: nothing ran)."""
    ok = _ok(points)
    if not ok:
        return None
    best = max(p.samples_per_sec for p in ok)  # type: ignore[type-var]
    return next(p for p in ok if p.samples_per_sec >= fraction * best)  # type: ignore[operator]


def scaled_lr(base_lr: float, base_batch: int, batch: int) -> tuple[float, float]:
    """(linear, square-root) scaled learning rates for ``batch`` from a reference batch and LR."""
    ratio = batch / base_batch
    return base_lr * ratio, base_lr * math.sqrt(ratio)


def recommend(
    sweep_result: SweepResult | None,
    max_result: MaxBatchResult | None = None,
    base_batch: int | None = None,
    base_lr: float | None = None,
    noise_scale: float | None = None,
    noise_source: str | None = None,
) -> Recommendation:
    """The batch sizes worth picking from a sweep (and a max-batch result, when one was run).

    ``max_result``: the ``MaxBatchResult`` of a search of the same workload (its safe batch is the
    third pick). Throughputs are only ever measured values.
    ``noise_scale`` (B_noise, from ``bench noise``) adds the goodput-optimal batch.
    """
    check_lr_reference(base_batch, base_lr)

    def choice(batch: int, sps: float | None, why: str) -> Choice:
        lin = sq = None
        if base_batch is not None and base_lr is not None:
            lin, sq = scaled_lr(base_lr, base_batch, batch)
        return Choice(batch, sps, why, lin, sq)

    best = knee = safe = None
    notes: list[str] = []
    same: tuple[int, ...] = ()
    unconverged: tuple[int, ...] = ()
    measured = _ok(list(sweep_result.points)) if sweep_result is not None else []
    ok, not_ranked, skipped_notes = _rankable(measured)
    notes.extend(skipped_notes)
    if ok:
        top = max(ok, key=lambda p: p.samples_per_sec or 0.0)
        best = choice(top.batch_size, top.samples_per_sec, "highest measured samples/sec")
        k = knee_point(ok)
        assert k is not None and top.samples_per_sec
        share = k.samples_per_sec / top.samples_per_sec  # type: ignore[operator]
        knee = choice(
            k.batch_size,
            k.samples_per_sec,
            f"smallest batch within {KNEE_FRACTION:.0%} of the best ({share:.1%})",
        )
        oom_above = [
            p.batch_size for p in sweep_result.points if p.status == OOM and p.batch_size > top.batch_size
        ]
        if top.batch_size == ok[-1].batch_size:
            if oom_above:
                notes.append(
                    f"the largest batch that fit was the fastest: sizes between {top.batch_size} and "
                    f"{min(oom_above)} (out of memory) may be faster still"
                )
            else:
                notes.append("the largest measured batch was the fastest: larger ones may be faster still")
        same, unconverged, caveats = confidence(ok, top)
        notes.extend(caveats)
    elif sweep_result is not None and not measured:
        notes.append("no batch size completed in the sweep")
    if max_result is not None and max_result.safe_batch_size:
        rates = {p.batch_size: p.samples_per_sec for p in ok}
        safe = choice(
            max_result.safe_batch_size,
            rates.get(max_result.safe_batch_size),
            f"{max_result.headroom_fraction:.0%} headroom below {_max_words(max_result)}",
        )
    if base_batch is not None:
        notes.append(
            "learning rates are starting points for tuning (linear: SGD; sqrt: Adam-type), not answers"
        )
    rec = Recommendation(
        best, knee, safe, base_batch, base_lr, tuple(notes), same, unconverged, not_ranked=not_ranked
    )
    return _with_goodput(rec, ok, noise_scale, noise_source, choice) if noise_scale is not None else rec


def _with_goodput(
    rec: Recommendation, ok: list[Point], noise_scale: float, source: str | None, choice: Any
) -> Recommendation:
    """The goodput-optimal pick, per-batch relative times, and what a bigger batch's speed buys."""
    rows = goodput_rows(ok, noise_scale)
    top = goodput_best(rows)
    if top is None:
        return replace(rec, noise_scale=noise_scale, noise_scale_source=source)
    pick = choice(
        top.batch_size,
        top.samples_per_sec,
        f"shortest time to the same loss, (B + B_noise) / samples/s with B_noise {noise_scale:,.0f}",
    )
    notes = list(rec.notes)
    fastest = max(rows, key=lambda r: r.samples_per_sec)
    if fastest.batch_size != top.batch_size:
        notes.append(lost_to_efficiency(fastest, top))
    else:
        notes.append(f"the throughput-optimal batch is also goodput-optimal at B_noise {noise_scale:,.0f}")
    notes.append(
        "goodput assumes B_noise measured at one stage of training: it grows as the loss falls (measure again "
        "later), and the learning rate must be retuned for the new batch"
    )
    return replace(
        rec,
        noise_scale=noise_scale,
        noise_scale_source=source,
        goodput=pick,
        goodput_rows=rows,
        notes=tuple(notes),
    )


def _max_words(max_result: MaxBatchResult) -> str:
    """The max batch as the search proved it: exact (to its granularity), a band, or a bracket."""
    mx = max_result.max_batch_size
    high = max_result.band_high
    if high is not None and high != mx:
        return f"the max {mx} (a band {mx}-{high}: the boundary did not repeat)"
    if max_result.exact:
        g = max_result.granularity or 1
        return f"the exact max {mx}" if g == 1 else f"the max {mx} (exact to {g})"
    return f"the max {mx} (not proven exact)"
