"""The simple gradient noise scale from gradient norms at two batch sizes (pure, no torch).

McCandlish et al. 2018, App. A: a mean-loss gradient over a batch of B examples, g_B, has
E|g_B|² = |G|² + c(B)·tr(Σ), with G the full-data gradient and Σ the per-example covariance.
Sampled with replacement (an endless stream) c(B) = 1/B. Drawn without replacement from a finite
set of N examples (an epoch's shuffled batches) the variance of a batch mean is (1 − B/N)·σ²/B, with
σ² the per-example variance taken with N − 1 in the denominator, so c(B) = 1/B − 1/N. Two batch
sizes give two equations in the two unknowns; per draw

    tr(Σ) ≈ (|g_s|² − |g_b|²) / (c(B_s) − c(B_b))            (c(B_s) − c(B_b) = 1/B_s − 1/B_b)
    |G|²  ≈ (c(B_s)|g_b|² − c(B_b)|g_s|²) / (c(B_s) − c(B_b))

both unbiased. Each is averaged over the draws on its own and only then divided
(B_noise = mean tr(Σ) / mean |G|²): the ratio of one draw's estimates is biased and often negative.
The 95% interval of the ratio is the delta method's, with the draws' sample covariance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.analysis.stats import t95
from bench.results.noise import NoiseDraw, NoiseEstimate


def noise_coefficient(batch: int, population: int | None = None) -> float:
    """c(B): Var(batch mean) = c(B)·σ² per coordinate; 1/B, or 1/B − 1/N without replacement."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if population is not None and batch > population:
        raise ValueError(f"a batch of {batch} cannot be drawn without replacement from {population}")
    return 1.0 / batch - (1.0 / population if population else 0.0)


def draw_estimates(
    draw: NoiseDraw, small_batch: int, big_batch: int, population: int | None = None
) -> tuple[float, float]:
    """(|G|², tr(Σ)) unbiased estimates from one draw's two squared norms."""
    if not small_batch < big_batch:
        raise ValueError(f"the small batch ({small_batch}) must be smaller than the big one ({big_batch})")
    c_s = noise_coefficient(small_batch, population)
    c_b = noise_coefficient(big_batch, population)
    gap = c_s - c_b
    trace = (draw.small_sq_norm - draw.big_sq_norm) / gap
    g2 = (c_s * draw.big_sq_norm - c_b * draw.small_sq_norm) / gap
    return g2, trace


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def _cov(xs: Sequence[float], ys: Sequence[float]) -> float:
    mx, my = _mean(xs), _mean(ys)
    return math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / (len(xs) - 1)


def estimate(
    draws: Sequence[NoiseDraw], small_batch: int, big_batch: int, population: int | None = None
) -> NoiseEstimate:
    """B_noise = mean tr(Σ) / mean |G|² over ``draws`` with its 95% delta-method interval.

    ``noise_scale`` is None while mean |G|² is not above zero; the interval is None with fewer than
    two draws or while |G|² is not resolved (its own interval still reaches zero)."""
    if not draws:
        raise ValueError("no draws to estimate from")
    pairs = [draw_estimates(d, small_batch, big_batch, population) for d in draws]
    gs = [g for g, _ in pairs]
    ts = [t for _, t in pairs]
    g_mean, t_mean = _mean(gs), _mean(ts)
    n = len(draws)
    if g_mean <= 0:
        return NoiseEstimate(None, g_mean, t_mean, None, None, n, population)
    ratio = t_mean / g_mean
    low = high = None
    if n >= 2:
        crit = t95(n - 1)
        var_g = _cov(gs, gs)
        # |G|² must itself be resolved above zero: near zero the linearisation means nothing
        if g_mean - crit * math.sqrt(var_g / n) > 0:
            var_ratio = (_cov(ts, ts) - 2 * ratio * _cov(ts, gs) + ratio**2 * var_g) / (n * g_mean**2)
            half = crit * math.sqrt(max(var_ratio, 0.0))
            low, high = ratio - half, ratio + half
    return NoiseEstimate(ratio, g_mean, t_mean, low, high, n, population)
