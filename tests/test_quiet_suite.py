"""`python -m pytest -q` is quiet (issue 23 item 8): no 230-column pytest-benchmark table, no
torchvision DeprecationWarnings. Runs the suite's own configuration (pyproject.toml,
tests/conftest.py) over a probe with one benchmark and one JPEG round trip."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quiet_run_prints_no_benchmark_table_and_no_deprecation_warnings():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/probes/quiet_probe.py"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "2 passed" in out and "warning" not in out.lower(), out
    assert "benchmark:" not in out and max(len(line) for line in out.splitlines()) <= 80, out
