"""What a new user meets first (issue 23 items 9-11): where things go, said as they happen; the
history found from the current directory, and the error saying so; a clone named `bench` beside
a user's script does not shadow the installed package."""

from __future__ import annotations

from pathlib import Path

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
