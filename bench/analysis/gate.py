"""Regression gate: compare two sweeps per batch size. No torch here.

A slowdown is a regression only when it is both larger than the threshold and larger than the
noise between runs. The evidence, best first:

* **repeats** (``--repeat N``): each batch size measured N times in independent processes (CPU) or
  with fresh models (GPU). A two-sample t-test on log throughput over those repeat values, the
  variance pooled over both sides; p-values are Holm-corrected across batch sizes, so a sweep of
  many sizes does not raise more false alarms than a sweep of one.
* **history**: one repeat per side, but the history holds other runs of the same configuration;
  their spread (the noise floor) stands in for the missing repeats.
* **steps** (neither): between-run noise is unknown. A seeded bootstrap of both runs' step times
  gives an interval that covers only the noise inside each run; it is too narrow (two single runs
  of an unchanged build differed by 14% on a shared CPU, far outside it), so a change beyond the
  threshold is ``INCONCLUSIVE`` here, never ``REGRESSION``: exit 1 only with ``--strict``.

The change shown is the ratio of geometric means over repeats, exp(mean log current - mean log
baseline) - 1: the quantity the t-test and its interval are about.

Verdicts: ``REGRESSION`` / ``IMPROVEMENT`` (significant and beyond the threshold), ``within
threshold`` (the 95% interval of the change lies wholly inside +-threshold), and
``INCONCLUSIVE`` (the noise is wider than the threshold: more repeats would settle it; the number
is estimated from the observed noise). Runs of different workloads or environments are not like
with like: they are listed in ``mismatches`` and the command line refuses them unless asked.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.analysis.stats import holm, repeats_to_settle, sum_of_squares, t_critical, t_two_sided_p
from bench.results.errors import BenchError
from bench.results.schema import OK, Point, SweepResult

ALPHA = 0.05  # family-wise false-alarm rate across the batch sizes of one comparison
REGRESSION = "REGRESSION"
IMPROVEMENT = "IMPROVEMENT"
WITHIN = "within threshold"
INCONCLUSIVE = "INCONCLUSIVE"
# Clock-event reasons that do not lower clocks under load (idle, user settings, boost sync).
BENIGN_CLOCK_EVENTS = frozenset(
    {"gpu_idle", "applications_clocks_setting", "sync_boost", "display_clock_setting"}
)
BOOTSTRAP_SAMPLES = 2000
SEED = 1234


def parse_threshold(text: str | float) -> float:
    """'5%' -> 0.05, '0.05' -> 0.05, 5 -> 0.05 (a bare number above 1 is read as percent)."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise BenchError(f"threshold {text!r} not understood: use e.g. 5% or 0.05") from None
    if not raw.endswith("%") and value > 1:
        value /= 100
    if not 0 < value < 1:
        raise BenchError(f"threshold must be between 0% and 100%, got {text!r}")
    return value


@dataclass(frozen=True)
class PointChange:
    batch_size: int
    baseline_samples_per_sec: float  # geometric mean over repeats (the estimator the test uses)
    current_samples_per_sec: float
    change: float  # current/baseline - 1 of the geometric means (negative = slower)
    ci_low: float  # 95% interval of current/baseline - 1 (from ``evidence``)
    ci_high: float
    significant: bool  # after the Holm correction (repeats/history); the interval excludes 0 (steps)
    regression: bool
    improvement: bool
    baseline_peak_bytes: int | None
    current_peak_bytes: int | None
    memory_change: float | None
    verdict: str = WITHIN  # REGRESSION | IMPROVEMENT | within threshold | INCONCLUSIVE
    evidence: str = "steps"  # "repeats" | "history" | "steps" (see the module docstring)
    baseline_repeats: int = 1
    current_repeats: int = 1
    p_value: float | None = None  # Holm-adjusted, two-sided; None for step evidence
    noise_sd: float | None = None  # between-run standard deviation of log throughput (~ relative)
    repeats_needed: int | None = None  # per side, to settle an INCONCLUSIVE verdict (None: > 50)


