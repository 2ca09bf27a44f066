"""Faults from the input side (issue 23, items 13-15): DataLoader workers in the isolated child,
non-finite and absurd settings, user factories that exit, print, hang or parse bench's argv.
Hermetic: every file and history lives under tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests.tiny_models:tiny_cnn"
FAST = ["--image-size", "8", "--warmup", "1", "--min-steps", "3", "--max-time", "0.3", "--min-time", "0"]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **extra}


def _tagged(tag: str) -> list[int]:
    """Pids of every process on the machine whose environment carries ``BENCH_TEST_TAG=tag``: an
    orphaned DataLoader worker is re-parented to init, so a walk of our own children would miss it."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("BENCH_TEST_TAG") == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.Error:
            pass
    return found


# --------------------------------------------------------------------------- item 13: workers


@pytest.mark.slow
def test_loader_workers_in_the_isolated_child_finish_and_leave_no_process(tmp_path):
    """The default CPU path (isolated child) with two DataLoader workers: a worker forked while the
    child's watchdog blocked on sys.stdin used to hang closing it; the sweep sat at "build"."""
    tag = uuid.uuid4().hex
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "sweep", TINY, "-b", "2", *FAST, "--data", "loader",
         "--workers", "2", "-o", str(out), "--no-history"],
        cwd=tmp_path, env=_env(BENCH_TEST_TAG=tag), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (point,) = json.loads(out.read_text())["points"]
    assert point["status"] == "ok" and point["samples_per_sec"] > 0
    assert _tagged(tag) == [], "a DataLoader worker or the child outlived the sweep"


@pytest.mark.slow
def test_a_corrupt_data_dir_with_two_workers_is_one_error_line(tmp_path):
    tag = uuid.uuid4().hex
    (tmp_path / "data" / "cls").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "data" / "cls" / name).write_bytes(b"not a jpeg" * 50)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "sweep", TINY, "-b", "2", *FAST, "--data", "loader",
         "--workers", "2", "--data-dir", str(tmp_path / "data"), "-o", str(tmp_path / "r.json"),
         "--no-history"],
        cwd=tmp_path, env=_env(BENCH_TEST_TAG=tag), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot decode" in errors[0] and "Traceback" not in proc.stderr, proc.stderr
    assert _tagged(tag) == []


def test_a_worker_error_is_unwrapped_to_its_cause():
    from bench.measure.data import _from_worker
    from bench.results.errors import BenchError

    wrapped = BenchError(
        "Caught BenchError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in load\nbench.results.errors.BenchError: --data-dir: cannot decode a.jpg'
    )
    unwrapped = _from_worker(wrapped)
    assert isinstance(unwrapped, BenchError) and str(unwrapped) == "--data-dir: cannot decode a.jpg"
    other = _from_worker(
        RuntimeError("Caught ValueError in DataLoader worker process 1.\n...\nValueError: bad")
    )
    assert str(other) == "in a DataLoader worker: ValueError: bad"
    plain = ValueError("x")
    assert _from_worker(plain) is plain


# --------------------------------------------------------------------------- item 14: settings


def _one_error(rc: int, err: str) -> str:
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["--min-time", "nan"], "finite"),
        (["--max-time", "inf"], "finite"),
        (["--max-time", "1e300"], "at most"),
        (["--target-ci", "nan"], "finite"),
        (["--dist-timeout", "inf"], "distributed timeout"),
        (["--dist-timeout", "nan"], "distributed timeout"),
        (["--device", ""], "unknown device"),
    ],
)
def test_non_finite_and_absurd_sweep_settings_are_one_line(tmp_path, capsys, args, what):
    from bench.cli import main

    out = tmp_path / "r.json"
    rc = main(["sweep", TINY, "-b", "2", "--image-size", "8", *args, "-o", str(out), "--no-isolate",
               "--db", str(tmp_path / "h.db")])  # fmt: skip
    assert what in _one_error(rc, capsys.readouterr().err)
    assert not out.exists()  # never a file bench cannot read back


