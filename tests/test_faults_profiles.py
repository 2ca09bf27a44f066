"""Profiles under faults (issue 23, items 18-19): a full disk during `bench run`, configurations that
measure nothing, a "max" that finds no fit. Hermetic: everything under tmp_path."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from types import SimpleNamespace

MEASURE = "[measure]\nwarmup = 1\nmin_steps = 3\nmax_time = 0.2\nmin_time = 0.0\nisolate = false\n"


def _stored_models(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return sorted(r[0] for r in con.execute("SELECT model FROM runs"))


def test_a_full_disk_during_bench_run_is_one_line_and_loses_nothing(tmp_path, monkeypatch, capsys):
    """The disk fills after the first configuration's first two writes (its start and its point):
    its point is rescued to the temp folder and stored; the manifest cannot be written (one
    warning); the second configuration is attempted and fails in one line; no temp file stays."""
    import tempfile

    from bench.cli import main
    from bench.results import files as sweep

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    real = sweep.write_json_atomic

    writes = {"n": 0}

    def full_disk(path, text):
        if Path(path).parent != tmp_path / "tmp":
            writes["n"] += 1
            if writes["n"] > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(sweep, "write_json_atomic", full_disk)
    (tmp_path / "p.toml").write_text(
        'models = ["tests.tiny_models:tiny_cnn"]\nprecisions = ["fp32", "bf16"]\ndevice = "cpu"\n'
        f"image_size = 8\nbatch_sizes = [2]\n{MEASURE}"
    )
    db = tmp_path / "h.db"
    rc = main(["run", "p.toml", "--db", str(db), "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert rc == 1, err  # the second configuration could not be written: the profile is incomplete
    assert "internal error" not in err and "Traceback" not in err
    assert _stored_models(db) == ["tests.tiny_models:tiny_cnn"]  # the finished one is stored
    assert "1 of 2 configuration(s) failed" in err
    warnings = [line for line in err.splitlines() if "cannot record the finished cell" in line]
    assert len(warnings) == 1, err  # said once, in one line
    assert not list((tmp_path / ".bench").rglob("*.tmp")) and not list(tmp_path.rglob(".*.tmp"))


def test_a_configuration_that_fails_at_every_size_fails_the_profile(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.toml").write_text(
        'models = ["tests.tiny_models:fails_in_training", "tests.tiny_models:tiny_cnn"]\ndevice = "cpu"\n'
        f"image_size = 8\nbatch_sizes = [2]\n{MEASURE}"
    )
    rc = main(["run", "p.toml", "--db", str(tmp_path / "h.db"), "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "1 of 2 configuration(s) failed" in err


def test_max_that_finds_no_fit_says_so_and_sweeps_nothing(tmp_path, monkeypatch, capsys):
    from bench.cli import main
    from bench.jobs import profile_run

    monkeypatch.chdir(tmp_path)
    nothing_fits = SimpleNamespace(safe_batch_size=None, max_batch_size=None, to_dict=lambda: {})
    monkeypatch.setattr(profile_run, "_search_max_batch", lambda entry, out_path: (nothing_fits, None))
    swept = []
    monkeypatch.setattr("bench.jobs.sweep.run_sweep", lambda *a, **k: swept.append(a))
    (tmp_path / "p.toml").write_text(
        'models = ["tests.tiny_models:tiny_cnn"]\ndevice = "cpu"\nimage_size = 8\nmax_batch = true\n'
        f'batch_sizes = "max"\nmemory_limit = "1KiB"\n{MEASURE}'
    )
    rc = main(["run", "p.toml", "--db", str(tmp_path / "h.db"), "--out", str(tmp_path / "rep")])
    out, err = capsys.readouterr()
    assert rc == 1, err
    assert swept == []  # never the default sizes instead
    assert "found no batch that fits" in " ".join((out + err).split())


def test_a_sticky_cuda_error_ends_the_profile_not_only_its_cell(tmp_path, monkeypatch, capsys):
    """After a sticky CUDA error this process's context is dead: the next configuration would only
    fail the same way, so the profile stops there, says so, and keeps the finished points."""
    from bench.cli import main
    from bench.jobs import profile_run
    from bench.results.errors import StickyCudaError

    monkeypatch.chdir(tmp_path)
    calls = []

    def sticky_sweep(workload, *args, **kwargs):
        calls.append(workload.precision)
        exc = StickyCudaError(
            "batch 8: CUDA error: an illegal memory access was encountered; run with --isolate"
        )
        exc.partial_result = None
        raise exc

    monkeypatch.setattr(profile_run, "run_sweep", sticky_sweep)
    (tmp_path / "p.toml").write_text(
        'models = ["tests.tiny_models:tiny_cnn"]\nprecisions = ["fp32", "bf16"]\ndevice = "cpu"\n'
        f"image_size = 8\nbatch_sizes = [2]\n{MEASURE}"
    )
    rc = main(["run", "p.toml", "--db", str(tmp_path / "h.db"), "--out", str(tmp_path / "rep")])
    out, err = capsys.readouterr()
    assert rc == 1 and calls == ["fp32"]  # the bf16 configuration never ran in the dead context
    text = " ".join((out + err).split())
    assert "illegal memory access" in text and "ended the profile" in text and "--resume" in text
    assert "Traceback" not in err and "internal error" not in err