@dataclass(frozen=True)
class Comparison:
    threshold: float
    changes: tuple[PointChange, ...]
    warnings: tuple[str, ...]
    only_in_baseline: tuple[int, ...]
    only_in_current: tuple[int, ...]
    mismatches: tuple[str, ...] = ()  # workload/settings/environment differences: not like with like
    notes: tuple[str, ...] = ()  # what the verdicts rest on

    @property
    def regressions(self) -> list[PointChange]:
        return [c for c in self.changes if c.regression]

    @property
    def inconclusive(self) -> list[PointChange]:
        return [c for c in self.changes if c.verdict == INCONCLUSIVE]


@dataclass(frozen=True)
class NoiseFloor:
    """Between-run noise of one batch size from the history: pooled sum of squared deviations of
    log throughput and its degrees of freedom, over ``runs`` stored runs."""

    sum_of_squares: float
    dof: int
    runs: int

    @property
    def sd(self) -> float:
        return math.sqrt(self.sum_of_squares / self.dof)


def _peak(p: Point) -> int | None:
    return p.memory.device_peak_allocated_bytes or p.memory.host_peak_rss_bytes


_WORKLOAD_FIELDS = (
    "mode", "precision", "channels_last", "compile", "image_size", "h2d", "optimizer", "seq_len", "device",
    "data", "workers", "data_dir", "cudnn_benchmark", "cudnn_benchmark_limit", "compile_mode",
)  # fmt: skip
_SETTINGS_FIELDS = (
    "warmup_steps", "min_steps", "max_steps", "max_time_seconds", "min_time_seconds", "target_rel_ci", "isolate",
)  # fmt: skip
_ENV_FIELDS = (
    ("torch_version", "torch version"),
    ("cuda_version", "CUDA version"),
    ("cudnn_version", "cuDNN version"),
    ("gpu_driver_version", "GPU driver version"),
    ("torch_num_threads", "torch threads"),
)


def mismatches(baseline: SweepResult, current: SweepResult) -> list[str]:
    """Why two runs are not like with like: workload, measurement settings, hardware, software.
    (The number of repeats may differ: that is more or less evidence, not another experiment.)"""
    out = []
    bw, cw = baseline.workload, current.workload
    if bw.model != cw.model:
        out.append(f"different models: {bw.model} vs {cw.model}")
    for name in _WORKLOAD_FIELDS:
        if getattr(bw, name, None) != getattr(cw, name, None):
            out.append(f"different {name}: {getattr(bw, name, None)} vs {getattr(cw, name, None)}")
    bd, cd = getattr(baseline, "distributed", None), getattr(current, "distributed", None)
    bws, cws = (bd.world_size if bd else 1), (cd.world_size if cd else 1)
    if bws != cws:
        out.append(f"different world size (processes): {bws} vs {cws}")
    for name in _SETTINGS_FIELDS:
        if getattr(baseline.settings, name) != getattr(current.settings, name):
            out.append(
                f"different settings.{name}: {getattr(baseline.settings, name)} vs {getattr(current.settings, name)}"
            )
    be, ce = baseline.environment, current.environment
    if be.device_label != ce.device_label:
        out.append(f"different hardware: {be.device_label} vs {ce.device_label}")
    for name, label in _ENV_FIELDS:
        if getattr(be, name) != getattr(ce, name):
            out.append(f"different {label}: {getattr(be, name)} vs {getattr(ce, name)}")
    if be.gpus and ce.gpus and be.gpus[0].name == ce.gpus[0].name and be.gpu_count != ce.gpu_count:
        out.append(f"different GPU count: {be.gpu_count} vs {ce.gpu_count}")
    return out


def clock_event_warnings(result: SweepResult, side: str) -> list[str]:
    """Clock-lowering events (thermal, power cap, hardware slowdown) inside a run's timed windows."""
    out = []
    for p in result.points:
        bad = [r for r in p.telemetry.clock_event_reasons if r not in BENIGN_CLOCK_EVENTS]
        if bad:
            out.append(
                f"{side} run: GPU clocks were lowered during batch {p.batch_size}'s window "
                f"({', '.join(bad)}): its throughput is not the card's steady speed"
            )
    return out


