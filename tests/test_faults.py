"""Fault injection: full disks, failures mid-sweep, truncated and malformed files, killed parents,
scripts without a main guard. Hermetic: every file and history lives under tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.jobs.isolate import over_budget_message, run_isolated
from bench.results.errors import BenchError

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests.tiny_models:tiny_cnn"
FAST = ["--image-size", "8", "--warmup", "1", "--min-steps", "3", "--max-time", "0.3", "--min-time", "0"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def _gone(pid: int, deadline_seconds: float = 60.0) -> bool:
    """True once ``pid`` no longer runs (a zombie counts as gone); polls, no fixed sleep."""
    import psutil

    end = time.monotonic() + deadline_seconds
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- isolate (items 13, 16)


@pytest.mark.slow
def test_isolated_child_round_trip():
    seen = []
    outcome = run_isolated("tests.fault_targets:echo", ({"a": 1},), on_message=seen.append)
    assert outcome.status == "ok" and outcome.value == {"a": 1} and seen == ["hello"]


def test_unpicklable_work_is_one_clear_error():
    with pytest.raises(BenchError, match="cannot send the work"):
        run_isolated("tests.fault_targets:echo", (lambda: 1,))


def test_rss_message_numbers_differ_when_just_over():
    msg = over_budget_message(2**30 + 4096, 2**30)
    used, budget = msg.split("RSS ")[1].split(" GiB exceeded the ")
    assert used != budget.split(" GiB")[0], msg
    assert "MiB" in over_budget_message(600 * 2**20 + 1, 600 * 2**20)


@pytest.mark.slow
def test_child_dies_with_its_sigkilled_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from bench.jobs.isolate import run_isolated

            def show(pid):
                print(pid, flush=True)

            run_isolated("tests.fault_targets:report_pid_then_sleep", (600,), on_message=show)
            """
        )
    )
    parent = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        child_pid = int(parent.stdout.readline())
        parent.kill()
        parent.wait()
        assert _gone(child_pid), "the child outlived its SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.slow
