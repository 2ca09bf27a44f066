"""Noise-scale results: the typed record of ``bench noise`` and its JSON loader (no torch).

The gradient noise scale B_noise = tr(Σ)/|G|² (McCandlish et al. 2018, "the simple noise scale")
is the batch size at which the gradient's noise and its signal are about equal: below it a larger
batch buys nearly proportionally fewer steps, far above it almost none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.results.codec import _build, environment_from_dict, load_checked, to_dict
from bench.results.errors import BenchError
from bench.results.schema import Environment
from bench.results.upgrade import upgrade


@dataclass(frozen=True)
class NoiseDraw:
    """One draw at fixed weights: a big batch split into ``micro_batches`` small ones.

    ``small_sq_norm``: the mean over the micro-batches of |g_small|² (each a mean-loss gradient
    over ``small_batch`` examples); ``big_sq_norm``: |g_big|², the gradient of their mean."""

    small_sq_norm: float
    big_sq_norm: float


@dataclass(frozen=True)
class NoiseEstimate:
    """The two-batch-size estimate over many draws (``bench.analysis.noise_scale.estimate``).

    ``gradient_sq_norm`` |G|² and ``trace_sigma`` tr(Σ) are averaged over the draws separately and
    then divided; ``ci_low``/``ci_high`` is a 95% delta-method interval of that ratio (None while
    |G|² is not yet resolved above zero)."""

    noise_scale: float | None  # samples (a batch size)
    gradient_sq_norm: float
    trace_sigma: float
    ci_low: float | None
    ci_high: float | None
    draws: int
    population: int | None  # the data set size the finite-population correction used, else None

    @property
    def relative_half_width(self) -> float:
        """CI half-width / estimate (inf while there is no interval)."""
        if self.noise_scale is None or self.ci_low is None or self.ci_high is None or self.noise_scale <= 0:
            return math.inf
        return (self.ci_high - self.ci_low) / 2 / self.noise_scale


@dataclass(frozen=True)
class NoiseResult:
    """``bench noise``: the simple noise scale of a model at given weights on a data set."""

    run_id: str
    started_at: str
    model: str
    device: str
    dataset: str  # what was read: "pkg.mod:factory", an ImageFolder path
    dataset_size: int | None  # examples; None when the data set has no length
    small_batch: int  # examples per micro-batch (the small batch of the estimator)
    big_batch: int  # examples per draw (the big batch: the micro-batches' mean gradient)
    checkpoint: str | None
    train_steps: int  # SGD steps taken before measuring (0: the weights as given)
    train_lr: float | None
    estimate: NoiseEstimate
    draws: tuple[NoiseDraw, ...]  # the raw measurements, in order
    converged: bool  # the CI reached ``target_rel_ci`` before ``max_time_seconds``
    target_rel_ci: float
    max_time_seconds: float
    seconds: float  # measuring only (training and building excluded)
    wall_seconds: float  # the whole job
    environment: Environment | None = None
    world_size: int = 1  # torchrun: small = one rank's gradient, big = the all-reduced one
    notices: tuple[str, ...] = ()
    status: str = "complete"
    kind: str = "noise"
    schema_version: int = 1

    @property
    def noise_scale(self) -> float | None:
        return self.estimate.noise_scale

    def to_dict(self) -> dict[str, Any]:
        d = to_dict(self)
        head = {"schema_version": d.pop("schema_version"), "kind": d.pop("kind")}
        return {**head, **d}


def noise_from_dict(d: dict[str, Any]) -> NoiseResult:
    """A noise result from its JSON, every scalar field type-checked; a malformed one is one line."""
    if not isinstance(d, dict) or "schema_version" not in d:
        raise BenchError("not a bench result (no schema_version)")
    if d.get("kind") != "noise":
        raise BenchError(f"expected a noise result, got kind {d.get('kind')!r}")
    d = upgrade(d, "noise")
    d = dict(d)
    d["estimate"] = _build(NoiseEstimate, d.get("estimate") or {}, "estimate")
    draws = d.get("draws") or []
    if not isinstance(draws, list):
        raise BenchError("draws: expected a list")
    d["draws"] = tuple(_build(NoiseDraw, x, f"draw {i}") for i, x in enumerate(draws))
    env = d.get("environment")
    d["environment"] = environment_from_dict(env) if env is not None else None
    notices = d.get("notices") or []
    if not isinstance(notices, list) or not all(isinstance(x, str) for x in notices):
        raise BenchError("field 'notices' should be a list of strings")
    d["notices"] = tuple(notices)
    return _build(NoiseResult, d, "noise result")


def load_noise(path: str | Path) -> NoiseResult:
    """Read and check a noise-scale JSON file; any problem is one BenchError line naming it."""
    return load_checked(str(path), noise_from_dict, "noise result")


def parse_noise_scale(text: str | float) -> tuple[float, str]:
    """``--noise-scale`` / a profile's ``noise_scale``: a number of samples, or a ``bench noise``
    result file. Returns (B_noise, where it came from); BenchError (one line) otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, source = float(text), "given"
    else:
        try:
            value, source = float(str(text)), "given"
        except ValueError:
            result = load_noise(str(text))
            if result.noise_scale is None:
                raise BenchError(f"{text}: the noise scale was not resolved (|G|² not above zero)") from None
            value = result.noise_scale
            source = f"{text} ({result.model}, {result.train_steps} training steps)"
    if not (math.isfinite(value) and value > 0):
        raise BenchError(f"--noise-scale must be a positive number of samples or a result file, got {text}")
    return value, source
