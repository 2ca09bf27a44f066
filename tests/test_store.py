import json
import multiprocessing as mp
from dataclasses import replace
from pathlib import Path

import pytest

from bench.results.codec import load_result
from bench.results.errors import BenchError
from bench.results.store import connect, import_file, list_runs, load_run, save_run

DATA = Path(__file__).parent / "data" / "cpu_resnet18.json"


def _writer(db, base_json, worker, count):
    from bench.results.codec import result_from_dict
    from bench.results.store import save_run

    base = result_from_dict(json.loads(base_json))
    for i in range(count):
        save_run(
            db, replace(base, run_id=f"w{worker}-{i}", started_at=f"2026-11-{10 + worker:02d}T00:00:{i:02d}")
        )


def test_concurrent_writers_lose_nothing(tmp_path):
    db = tmp_path / "h.db"
    connect(db).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(db), DATA.read_text(), w, 10)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    rows = list_runs(db, limit=1000)
    assert len(rows) == 40
    assert {r.run_id for r in rows} == {f"w{w}-{i}" for w in range(4) for i in range(10)}
    conn = connect(db)
    assert conn.execute("SELECT COUNT(*) FROM points").fetchone()[0] == 40 * 3
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_reimport_replaces_not_duplicates(tmp_path):
    db = tmp_path / "h.db"
    a = import_file(db, str(DATA))
    b = import_file(db, str(DATA))
    assert len(list_runs(db)) == 1 and a == b  # replaced in place: the history id stays


def test_filters_latest_and_id(tmp_path):
    db = tmp_path / "h.db"
    base = load_result(str(DATA))
    first = save_run(db, replace(base, run_id="old", started_at="2026-01-01T00:00:00"))
    save_run(
        db,
        replace(
            base,
            run_id="new",
            started_at="2026-11-01T00:00:00",
            workload=replace(base.workload, model="resnet50"),
        ),
    )
    save_run(db, {"schema_version": 1, "kind": "max_batch", "workload": {"model": "resnet50"},
                  "environment": {"hostname": "h", "cpu_model": "X"}, "max_batch_size": 77, "probes": []})  # fmt: skip
    assert [r.run_id for r in list_runs(db, model="resnet50", kind="sweep")] == ["new"]
    assert [r.run_id for r in list_runs(db, since="2026-06-01", kind="sweep")] == ["new"]
    assert list_runs(db, kind="max_batch")[0].best_batch_size == 77
    assert load_run("latest", db).run_id == "new"
    assert load_run(str(first), db).run_id == "old"
    assert load_run(str(DATA), db).run_id == base.run_id
    with pytest.raises(BenchError, match="no run"):
        load_run("999", db)


def test_killed_writer_leaves_database_intact(tmp_path):
    """A transaction that never commits (the writer died) leaves no partial run behind."""
    db = tmp_path / "h.db"
    save_run(db, load_result(str(DATA)))
    conn = connect(db)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO runs (run_id, kind, created_at, json) VALUES ('half', 'sweep', 'x', '{}')")
    conn.close()  # closes without COMMIT, as a killed process would
    assert [r.run_id for r in list_runs(db)] == [load_result(str(DATA)).run_id]
    assert connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_sigkilled_writer_mid_transaction_loses_nothing_committed(tmp_path):
    """A real writer process killed with SIGKILL in the middle of storing a run (its points half
    inserted, the transaction open): the database stays intact, earlier runs stay, no half run."""
    import signal
    import subprocess
    import sys
    import time

    db = tmp_path / "h.db"
    save_run(db, load_result(str(DATA)))
    marker = tmp_path / "inside"
    code = f"""
import pathlib, time
from bench.results.store import connect
conn = connect({str(db)!r})
conn.execute("BEGIN IMMEDIATE")
cur = conn.execute("INSERT INTO runs (run_id, kind, created_at, json) VALUES ('half', 'sweep', 'x', '{{}}')")
for b in range(1, 500):
    conn.execute("INSERT INTO points (run_pk, batch_size, status) VALUES (?, ?, 'ok')", (cur.lastrowid, b))
pathlib.Path({str(marker)!r}).write_text("1")
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the writer never reached the middle of its transaction"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert [r.run_id for r in list_runs(db)] == [load_result(str(DATA)).run_id]
    conn = connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM points WHERE batch_size > 100").fetchone()[0] == 0
    save_run(db, replace(load_result(str(DATA)), run_id="after"))  # and it takes writes again
    assert len(list_runs(db)) == 2


def test_import_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(BenchError, match="not a bench result"):
        import_file(tmp_path / "h.db", str(bad))
