"""Results history in embedded SQLite (default ``.bench/results.db``). No torch here.

Every sweep and max-batch run is stored whole (its JSON) with summary columns to filter on, and a
sweep's points get a row each. WAL mode and one transaction per run: several processes can write
at once (a writer waits up to ``BUSY_TIMEOUT_MS`` for the lock instead of failing, first use
included), and a writer killed mid-way leaves the database as it was before that run.

Writers (``save_run``, ``import_file``, ``set_baseline``) create the history and upgrade it by
``PRAGMA user_version`` (``MIGRATIONS``). Readers open it read-only (``mode=ro``): they create,
switch and migrate nothing, so a read-only or old history can still be read, and a missing one is
"no history yet". Every SQLite failure leaves as one ``BenchError`` line naming the database.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from bench.results.ab import load_ab
from bench.results.codec import load_result, read_result_json, result_from_dict, to_dict
from bench.results.errors import BenchError
from bench.results.history_db import (  # noqa: F401 - DEFAULT_DB and connect are the store's API too
    DEFAULT_DB,
    MAX_SQLITE_INT,
    _has_table,
    _history_errors,
    _immediate,
    _reading,
    check_history_path,
    connect,
)
from bench.results.maxbatch import load_max_batch, maxbatch_from_dict
from bench.results.noise import load_noise
from bench.results.schema import SweepResult


def _no_history(path: Path | str) -> str:
    """One line for a missing history; a relative path says where it was looked for, since the
    default (.bench/results.db) is found from the current directory."""
    where = "" if Path(path).is_absolute() else f" (relative to the current directory, {Path.cwd()})"
    return (
        f"no results history at {path}{where}: run a sweep or `bench import` first, or point at "
        "another history with --db PATH or $BENCH_DB"
    )


_RUN_COLUMNS = (
    "id, run_id, kind, created_at, model, device_label, mode, precision, status,"
    " best_batch_size, best_samples_per_sec"
)


def _run_columns(conn: sqlite3.Connection, table: str = "") -> str:
    """The RunRow columns. Readers never migrate, so a history from before migration 3 has no
    ``world_size`` column: its runs read as one process."""
    has = any(row[1] == "world_size" for row in conn.execute("PRAGMA table_info(runs)"))
    prefix = f"{table}." if table else ""
    names = [f"{prefix}{c.strip()}" for c in _RUN_COLUMNS.split(",")]
    return ", ".join([*names, f"{prefix}world_size" if has else "1"])


@dataclass(frozen=True)
class RunRow:
    id: int
    run_id: str
    kind: str
    created_at: str
    model: str | None
    device_label: str | None
    mode: str | None
    precision: str | None
    status: str | None
    best_batch_size: int | None
    best_samples_per_sec: float | None
    world_size: int = 1  # processes of a data-parallel (torchrun) run


def _summary(data: dict[str, Any]) -> dict[str, Any]:
    wl = data.get("workload") or {"model": data.get("model"), "device": data.get("device")}  # noise: flat
    env = data.get("environment") or {}
    gpus = env.get("gpus") or []
    label = gpus[0].get("name") if gpus else env.get("cpu_model")
    kind = data.get("kind", "sweep")
    best_b = best_s = None
    if kind == "sweep":
        ok = [p for p in data.get("points") or [] if p.get("status") == "ok" and p.get("samples_per_sec")]
        if ok:
            top = max(ok, key=lambda p: p["samples_per_sec"])
            best_b, best_s = top["batch_size"], top["samples_per_sec"]
    elif kind == "max_batch":
        best_b = data.get("max_batch_size")
    run_id = data.get("run_id") or (
        f"{kind}-{wl.get('model')}-{env.get('hostname')}-{data.get('seconds')}-{len(data.get('probes') or [])}"
    )
    created = data.get("started_at") or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "run_id": run_id,
        "kind": kind,
        "created_at": created,
        "model": wl.get("model"),
        "device_label": label,
        "device": wl.get("device"),
        "mode": wl.get("mode"),
        "precision": wl.get("precision"),
        "status": data.get("status", "complete"),
        "best_batch_size": best_b,
        "best_samples_per_sec": best_s,
        "world_size": int((data.get("distributed") or {}).get("world_size") or 1),
    }


def _check_int(value: Any, what: str) -> None:
    if isinstance(value, int) and not -MAX_SQLITE_INT - 1 <= value <= MAX_SQLITE_INT:
        raise BenchError(f"cannot store {what} {value}: too large for the history (at most 2**63 - 1)")


def save_run(db_path: Path | str, result: Any) -> int:
    """Store one run, or replace the run with the same run_id in place: its history id stays (a
    resumed or re-imported run keeps the id that `bench compare 1 latest` and baselines name).
    Returns the id. Any history problem is one BenchError line."""
    if isinstance(result, SweepResult):
        data = to_dict(result)
    elif hasattr(result, "to_dict"):
        data = result.to_dict()
    elif isinstance(result, dict):
        data = result
    else:
        raise TypeError(f"cannot store {type(result).__name__}")
    row = _summary(data)
    _check_int(row["best_batch_size"], "batch size")
    point_rows = []
    for p in data.get("points") or []:
        stats = p.get("step_stats") or {}
        mem = p.get("memory") or {}
        _check_int(p["batch_size"], "batch size")
        point_rows.append(
            (
                p["batch_size"], p["status"], p.get("samples_per_sec"), stats.get("median_seconds"),
                mem.get("device_peak_allocated_bytes"), mem.get("host_peak_rss_bytes"),
            )
        )  # fmt: skip
    path = Path(db_path)
    conn = connect(path)
    try:
        with _history_errors(path), _immediate(conn):
            values = {**row, "json": json.dumps(data)}
            found = conn.execute("SELECT id FROM runs WHERE run_id = ?", (row["run_id"],)).fetchone()
            if found is not None:
                pk = int(found[0])
                conn.execute(
                    "UPDATE runs SET kind = :kind, created_at = :created_at, model = :model,"
                    " device_label = :device_label, device = :device, mode = :mode, precision = :precision,"
                    " status = :status, best_batch_size = :best_batch_size,"
                    " best_samples_per_sec = :best_samples_per_sec, world_size = :world_size,"
                    " json = :json WHERE id = :pk",
                    {**values, "pk": pk},
                )
                conn.execute("DELETE FROM points WHERE run_pk = ?", (pk,))
            else:
                cur = conn.execute(
                    "INSERT INTO runs (run_id, kind, created_at, model, device_label, device, mode, precision,"
                    " status, best_batch_size, best_samples_per_sec, world_size, json)"
                    " VALUES (:run_id, :kind, :created_at, :model, :device_label, :device, :mode, :precision,"
                    " :status, :best_batch_size, :best_samples_per_sec, :world_size, :json)",
                    values,
                )
                pk = int(cur.lastrowid)
            conn.executemany(
                "INSERT INTO points VALUES (?, ?, ?, ?, ?, ?, ?)", [(pk, *r) for r in point_rows]
            )
        return pk
    finally:
        conn.close()


def import_file(db_path: Path | str, path: str) -> int:
    """Import one JSON result file (sweep or max-batch); a bad file is one BenchError line."""
    data = read_result_json(path)
    if "kind" not in data:
        raise BenchError(f"{path}: not a bench result (no kind)")
    if data["kind"] == "sweep":
        load_result(path)  # full validation
    elif data["kind"] == "max_batch":
        load_max_batch(path)  # full validation: a later report or sweep never meets a bad one
    elif data["kind"] == "ab":
        load_ab(path)
    elif data["kind"] == "noise":
        load_noise(path)
    else:
        raise BenchError(f"{path}: unknown result kind {data['kind']!r} (sweep, max_batch, ab or noise)")
    return save_run(db_path, data)


def list_runs(
    db_path: Path | str = DEFAULT_DB,
    *,
    model: str | None = None,
    device: str | None = None,
    since: str | None = None,
    kind: str | None = None,
    limit: int = 100,
) -> list[RunRow]:
    """Runs newest first; ``device`` matches the GPU/CPU name as a substring, ``since`` an ISO date."""
    sql = "SELECT {columns} FROM runs WHERE 1=1"
    args: list[Any] = []
    if model:
        sql += " AND model = ?"
        args.append(model)
    if device:
        sql += " AND device_label LIKE ?"
        args.append(f"%{device}%")
    if since:
        sql += " AND created_at >= ?"
        args.append(since)
    if kind:
        sql += " AND kind = ?"
        args.append(kind)
    sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
    args.append(limit)
    with _reading(db_path) as conn:
        if conn is None:
            return []
        return [RunRow(*row) for row in conn.execute(sql.format(columns=_run_columns(conn)), args)]


def _is_run_id(ref: str) -> bool:
    """A history id: ASCII digits only ('²' is a digit to str.isdigit, not to int())."""
    return ref.isascii() and ref.isdigit()


def load_run_data(ref: str, db_path: Path | str = DEFAULT_DB) -> tuple[str, dict[str, Any]]:
    """(where it came from, its JSON) for a run named by file path, history id, or ``latest``
    (the newest sweep). Sweeps and max-batch results alike; a bad ref is one BenchError line."""
    if ref != "latest" and not _is_run_id(ref):
        if not Path(ref).exists():
            raise BenchError(f"{ref}: no such file (name a result file, a history id, or 'latest')")
        return ref, read_result_json(ref)
    with _reading(db_path) as conn:
        if conn is None:
            raise BenchError(_no_history(db_path))
        if ref == "latest":
            row = conn.execute(
                "SELECT id, json FROM runs WHERE kind = 'sweep' ORDER BY created_at DESC, id DESC LIMIT 1"
            ).fetchone()
        else:
            row = conn.execute("SELECT id, json FROM runs WHERE id = ?", (int(ref),)).fetchone()
    if row is None:
        raise BenchError(f"no run {ref!r} in {db_path}")
    return f"history #{row[0]}", _stored_json(db_path, row[0], row[1])


def _stored_json(db_path: Path | str, pk: int, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise BenchError(f"results history {db_path}: run {pk} is damaged (its JSON does not load)")
    return data


def load_run(ref: str, db_path: Path | str = DEFAULT_DB) -> SweepResult:
    """A sweep by file path, by id in the history, or ``latest``."""
    if ref != "latest" and not _is_run_id(ref):
        return load_result(ref)
    _, data = load_run_data(ref, db_path)
    if data.get("kind", "sweep") != "sweep":
        raise BenchError(f"run {ref} is a {data.get('kind')} run, not a sweep")
    return result_from_dict(data)


def same_workload(result: SweepResult, search: dict[str, Any]) -> bool:
    """Does a max-batch search (its JSON) apply to this sweep: same model, precision, layout,
    input size and hardware? (The search is of the training step; it bounds inference too.)"""
    wl = search.get("workload") or {}
    env = search.get("environment") or {}
    gpus = env.get("gpus") or []
    label = gpus[0].get("name") if gpus else env.get("cpu_model")
    return (
        wl.get("model") == result.workload.model
        and wl.get("precision") == result.workload.precision
        and bool(wl.get("channels_last")) == result.workload.channels_last
        and wl.get("image_size") == result.workload.image_size
        and label == result.environment.device_label
    )


def matching_max_batch(db_path: Path | str | None, result: SweepResult) -> dict[str, Any] | None:
    """The newest max-batch search in the history that applies to ``result`` (None: none, or no
    history)."""
    if db_path is None:
        return None
    with _reading(db_path) as conn:
        if conn is None:
            return None
        rows = conn.execute(
            "SELECT id, json FROM runs WHERE kind = 'max_batch' AND model = ? ORDER BY created_at DESC, id DESC LIMIT 50",
            (result.workload.model,),
        ).fetchall()
    return next(
        (
            d
            for pk, text in rows
            if same_workload(result, d := _stored_json(db_path, pk, text)) and _valid_search(d)
        ),
        None,
    )


def _valid_search(data: dict[str, Any]) -> bool:
    """A stored max-batch search that loads (one imported before imports were checked may not):
    a bad one is skipped, never a crash in the sweep or report that looks it up. One a sticky CUDA
    error stopped holds its finished probes, not an answer: skipped too."""
    if data.get("stopped") == "sticky CUDA error":
        return False
    try:
        maxbatch_from_dict(data)
    except (BenchError, TypeError, ValueError, KeyError):
        return False
    return True


# --------------------------------------------------------------------------- named baselines


class Baseline(NamedTuple):
    """A named baseline: the run it points at, and when it was named (ISO time, UTC)."""

    name: str
    run: RunRow
    created_at: str


def _find_run(conn: sqlite3.Connection, db_path: Path | str, ref: str) -> RunRow:
    """A stored run by history id, run_id, ``latest`` (the newest sweep), or a result file that
    is in the history (by its run_id)."""
    ref = ref.strip()
    if ref == "latest":
        sql, args = "kind = 'sweep' ORDER BY created_at DESC, id DESC LIMIT 1", ()
    elif _is_run_id(ref):
        sql, args = "id = ?", (int(ref),)
    else:
        run_id = ref
        if (
            conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (ref,)).fetchone() is None
            and Path(ref).is_file()
        ):
            run_id = read_result_json(ref).get("run_id") or ref
        sql, args = "run_id = ?", (run_id,)
    found = conn.execute(f"SELECT {_run_columns(conn)} FROM runs WHERE {sql}", args).fetchone()
    if found is None:
        raise BenchError(
            f"no run {ref!r} in {db_path} (name a history id, a run id, or 'latest'; `bench history` lists them)"
        )
    return RunRow(*found)


def set_baseline(db_path: Path | str, name: str, ref: str) -> RunRow:
    """Name a stored run (history id, run_id, or ``latest``) as baseline ``name``, replacing an
    earlier one of that name. Returns the run. A CI gate then compares against the name."""
    name = name.strip()
    if not name:
        raise BenchError("a baseline needs a name, e.g. `bench baseline set main latest`")
    path = Path(db_path)
    if not path.is_file():
        raise BenchError(_no_history(path))
    conn = connect(path)
    try:
        with _history_errors(path), _immediate(conn):
            row = _find_run(conn, path, ref)
            now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            conn.execute(
                "INSERT INTO baselines (name, run_pk, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET run_pk = excluded.run_pk, created_at = excluded.created_at",
                (name, row.id, now),
            )
        return row
    finally:
        conn.close()


def get_baseline(db_path: Path | str, name: str) -> tuple[str, dict[str, Any]]:
    """(where it came from, its JSON) for baseline ``name``, like ``load_run_data``."""
    with _reading(db_path) as conn:
        if conn is None:
            raise BenchError(_no_history(db_path))
        row = None
        if _has_table(conn, "baselines"):
            row = conn.execute(
                "SELECT runs.id, runs.json FROM baselines JOIN runs ON runs.id = baselines.run_pk"
                " WHERE baselines.name = ?",
                (name,),
            ).fetchone()
    if row is None:
        raise BenchError(
            f"no baseline named {name!r} in {db_path} (set one with `bench baseline set {name} RUN`)"
        )
    return f"baseline {name!r} (history #{row[0]})", _stored_json(db_path, row[0], row[1])


def list_baselines(db_path: Path | str = DEFAULT_DB) -> list[Baseline]:
    """Every named baseline, by name: (name, the run, when it was named). Empty without a history."""
    with _reading(db_path) as conn:
        if conn is None or not _has_table(conn, "baselines"):
            return []
        columns = _run_columns(conn, "runs")
        rows = conn.execute(
            f"SELECT baselines.name, baselines.created_at, {columns} FROM baselines"
            " JOIN runs ON runs.id = baselines.run_pk ORDER BY baselines.name"
        ).fetchall()
    return [Baseline(name, RunRow(*rest), created) for name, created, *rest in rows]