def noise_floor(
    history: Iterable[SweepResult], like: SweepResult, exclude: Iterable[str] = ()
) -> dict[int, NoiseFloor]:
    """Per batch size, the spread of stored runs of the same configuration as ``like`` (the
    runs being compared excluded by run_id): within-run repeats where a run has them, and the spread
    of single-measurement runs' headline values between runs."""
    skip = set(exclude)
    ss: dict[int, float] = {}
    dof: dict[int, int] = {}
    runs: dict[int, int] = {}
    singles: dict[int, list[float]] = {}
    for run in history:
        if run.run_id in skip or mismatches(like, run):
            continue
        for p in run.points:
            values = [v for v in p.repeat_samples_per_sec() if v > 0] if p.status == OK else []
            if not values:
                continue
            runs[p.batch_size] = runs.get(p.batch_size, 0) + 1
            if len(values) >= 2:
                logs = [math.log(v) for v in values]
                ss[p.batch_size] = ss.get(p.batch_size, 0.0) + sum_of_squares(logs)
                dof[p.batch_size] = dof.get(p.batch_size, 0) + len(logs) - 1
            else:
                singles.setdefault(p.batch_size, []).append(math.log(values[0]))
    for b, logs in singles.items():
        if len(logs) >= 2:
            ss[b] = ss.get(b, 0.0) + sum_of_squares(logs)
            dof[b] = dof.get(b, 0) + len(logs) - 1
    return {b: NoiseFloor(ss[b], dof[b], runs[b]) for b in ss if dof.get(b, 0) > 0}


BOOTSTRAP_CHUNK_VALUES = 4_000_000  # resampled values per numpy batch: ~32 MB of indices at most


