"""The compare job (``bench compare``): two stored runs (files, history ids, ``latest`` or a named
baseline), the history's noise floor for their configuration, and the gate's verdict per batch size.

``compare_runs`` returns the frozen ``Comparison``; the command renders it and turns regressions
into exit code 1. Runs that are not like with like, or share no measured batch size, are a
BenchError (one line) unless ``allow_mismatch``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.analysis.gate import Comparison, NoiseFloor, compare, noise_floor, parse_threshold
from bench.results.codec import result_from_dict
from bench.results.errors import BenchError
from bench.results.schema import SweepResult
from bench.results.store import DEFAULT_DB, get_baseline, list_runs, load_run, load_run_data

HISTORY_NOISE_RUNS = 200  # newest stored sweeps of the model looked at for the noise floor


def compare_runs(
    runs: list[str],
    *,
    db: Path | str = DEFAULT_DB,
    threshold: str | float = "10%",
    baseline_name: str | None = None,
    allow_mismatch: bool = False,
) -> Comparison:
    """Compare ``runs`` = [BASELINE, CURRENT] (or [CURRENT] with ``baseline_name``): each a result
    file, a history id or ``latest``. ``threshold``: "10%" or 0.1 (the default)."""
    limit = parse_threshold(threshold)
    if baseline_name is not None:
        if len(runs) != 1:
            raise BenchError(
                "with --baseline NAME give one run to compare: bench compare --baseline NAME CURRENT"
            )
        base, cur = load_baseline(db, baseline_name), load_run(runs[0], db)
    else:
        if len(runs) != 2:
            raise BenchError("give two runs: bench compare BASELINE CURRENT (or --baseline NAME CURRENT)")
        base, cur = load_run(runs[0], db), load_run(runs[1], db)
    cmp = compare(base, cur, limit, history_noise=history_noise(db, base, cur))
    if cmp.mismatches and not allow_mismatch:
        raise BenchError(
            "not like with like: " + "; ".join(cmp.mismatches) + " (pass --allow-mismatch to compare anyway)"
        )
    if not cmp.changes:  # a gate that compared nothing must not pass
        raise BenchError("nothing to compare: no batch size was measured ok in both runs")
    return cmp


def load_baseline(db: Path | str, name: str) -> SweepResult:
    """The sweep a named baseline points at."""
    where, data = get_baseline(db, name)
    if data.get("kind", "sweep") != "sweep":
        raise BenchError(f"baseline {name!r} ({where}) is a {data.get('kind')} run, not a sweep")
    try:
        return result_from_dict(data)
    except BenchError as exc:
        raise BenchError(f"baseline {name!r} ({where}): {exc}") from None


def history_noise(db: Path | str, baseline: SweepResult, current: SweepResult) -> dict[int, NoiseFloor]:
    """The history's noise floor for the configuration being compared (empty without a history).
    A stored run that no longer loads is skipped: the history only helps here."""
    if not Path(db).is_file():
        return {}
    stored: list[Any] = []
    for row in list_runs(db, model=current.workload.model, kind="sweep", limit=HISTORY_NOISE_RUNS):
        try:
            stored.append(result_from_dict(load_run_data(str(row.id), db)[1]))
        except (BenchError, TypeError, ValueError, KeyError):
            continue
    return noise_floor(stored, current, exclude=(baseline.run_id, current.run_id))
