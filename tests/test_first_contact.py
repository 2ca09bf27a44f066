"""What a new user meets first (issue 23 items 9-11): where things go, said as they happen; the
history found from the current directory, and the error saying so; a clone named `bench` beside
a user's script does not shadow the installed package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.cli.common import DB_ENV

ROOT = Path(__file__).resolve().parent.parent
TINY = "tests.tiny_models:tiny_cnn"


def test_a_python_sweep_says_where_it_writes_and_each_batch_as_it_finishes(tmp_path, capsys):
    from bench import MeasureSettings, Workload, run_sweep

    settings = MeasureSettings(
        warmup_steps=1, min_steps=3, max_time_seconds=0.2, min_time_seconds=0, isolate=False
    )
    result = run_sweep(Workload(model=TINY, image_size=8, device="cpu"), [2, 4], settings, store=True)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("bench: ")]
    assert "results in bench_results/sweep-" in lines[0] and "history" in lines[0]
    assert any(line.startswith("bench: batch 2: ") and "samples/s" in line for line in lines)
    assert any(line.startswith("bench: batch 4: ") for line in lines)
    assert "done: results in bench_results/" in lines[-1]
    assert Path(lines[-1].split("results in ")[1]).is_file() and result.points
    # an on_event of the caller's own: no lines unless asked for
    run_sweep(Workload(model=TINY, image_size=8, device="cpu"), [2], settings, on_event=lambda e: None)
    assert "bench: " not in capsys.readouterr().err


def test_the_history_is_found_from_the_current_directory_and_the_error_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(DB_ENV, raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["diagnose", "latest"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no results history at .bench/results.db (relative to the current directory" in err
    assert str(elsewhere) in err.replace(" ", "")  # rich may wrap the path
    assert "--db PATH or $BENCH_DB" in err


def _can_build_offline() -> bool:
    """setuptools builds an editable wheel without the network: bdist_wheel built in (>= 70.1)."""
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1)


def _install(venv: Path, clone: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    return subprocess.run(
        [*cmd, "--no-index", "-e", str(clone), *extra], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
@pytest.mark.skipif(not _can_build_offline(), reason="setuptools >= 70.1 needed (.ci/run upgrades it)")
def test_a_clone_named_bench_beside_a_script_does_not_shadow_the_install(tmp_path):
    """Issue 23 item 10: the README's Python example, saved next to a clone named `bench`, failed
    with "cannot import name 'MeasureSettings' from 'bench' (unknown location)": the clone was a
    namespace package ahead of the editable install's finder. The README's install line (and
    .ci/run's) puts the clone itself on sys.path instead."""
    import sysconfig

    readme = (ROOT / "README.md").read_text()
    line = "pip install -e '.[dev,timm]' --config-settings editable_mode=compat"
    assert line in readme and line.replace("'", "") in (ROOT / ".ci" / "run").read_text().replace("'", "")
    work = tmp_path / "work"
    clone = work / "bench"
    for part in ("pyproject.toml", "README.md", "bench", "profiles"):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, clone / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            clone.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, clone / part)
    (work / "myscript.py").write_text(
        "import bench\nfrom bench import MeasureSettings, Workload, run_sweep\nprint('ok', bench.__file__)\n"
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # pip and setuptools from this environment, not its editable bench (a .pth line adds a path
    # to sys.path; the .pth files inside that path are not run)
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def script() -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "python"), "myscript.py"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    assert _install(venv, clone).returncode == 0  # the default editable mode: the bug
    assert "cannot import name 'MeasureSettings'" in script().stderr
    done = _install(venv, clone, "--config-settings", "editable_mode=compat")
    assert done.returncode == 0, done.stderr
    run = script()
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok ") and Path(run.stdout.split()[1]) == clone / "bench" / "__init__.py"
