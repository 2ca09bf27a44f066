"""Results history in embedded SQLite (default ``.bench/results.db``). No torch here.

Every sweep and max-batch run is stored whole (its JSON) with summary columns to filter on, and a
sweep's points get a row each. WAL mode and one transaction per run: several processes can write
at once (a writer waits up to ``BUSY_TIMEOUT_MS`` for the lock instead of failing), and a writer
killed mid-way leaves the database as it was before that run.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.schema import SweepResult, load_result, read_result_json, result_from_dict, to_dict

DEFAULT_DB = Path(".bench") / "results.db"
BUSY_TIMEOUT_MS = 60_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    created_at TEXT NOT NULL,
    model TEXT,
    device_label TEXT,
    device TEXT,
    mode TEXT,
    precision TEXT,
    status TEXT,
    best_batch_size INTEGER,
    best_samples_per_sec REAL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS points (
    run_pk INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    batch_size INTEGER NOT NULL,
    status TEXT NOT NULL,
    samples_per_sec REAL,
    step_median_seconds REAL,
    device_peak_allocated_bytes INTEGER,
    host_peak_rss_bytes INTEGER,
    PRIMARY KEY (run_pk, batch_size)
);
CREATE INDEX IF NOT EXISTS runs_model ON runs(model);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at);
"""


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


def connect(db_path: Path | str = DEFAULT_DB) -> sqlite3.Connection:
    path = Path(db_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(_SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise BenchError(f"cannot open results database {path}: {exc}") from None
    return conn


def _summary(data: dict[str, Any]) -> dict[str, Any]:
    wl = data.get("workload") or {}
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
    }


def save_run(db_path: Path | str, result: Any) -> int:
    """Store (or replace, by run_id) one run; returns its id in the history."""
    if isinstance(result, SweepResult):
        data = to_dict(result)
    elif hasattr(result, "to_dict"):
        data = result.to_dict()
    elif isinstance(result, dict):
        data = result
    else:
        raise TypeError(f"cannot store {type(result).__name__}")
    row = _summary(data)
    conn = connect(db_path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM runs WHERE run_id = ?", (row["run_id"],))
        cur = conn.execute(
            "INSERT INTO runs (run_id, kind, created_at, model, device_label, device, mode, precision,"
            " status, best_batch_size, best_samples_per_sec, json)"
            " VALUES (:run_id, :kind, :created_at, :model, :device_label, :device, :mode, :precision,"
            " :status, :best_batch_size, :best_samples_per_sec, :json)",
            {**row, "json": json.dumps(data)},
        )
        pk = int(cur.lastrowid)
        for p in data.get("points") or []:
            stats = p.get("step_stats") or {}
            mem = p.get("memory") or {}
            conn.execute(
                "INSERT INTO points VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    pk, p["batch_size"], p["status"], p.get("samples_per_sec"),
                    stats.get("median_seconds"), mem.get("device_peak_allocated_bytes"),
                    mem.get("host_peak_rss_bytes"),
                ),
            )  # fmt: skip
        conn.execute("COMMIT")
        return pk
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


def import_file(db_path: Path | str, path: str) -> int:
    """Import one JSON result file (sweep or max-batch); a bad file is one BenchError line."""
    data = read_result_json(path)
    if "kind" not in data:
        raise BenchError(f"{path}: not a bench result (no kind)")
    if data["kind"] == "sweep":
        load_result(path)  # full validation
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
    sql = (
        "SELECT id, run_id, kind, created_at, model, device_label, mode, precision, status,"
        " best_batch_size, best_samples_per_sec FROM runs WHERE 1=1"
    )
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
    conn = connect(db_path)
    try:
        return [RunRow(*row) for row in conn.execute(sql, args)]
    finally:
        conn.close()


def load_run_data(ref: str, db_path: Path | str = DEFAULT_DB) -> tuple[str, dict[str, Any]]:
    """(where it came from, its JSON) for a run named by file path, history id, or ``latest``
    (the newest sweep). Sweeps and max-batch results alike; a bad ref is one BenchError line."""
    if ref != "latest" and not ref.isdigit():
        if not Path(ref).exists():
            raise BenchError(f"{ref}: no such file (name a result file, a history id, or 'latest')")
        return ref, read_result_json(ref)
    if not Path(db_path).exists():
        raise BenchError(f"no results history at {db_path} (run a sweep or `bench import` first)")
    conn = connect(db_path)
    try:
        if ref == "latest":
            row = conn.execute(
                "SELECT id, json FROM runs WHERE kind = 'sweep' ORDER BY created_at DESC, id DESC LIMIT 1"
            ).fetchone()
        else:
            row = conn.execute("SELECT id, json FROM runs WHERE id = ?", (int(ref),)).fetchone()
    finally:
        conn.close()
    if row is None:
        raise BenchError(f"no run {ref!r} in {db_path}")
    return f"history #{row[0]}", json.loads(row[1])


def load_run(ref: str, db_path: Path | str = DEFAULT_DB) -> SweepResult:
    """A sweep by file path, by id in the history, or ``latest``."""
    if ref != "latest" and not ref.isdigit():
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
    if db_path is None or not Path(db_path).is_file():
        return None
    conn = connect(db_path)
    try:
        rows = conn.execute(
            "SELECT json FROM runs WHERE kind = 'max_batch' AND model = ? ORDER BY created_at DESC, id DESC LIMIT 50",
            (result.workload.model,),
        ).fetchall()
    finally:
        conn.close()
    return next((d for (text,) in rows if same_workload(result, d := json.loads(text))), None)
