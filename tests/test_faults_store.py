"""Fault injection for the results history (issue 15): concurrent first writers, read-only, full
and corrupt databases, oversized values, ids that survive a re-store, migrations and baselines.

Hermetic: every database lives under tmp_path. "Read-only" and "full" are injected by wrapping the
store's connection opener (``PRAGMA query_only`` / ``max_page_count``), so they hold under root too.
"""

import json
import multiprocessing as mp
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from bench.cli import main
from bench.results import history_db, store
from bench.results.codec import load_result
from bench.results.errors import BenchError
from bench.results.store import (
    connect,
    get_baseline,
    import_file,
    list_baselines,
    list_runs,
    load_run_data,
    matching_max_batch,
    save_run,
    set_baseline,
)

DATA = Path(__file__).parent / "data" / "cpu_resnet18.json"
TINY = "tests.tiny_models:tiny_cnn"

# The tables as bench wrote them before migrations (user_version 0).
V0_DDL = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    created_at TEXT NOT NULL, model TEXT, device_label TEXT, device TEXT, mode TEXT, precision TEXT,
    status TEXT, best_batch_size INTEGER, best_samples_per_sec REAL, json TEXT NOT NULL
);
CREATE TABLE points (
    run_pk INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, batch_size INTEGER NOT NULL,
    status TEXT NOT NULL, samples_per_sec REAL, step_median_seconds REAL,
    device_peak_allocated_bytes INTEGER, host_peak_rss_bytes INTEGER, PRIMARY KEY (run_pk, batch_size)
);
CREATE INDEX runs_model ON runs(model);
CREATE INDEX runs_created ON runs(created_at);
"""


def _v0_db(path: Path, journal: str = "wal") -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.executescript(V0_DDL)
    conn.execute(
        "INSERT INTO runs (run_id, kind, created_at, model, status, best_batch_size, json)"
        " VALUES ('old-run', 'sweep', '2026-01-01T00:00:00', 'resnet18', 'complete', 4, ?)",
        (DATA.read_text(),),
    )
    conn.execute("INSERT INTO points (run_pk, batch_size, status) VALUES (1, 4, 'ok')")
    conn.close()


def _sweep_data(run_id: str, started_at: str = "2026-11-01T00:00:00") -> dict:
    data = json.loads(DATA.read_text())
    return {**data, "run_id": run_id, "started_at": started_at}


def _faulty_open(monkeypatch, fault: str) -> None:
    """Writers get a connection that refuses writes (read-only) or has no room (full disk)."""
    real = history_db._open

    def opener(path, *, read_only):
        conn = real(path, read_only=read_only)
        if fault == "readonly":
            conn.execute("PRAGMA query_only = ON")
        elif fault == "full":
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(pages, 1)}")
        return conn

    monkeypatch.setattr(history_db, "_open", opener)


# ------------------------------------------------------------------ item 3: concurrent first writers


def _importer(db, files, barrier, failures):
    barrier.wait()
    for f in files:
        try:
            import_file(db, f)
        except Exception as exc:  # report, do not hide: the parent counts them
            failures.put(f"{f}: {exc}")


def test_first_use_waits_for_a_lock_instead_of_failing(tmp_path):
    """Another process is creating the brand-new history (rollback mode, write lock held): the
    WAL switch must wait under the busy timeout like every other statement, not fail at once."""
    import threading

    db = tmp_path / "h.db"
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE IF NOT EXISTS other (x)")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        pk = import_file(db, str(DATA))
    finally:
        release.join()
        holder.close()
    assert [r.id for r in list_runs(db)] == [pk]


@pytest.mark.slow
def test_concurrent_first_writers_on_a_new_history_lose_nothing(tmp_path):
    """8 processes import at once into a history that does not exist yet (first use: WAL switch
    and tables), five fresh histories in a row; every import lands."""
    ctx = mp.get_context("fork")
    workers, per_worker = 8, 3
    files = []
    for w in range(workers):
        mine = []
        for i in range(per_worker):
            f = tmp_path / f"w{w}-{i}.json"
            f.write_text(json.dumps(_sweep_data(f"w{w}-{i}", f"2026-11-01T00:{w:02d}:{i:02d}")))
            mine.append(str(f))
        files.append(mine)
    for round_ in range(5):
        db = tmp_path / f"h{round_}.db"
        barrier = ctx.Barrier(workers)
        failures = ctx.Queue()
        procs = [
            ctx.Process(target=_importer, args=(str(db), files[w], barrier, failures)) for w in range(workers)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        lost = []
        while not failures.empty():
            lost.append(failures.get())
        assert lost == []
        assert all(p.exitcode == 0 for p in procs)
        assert len(list_runs(db, limit=1000)) == workers * per_worker
        conn = connect(db)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(history_db.MIGRATIONS)
        conn.close()


# ------------------------------------------------------------------ item 4: read-only and full histories


@pytest.mark.parametrize("fault", ["readonly", "full"])
def test_a_read_only_or_full_history_is_one_bench_error(tmp_path, monkeypatch, fault):
    db = tmp_path / "h.db"
    save_run(db, _sweep_data("first"))
    _faulty_open(monkeypatch, fault)
    with pytest.raises(BenchError) as info:
        save_run(db, _sweep_data("second" + "x" * 200_000))  # big enough to need a new page
    assert str(db) in str(info.value) and "\n" not in str(info.value)
    monkeypatch.undo()
    assert [r.run_id for r in list_runs(db)] == ["first"]  # nothing half-written


def _fake_sweep(monkeypatch):
    """`bench sweep` measures nothing real: the loop writes the reference result to out_path."""
    import bench.jobs.sweep

    def measure_sweep(workload, sizes, settings, *, out_path, finish, **kwargs):
        Path(out_path).write_text(DATA.read_text())
        return finish(load_result(str(out_path)))  # the job's recommendation and history look-up

    monkeypatch.setattr(bench.jobs.sweep, "measure_sweep", measure_sweep)


def test_sweep_with_a_read_only_history_keeps_results_and_warns(tmp_path, monkeypatch, capsys):
    db, out = tmp_path / "h.db", tmp_path / "r.json"
    save_run(db, _sweep_data("first"))
    _fake_sweep(monkeypatch)
    _faulty_open(monkeypatch, "readonly")
    code = main(["sweep", TINY, "-b", "1", "--device", "cpu", "-o", str(out), "--db", str(db)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.is_file() and "samples/s" in captured.out  # the table printed
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "not stored" in warnings[0]
    assert "internal error" not in captured.err


def test_import_into_a_read_only_history_is_exit_2(tmp_path, monkeypatch, capsys):
    db = tmp_path / "h.db"
    save_run(db, _sweep_data("first"))
    _faulty_open(monkeypatch, "readonly")
    assert main(["import", str(DATA), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "internal error" not in err and len(err.strip().splitlines()) == 1


def test_run_with_a_read_only_history_measures_every_configuration_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "h.db"
    save_run(db, _sweep_data("first"))
    profile = tmp_path / "two.toml"
    profile.write_text(
        'models = ["tests.tiny_models:tiny_cnn"]\nprecisions = ["fp32", "bf16"]\ndevice = "cpu"\n'
        "image_size = 8\nbatch_sizes = [1]\n"
    )
    calls = []
    import bench.jobs.profile_run

    def run_sweep(workload, sizes, settings, *, out_path, **kwargs):
        calls.append(workload.precision)
        data = _sweep_data(f"cell-{workload.precision}")
        data["workload"] = {**data["workload"], "precision": workload.precision}
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(json.dumps(data))
        return load_result(str(out_path))

    monkeypatch.setattr(bench.jobs.profile_run, "run_sweep", run_sweep)
    _faulty_open(monkeypatch, "readonly")
    code = main(["run", str(profile), "--db", str(db), "--out", str(tmp_path / "rep")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert calls == ["fp32", "bf16"]  # measuring went on after the first configuration
    assert (tmp_path / "rep" / "index.html").is_file()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "not stored" in warnings[0], captured.err


# ------------------------------------------------------------------ items 7, 11: corrupt databases


def _corrupt(path: Path) -> None:
    """Overwrite the middle of the file: the header survives, the pages do not."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 3)
        f.write(b"\xff" * (size // 3))


@pytest.fixture(params=["not-sqlite", "malformed"])
def broken_db(request, tmp_path):
    db = tmp_path / "h.db"
    if request.param == "not-sqlite":
        db.write_text("this is not a database, just text\n" * 200)
    else:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.close()
        for i in range(30):
            save_run(db, _sweep_data(f"r{i}" + "x" * 3000, f"2026-11-01T00:00:{i:02d}"))
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        _corrupt(db)
    return db


@pytest.mark.parametrize("argv", [["history"], ["report", "latest"], ["report", "1"], ["import", str(DATA)]])
def test_a_corrupt_history_is_one_line_exit_2(broken_db, argv, tmp_path, capsys):
    code = main(
        [*argv, "--db", str(broken_db), *(["-o", str(tmp_path / "rep")] if argv[0] == "report" else [])]
    )
    err = capsys.readouterr().err
    if argv[0] == "import" and code == 0:  # an insert may touch only healthy pages: that is fine
        return
    assert code == 2, err
    assert "internal error" not in err and len(err.strip().splitlines()) == 1
    assert str(broken_db) in err


def test_a_finished_sweep_with_a_broken_history_prints_its_table(broken_db, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r.json"
    _fake_sweep(monkeypatch)
    code = main(["sweep", TINY, "-b", "1", "--device", "cpu", "-o", str(out), "--db", str(broken_db)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "samples/s" in captured.out and "best: batch" in captured.out
    assert out.is_file()
    assert "warning" in captured.err and "internal error" not in captured.err


def test_a_directory_as_history_is_a_warning_for_sweep(tmp_path, monkeypatch, capsys):
    out, db = tmp_path / "r.json", tmp_path / "adir"
    db.mkdir()
    _fake_sweep(monkeypatch)
    assert main(["sweep", TINY, "-b", "1", "--device", "cpu", "-o", str(out), "--db", str(db)]) == 0
    captured = capsys.readouterr()
    assert "samples/s" in captured.out and "warning" in captured.err


# ------------------------------------------------------------------ item 8: values beyond 64 bits


def test_a_batch_size_beyond_64_bits_is_bad_input(tmp_path, capsys):
    code = main(["sweep", TINY, "-b", "99999999999999999999999999", "-o", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and "too large" in err and len(err.strip().splitlines()) == 1


def test_the_store_refuses_a_batch_size_beyond_64_bits(tmp_path):
    data = _sweep_data("huge")
    data["points"] = [{**data["points"][0], "batch_size": 2**70}]
    with pytest.raises(BenchError, match="too large"):
        save_run(tmp_path / "h.db", data)


# ------------------------------------------------------------------ item 12: readers never write


def test_readers_do_not_create_a_missing_history(tmp_path):
    db = tmp_path / "none.db"
    assert list_runs(db) == []
    assert list_baselines(db) == []
    assert matching_max_batch(db, load_result(str(DATA))) is None
    with pytest.raises(BenchError, match="no results history"):
        load_run_data("latest", db)
    assert not db.exists()


def test_readers_leave_an_old_history_untouched(tmp_path):
    db = tmp_path / "h.db"
    _v0_db(db, journal="delete")
    before = db.read_bytes()
    assert [r.run_id for r in list_runs(db)] == ["old-run"]
    assert load_run_data("latest", db)[0] == "history #1"
    assert matching_max_batch(db, load_result(str(DATA))) is None
    assert db.read_bytes() == before  # no WAL switch, no tables, no migration
    # nothing beside it (conftest's own empty .bench/ folder aside)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".bench") == ["h.db"]


def _as_unprivileged(check) -> None:
    """Run ``check()`` as a user the file permissions apply to: in place when not root; as root
    (how CI runs), in a forked child that drops to ``nobody`` first, its traceback sent back."""
    if os.geteuid() != 0:
        check()
        return
    import pwd
    import traceback

    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_end)
        code, message = 0, b""
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            check()
        except BaseException:  # noqa: BLE001 - every failure goes back to the parent
            code, message = 1, traceback.format_exc().encode()
        os.write(write_end, message)
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, message


def test_a_read_only_history_can_be_read(tmp_path):
    """Runs in CI, which runs as root (root ignores file permissions): as ``nobody`` there."""
    import tempfile

    # a folder the unprivileged user can reach (pytest's tmp_path is root's, mode 0700)
    folder = Path(tempfile.mkdtemp(prefix="bench-ro-")) if os.geteuid() == 0 else tmp_path / "ro"
    folder.mkdir(exist_ok=True)
    db = folder / "h.db"
    save_run(db, _sweep_data("first"))
    db.chmod(0o444)
    folder.chmod(0o555)

    def check() -> None:
        assert not os.access(db, os.W_OK)  # the permissions apply to this user
        assert [r.run_id for r in list_runs(db)] == ["first"]
        with pytest.raises(BenchError, match="read-only|readonly"):
            save_run(db, _sweep_data("second"))

    try:
        _as_unprivileged(check)
    finally:
        folder.chmod(0o755)
        if os.geteuid() == 0:
            shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------ item 14: ids survive a re-store


def test_restoring_a_run_keeps_its_history_id(tmp_path):
    db = tmp_path / "h.db"
    first = save_run(db, _sweep_data("a", "2026-11-01T00:00:00"))
    save_run(db, _sweep_data("b", "2026-11-02T00:00:00"))
    resumed = _sweep_data("a", "2026-11-01T00:00:00")
    resumed["points"] = resumed["points"][:1]
    assert save_run(db, resumed) == first
    assert load_run_data(str(first), db)[1]["run_id"] == "a"
    assert len(load_run_data(str(first), db)[1]["points"]) == 1
    conn = connect(db)
    assert conn.execute("SELECT COUNT(*) FROM points WHERE run_pk = ?", (first,)).fetchone()[0] == 1
    conn.close()


# ------------------------------------------------------------------ item 15: a mistyped --db directory


def test_a_missing_db_directory_is_an_error_not_created(tmp_path):
    db = tmp_path / "typo" / "h.db"
    with pytest.raises(BenchError, match="does not exist"):
        save_run(db, _sweep_data("a"))
    assert not (tmp_path / "typo").exists()


def test_the_default_history_directory_is_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_run(store.DEFAULT_DB, _sweep_data("a"))
    assert (tmp_path / ".bench" / "results.db").is_file()


def test_sweep_with_a_mistyped_db_directory_stops_before_measuring(tmp_path, monkeypatch, capsys):
    calls = []
    import bench.jobs.sweep

    monkeypatch.setattr(bench.jobs.sweep, "measure_sweep", lambda *a, **k: calls.append(1))
    code = main(
        ["sweep", TINY, "-b", "1", "-o", str(tmp_path / "r.json"), "--db", str(tmp_path / "typo" / "h.db")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and calls == []
    assert not (tmp_path / "typo").exists()


# ------------------------------------------------------------------ issue 14 item 1: migrations


def test_an_old_history_upgrades_in_place_and_keeps_its_rows(tmp_path):
    db = tmp_path / "h.db"
    _v0_db(db)
    pk = save_run(db, _sweep_data("new", "2026-11-05T00:00:00"))
    conn = connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(history_db.MIGRATIONS) >= 2
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "points", "baselines"} <= tables
    assert conn.execute("SELECT COUNT(*) FROM points").fetchone()[0] == 1 + 3
    conn.close()
    assert [r.run_id for r in list_runs(db)] == ["new", "old-run"]
    assert pk == 2 and load_run_data("1", db)[0] == "history #1"


def test_a_history_from_a_newer_bench_is_refused_for_writing(tmp_path):
    db = tmp_path / "h.db"
    save_run(db, _sweep_data("a"))
    conn = connect(db)
    conn.execute(f"PRAGMA user_version = {len(history_db.MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(BenchError, match="newer"):
        save_run(db, _sweep_data("b"))


# ------------------------------------------------------------------ baselines


def test_named_baselines(tmp_path):
    db = tmp_path / "h.db"
    a = save_run(db, _sweep_data("run-a", "2026-11-01T00:00:00"))
    b = save_run(db, _sweep_data("run-b", "2026-11-02T00:00:00"))
    assert set_baseline(db, "main", str(a)).id == a
    assert set_baseline(db, "nightly", "latest").id == b
    source, data = get_baseline(db, "main")
    assert data["run_id"] == "run-a" and f"#{a}" in source
    assert set_baseline(db, "main", "run-b").id == b  # moved, by run id
    save_run(db, _sweep_data("run-b", "2026-11-02T00:00:00"))  # re-stored: the baseline still points at it
    names = [(name, row.id) for name, row, _ in list_baselines(db)]
    assert names == [("main", b), ("nightly", b)]
    assert get_baseline(db, "main")[1]["run_id"] == "run-b"
    with pytest.raises(BenchError, match="no run"):
        set_baseline(db, "x", "999")
    with pytest.raises(BenchError, match="no run"):
        set_baseline(db, "x", "no-such-run")
    with pytest.raises(BenchError, match="no baseline"):
        get_baseline(db, "missing")
    with pytest.raises(BenchError, match="name"):
        set_baseline(db, "  ", "latest")


def test_baselines_on_an_old_or_missing_history(tmp_path):
    db = tmp_path / "h.db"
    with pytest.raises(BenchError, match="no results history"):
        get_baseline(db, "main")
    _v0_db(db)
    assert list_baselines(db) == []  # read before any upgrade: no table yet, no baselines
    with pytest.raises(BenchError, match="no baseline"):
        get_baseline(db, "main")
    assert set_baseline(db, "main", "1").run_id == "old-run"  # a write upgrades it
    assert [n for n, _, _ in list_baselines(db)] == ["main"]


def test_world_size_is_a_column_filled_for_old_rows_and_new_runs(tmp_path):
    """Migration 3: a data-parallel run's world size is in the listing (history never reads a 2-GPU
    run as one device's figure); rows written before it read as one process."""
    db = tmp_path / "h.db"
    _v0_db(db)
    ddp = _sweep_data("ddp", "2026-11-06T00:00:00")
    ddp["distributed"] = {"world_size": 2, "backend": "gloo", "ddp": True}
    save_run(db, ddp)
    rows = {r.run_id: r for r in list_runs(db)}
    assert rows["old-run"].world_size == 1 and rows["ddp"].world_size == 2


# ------------------------------------------------------------------ issue 23 item 20: NaN in an old history


def test_an_old_history_holding_a_nan_run_migrates_and_takes_new_runs(tmp_path):
    """Migration 3 read world_size with json_extract, which rejects NaN/Infinity (SQLite 3.40):
    a history at schema 2 holding a run an earlier bench stored with NaN could never be written."""
    db = tmp_path / "h.db"
    _v0_db(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(history_db.MIGRATIONS[1])
    conn.execute("PRAGMA user_version = 2")
    nan_run = DATA.read_text().replace('"status": "complete"', '"status": "complete", "odd": NaN', 1)
    assert "NaN" in nan_run
    wide = {**json.loads(DATA.read_text()), "distributed": {"world_size": 4}}
    wide_text = json.dumps(wide).replace('"distributed"', '"odd": Infinity, "distributed"', 1)
    for run_id, text in (("nan-run", nan_run), ("wide-run", wide_text)):
        conn.execute(
            "INSERT INTO runs (run_id, kind, created_at, model, status, json)"
            " VALUES (?, 'sweep', '2026-01-02T00:00:00', 'resnet18', 'complete', ?)",
            (run_id, text),
        )
    conn.close()
    save_run(db, _sweep_data("new-run"))  # the writer migrates first
    conn = sqlite3.connect(db)
    try:
        sizes = dict(conn.execute("SELECT run_id, world_size FROM runs"))
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(history_db.MIGRATIONS)
    finally:
        conn.close()
    assert sizes == {"old-run": 1, "nan-run": 1, "wide-run": 4, "new-run": 1}