def bootstrap_ratio_ci(
    base: tuple[float, ...], cur: tuple[float, ...], samples: int = BOOTSTRAP_SAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """95% interval of mean(base)/mean(cur): the throughput ratio current/baseline.

    Vectorised with numpy, in batches of resamples (memory stays bounded): two 10,000-step points
    take a fraction of a second, where a pure-Python loop took ~10 s per batch size."""
    import numpy as np

    rng = np.random.default_rng(seed)
    b = np.asarray(base, dtype=np.float64)
    c = np.asarray(cur, dtype=np.float64)
    per_chunk = max(1, BOOTSTRAP_CHUNK_VALUES // max(len(b), len(c), 1))
    ratios = np.empty(samples)
    for start in range(0, samples, per_chunk):
        k = min(per_chunk, samples - start)
        mb = b[rng.integers(0, len(b), size=(k, len(b)), dtype=np.int32)].mean(axis=1)
        mc = c[rng.integers(0, len(c), size=(k, len(c)), dtype=np.int32)].mean(axis=1)
        ratios[start : start + k] = mb / mc
    ratios.sort()
    return float(ratios[int(0.025 * samples)]), float(ratios[int(0.975 * samples) - 1])


@dataclass(frozen=True)
class _Test:
    """One batch size's between-run test before the Holm correction."""

    p_value: float
    ci_low: float
    ci_high: float
    noise_sd: float
    evidence: str


def _repeat_test(base: tuple[float, ...], cur: tuple[float, ...], floor: NoiseFloor | None) -> _Test | None:
    """Two-sample t-test of log throughput. The variance is pooled over the repeats of both sides;
    with no repeat spread on either side, the history's noise floor stands in. None: no estimate."""
    x = [math.log(v) for v in base]
    y = [math.log(v) for v in cur]
    ss = sum_of_squares(x) + sum_of_squares(y)
    dof = max(len(x) - 1, 0) + max(len(y) - 1, 0)
    evidence = "repeats"
    if dof == 0:
        if floor is None:
            return None
        ss, dof, evidence = floor.sum_of_squares, floor.dof, "history"
    sd = math.sqrt(ss / dof)
    diff = statistics.fmean(y) - statistics.fmean(x)
    se = sd * math.sqrt(1 / len(x) + 1 / len(y))
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
    else:
        p = t_two_sided_p(diff / se, dof)
    half = t_critical(0.05, dof) * se
    return _Test(p, math.exp(diff - half) - 1, math.exp(diff + half) - 1, sd, evidence)


def _decide(change: float, significant: bool, lo: float, hi: float, threshold: float) -> str:
    if significant and change < -threshold:
        return REGRESSION
    if significant and change > threshold:
        return IMPROVEMENT
    # "within threshold" is a claim that no change beyond the threshold happened: only an interval
    # lying wholly inside +-threshold supports it. A small estimate with a wide interval (repeats
    # [100, 103, 97] vs [92, 94, 88]: -8%, interval -15% ... -1.8%) could hide a change beyond it.
    if -threshold <= lo and hi <= threshold:
        return WITHIN
    return INCONCLUSIVE


def geometric_change(base: Sequence[float], cur: Sequence[float]) -> float:
    """exp(mean log current - mean log baseline) - 1: the ratio of geometric means, the estimator
    the t-test on log throughput tests (a ratio of medians would show one number and test another)."""
    return math.exp(_log_mean(cur) - _log_mean(base)) - 1


def geometric_mean(values: Sequence[float]) -> float:
    return math.exp(_log_mean(values))


def _log_mean(values: Sequence[float]) -> float:
    return statistics.fmean(math.log(v) for v in values)


def compare(
    baseline: SweepResult,
    current: SweepResult,
    threshold: float = 0.10,
    history_noise: dict[int, NoiseFloor] | None = None,
) -> Comparison:
    """Per batch size: change, interval and verdict (see the module docstring). ``history_noise``
    (from ``noise_floor``) is used where neither side has repeats."""
    warnings: list[str] = []
    notes: list[str] = []
    found = mismatches(baseline, current)
    warnings.extend(found)
    if baseline.run_id == current.run_id:  # `baseline set main latest` then `compare --baseline main latest`
        warnings.append(
            f"baseline and current are the same run ({current.run_id}): a run compared with itself shows no change"
        )
    warnings.extend(clock_event_warnings(baseline, "baseline"))
    warnings.extend(clock_event_warnings(current, "current"))
    history_noise = history_noise or {}
    base_pts = {p.batch_size: p for p in baseline.points if p.status == OK and p.samples_per_sec}
    cur_pts = {p.batch_size: p for p in current.points if p.status == OK and p.samples_per_sec}
    common = sorted(set(base_pts) & set(cur_pts))

    tests = {}
    for b in common:
        t = _repeat_test(
            base_pts[b].repeat_samples_per_sec(), cur_pts[b].repeat_samples_per_sec(), history_noise.get(b)
        )
        if t is not None:
            tests[b] = t
    adjusted = dict(zip(tests, holm([t.p_value for t in tests.values()]), strict=True))

    changes = []
    for b in common:
        bp, cp = base_pts[b], cur_pts[b]
        bvals, cvals = bp.repeat_samples_per_sec(), cp.repeat_samples_per_sec()
        change = geometric_change(bvals, cvals)
        p_value = noise_sd = needed = None
        if b in tests:
            t = tests[b]
            lo, hi, evidence, noise_sd = t.ci_low, t.ci_high, t.evidence, t.noise_sd
            p_value = adjusted[b]
            significant = p_value < ALPHA
        else:
            evidence = "steps"
            if len(bp.step_seconds) >= 2 and len(cp.step_seconds) >= 2:
                lo, hi = bootstrap_ratio_ci(bp.step_seconds, cp.step_seconds)
                lo, hi = lo - 1, hi - 1
            else:  # no raw samples: no noise estimate, so nothing can be called significant
                lo, hi = float("-inf"), float("inf")
            significant = lo > 0 or hi < 0
        verdict = _decide(change, significant, lo, hi, threshold)
        if evidence == "steps" and verdict in (REGRESSION, IMPROVEMENT):
            # Between-run noise is unknown: two single runs of an unchanged build differed by 14%
            # on a shared CPU, beyond a step-level interval. No verdict without repeats or history.
            verdict = INCONCLUSIVE
        busy = [f"{side} {c.felt_percent:.0f}%" for side, c in (("baseline", bp.contention), ("current", cp.contention))
                if c is not None and c.contended]  # fmt: skip
        if busy and verdict in (REGRESSION, IMPROVEMENT):
            # a neighbour's share of the cores, not the build, can make such a change (an A/A pair
            # on the shared VM read -97.7%): no verdict from a contended measurement
            verdict = INCONCLUSIVE
            warnings.append(
                f"batch {b}: measured while other processes took a share of its cores ({', '.join(busy)}): "
                "INCONCLUSIVE, not a verdict; measure again on a quiet machine"
            )
        if verdict == INCONCLUSIVE and noise_sd is not None:
            needed = repeats_to_settle(noise_sd, threshold)
        bpk, cpk = _peak(bp), _peak(cp)
        changes.append(
            PointChange(
                batch_size=b,
                baseline_samples_per_sec=geometric_mean(bvals),
                current_samples_per_sec=geometric_mean(cvals),
                change=change,
                ci_low=lo,
                ci_high=hi,
                significant=significant,
                regression=verdict == REGRESSION,
                improvement=verdict == IMPROVEMENT,
                baseline_peak_bytes=bpk,
                current_peak_bytes=cpk,
                memory_change=(cpk / bpk - 1) if bpk and cpk else None,
                verdict=verdict,
                evidence=evidence,
                baseline_repeats=len(bvals),
                current_repeats=len(cvals),
                p_value=p_value,
                noise_sd=noise_sd,
                repeats_needed=needed,
            )
        )
    notes.extend(_evidence_notes(changes, history_noise))
    if not changes:
        warnings.append("no batch size was measured ok in both runs: nothing to compare")
    return Comparison(
        threshold=threshold,
        changes=tuple(changes),
        warnings=tuple(warnings),
        only_in_baseline=tuple(sorted(set(base_pts) - set(cur_pts))),
        only_in_current=tuple(sorted(set(cur_pts) - set(base_pts))),
        mismatches=tuple(found),
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class ValueVerdict:
    """The gate on one pair of repeat lists (samples/s), outside a sweep (the pytest plugin)."""

    verdict: str
    change: float  # geometric mean(current)/geometric mean(baseline) - 1, as the test estimates it
    ci_low: float | None  # 95% interval of the ratio - 1; None with fewer than two repeats a side
    ci_high: float | None
    p_value: float | None
    repeats_needed: int | None = None


def gate_values(baseline: Sequence[float], current: Sequence[float], threshold: float) -> ValueVerdict:
    """The same test as ``compare`` on one pair of repeat-level throughputs. With no spread on
    either side (one value each) the between-run noise is unknown: INCONCLUSIVE, never a verdict."""
    base = [v for v in baseline if v and v > 0]
    cur = [v for v in current if v and v > 0]
    if not base or not cur:
        raise BenchError("no throughput to compare on one side")
    change = geometric_change(base, cur)
    t = _repeat_test(tuple(base), tuple(cur), None)
    if t is None:
        return ValueVerdict(INCONCLUSIVE, change, None, None, None, None)
    verdict = _decide(change, t.p_value < ALPHA, t.ci_low, t.ci_high, threshold)
    needed = repeats_to_settle(t.noise_sd, threshold) if verdict == INCONCLUSIVE else None
    return ValueVerdict(verdict, change, t.ci_low, t.ci_high, t.p_value, needed)


def _evidence_notes(changes: list[PointChange], history_noise: dict[int, NoiseFloor]) -> list[str]:
    notes = []
    by = {e: [c for c in changes if c.evidence == e] for e in ("repeats", "history", "steps")}
    if by["repeats"]:
        c = by["repeats"][0]
        notes.append(
            f"between-run noise from the repeats ({c.baseline_repeats} baseline, {c.current_repeats} current); "
            f"t-test on log throughput, Holm-corrected across {len(by['repeats']) + len(by['history'])} batch size(s)"
        )
    if by["history"]:
        runs = max(history_noise[c.batch_size].runs for c in by["history"])
        notes.append(
            "one repeat per side: between-run noise unknown from these runs; used the history's noise floor "
            f"(up to {runs} stored runs of this configuration) at batch "
            + ", ".join(str(c.batch_size) for c in by["history"])
        )
    if by["steps"]:
        notes.append(
            "one repeat per side and no history of this configuration: between-run noise is UNKNOWN. "
            "The interval covers only step-to-step noise inside each run, which understates the noise "
            "between runs; measure with --repeat 3 (or keep runs in the history) before trusting a verdict"
        )
    return notes


def median_change(cmp: Comparison) -> float | None:
    return statistics.median(c.change for c in cmp.changes) if cmp.changes else None
