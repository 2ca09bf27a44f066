"""Pure statistics over raw step times (seconds). No torch here.

The stopping rule follows common benchmarking practice: report the median (robust to the odd slow
step), the p10/p90 spread, and a 95% confidence interval of the mean from Student's t, and keep
measuring until that interval is narrow relative to the median.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import replace

from bench.results.schema import OK, MemoryStats, Point, RepeatSample, StepStats, Timing

# Two-sided 95% Student-t critical values for 1..30 degrees of freedom; beyond, the table below.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_T95_LARGE = ((40, 2.021), (60, 2.000), (120, 1.980))


def t95(dof: int) -> float:
    """Two-sided 95% critical value of Student's t with ``dof`` degrees of freedom."""
    if dof < 1:
        raise ValueError("need at least one degree of freedom")
    if dof <= len(_T95):
        return _T95[dof - 1]
    for limit, value in _T95_LARGE:
        if dof <= limit:
            return value
    return 1.960


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def ci95_half_width(values: Sequence[float]) -> float:
    """Half-width of the 95% confidence interval of the mean (seconds)."""
    n = len(values)
    if n < 2:
        return math.inf
    return t95(n - 1) * statistics.stdev(values) / math.sqrt(n)


def summarize(step_seconds: Sequence[float]) -> StepStats:
    """Median, mean, spread and 95% CI of step times."""
    n = len(step_seconds)
    if n == 0:
        raise ValueError("no step times to summarise")
    median = statistics.median(step_seconds)
    mean = statistics.fmean(step_seconds)
    stdev = statistics.stdev(step_seconds) if n > 1 else 0.0
    half = ci95_half_width(step_seconds) if n > 1 else math.inf
    return StepStats(
        count=n,
        median_seconds=median,
        mean_seconds=mean,
        stdev_seconds=stdev,
        p10_seconds=percentile(step_seconds, 10),
        p90_seconds=percentile(step_seconds, 90),
        min_seconds=min(step_seconds),
        max_seconds=max(step_seconds),
        ci95_low_seconds=mean - half,
        ci95_high_seconds=mean + half,
        rel_ci_half_width=half / median if median > 0 else math.inf,
    )


def converged(step_seconds: Sequence[float], target_rel_ci: float) -> bool:
    """True once the 95% CI half-width of the mean is within ``target_rel_ci`` of the median."""
    if len(step_seconds) < 2:
        return False
    median = statistics.median(step_seconds)
    return median > 0 and ci95_half_width(step_seconds) <= target_rel_ci * median


def samples_per_sec(batch_size: int, steps: int, window_seconds: float) -> float:
    """Throughput over the measured window: every timed sample divided by the window's wall time."""
    if window_seconds <= 0:
        raise ValueError("window must be positive")
    return batch_size * steps / window_seconds


def epoch_seconds(dataset_size: int, throughput: float) -> float:
    """Estimated epoch time (seconds) at a measured throughput (samples/sec)."""
    return dataset_size / throughput


# --------------------------------------------------------------------------- between-run statistics
#
# The regression gate works on repeat-level throughputs: each repeat is an independent measurement
# (its own process on CPU, its own model on GPU), so their spread is the run-to-run noise that the
# step times inside one run cannot show. Values are compared on a log scale (a 10% drop is the same
# distance at 10 and at 10,000 samples/s), with a two-sample t-test on the pooled within-group
# variance. With three repeats a rank test cannot reach any useful level (Mann-Whitney's smallest
# two-sided p for 3 against 3 is 0.1), which is why bench does not use one here.


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, dof: float) -> float:
    """P(|T| >= |t|) for Student's t with ``dof`` degrees of freedom."""
    if dof <= 0:
        raise ValueError("need at least one degree of freedom")
    if math.isinf(t):
        return 0.0
    return _betai(dof / 2.0, 0.5, dof / (dof + t * t))


