"""The paired A/B test of ``bench ab``: per-round log ratios, a t-interval, Holm across batch sizes.
No torch here.

Why paired rounds: on a shared machine the throughput of one build drifts by more than the changes
worth catching (repeats of one unchanged build ranged from 8 to 570 samples/s while other work ran).
Measuring both builds in every round, in a random order (Abedi & Brecht's Randomized Multiple
Interleaved Trials, ICPE 2017), exposes both to the same drift, and the per-round ratio B/A cancels
it; what is left is the noise between two neighbouring measurements.

Per batch size, over ``n`` complete rounds: ``d_i = log(B_i) - log(A_i)``; the change is
``exp(mean d) - 1`` (the ratio of geometric means), and its interval is the Student-t interval of
``mean d`` with ``n - 1`` degrees of freedom. With ``k`` batch sizes the levels follow Holm: each
size's p-value is the smallest alpha at which its two-sided (1 - alpha) interval lies wholly in one
of the three regions below; sorted, the j-th (from 0) is tested at ``alpha / (k - j)``, stopping at
the first that fails, and its interval is shown at that level. Verdicts (``threshold`` t):

* ``within threshold``: the interval lies inside [-t, +t];
* ``REGRESSION``: the interval lies wholly below -t (B slower by more than t);
* ``IMPROVEMENT``: the interval lies wholly above +t;
* ``INCONCLUSIVE``: none of these yet (fewer than ``min_rounds`` rounds, or the interval straddles
  a bound), with the total rounds that the observed spread says would settle it.

The interval is looked at after every round, and the run stops once every size is settled: repeated
looks raise the chance that an interval once lands on the wrong side. The regions sit a whole
threshold away from the truth they would misreport (an A/A run is misreported as a REGRESSION only
if its interval lies wholly below -t), ``min_rounds`` keeps the first, widest-swinging looks from
deciding, and the committed error rates (``bench.benchmarks.ab_error_rates``) measure what is left.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from bench.analysis.gate import ALPHA, IMPROVEMENT, INCONCLUSIVE, REGRESSION, WITHIN
from bench.analysis.stats import t_critical, t_two_sided_p
from bench.results.ab import BatchVerdict

MAX_ROUNDS_ESTIMATE = 1000  # beyond this, "rounds needed" is None (the change sits on a bound)


def log_bounds(threshold: float) -> tuple[float, float]:
    """[-t, +t] of the change B/A - 1, in log ratio."""
    return math.log1p(-threshold), math.log1p(threshold)


def _region_margin(mean: float, lo: float, hi: float) -> tuple[str, float]:
    """The region the mean lies in and its distance (log units) to the nearest bound of it."""
    if mean < lo:
        return REGRESSION, lo - mean
    if mean > hi:
        return IMPROVEMENT, mean - hi
    return WITHIN, min(mean - lo, hi - mean)


def _p_value(margin: float, se: float, dof: int) -> float:
    """The smallest alpha whose two-sided (1 - alpha) interval lies inside the mean's region."""
    if margin <= 0:
        return 1.0
    if se == 0:
        return 0.0
    return t_two_sided_p(margin / se, dof)


def rounds_to_settle(sd: float, margin: float, alpha: float, have: int) -> int | None:
    """Rounds at which a (1 - alpha) interval of half-width t * sd / sqrt(n) fits the ``margin``
    (the observed mean and spread assumed to hold). None: more than ``MAX_ROUNDS_ESTIMATE``."""
    if margin <= 0:
        return None
    low = max(have, 2)
    if sd == 0:
        return low

    def fits(n: int) -> bool:
        return t_critical(alpha, n - 1) * sd / math.sqrt(n) < margin

    if not fits(MAX_ROUNDS_ESTIMATE):
        return None
    high = MAX_ROUNDS_ESTIMATE  # the half-width shrinks with n: bisect for the first n that fits
    while low < high:
        mid = (low + high) // 2
        if fits(mid):
            high = mid
        else:
            low = mid + 1
    return low


def settle(
    pairs: Mapping[int, Sequence[tuple[float, float]]],
    threshold: float,
    *,
    min_rounds: int = 5,
    alpha: float = ALPHA,
) -> tuple[BatchVerdict, ...]:
    """Verdicts per batch size from ``pairs[b] = [(a_samples_per_sec, b_samples_per_sec), ...]``
    (one pair per complete round), in the order of ``pairs``. See the module docstring."""
    lo_b, hi_b = log_bounds(threshold)
    facts = {}
    for b, rows in pairs.items():
        rows = [(a, x) for a, x in rows if a and x and a > 0 and x > 0]
        d = [math.log(x) - math.log(a) for a, x in rows]
        n = len(d)
        mean = statistics.fmean(d) if d else None
        sd = statistics.stdev(d) if n >= 2 else None
        se = sd / math.sqrt(n) if sd is not None else None
        region, margin = _region_margin(mean, lo_b, hi_b) if mean is not None else (INCONCLUSIVE, 0.0)
        p = _p_value(margin, se, n - 1) if se is not None and n >= min_rounds else None
        facts[b] = (rows, d, mean, sd, se, region, margin, p)
    tested = sorted((b for b in facts if facts[b][7] is not None), key=lambda b: facts[b][7])
    k = len(tested)
    level: dict[int, float] = {}
    settled: set[int] = set()
    holm_p: dict[int, float] = {}
    running, failed = 0.0, False
    for j, b in enumerate(tested):
        level[b] = alpha / (k - j)
        running = max(running, min(1.0, (k - j) * facts[b][7]))
        holm_p[b] = running
        if not failed and facts[b][7] < level[b]:
            settled.add(b)
        else:
            failed = True
    out = []
    for b, (rows, d, mean, sd, se, region, margin, _) in facts.items():
        a_geo = math.exp(statistics.fmean(math.log(a) for a, _ in rows)) if rows else None
        b_geo = math.exp(statistics.fmean(math.log(x) for _, x in rows)) if rows else None
        lvl = level.get(b, alpha / max(k, 1))
        ci_low = ci_high = None
        if se is not None:
            half = t_critical(lvl, len(d) - 1) * se
            ci_low, ci_high = math.expm1(mean - half), math.expm1(mean + half)
        verdict = region if b in settled else INCONCLUSIVE
        needed = None
        if verdict == INCONCLUSIVE and sd is not None:
            needed = rounds_to_settle(sd, margin, lvl, max(len(d) + 1, min_rounds))
        out.append(
            BatchVerdict(
                batch_size=b,
                rounds=len(d),
                a_samples_per_sec=a_geo,
                b_samples_per_sec=b_geo,
                change=math.expm1(mean) if mean is not None else None,
                ci_low=ci_low,
                ci_high=ci_high,
                confidence=1 - lvl if se is not None else None,
                p_value=holm_p.get(b),
                verdict=verdict,
                log_ratio_sd=sd,
                rounds_needed=needed,
            )
        )
    return tuple(out)


def all_settled(verdicts: Sequence[BatchVerdict]) -> bool:
    return bool(verdicts) and all(v.verdict != INCONCLUSIVE for v in verdicts)
