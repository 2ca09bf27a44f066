"""reports/gpu_session.sh fits the lent GPU's limits: run with a stub python3 (no GPU, no torch), it
leaves exactly a tarball and a log in $OUT, gives each stage no more than its budget of step
timeouts, prints every step's seconds, and works in a temporary folder it removes."""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "reports" / "gpu_session.sh"

STUB = """#!/usr/bin/env bash
case "$*" in
    *cuda_device_count*) for i in $(seq 1 "$STUB_GPUS"); do echo gpu; done ;;
    *open_device*) echo "NVIDIA H100 80GB HBM3" ;;
    *) echo "stub python3 $*" ;;
esac
"""


def run_stage(tmp_path: Path, stage: str, gpus: int = 1) -> tuple[Path, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "python3"
    stub.write_text(STUB)
    stub.chmod(0o755)
    out, tmp = tmp_path / f"out{stage}", tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "OUT": str(out),
        "TMPDIR": str(tmp),
        "STUB_GPUS": str(gpus),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(["bash", str(SCRIPT), stage], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert list(tmp.iterdir()) == []  # the work folder is gone
    return out, done.stdout


@pytest.mark.parametrize("stage, budget, steps", [
    ("A", 540, ["sweep_bf16_cl", "maxbatch_bf16_cl", "fidelity_bf16_cl", "report", "diagnose", "env"]),
    ("B", 300, ["sweep_fp32", "sweep_bf16_cl_noautotune", "trace", "sweep_loader", "peers_bf16"]),
])  # fmt: skip
def test_a_stage_leaves_a_tarball_and_a_log_within_its_budget(tmp_path, stage, budget, steps):
    out, stdout = run_stage(tmp_path, stage)
    assert sorted(os.listdir(out)) == [f"gpu_{stage}.log", f"gpu_{stage}.tgz"]
    log = (out / f"gpu_{stage}.log").read_text()
    ran = re.findall(r"^=== (\S+): ([0-9.]+) s \(timeout (\d+) s\) rc=0$", log, re.MULTILINE)
    assert [name for name, _, _ in ran] == steps  # most valuable first, each with its seconds
    assert sum(int(limit) for _, _, limit in ran) <= budget
    with tarfile.open(out / f"gpu_{stage}.tgz") as tar:
        names = tar.getnames()
    assert all(n.startswith("nvidia-h100-80gb-hbm3") for n in names)
    assert {f"nvidia-h100-80gb-hbm3/{s}.log" for s in steps} <= set(names)


def test_stage_b_runs_torchrun_1_vs_2_only_with_a_second_gpu(tmp_path):
    out, _ = run_stage(tmp_path, "B", gpus=2)
    log = (out / "gpu_B.log").read_text()
    assert "=== sweep_torchrun_1_2:" in log and "peers_bf16" not in log


def test_a_step_that_does_not_fit_the_budget_is_skipped_and_said(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "python3"
    stub.write_text(STUB)
    stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OUT": str(tmp_path / "o"), "TMPDIR": str(tmp_path),
           "STUB_GPUS": "1", "BUDGET": "300"}  # fmt: skip
    subprocess.run(
        ["bash", str(SCRIPT), "A"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    log = (tmp_path / "o" / "gpu_A.log").read_text()
    assert "--- fidelity_bf16_cl skipped: its 130 s timeout does not fit the 300 s budget" in log