def test_library_sweep_runs_from_a_script_without_main_guard(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(
        textwrap.dedent(
            """
            from bench import MeasureSettings, Workload, run_sweep

            result = run_sweep(
                Workload(model="tests.tiny_models:tiny_cnn", image_size=8),
                batch_sizes=[2, 4],
                settings=MeasureSettings(warmup_steps=1, min_steps=3, max_time_seconds=0.3, min_time_seconds=0),
            )
            print("best", result.best_point().batch_size)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "best" in proc.stdout and "RuntimeError" not in proc.stderr
    files = list((tmp_path / "bench_results").iterdir())
    assert len(files) == 1, files  # no stray files from children re-running the script
    assert json.loads(files[0].read_text())["status"] == "complete"


# --------------------------------------------------------------------------- sweeps (items 1, 2)


def run_cli(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd, env={**_env(), **(env or {})}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _history(db: Path) -> list[dict]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return [json.loads(text) for (text,) in conn.execute("SELECT json FROM runs ORDER BY id")]
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("isolate", ["--isolate", "--no-isolate"])
def test_a_later_point_failing_hard_keeps_the_finished_ones(tmp_path, isolate):
    out, db = tmp_path / "r.json", tmp_path / "h.db"
    proc = run_cli(
        "sweep", "tests.fails_later:model", "-b", "2,4", *FAST, isolate, "-o", str(out), "--db", str(db), cwd=tmp_path
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "no data for batch 4" in proc.stderr and "Traceback" not in proc.stderr
    data = json.loads(out.read_text())
    assert data["status"] == "failed" and data["finished_at"]
    assert [p["batch_size"] for p in data["points"]] == [2]
    (stored,) = _history(db)
    assert stored["run_id"] == data["run_id"] and len(stored["points"]) == 1


def _full_disk_after(monkeypatch, writes: int, *, also_fallback: bool):
    """The results file's folder fills up after ``writes`` successful writes (ENOSPC from then on);
    the temp folder too when ``also_fallback``."""
    import errno
    import tempfile

    from bench.results import files as sweep  # where the results writer lives

    real = sweep.write_json_atomic
    done = {"n": 0}

    def write(path, text):
        in_tmp = Path(path).parent == Path(tempfile.gettempdir())
        if in_tmp and not also_fallback:
            return real(path, text)
        done["n"] += 1
        if done["n"] > writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(sweep, "write_json_atomic", write)


@pytest.mark.slow
@pytest.mark.parametrize("also_fallback", [False, True])
def test_a_full_disk_mid_sweep_loses_no_point(tmp_path, monkeypatch, capsys, also_fallback):
    from bench.cli import main

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    _full_disk_after(monkeypatch, 2, also_fallback=also_fallback)  # the start and the first point
    out, db = tmp_path / "r.json", tmp_path / "h.db"
    rc = main(["sweep", TINY, "-b", "2,4", *FAST, "--no-isolate", "-o", str(out), "--db", str(db)])
    out_text, err = capsys.readouterr()
    assert rc == 0, err
    assert "No space left on device" in err and "internal error" not in err
    assert [p["batch_size"] for p in json.loads(out.read_text())["points"]] == [2]  # the file before
    (stored,) = _history(db)
    assert stored["status"] == "complete" and [p["batch_size"] for p in stored["points"]] == [2, 4]
    fallback = tmp_path / "tmp" / "r.json"
    closing = out_text.replace("\n", "")  # rich wraps long paths
    if also_fallback:
        assert not fallback.exists() and "memory only" in " ".join(err.split())
        assert "results: memory only" in closing and f"results: {out}" not in closing
    else:
        assert json.loads(fallback.read_text())["status"] == "complete"
        rec = json.loads(fallback.read_text())["recommendation"]  # picks, or the batches too noisy to rank
        assert rec["best"] is not None or rec["not_ranked"]
        assert str(fallback) in err.replace("\n", "")
        assert f"results: {fallback}" in closing  # where the results are, not the path asked for


def test_library_sweep_with_only_failed_points_raises(tmp_path):
    from bench import MeasureSettings, Workload, run_sweep

    settings = MeasureSettings(
        warmup_steps=1, min_steps=3, max_time_seconds=0.2, min_time_seconds=0, isolate=False
    )
    out = tmp_path / "r.json"
    with pytest.raises(BenchError, match="could be measured.*Expected more than 1 value"):
        run_sweep(
            Workload(model="tests.tiny_models:fails_in_training", image_size=8),
            [2, 4],
            settings,
            out_path=out,
        )
    assert json.loads(out.read_text())["status"] == "failed"  # the file is kept, finalised


# --------------------------------------------------------------------------- files (items 5, 6, 9, 15)

DATA = ROOT / "tests" / "data"
SEARCH = {
    "schema_version": 1, "kind": "max_batch", "run_id": "search-1", "max_batch_size": 40, "safe_batch_size": 36,
    "granularity": 1, "budget_bytes": 2**30, "memory_model": None, "seconds": 3.0, "soak": None,
    "failed_batch_size": 41, "exact": True, "cap_reached": False, "budget_source": "memory limit",
    "headroom_fraction": 0.1, "headroom_reason": "10% of the budget",
    "probes": [{"batch_size": 40, "outcome": "fit", "peak_bytes": 2**29, "seconds": 1.0}],
}  # fmt: skip


def _search_for(sweep_file: Path, **changes) -> dict:
    sweep = json.loads(sweep_file.read_text())
    return {**SEARCH, "workload": sweep["workload"], "environment": sweep["environment"], **changes}


def test_truncated_max_batch_file_on_resume_is_one_line(tmp_path):
    from bench.jobs.profile_run import _read_search

    path = tmp_path / "cell.max_batch.json"
    path.write_text(json.dumps(_search_for(DATA / "cpu_resnet18.json"))[:200])
    with pytest.raises(BenchError, match="not valid JSON"):
        _read_search(str(path))


def test_results_files_share_one_mode_under_the_umask(tmp_path, monkeypatch):
    import bench.jobs.maxbatch
    from bench.results.files import write_json_atomic
    from bench.results.maxbatch import maxbatch_from_dict

    search = maxbatch_from_dict(_search_for(DATA / "cpu_resnet18.json"))
    monkeypatch.setattr(bench.jobs.maxbatch, "_search", lambda *a, **k: search)  # the job writes it
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "sweep.json", "{}")
        bench.jobs.maxbatch.find_max_batch(search.workload, out_path=tmp_path / "max.json")
        os.umask(0o077)
        write_json_atomic(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "sweep.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "max.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*.tmp"))


def test_import_rejects_a_malformed_max_batch_file_and_reports_skip_old_ones(tmp_path, capsys):
    from bench.cli import main
    from bench.results.store import save_run

    db = tmp_path / "h.db"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_search_for(DATA / "cpu_resnet18.json", headroom_fraction="ten percent")))
    assert main(["import", str(bad), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "headroom_fraction" in err and len(err.strip().splitlines()) == 1
    assert main(["import", str(DATA / "cpu_resnet18.json"), "--db", str(db)]) == 0
    # one imported before imports were checked: a later report skips it instead of crashing
    save_run(db, json.loads(bad.read_text()))
    assert main(["report", "latest", "--db", str(db), "--out", str(tmp_path / "r")]) == 0, (
        capsys.readouterr().err
    )
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_search_for(DATA / "cpu_resnet18.json")))
    assert main(["import", str(good), "--db", str(db)]) == 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["points"][0].update(step_seconds=["fast"]), "step_seconds should be a list of numbers"),
        (lambda d: d.update(points=5), "malformed result"),
        (lambda d: d["points"][0].update(window_seconds="1 s"), "window_seconds"),
        (lambda d: [p.update(step_seconds=[0.0] * 3) for p in d["points"]], "positive"),
    ],
)
@pytest.mark.parametrize("command", ["report", "compare"])
def test_mistyped_or_zero_step_times_are_one_line_in_report_and_compare(
    tmp_path, capsys, change, message, command
):
    from bench.cli import main

    data = json.loads((DATA / "cpu_resnet18.json").read_text())
    change(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    args = (
        [str(bad), "--out", str(tmp_path / "r")]
        if command == "report"
        else [str(DATA / "cpu_resnet18.json"), str(bad)]
    )
    assert main([command, *args, "--db", str(tmp_path / "h.db")]) == 2
    err = capsys.readouterr().err
    assert message in err and "internal error" not in err


# --------------------------------------------------------------------------- exits (items 10, 13)


def test_bench_run_exits_1_when_every_configuration_failed(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(
        'models = ["tests.tiny_models:fails_in_training"]\ndevice = "cpu"\nimage_size = 8\nbatch_sizes = [2, 4]\n'
        "[measure]\nwarmup = 1\nmin_steps = 3\nmax_time = 0.2\nmin_time = 0.0\nisolate = false\n"
    )
    assert main(["run", "p.toml", "--db", str(tmp_path / "h.db"), "--out", str(tmp_path / "rep")]) == 1
    assert "no configuration measured" in capsys.readouterr().err


def test_one_failing_configuration_does_not_stop_the_profile_or_lose_its_points(
    tmp_path, monkeypatch, capsys
):
    """A cell whose sweep fails at a later size keeps its measured point (file, history, report);
    the next cell still runs; the profile exits 1 and --resume measures only the failed cell again."""
    import sqlite3

    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(
        'models = ["tests.fails_later:model", "tests.tiny_models:tiny_cnn"]\ndevice = "cpu"\nimage_size = 8\n'
        "batch_sizes = [2, 4]\n[measure]\nwarmup = 1\nmin_steps = 3\nmax_time = 0.2\nmin_time = 0.0\n"
        "isolate = false\n"
    )
    db = tmp_path / "h.db"
    args = ["run", "p.toml", "--db", str(db), "--out", str(tmp_path / "rep")]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert "fails_later: no data for batch 4" in out and "(1 measured point(s) kept)" in out
    assert "1 of 2 configuration(s) failed" in err
    with sqlite3.connect(db) as con:
        models = sorted(r[0] for r in con.execute("SELECT model FROM runs"))
    assert models == ["tests.fails_later:model", "tests.tiny_models:tiny_cnn"]  # both cells stored
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "fails_later" in report and "tiny_cnn" in report
    # --resume: the good cell is skipped, the failed one is measured again (and fails again)
    assert main([*args, "--resume"]) == 1
    err = capsys.readouterr().err
    assert "skip (already measured): tests.tiny_models:tiny_cnn" in err
    assert "skip (already measured): tests.fails_later" not in err
    # a measured cell whose file was cut short since: measured again, not an error on every resume
    (good,) = (tmp_path / "bench_results").rglob("tests.tiny_models_tiny_cnn*.json")
    good.write_text(good.read_text()[:100])
    assert main([*args, "--resume"]) == 1  # the fails_later cell still fails
    assert "skip (already measured)" not in capsys.readouterr().err
    assert json.loads(good.read_text())["status"] == "complete"


def test_resume_searches_again_when_a_max_batch_file_is_unreadable(tmp_path, monkeypatch):
    """A cell whose max-batch file was cut short after it was measured: --resume measures the cell
    again (it used to fail on that file at every resume)."""
    import bench.jobs.profile_run as suite_mod
    from bench.jobs.profiles import parse_profile

    monkeypatch.chdir(tmp_path)
    searched = []

    def fake_search(entry, out_path):  # the search itself is tested elsewhere: a file is enough here
        searched.append(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(_search_for(DATA / "cpu_resnet18.json")))
        return None, str(out_path)

    monkeypatch.setattr(suite_mod, "_search_max_batch", fake_search)
    prof = parse_profile(
        {"models": ["tests.tiny_models:tiny_cnn"], "device": "cpu", "image_size": 8, "batch_sizes": [2],
         "max_batch": True, "measure": {"warmup": 1, "min_steps": 3, "max_time": 0.2, "min_time": 0.0,
                                        "isolate": False}},
        "p.toml", "p",
    )  # fmt: skip
    suite_mod.run_profile(prof, manifest_dir=tmp_path / "m")
    states = []
    suite_mod.run_profile(
        prof, resume=True, manifest_dir=tmp_path / "m", on_cell=lambda i, n, e, s: states.append(s)
    )
    assert states == ["skip"] and len(searched) == 1
    searched[0].write_text(searched[0].read_text()[:50])
    states.clear()
    again = suite_mod.run_profile(
        prof, resume=True, manifest_dir=tmp_path / "m", on_cell=lambda i, n, e, s: states.append(s)
    )
    assert states == ["redo", "start", "done"] and len(searched) == 2
    assert not again.cells[0].skipped and again.cells[0].error is None


def test_ctrl_c_in_max_batch_says_what_was_kept(tmp_path, monkeypatch, capsys):
    import bench.jobs.maxbatch
    from bench.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.jobs.maxbatch, "_search", interrupted)
    assert main(["max-batch", TINY, "--image-size", "8", "--db", str(tmp_path / "h.db")]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_ctrl_c_in_import_says_what_was_kept(tmp_path, monkeypatch, capsys):
    import bench.results.store
    from bench.cli import main

    real = bench.results.store.import_file
    calls = []

    def import_then_interrupt(db, path):
        calls.append(path)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(db, path)

    monkeypatch.setattr(
        "bench.cli.history.import_file", import_then_interrupt
    )  # where `bench import` calls it
    files = [str(DATA / "cpu_resnet18.json"), str(DATA / "gpu_resnet50_fp32.json")]
    assert main(["import", *files, "--db", str(tmp_path / "h.db")]) == 130
    assert "1 of 2 file(s) imported" in capsys.readouterr().err


# --------------------------------------------------------------------------- confidence (item 17)


def _noisy(b, sps, rel, converged):
    from bench.results.schema import Point, StepStats

    m = b / sps
    stats = StepStats(10, m, m, m * rel, m, m, m, m, m * (1 - rel), m * (1 + rel), rel)
    return Point(batch_size=b, status="ok", samples_per_sec=sps, step_stats=stats, converged=converged)


def test_recommendation_says_when_the_spread_swamps_the_differences():
    from rich.console import Console

    from bench.analysis.recommend import recommend
    from bench.present.tables import recommendation_table as render
    from tests.test_recommend import sweep_of

    # the quickstart: +-500% intervals, unconverged; 4 "wins" by noise
    noisy = sweep_of(
        [_noisy(1, 100.0, 0.2, False), _noisy(2, 120.0, 5.24, False), _noisy(4, 130.0, 5.52, False)]
    )
    rec = recommend(noisy)
    # issue 23: intervals of ±500% are not ranked at all, and one of them read faster than the
    # clean batch 1, so there is no pick to make
    assert rec.best is None and rec.knee is None and rec.not_ranked == (2, 4)
    console = Console(width=300, record=True)
    console.print(render(rec))
    text = " ".join(console.export_text().split())
    assert "cannot recommend a batch size" in text and "batch 2 (95% interval ±524.0%)" in text
    # near-overlapping intervals of rankable width: the picks name the batches they cannot tell apart
    close = recommend(
        sweep_of([_noisy(1, 100.0, 0.2, False), _noisy(2, 110.0, 0.3, False), _noisy(4, 120.0, 0.3, False)])
    )
    assert (
        close.best.batch_size == 4 and close.indistinguishable == (1, 2, 4) and close.unconverged == (1, 2, 4)
    )
    # tight intervals that do not overlap: no caveat
    clean = recommend(sweep_of([_noisy(1, 100.0, 0.01, True), _noisy(2, 150.0, 0.01, True)]))
    assert (
        clean.indistinguishable == ()
        and clean.unconverged == ()
        and not any("indisting" in n for n in clean.notes)
    )


def test_the_recommendation_and_its_caveats_are_in_the_result_json(tmp_path):
    """Item 17, the JSON: a finished result carries the picks, the indistinguishable and the
    unconverged batches and the caveat text; it round-trips, and files without it still load."""
    from dataclasses import replace

    from bench.analysis.recommend import recommend
    from bench.results.codec import dumps, load_result, result_from_dict
    from tests.test_recommend import sweep_of

    noisy = sweep_of(
        [_noisy(1, 100.0, 0.2, False), _noisy(2, 110.0, 0.3, False), _noisy(4, 120.0, 0.3, False)]
    )
    from tests.test_recommend import max_result

    rec = recommend(noisy, max_result(safe=4, mx=5, headroom=0.1), 2, 0.1)
    data = json.loads(dumps(replace(noisy, recommendation=rec)))
    block = data["recommendation"]
    assert block["best"]["batch_size"] == 4 and block["knee"]["batch_size"] == 4
    assert block["safe_max"]["batch_size"] == 4 and block["best"]["lr_linear"] == pytest.approx(0.2)
    assert block["indistinguishable"] == [1, 2, 4] and block["unconverged"] == [1, 2, 4]
    assert any("indistinguishable" in n for n in block["notes"]) and block["not_ranked"] == []
    assert result_from_dict(data).recommendation == rec
    assert load_result(str(DATA / "cpu_resnet18.json")).recommendation is None  # written before it existed
    with pytest.raises(BenchError, match="recommendation: indistinguishable should be a list"):
        result_from_dict({**data, "recommendation": {**block, "indistinguishable": ["four"]}})


def test_a_finished_library_sweep_writes_its_recommendation(tmp_path):
    from bench import MeasureSettings, Workload, run_sweep
    from bench.analysis.recommend import recommend
    from bench.results.codec import load_result

    settings = MeasureSettings(
        warmup_steps=1, min_steps=3, max_time_seconds=0.2, min_time_seconds=0, isolate=False
    )
    seen = []
    out = tmp_path / "r.json"
    result = run_sweep(
        Workload(model=TINY, image_size=8), [2, 4], settings, out_path=out, on_event=seen.append
    )
    running = [e.result for e in seen if e.kind == "start"]
    assert running and running[0].recommendation is None  # not finished: no picks yet
    # a pick, or (3-step points on a busy machine can be too noisy to rank) the batches left out
    assert result.recommendation == recommend(result)
    assert result.recommendation.best is not None or result.recommendation.not_ranked
    assert load_result(str(out)).recommendation == result.recommendation


@pytest.mark.slow
def test_sweep_json_carries_the_recommendation_the_table_shows(tmp_path, capsys):
    from bench.cli import main

    out, db = tmp_path / "r.json", tmp_path / "h.db"
    args = ["sweep", TINY, "-b", "2,4", *FAST, "--no-isolate", "-o", str(out), "--db", str(db)]
    assert main([*args, "--json", "--base-batch", "2", "--base-lr", "0.1"]) == 0
    printed = json.loads(capsys.readouterr().out)["recommendation"]
    assert printed["base_lr"] == 0.1
    if printed["best"] is not None:  # None: too noisy to rank (tiny points on a busy machine)
        best = printed["best"]["batch_size"]
        assert printed["best"]["lr_linear"] == pytest.approx(0.1 * best / 2)
    else:
        assert printed["not_ranked"]
    assert json.loads(out.read_text())["recommendation"] == printed
    (stored,) = _history(db)
    assert stored["recommendation"] == printed  # replaced in place, one run


def test_a_model_class_from_a_script_is_one_clear_error_on_cpu(tmp_path):
    """find_max_batch(model) with the model's class in the script itself: CPU probes run in child
    processes, which never import the caller's __main__; say so and what to do, before any probe."""
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import torch
            from bench import find_max_batch

            class Net(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.fc = torch.nn.Linear(4, 2)

                def forward(self, x):
                    return self.fc(x.flatten(1))

            try:
                find_max_batch(Net(), device="cpu", input_shape=(4,), cap=2, granularity=1, soak_steps=1)
            except Exception as exc:
                print(type(exc).__name__, exc)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300
    )
    said = " ".join(proc.stdout.split())
    assert said.startswith("BenchError cannot search __main__.Net: class Net is defined in __main__"), said
    assert "mymodels.py" in said and "device='cuda'" in said


def test_error_text_with_brackets_never_breaks_the_live_display():
    """A gloo error carries '[/__w/pytorch/.../unbound_buffer.cc:78]', which rich reads as a closing
    tag: the notice and the point's error are printed as text (this crashed a failing-rank run)."""
    import io

    from rich.console import Console

    from bench.jobs.sweep import SweepEvent
    from bench.present.display import LiveSweep
    from bench.results.schema import ERROR, Point

    text = "Timed out [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] [bold"
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with LiveSweep(console) as live:
        live(SweepEvent("notice", message=f"batch 4 failed ({text})"))
        live(SweepEvent("point_start", batch_size=4))
        live(SweepEvent("point_done", batch_size=4, point=Point(batch_size=4, status=ERROR, error=text)))
    assert "unbound_buffer.cc:78]" in out.getvalue()
