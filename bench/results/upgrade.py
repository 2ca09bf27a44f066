"""Old result files, upgraded as they load: one explicit function per schema step, per kind.

Every loader (``codec.result_from_dict``, ``maxbatch_from_dict``, ``ab_from_dict``,
``noise_from_dict``, and so the history) passes the file's JSON object through :func:`upgrade`
first, which applies ``UPGRADERS[kind][v]`` for each version ``v`` from the file's up to the
current one. An upgrader takes the JSON object of version ``v`` and returns one of ``v + 1``
(a new dict; the input is never changed). Bumping a ``schema_version`` means adding its upgrader
here and a test that loads a real file of the old version (``tests/test_upgrade.py``).

History of the versions:

- sweep 1 (2026-11-25 to 2026-12-05): the first format. Fields were added to it over time without
  a bump, so a version-1 file may lack any of them (the H100 fixture and ``tests/data`` lack all).
- sweep 2: the same fields, every one written; :func:`sweep_1_to_2` fills in what a version-1
  file means where a field is missing (for example ``cudnn_benchmark: true``: bench always turned
  cuDNN autotuning on before the option existed).
- max_batch 1, ab 1, noise 1: the only versions so far.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from bench.results.errors import BenchError

Upgrader = Callable[[dict[str, Any]], dict[str, Any]]

# what a version-1 sweep file means where a field added later is missing
_SWEEP_1_RESULT = {"wall_seconds": None, "distributed": None, "advice": [], "recommendation": None}
_SWEEP_1_WORKLOAD = {
    "data": "synthetic",  # --data loader came later: synthetic batches on the device
    "workers": 0,
    "data_dir": None,
    "cudnn_benchmark": True,  # always on before the option existed
    "compile_mode": None,  # --compile-mode came later: no torch.compile
    "cudnn_benchmark_limit": None,  # torch's own default limit
}
_SWEEP_1_SETTINGS = {
    "repeat": 1,  # one measurement per point before --repeat
    # the setting's default, as a run measured again from this file would take it; that nothing
    # was watched then is each point's contention None
    "check_contention": True,
}
_SWEEP_1_POINT = {
    "timing": dict.fromkeys(  # no time accounting yet: every part unknown
        (
            "build_seconds",
            "first_step_seconds",
            "warmup_seconds",
            "measure_seconds",
            "teardown_seconds",
            "total_seconds",
            "spawn_seconds",
        )
    ),  # fmt: skip
    "repeats": [],
    "distributed": None,
    "diagnosis": None,  # `bench diagnose` recomputes verdicts when asked
    "flops_per_sample": None,
    "achieved_tflops": None,
    "mfu": None,
    "breakdown": None,
    "num_alloc_retries": None,
    "contention": None,  # not watched
}
# version 1 kept no first-step peaks apart: its device peaks include the first step's
_SWEEP_1_MEMORY = {"first_step_peak_allocated_bytes": None, "first_step_peak_reserved_bytes": None}
_SWEEP_1_TELEMETRY = {
    "gpm_sm_active_percent": None,
    "gpm_tensor_active_percent": None,
    "gpm_dram_bandwidth_percent": None,
}


def _filled(d: Any, defaults: dict[str, Any]) -> Any:
    """``d`` with each missing key of ``defaults``; anything not an object is left for the loader
    to refuse in its own words."""
    if not isinstance(d, dict):
        return d
    return {**copy.deepcopy(defaults), **d}


def sweep_1_to_2(d: dict[str, Any]) -> dict[str, Any]:
    """A version-1 sweep with every field of version 2, each missing one set to what it meant."""
    d = _filled(d, _SWEEP_1_RESULT)
    if "workload" in d:
        d["workload"] = _filled(d["workload"], _SWEEP_1_WORKLOAD)
    if "settings" in d:
        d["settings"] = _filled(d["settings"], _SWEEP_1_SETTINGS)
    points = d.get("points")
    if isinstance(points, list):
        upgraded = []
        for p in points:
            p = _filled(p, _SWEEP_1_POINT)
            if isinstance(p, dict) and isinstance(p.get("telemetry"), dict):
                p["telemetry"] = _filled(p["telemetry"], _SWEEP_1_TELEMETRY)
            if isinstance(p, dict) and isinstance(p.get("memory"), dict):
                p["memory"] = _filled(p["memory"], _SWEEP_1_MEMORY)
            upgraded.append(p)
        d["points"] = upgraded
    return {**d, "schema_version": 2}


# kind -> {version: the upgrader from it to the next}; the current version of a kind is the one
# with no upgrader, CURRENT below.
UPGRADERS: dict[str, dict[int, Upgrader]] = {
    "sweep": {1: sweep_1_to_2},
    "max_batch": {},
    "ab": {},
    "noise": {},
}
CURRENT: dict[str, int] = {"sweep": 2, "max_batch": 1, "ab": 1, "noise": 1}
_LABEL = {"sweep": "result", "max_batch": "max-batch", "ab": "ab", "noise": "noise"}


def upgrade(d: dict[str, Any], kind: str) -> dict[str, Any]:
    """``d`` (a result of ``kind`` at any version bench ever wrote) at the current version. A
    version newer than this bench, or one it never wrote, is one BenchError line."""
    version = d.get("schema_version")
    current = CURRENT[kind]
    if not isinstance(version, int) or isinstance(version, bool) or version > current:
        raise BenchError(
            f"{_LABEL[kind]} schema_version {version!r:.40} is newer than this bench understands"
        )
    if version < 1:
        raise BenchError(f"{_LABEL[kind]} schema_version {version!r} is not one bench ever wrote")
    while version < current:
        d = UPGRADERS[kind][version](d)
        version += 1
        if d.get("schema_version") != version:
            raise AssertionError(f"the {kind} upgrader from {version - 1} must return version {version}")
    return d
