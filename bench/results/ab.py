"""A/B results: one workload measured under two builds, interleaved round by round (``bench ab``).

The results layer (no torch, no measuring): the typed record of every round of both sides, the
verdict per batch size, and its JSON loader. ``kind`` is "ab"; the history stores it beside sweeps
and ``bench report`` draws its two sides as two runs (``bench.present.ab.side_sweeps``).

JSON (``schema_version`` 1)::

    {"schema_version": 1, "kind": "ab", "run_id": ..., "status": "running" | "complete" | "failed"
     | "interrupted", "workload": {...}, "settings": {...}, "environment": {...},
     "batch_sizes": [8, 32], "threshold": 0.05, "seed": 1234, "a": {...Side...}, "b": {...},
     "windows": 10, "alternate": true,
     "rounds": [{"index": 1, "order": ["B", "A"], "window_orders": ["BA", "AB", ...],
                 "runs": [{...SideRun...}, ...]}, ...],
     "verdicts": [{...BatchVerdict...}, ...], "stopped": "settled" | "max rounds" | "max time" | ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.results.codec import _build, _type_ok, environment_from_dict, load_checked, to_dict
from bench.results.errors import BenchError
from bench.results.schema import Environment, MeasureSettings, Workload
from bench.results.upgrade import upgrade

OK, ERROR = "ok", "error"  # a side run's status
SIDES = ("A", "B")


@dataclass(frozen=True)
class Side:
    """One build: a directory put first on its children's PYTHONPATH (and their working
    directory), an interpreter, or both."""

    name: str  # "A" | "B"
    path: str | None = None  # absolute; None: the caller's modules
    python: str = ""  # the interpreter its children run (absolute path)
    commit: str | None = None  # git HEAD of ``path`` when it is a checkout
    torch_version: str | None = None  # as its first child reported it


@dataclass(frozen=True)
class SidePoint:
    """One batch size in one child: its timed windows and the raw step times."""

    batch_size: int
    samples_per_sec: float  # the geometric mean of ``windows`` (one window: batch * steps / seconds)
    window_seconds: float  # all its windows together
    step_seconds: tuple[float, ...] = ()
    windows: tuple[float, ...] = ()  # samples/sec of each timed window, in the order they ran


@dataclass(frozen=True)
class SideRun:
    """One fresh child of one side in one round, measuring every batch size."""

    side: str  # "A" | "B"
    status: str  # OK | ERROR
    points: tuple[SidePoint, ...] = ()
    error: str | None = None
    seconds: float | None = None  # the child's wall time, start-up and model build included
    torch_version: str | None = None

    def samples_per_sec(self, batch_size: int) -> float | None:
        return next((p.samples_per_sec for p in self.points if p.batch_size == batch_size), None)


@dataclass(frozen=True)
class Round:
    """Both sides, a fresh child each, in a random order (``order``: who went first; ``runs`` in
    that order). With ``ABResult.alternate`` the two children take turns window by window, each
    pair in its own random order (``window_orders``: "AB" or "BA" per pair, batch sizes in turn).
    A round in which a side failed is not paired."""

    index: int  # from 1
    order: tuple[str, ...]
    runs: tuple[SideRun, ...]
    window_orders: tuple[str, ...] = ()

    def run(self, side: str) -> SideRun | None:
        return next((r for r in self.runs if r.side == side), None)

    @property
    def complete(self) -> bool:
        return len(self.runs) == len(SIDES) and all(r.status == OK for r in self.runs)


@dataclass(frozen=True)
class BatchVerdict:
    """The paired test of one batch size over the complete rounds (``bench.analysis.paired``)."""

    batch_size: int
    rounds: int  # paired rounds
    a_samples_per_sec: float | None  # geometric mean over the rounds
    b_samples_per_sec: float | None
    change: float | None  # B/A - 1: exp(mean per-round log ratio) - 1 (negative: B slower)
    ci_low: float | None  # interval of the change at ``confidence`` (Holm-adjusted level)
    ci_high: float | None
    confidence: float | None  # e.g. 0.975 for the first of two batch sizes under Holm
    p_value: float | None  # Holm-adjusted p of the verdict's claim; None before enough rounds
    verdict: str  # REGRESSION | IMPROVEMENT | within threshold | INCONCLUSIVE
    log_ratio_sd: float | None = None  # round-to-round sd of log(B/A) (~ relative)
    rounds_needed: int | None = None  # INCONCLUSIVE: rounds that would settle it (None: too many/unknown)


@dataclass(frozen=True)
class ABResult:
    run_id: str
    status: str  # "running" | "complete" | "failed" | "interrupted"
    started_at: str
    finished_at: str | None
    environment: Environment  # the parent's machine (each side's torch is in ``a``/``b``)
    workload: Workload
    settings: MeasureSettings  # of every child's window
    batch_sizes: tuple[int, ...]
    threshold: float  # 0.05 = 5%
    a: Side
    b: Side
    seed: int  # of the random side order
    min_rounds: int
    max_rounds: int
    max_time_seconds: float
    windows: int = 1  # timed windows per side, batch size and round
    alternate: bool = False  # the two children alive together, taking turns (else one after the other)
    rounds: tuple[Round, ...] = ()
    verdicts: tuple[BatchVerdict, ...] = ()
    stopped: str = ""  # "settled" | "max rounds" | "max time" | "side B failed: ..." | "interrupted"
    notices: tuple[str, ...] = ()
    tool_version: str = ""
    wall_seconds: float | None = None
    kind: str = "ab"
    schema_version: int = 1

    def side(self, name: str) -> Side:
        return self.a if name == "A" else self.b

    @property
    def regressions(self) -> list[BatchVerdict]:
        return [v for v in self.verdicts if v.verdict == "REGRESSION"]

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def _floats(values: Any, where: str) -> tuple[float, ...]:
    if not isinstance(values, list) or not all(_type_ok("float", x) for x in values):
        raise BenchError(f"{where}: expected a list of numbers")
    return tuple(float(x) for x in values)


def _side_run(d: Any, where: str) -> SideRun:
    if not isinstance(d, dict):
        raise BenchError(f"{where}: expected an object")
    points = []
    for i, p in enumerate(d.get("points") or []):
        if not isinstance(p, dict):
            raise BenchError(f"{where} point {i}: expected an object")
        p = {
            **p,
            "step_seconds": _floats(p.get("step_seconds") or [], f"{where} point {i} step_seconds"),
            "windows": _floats(p.get("windows") or [], f"{where} point {i} windows"),
        }
        points.append(_build(SidePoint, p, f"{where} point {i}"))
    return _build(SideRun, {**d, "points": tuple(points)}, where)


def ab_from_dict(d: dict[str, Any]) -> ABResult:
    """An A/B result from its JSON, every field type-checked (``codec._build``); a malformed file
    is one BenchError line. Fields from newer versions are ignored."""
    if not isinstance(d, dict) or "schema_version" not in d:
        raise BenchError("not a bench result (no schema_version)")
    if d.get("kind") != "ab":
        raise BenchError(f"expected an ab result, got kind {d.get('kind')!r}")
    d = upgrade(d, "ab")
    d = dict(d)
    d["environment"] = environment_from_dict(d.get("environment") or {})
    d["workload"] = _build(Workload, d.get("workload") or {}, "workload")
    d["settings"] = _build(MeasureSettings, d.get("settings") or {}, "settings")
    for name in ("a", "b"):
        d[name] = _build(Side, d.get(name) or {}, f"side {name.upper()}")
    sizes = d.get("batch_sizes") or []
    if not isinstance(sizes, list) or not all(_type_ok("int", b) for b in sizes):
        raise BenchError("batch_sizes: expected a list of integers")
    d["batch_sizes"] = tuple(sizes)
    rounds = []
    for i, r in enumerate(d.get("rounds") or []):
        if (
            not isinstance(r, dict)
            or not isinstance(r.get("order"), list)
            or not isinstance(r.get("runs"), list)
            or not isinstance(r.get("window_orders", []), list)
        ):
            raise BenchError(f"round {i + 1}: expected an object with order and runs")
        runs = tuple(_side_run(x, f"round {i + 1} run") for x in r["runs"])
        rounds.append(
            _build(
                Round,
                {
                    **r,
                    "order": tuple(map(str, r["order"])),
                    "runs": runs,
                    "window_orders": tuple(map(str, r.get("window_orders", []))),
                },
                f"round {i + 1}",
            )  # fmt: skip
        )
    d["rounds"] = tuple(rounds)
    d["verdicts"] = tuple(_build(BatchVerdict, v, "verdict") for v in d.get("verdicts") or [])
    notices = d.get("notices") or []
    if not isinstance(notices, list) or not all(isinstance(x, str) for x in notices):
        raise BenchError("notices: expected a list of strings")
    d["notices"] = tuple(notices)
    return _build(ABResult, d, "ab result")


def load_ab(path: str | Path) -> ABResult:
    """Read and check an A/B JSON file; any problem is one BenchError line naming it."""
    return load_checked(str(path), ab_from_dict, "ab result")
