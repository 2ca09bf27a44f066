"""Storing a job's result in the history: the one place the jobs (sweep, max-batch, recommend)
turn ``store=`` into a database path and a failed write into a warning.

A history problem (read-only, full, corrupt) never loses a measurement: the result file keeps it,
and the job says so in one warning line instead of raising.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.results.errors import BenchError
from bench.results.store import DEFAULT_DB, check_history_path, import_file, save_run

StoreArg = bool | str | Path | None  # True: the default history; a path: that one; False/None: none


def history_path(store: StoreArg) -> Path | None:
    """``store=`` as a database path (None: do not store). A mistyped folder is BenchError here,
    before minutes of measuring."""
    if store is None or store is False:
        return None
    path = DEFAULT_DB if store is True else Path(store)
    check_history_path(path)
    return path


def store_run(db: Path | None, run: Any) -> str | None:
    """Save ``run`` (a result, or a result file's path) in the history at ``db``, replacing the
    run with the same id in place. Returns the warning line when it could not, else None."""
    if db is None:
        return None
    try:
        if isinstance(run, (str, Path)):
            import_file(db, str(run))
        else:
            save_run(db, run)
    except (BenchError, OSError) as exc:
        return f"not stored in the history: {exc}"
    return None