def test_max_batch_negative_max_seconds_is_one_line_before_any_banner(tmp_path, capsys):
    from bench.cli import main

    rc = main(["max-batch", TINY, "--max-seconds", "-1", "--image-size", "8", "-o", str(tmp_path / "m.json")])
    captured = capsys.readouterr()
    assert "--max-seconds" in _one_error(rc, captured.err)
    assert "searching" not in captured.out + captured.err


@pytest.mark.parametrize(
    ("measure", "key"),
    [("min_time = nan", "measure.min_time"), ("max_time = inf", "measure.max_time"),
     ("target_ci = nan", "measure.target_ci"), ("sample_interval = inf", "measure.sample_interval")],
)  # fmt: skip
def test_non_finite_profile_settings_are_one_line(tmp_path, capsys, measure, key):
    from bench.cli import main

    path = tmp_path / "p.toml"
    path.write_text(f"models = ['{TINY}']\ndevice = 'cpu'\n[measure]\n{measure}\n")
    rc = main(["run", str(path), "--db", str(tmp_path / "h.db")])
    line = _one_error(rc, capsys.readouterr().err)
    assert f"'{key}'" in line and "finite" in line, line


def test_an_empty_device_override_for_a_profile_is_refused(tmp_path, capsys):
    from bench.cli import main

    path = tmp_path / "p.toml"
    path.write_text(f"models = ['{TINY}']\n")
    rc = main(["run", str(path), "--device", "", "--db", str(tmp_path / "h.db")])
    assert "unknown device" in _one_error(rc, capsys.readouterr().err)


# --------------------------------------------------------------------------- item 15: user factories


def _sweep(tmp_path, model, *extra):
    from bench.cli import main

    out = tmp_path / "r.json"
    rc = main(["sweep", f"tests.fault_targets:{model}", "-b", "2", *FAST, "--no-isolate", "-o", str(out),
               "--db", str(tmp_path / "h.db"), *extra])  # fmt: skip
    return rc, out


def test_a_factory_that_exits_is_one_line_not_a_silent_exit_0(tmp_path, capsys):
    rc, out = _sweep(tmp_path, "factory_exits")
    line = _one_error(
        rc, "\n".join(x for x in capsys.readouterr().err.splitlines() if not x.startswith("note"))
    )
    assert "the model factory tests.fault_targets:factory_exits called sys.exit(0)" in line
    assert json.loads(out.read_text())["status"] == "failed"  # finalised, not left "running"


def test_a_factory_that_prints_does_not_corrupt_json_output(tmp_path, capsys):
    rc, _ = _sweep(tmp_path, "factory_prints", "--json")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert json.loads(captured.out)["status"] == "complete"
    assert "building my model..." in captured.err


def test_a_factory_sees_its_own_argv_and_argparse_exits_are_one_line(tmp_path, capsys):
    rc, _ = _sweep(tmp_path, "factory_parses_args")
    assert rc == 0, capsys.readouterr().err
    rc, _ = _sweep(tmp_path, "factory_needs_args")
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "called sys.exit(2) (argparse?" in errors[0], errors


def test_a_factory_that_never_returns_times_out_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_BUILD_TIMEOUT", "0.5")
    rc, out = _sweep(tmp_path, "factory_hangs")
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "did not return within 0.5 s" in errors[0], errors
    assert json.loads(out.read_text())["status"] == "failed"


def test_ctrl_c_while_a_factory_builds_leaves_the_file_interrupted(tmp_path, monkeypatch):
    from bench import MeasureSettings, Workload, run_sweep
    from bench.jobs import sweep_loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_loop, "count_flops_per_sample", interrupted)
    out = tmp_path / "r.json"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(Workload(model=TINY, image_size=8), [2], MeasureSettings(isolate=False), out_path=out)
    data = json.loads(out.read_text())
    assert data["status"] == "interrupted" and data["finished_at"]


def test_the_build_timeout_setting_is_checked(monkeypatch):
    from bench.measure.models import build_timeout_seconds
    from bench.results.errors import BenchError

    assert build_timeout_seconds() == 600.0
    for bad in ("inf", "nan", "-1", "soon"):
        monkeypatch.setenv("BENCH_BUILD_TIMEOUT", bad)
        with pytest.raises(BenchError, match="BENCH_BUILD_TIMEOUT"):
            build_timeout_seconds()
