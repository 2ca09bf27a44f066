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

from bench.errors import BenchError
from bench.isolate import over_budget_message, run_isolated

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
            from bench.isolate import run_isolated

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