def t_critical(alpha: float, dof: float) -> float:
    """The two-sided critical value: P(|T| >= value) = alpha."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, dof) > alpha:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_two_sided_p(mid, dof) > alpha:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10 * hi:
            break
    return hi


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, family-wise error control): compare each with alpha.

    Why Holm: a sweep tests several batch sizes at once; without a correction, five sizes at 5%
    each raise a false alarm on about one unchanged build in four. Holm keeps the family-wise rate
    at alpha and is uniformly more powerful than Bonferroni."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def sum_of_squares(values: Sequence[float]) -> float:
    """Sum of squared deviations from the mean (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    mean = statistics.fmean(values)
    return sum((v - mean) ** 2 for v in values)


def repeats_to_settle(
    noise_sd: float, threshold: float, alpha: float = 0.05, max_repeats: int = 50
) -> int | None:
    """Repeats per side at which a two-sample interval of log throughput (noise ``noise_sd`` per
    repeat, log units) would be at most ``threshold`` wide each way, so that no change and a change
    of twice the threshold could not both fit in it. None: more than ``max_repeats``."""
    if noise_sd <= 0:
        return 2
    for n in range(2, max_repeats + 1):
        half = t_critical(alpha, 2 * n - 2) * noise_sd * math.sqrt(2.0 / n)
        if half <= math.log1p(threshold):
            return n
    return None


def repeat_sample(point: Point) -> RepeatSample:
    """The part of one measurement of a batch size that the repeats keep."""
    return RepeatSample(
        status=point.status,
        samples_per_sec=point.samples_per_sec,
        step_median_seconds=point.step_stats.median_seconds if point.step_stats else None,
        window_seconds=point.window_seconds,
        steps=len(point.step_seconds),
        error=point.error,
    )


def _max_or_none(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def combine_repeats(measured: Sequence[Point], dataset_size: int | None = None) -> Point:
    """One point from a batch size's repeats (in the order they ran); see ``Point`` for what each
    headline field then means. A single measurement comes back as it is (no ``repeats``), so
    ``--repeat 1`` files look as they always did."""
    if not measured:
        raise ValueError("no repeats to combine")
    if len(measured) == 1:
        return measured[0]
    ok = [p for p in measured if p.status == OK and p.samples_per_sec]
    samples = tuple(repeat_sample(p) for p in measured)
    if not ok:  # every repeat failed: the last one says why
        return replace(measured[-1], repeats=samples, timing=Timing.total([p.timing for p in measured]))
    ranked = sorted(ok, key=lambda p: p.samples_per_sec or 0.0)
    middle = ranked[(len(ranked) - 1) // 2]  # the median repeat (lower middle for an even count)
    headline = statistics.median(p.samples_per_sec or 0.0 for p in ok)
    memory = MemoryStats(
        **{
            f: _max_or_none([getattr(p.memory, f) for p in ok])
            for f in (
                "device_peak_allocated_bytes",
                "device_peak_reserved_bytes",
                "device_process_used_bytes",
                "host_peak_rss_bytes",
                "first_step_peak_allocated_bytes",
                "first_step_peak_reserved_bytes",
            )
        },
        device_total_bytes=middle.memory.device_total_bytes,
        host_rss_method=middle.memory.host_rss_method,
    )
    reasons = tuple(dict.fromkeys(r for p in ok for r in p.telemetry.clock_event_reasons))
    return replace(
        middle,
        samples_per_sec=headline,
        epoch_seconds_estimate=epoch_seconds(dataset_size, headline)
        if dataset_size
        else middle.epoch_seconds_estimate,
        converged=all(p.converged for p in ok),
        memory=memory,
        telemetry=replace(middle.telemetry, clock_event_reasons=reasons),
        repeats=samples,
        timing=Timing.total([p.timing for p in measured]),  # where the point's wall time went: every repeat
        # the most contended repeat speaks for the point: its spread, and so its interval, has it in
        contention=max(
            (p.contention for p in ok if p.contention is not None),
            key=lambda c: c.felt_percent,
            default=None,
        ),
    )


def repeat_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Interval of a point's typical throughput from the spread between its repeats (samples/s):
    a t interval on the log scale, back-transformed. None for fewer than two repeats."""
    logs = [math.log(v) for v in values if v > 0]
    if len(logs) < 2:
        return None
    half = t_critical(1 - level, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    centre = statistics.fmean(logs)
    return math.exp(centre - half), math.exp(centre + half)


def throughput_interval(p: Point) -> tuple[float, float, str] | None:
    """95% interval of a point's samples/sec and what it rests on: with two or more repeats, the
    spread between them (``repeat_interval``: it sees run-to-run noise); otherwise the step times'
    CI half-width h relative to the median, [sps / (1 + h), sps / (1 - h)], which sees only the
    noise inside one run. None when the point has neither."""
    values = p.repeat_samples_per_sec()
    if len(values) >= 2:
        interval = repeat_interval(values)
        if interval is not None:
            return interval[0], interval[1], "repeats"
    if p.step_stats is None or not p.samples_per_sec:
        return None
    h = p.step_stats.rel_ci_half_width
    if not math.isfinite(h) or h < 0:
        return None
    return p.samples_per_sec / (1 + h), (p.samples_per_sec / (1 - h) if h < 1 else math.inf), "steps"


def relative_interval(p: Point) -> tuple[float, str] | None:
    """The point's 95% interval as one relative number and what it rests on: with repeats, the
    larger side of their interval relative to the headline; else the step times' CI half-width
    relative to their median, the number the stopping rule and the live display use (its
    throughput interval [sps/(1+h), sps/(1-h)] is lopsided and unbounded as h nears 1). None
    when the point has neither."""
    if not p.samples_per_sec:
        return None
    values = p.repeat_samples_per_sec()
    if len(values) >= 2 and (interval := repeat_interval(values)) is not None:
        lo, hi = interval
        return max(hi / p.samples_per_sec - 1, 1 - lo / p.samples_per_sec), "repeats"
    if p.step_stats is None:
        return None
    h = p.step_stats.rel_ci_half_width
    return (h, "steps") if math.isfinite(h) and h >= 0 else None


MAX_SHOWN_INTERVAL = 10.0  # ±1000%: past it the number means nothing more than "unbounded"


def rel_interval_text(rel: float) -> str:
    """ "±3.1%"; never "±inf": past ±999% (or not finite) it is "±>999%"."""
    if not math.isfinite(rel) or rel >= MAX_SHOWN_INTERVAL:
        return "±>999%"
    return f"±{rel:.1%}"


def interval_label(p: Point) -> str:
    """The ±CI95 column of tables and reports (``relative_interval``), with the number of repeats
    when it comes from them (e.g. "±3.1% (3 runs)")."""
    found = relative_interval(p)
    if found is None:
        return "-"
    rel, source = found
    text = rel_interval_text(rel)
    return f"{text} ({len(p.repeat_samples_per_sec())} runs)" if source == "repeats" else text
