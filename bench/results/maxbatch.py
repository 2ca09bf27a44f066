"""Max-batch results: the typed record of a search (probes, memory model, soak), and its JSON loader.

The results layer (beside ``bench.results.schema``): no torch, no measuring, so ``bench report``/``import``/
``history`` load max-batch files without the search's imports. ``bench.jobs.maxbatch`` re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.results.codec import _build, environment_from_dict, load_checked, to_dict
from bench.results.errors import BenchError
from bench.results.schema import Environment, Timing, Workload
from bench.results.upgrade import upgrade

PROBE_STEPS = 3  # steps per probe: optimizer state appears at step 1, the peak is steady by step 3
FIT, OOM, OVER_BUDGET, ERROR = "fit", "oom", "over_budget", "error"  # a probe's outcome


@dataclass(frozen=True)
class ProbeRecord:
    """One probe. ``peak_bytes`` is what the budget is compared with: the child's peak RSS on CPU,
    the caching allocator's peak reserved bytes on GPU."""

    batch_size: int
    outcome: str  # FIT | OOM | OVER_BUDGET | ERROR
    peak_bytes: int | None
    seconds: float
    steps: int = PROBE_STEPS
    peak_allocated_bytes: int | None = None  # GPU: peak bytes held by tensors
    peak_reserved_bytes: int | None = None  # GPU: peak bytes held by the caching allocator
    alloc_retries: int | None = None  # GPU: cudaMalloc retries during this probe
    leaked_bytes: int | None = None  # in-process: allocated bytes left after cleanup
    detail: str | None = None  # the error line, or why a child was stopped
    # GPU: the first step of a new shape carries cuDNN's autotune workspace; the steps after it
    # do not. ``peak_bytes`` (the fit decision) is the larger; the memory model uses the steady one.
    first_step_peak_bytes: int | None = None
    steady_peak_bytes: int | None = None
    timing: Timing | None = None  # where the probe's wall time went
    repeat: bool = False  # a second run of a boundary size (CPU: does the answer repeat?)

    @property
    def fits(self) -> bool:
        return self.outcome == FIT


@dataclass(frozen=True)
class MemoryModelInfo:
    """memory(b) ≈ fixed_bytes + per_sample_bytes * b, fitted to the probes that fit."""

    fixed_bytes: float
    per_sample_bytes: float
    max_relative_error: float  # the largest |measured - predicted| / measured over fitting probes


@dataclass(frozen=True)
class SoakResult:
    """The chosen max run for ``steps`` steps. ``probes``: every soak run, the fallbacks included."""

    batch_size: int | None  # the size that passed (None: none did)
    steps: int
    ok: bool
    seconds: float
    detail: str
    probes: tuple[ProbeRecord, ...] = ()


@dataclass(frozen=True)
class MaxBatchResult:
    """The answer with its proof: ``max_batch_size`` ran and fit, ``failed_batch_size`` (max +
    granularity) ran and did not, unless ``cap_reached``. Sizes that were not run never appear."""

    workload: Workload
    environment: Environment
    max_batch_size: int | None  # None: not even ``granularity`` fit
    safe_batch_size: int | None  # the size to train with: leaves ``headroom_fraction`` free
    granularity: int
    budget_bytes: int
    memory_model: MemoryModelInfo | None
    probes: tuple[ProbeRecord, ...]  # the search's probes, in order (the soak's are under ``soak``)
    seconds: float  # the whole search, soak included
    soak: SoakResult | None
    failed_batch_size: int | None
    exact: bool  # the certificate holds (False only if the probe limit stopped the search)
    cap_reached: bool
    budget_source: str  # "free device memory" | "memory limit" | "50% of available RAM"
    headroom_fraction: float
    headroom_reason: str
    leaks: tuple[str, ...] = ()
    notices: tuple[str, ...] = ()
    run_id: str = ""
    started_at: str = ""
    # The band the answer lies in when the boundary did not repeat (CPU RSS varies between runs):
    # every size up to ``band_low`` fit each time it ran; ``band_high`` fit at least once.
    # None: not checked (GPU: the caching allocator gives the same peak again).
    band_low: int | None = None
    band_high: int | None = None
    repeats: bool | None = None  # the boundary probes gave the same outcome again
    stopped: str = ""  # why an inexact search stopped early: "probe limit" | "time budget"
    wall_seconds: float | None = None  # the whole command, setup included
    kind: str = "max_batch"
    schema_version: int = 1

    @property
    def probe_count(self) -> int:
        return len(self.probes)

    def to_dict(self) -> dict[str, Any]:
        d = to_dict(self)
        head = {"schema_version": self.schema_version, "kind": self.kind}
        d.pop("schema_version"), d.pop("kind")
        probes_at = list(d).index("probes") + 1
        items = list(d.items())
        return {**head, **dict(items[:probes_at]), "probe_count": self.probe_count, **dict(items[probes_at:])}


def maxbatch_from_dict(d: dict[str, Any]) -> MaxBatchResult:
    """A max-batch result from its JSON, every field type-checked as sweeps are
    (``codec._build``): a malformed file is one BenchError line here, not a crash in a later
    report or sweep. Fields from newer versions are ignored; ``probe_count`` is derived."""
    if not isinstance(d, dict) or "schema_version" not in d:
        raise BenchError("not a bench result (no schema_version)")
    if d.get("kind") != "max_batch":
        raise BenchError(f"expected a max_batch result, got kind {d.get('kind')!r}")
    d = upgrade(d, "max_batch")

    def probes(items: Any, where: str) -> tuple[ProbeRecord, ...]:
        if not isinstance(items, list):
            raise BenchError(f"{where}: expected a list, got {type(items).__name__}")
        out = []
        for i, p in enumerate(items):
            if isinstance(p, dict) and isinstance(p.get("timing"), dict):
                p = {**p, "timing": _build(Timing, p["timing"], f"{where} {i} timing")}
            out.append(_build(ProbeRecord, p, f"{where} {i}"))
        return tuple(out)

    d = dict(d)
    d["workload"] = _build(Workload, d.get("workload") or {}, "workload")
    d["environment"] = environment_from_dict(d.get("environment") or {})
    d["probes"] = probes(d.get("probes") or [], "probe")
    model = d.get("memory_model")
    d["memory_model"] = _build(MemoryModelInfo, model, "memory_model") if model is not None else None
    soak = d.get("soak")
    if soak is not None:
        if not isinstance(soak, dict):
            raise BenchError(f"soak: expected an object, got {type(soak).__name__}")
        soak = {**soak, "probes": probes(soak.get("probes") or [], "soak probe")}
        d["soak"] = _build(SoakResult, soak, "soak")
    for key in ("leaks", "notices"):
        items = d.get(key) or []
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise BenchError(f"field {key!r} should be a list of strings")
        d[key] = tuple(items)
    d.pop("probe_count", None)
    return _build(MaxBatchResult, d, "max-batch result")


def load_max_batch(path: str | Path) -> MaxBatchResult:
    """Read and check a max-batch JSON file; any problem is one BenchError line naming it."""
    return load_checked(str(path), maxbatch_from_dict, "max-batch result")
