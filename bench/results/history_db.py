"""The history's SQLite file: opening it (writers create and migrate it, readers open it
read-only), its migrations, and every SQLite failure as one ``BenchError`` line naming it. What
is stored, and how runs are found again, is ``bench.results.store``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.results.errors import BenchError

DEFAULT_DB = Path(".bench") / "results.db"
BUSY_TIMEOUT_MS = 60_000
MAX_SQLITE_INT = 2**63 - 1  # SQLite integers are signed 64-bit

# Migration N (1-based) takes a history from user_version N-1 to N, in one transaction. Histories
# written before migrations existed have user_version 0 and migration 1's tables already (hence
# IF NOT EXISTS there). Append steps; never change what one does once it has shipped. Migrations
# read stored JSON with Python's json (``_SQL_FUNCTIONS``), not SQLite's json_extract: an earlier
# bench stored NaN and Infinity, which json_extract rejects (SQLite 3.40), and a history holding
# such a run could then never be migrated, hence never written again.
MIGRATIONS: tuple[str, ...] = (
    """
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
    """,
    """
    CREATE TABLE baselines (
        name TEXT PRIMARY KEY,
        run_pk INTEGER NOT NULL REFERENCES runs(id),
        created_at TEXT NOT NULL
    );
    """,
    # 3: data-parallel runs (torchrun) carry their world size: a 1-GPU and an 8-GPU run of one
    # model are different experiments, and the listing says so. Earlier rows: one process.
    """
    ALTER TABLE runs ADD COLUMN world_size INTEGER NOT NULL DEFAULT 1;
    UPDATE runs SET world_size = bench_world_size(json);
    """,
)


def _world_size(text: str | None) -> int:
    """Migration 3's reading of a stored run: its ``distributed.world_size``, else 1 (one process).
    Python's json accepts every value an earlier bench wrote (NaN, Infinity); unreadable text is 1."""
    try:
        size = json.loads(text or "null").get("distributed", {}).get("world_size")  # type: ignore[union-attr]
    except (ValueError, AttributeError, RecursionError):
        return 1
    return size if isinstance(size, int) and not isinstance(size, bool) and 0 < size <= MAX_SQLITE_INT else 1


_SQL_FUNCTIONS = {"bench_world_size": _world_size}

# --------------------------------------------------------------------------- errors and opening


def _hint(text: str) -> str:
    low = text.lower()
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return "it is damaged or not a bench history: move it aside, or name another with --db"
    if "readonly" in low or "read-only" in low:
        return "it is read-only: check its permissions, or name another with --db"
    if "full" in low:
        return "no space left: free some, or name another history with --db"
    if "locked" in low or "busy" in low:
        return f"another process held it locked for over {BUSY_TIMEOUT_MS // 1000} s: try again"
    if "unable to open" in low:
        return "cannot open it: check that the path is a file and its folder is writable"
    return "name another history with --db"


@contextmanager
def _history_errors(path: Path) -> Iterator[None]:
    """SQLite (and out-of-range integer) failures become one BenchError line naming the file."""
    try:
        yield
    except sqlite3.Error as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise BenchError(f"results history {path}: {text} ({_hint(text)})") from None
    except OverflowError as exc:
        raise BenchError(f"results history {path}: a value is too large to store ({exc})") from None


def _open(path: Path, *, read_only: bool) -> sqlite3.Connection:
    """A connection in autocommit mode with the busy timeout set. Read-only opens by URI
    (``mode=ro``): nothing is created; where a WAL history's shared-memory file cannot be made
    (a read-only folder) it falls back to ``immutable=1``, safe since nobody can write there."""
    timeout = BUSY_TIMEOUT_MS / 1000
    if not read_only:
        conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
    else:
        uri = path.resolve().as_uri()
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, isolation_level=None)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            if "unable to open" not in str(exc) and "readonly" not in str(exc):
                conn.close()
                raise
            conn.close()
            conn = sqlite3.connect(
                f"{uri}?mode=ro&immutable=1", uri=True, timeout=timeout, isolation_level=None
            )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _first_use(conn: sqlite3.Connection) -> None:
    """WAL mode and the tables, up to the newest migration. Switching to WAL takes an exclusive
    lock and SQLite does not wait for it under the busy timeout (another process creating the
    same new history gets "database is locked" at once), so that step is retried until the
    timeout; the migrations run in ``BEGIN IMMEDIATE`` transactions, which do wait."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay_seconds = 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL").fetchone()
            break
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay_seconds)
            delay_seconds = min(delay_seconds * 2, 0.2)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    if conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
        return
    for name, fn in _SQL_FUNCTIONS.items():
        conn.create_function(name, 1, fn, deterministic=True)
    with _immediate(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # another writer may have migrated
        if version > len(MIGRATIONS):
            raise BenchError(
                f"it was written by a newer bench (schema {version}, this bench knows {len(MIGRATIONS)}):"
                " upgrade bench, or name another history with --db"
            )
        for number in range(version + 1, len(MIGRATIONS) + 1):
            for statement in MIGRATIONS[number - 1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A ``BEGIN IMMEDIATE`` transaction (it waits for other writers under the busy timeout),
    committed when the block ends and rolled back on any exception, which then propagates (a
    rollback that fails as well is left to closing, which rolls back too)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        raise


def check_history_path(db_path: Path | str) -> None:
    """Fail early (before minutes of measuring) when a history's folder does not exist. Only the
    default ``.bench/`` is created on demand: a mistyped ``--db`` folder is an error, not a new
    folder."""
    path = Path(db_path)
    if path != DEFAULT_DB and not path.parent.is_dir():
        raise BenchError(
            f"results history {path}: folder {path.parent} does not exist (create it, or fix --db)"
        )


def connect(db_path: Path | str = DEFAULT_DB) -> sqlite3.Connection:
    """A writable connection to the history, created (WAL mode) and upgraded to the newest schema.

    Readers use the read-only path instead (``list_runs``, ``load_run_data``, ...)."""
    path = Path(db_path)
    check_history_path(path)
    if path == DEFAULT_DB:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchError(f"results history {path}: cannot create {path.parent}: {exc}") from None
    conn = None
    try:
        with _history_errors(path):
            conn = _open(path, read_only=False)
            _first_use(conn)
    except BenchError as exc:
        if conn is not None:
            conn.close()
        text = str(exc)
        raise BenchError(
            text if text.startswith("results history") else f"results history {path}: {text}"
        ) from None
    return conn


@contextmanager
def _reading(db_path: Path | str) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection, or None when there is no history yet (no file, or no tables)."""
    path = Path(db_path)
    if not path.exists():
        yield None
        return
    with _history_errors(path):
        conn = _open(path, read_only=True)
        try:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            yield conn if "runs" in tables else None
        finally:
            conn.close()


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return row is not None
