"""Pure statistics over raw step times (seconds). No torch here.

The stopping rule follows common benchmarking practice: report the median (robust to the odd slow
step), the p10/p90 spread, and a 95% confidence interval of the mean from Student's t, and keep
measuring until that interval is narrow relative to the median.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from bench.schema import StepStats

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
