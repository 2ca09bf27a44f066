"""The JSON form of the result types in ``bench.results.schema``: ``to_dict``/``dumps`` to write
them; reading a file, upgrading it to the current ``schema_version`` (``bench.results.upgrade``) and
building the frozen types with every field type-checked, so a malformed or hostile file is one
``BenchError`` line, never an internal error downstream.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from bench.results.errors import BenchError, first_line
from bench.results.schema import (
    ERROR,
    OK,
    OOM,
    Advice,
    Choice,
    Contention,
    Diagnosis,
    Distributed,
    Environment,
    GoodputRow,
    GpuInfo,
    MeasureSettings,
    MemoryStats,
    Point,
    PointDistributed,
    RankStats,
    Recommendation,
    RepeatSample,
    StepBreakdown,
    StepStats,
    SweepResult,
    Telemetry,
    Timing,
    Workload,
)
from bench.results.upgrade import upgrade


def _clean(value: Any) -> Any:
    """dataclasses.asdict plus: tuples -> lists, non-finite floats -> None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    return _clean(dataclasses.asdict(obj))


def _type_ok(annotation: str, value: Any) -> bool:
    """Does a JSON value fit a field's annotation (a string, as ``from __future__`` leaves it)?
    Only scalar fields are checked; nested objects are built (and checked) by their own class."""
    if value is None:
        return "None" in annotation
    kinds = {k.strip() for k in annotation.split("|")}
    if kinds & {"float"}:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kinds & {"int"}:
        return isinstance(value, int) and not isinstance(value, bool)
    if kinds & {"bool"}:
        return isinstance(value, bool)
    if kinds & {"str"}:
        return isinstance(value, str)
    return True


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise BenchError(f"{where}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in fields}  # ignore fields from newer versions
    for key, value in kwargs.items():
        annotation = fields[key].type
        if isinstance(annotation, str) and not _type_ok(annotation, value):
            raise BenchError(f"{where}: field {key!r} should be {annotation}, got {value!r:.40}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise BenchError(f"{where}: {exc}") from None


def point_from_dict(d: dict[str, Any]) -> Point:
    d = dict(d)
    stats = d.get("step_stats")
    d["step_stats"] = _build(StepStats, stats, "step_stats") if stats else None
    d["memory"] = _build(MemoryStats, d.get("memory") or {}, "memory")
    tel = dict(d.get("telemetry") or {})
    tel["clock_event_reasons"] = tuple(tel.get("clock_event_reasons") or ())
    d["telemetry"] = _build(Telemetry, tel, "telemetry")
    d["timing"] = _build(Timing, d.get("timing") or {}, "timing")
    diag = d.get("diagnosis")
    if diag:
        diag = dict(diag)
        diag["evidence"] = tuple(str(e) for e in diag.get("evidence") or ())
        d["diagnosis"] = _build(Diagnosis, diag, "diagnosis")
    else:
        d["diagnosis"] = None
    bd = d.get("breakdown")
    if bd:
        bd = dict(bd)
        waits = bd.get("data_wait_seconds") or []
        if not isinstance(waits, list) or not all(_type_ok("float", x) for x in waits):
            raise BenchError(
                f"point {d.get('batch_size')}: breakdown.data_wait_seconds should be a list of numbers"
            )
        bd["data_wait_seconds"] = tuple(float(x) for x in waits)
    d["breakdown"] = _build(StepBreakdown, bd, "breakdown") if bd else None
    steps = d.get("step_seconds") or []
    if not isinstance(steps, list) or not all(_type_ok("float", x) for x in steps):
        raise BenchError(f"point {d.get('batch_size')}: step_seconds should be a list of numbers")
    if any(not (math.isfinite(x) and x > 0) for x in steps):  # compare and stats divide by them
        raise BenchError(f"point {d.get('batch_size')}: step_seconds must all be positive, finite seconds")
    d["step_seconds"] = tuple(float(x) for x in steps)
    d["repeats"] = tuple(_build(RepeatSample, r, "repeat") for r in d.get("repeats") or ())
    cont = d.get("contention")
    d["contention"] = _build(Contention, cont, f"point {d.get('batch_size')}: contention") if cont else None
    if d.get("distributed") is not None:
        d["distributed"] = _point_distributed_from_dict(d["distributed"])
    return _checked_point(_build(Point, d, f"point {d.get('batch_size')}"))


POINT_STATUSES = (OK, OOM, ERROR)


def _checked_point(p: Point) -> Point:
    """What tables, plots and compare divide by, or look up, is in range (a hand-edited or hostile
    file is refused in one line, never an internal error downstream)."""
    if not isinstance(p.batch_size, int) or isinstance(p.batch_size, bool) or p.batch_size <= 0:
        raise BenchError(f"point batch_size must be a positive integer, got {p.batch_size!r:.40}")
    for status, rate, where in (
        (p.status, p.samples_per_sec, f"point {p.batch_size}"),
        *((r.status, r.samples_per_sec, f"point {p.batch_size}, a repeat") for r in p.repeats),
    ):
        if status not in POINT_STATUSES:
            raise BenchError(
                f"{where}: unknown status {status!r:.40} (expected one of {', '.join(POINT_STATUSES)})"
            )
        if rate is not None and not (_type_ok("float", rate) and math.isfinite(rate) and rate > 0):
            raise BenchError(f"{where}: samples_per_sec must be a positive, finite number, got {rate!r:.40}")
    return p


def _point_distributed_from_dict(d: dict[str, Any]) -> PointDistributed:
    if not isinstance(d, dict):
        raise BenchError(f"distributed: expected an object, got {type(d).__name__}")
    d = dict(d)
    ranks = []
    for r in d.get("ranks") or ():
        r = dict(r) if isinstance(r, dict) else r
        if isinstance(r, dict):
            r["step_stats"] = (
                _build(StepStats, r["step_stats"], "step_stats") if r.get("step_stats") else None
            )
            r["memory"] = _build(MemoryStats, r.get("memory") or {}, "memory")
        ranks.append(_build(RankStats, r, "rank"))
    d["ranks"] = tuple(ranks)
    return _build(PointDistributed, d, "distributed")


def environment_from_dict(d: dict[str, Any]) -> Environment:
    d = dict(d)
    d["gpus"] = tuple(_build(GpuInfo, g, "gpu") for g in d.get("gpus") or ())
    return _build(Environment, d, "environment")


def result_from_dict(d: dict[str, Any]) -> SweepResult:
    """Load a sweep result, upgrading older schema versions as they load (``bench.results.upgrade``)."""
    if not isinstance(d, dict) or "schema_version" not in d:
        raise BenchError("not a bench result (no schema_version)")
    if d.get("kind", "sweep") != "sweep":
        raise BenchError(f"expected a sweep result, got kind {d.get('kind')!r}")
    d = dict(upgrade(d, "sweep"))
    d["environment"] = environment_from_dict(d.get("environment") or {})
    d["workload"] = _build(Workload, d.get("workload") or {}, "workload")
    d["settings"] = _build(MeasureSettings, d.get("settings") or {}, "settings")
    d["points"] = tuple(point_from_dict(p) for p in d.get("points") or ())
    if d.get("distributed") is not None:
        d["distributed"] = _build(Distributed, d["distributed"], "distributed")
    d["notices"] = tuple(d.get("notices") or ())
    d["advice"] = tuple(_build(Advice, a, "advice") for a in d.get("advice") or ())
    if d.get("recommendation") is not None:
        d["recommendation"] = recommendation_from_dict(d["recommendation"])
    return _build(SweepResult, d, "result")


def recommendation_from_dict(d: dict[str, Any]) -> Recommendation:
    if not isinstance(d, dict):
        raise BenchError(f"recommendation: expected an object, got {type(d).__name__}")
    d = dict(d)
    for pick in ("best", "knee", "safe_max", "goodput"):
        d[pick] = _build(Choice, d[pick], pick) if d.get(pick) is not None else None
    rows = d.get("goodput_rows") or []
    if not isinstance(rows, list):
        raise BenchError("recommendation: goodput_rows should be a list")
    d["goodput_rows"] = tuple(_build(GoodputRow, r, "goodput row") for r in rows)
    d["notes"] = tuple(str(n) for n in d.get("notes") or ())
    for key in ("indistinguishable", "unconverged", "not_ranked"):
        sizes = d.get(key) or []
        if not isinstance(sizes, list) or not all(_type_ok("int", b) for b in sizes):
            raise BenchError(f"recommendation: {key} should be a list of batch sizes, got {sizes!r:.40}")
        d[key] = tuple(sizes)
    return _build(Recommendation, d, "recommendation")


def dumps(obj: Any) -> str:
    return json.dumps(to_dict(obj), indent=2, allow_nan=False)


# The largest result file bench reads: a 10,000-step cap, repeats and telemetry stay far below it;
# beyond it, a file is not one bench wrote (and compare's bootstrap would crawl through it).
MAX_RESULT_BYTES = 32 * 2**20


def read_result_json(path: str) -> dict[str, Any]:
    """The JSON object of a result file (any kind); a missing, unreadable, corrupt or foreign file
    is one BenchError line naming it."""
    try:
        size = os.path.getsize(path)
        if size > MAX_RESULT_BYTES:
            raise BenchError(
                f"{path}: {size / 2**20:.0f} MiB is too large for a bench result "
                f"(at most {MAX_RESULT_BYTES // 2**20} MiB)"
            )
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise BenchError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BenchError(f"{path}: is a directory, not a result file") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError; an int past Python's digit limit
        raise BenchError(f"{path}: not valid JSON ({first_line(exc, 160)})") from None
    except RecursionError:
        raise BenchError(f"{path}: not a bench result (nested too deeply to read)") from None
    except OSError as exc:
        raise BenchError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise BenchError(f"{path}: not a bench result (no schema_version)")
    return data


def load_checked(path: str, from_dict: Any, what: str) -> Any:
    """Read a result file with ``from_dict`` (which type-checks it); any problem becomes one
    BenchError line naming the file ("malformed WHAT" for what the checks did not word)."""
    data = read_result_json(path)
    try:
        return from_dict(data)
    except BenchError as exc:
        raise BenchError(f"{path}: {exc}") from None
    except (TypeError, ValueError, KeyError) as exc:
        raise BenchError(f"{path}: malformed {what} ({exc})") from None


def load_result(path: str) -> SweepResult:
    """Read a sweep JSON file; any problem becomes one BenchError line naming the file."""
    return load_checked(path, result_from_dict, "result")
