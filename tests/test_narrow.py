"""Readable at 80 columns (issue 23 items 6-7): `bench sweep --help` in panels, every help text
whole, no `<bool>`; the sweep's tables with no cell cut short ("bat…", "sam…")."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from rich.console import Console

from bench.cli import app, main
from bench.results.codec import load_result


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_sweep_help_at_80_columns_is_in_panels_and_cuts_nothing(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["sweep", "--help"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out and "<bool>" not in out
    for panel in (
        "Workload:",
        "Input data:",
        "Measurement:",
        "Output and history:",
        "Recommendation and advice:",
    ):
        assert f"\n{panel}\n" in out, panel
    whole = _squash(out)
    command = typer.main.get_command(app).commands["sweep"]
    for param in command.params:  # every option and every word of its help, in full
        for name in param.opts:
            assert name in out, name
        assert _squash(getattr(param, "help", None) or "") in whole, param.name
    assert "1:32 on a CPU" in out  # what -b defaults to where the user is


def test_the_cpu_default_batch_sizes_are_the_ones_the_help_states():
    from bench.jobs.sweep_loop import DEFAULT_BATCH_SIZES

    assert DEFAULT_BATCH_SIZES["cpu"] == (1, 2, 4, 8, 16, 32)  # -b's help: "1:32 on a CPU"
    assert DEFAULT_BATCH_SIZES["cuda"][0] == 1 and DEFAULT_BATCH_SIZES["cuda"][-1] == 1024


ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = (
    ROOT / "reports" / "cpu-epyc-2core" / "quickstart" / "results" / "efficientnet_b0_train_fp32.json"
)
RUNS = [
    QUICKSTART,
    ROOT / "tests" / "data" / "gpu_resnet50_bf16.json",
    ROOT / "tests" / "data" / "cpu_resnet18.json",
]


def _render(*renderables) -> str:
    console = Console(width=80, record=True, color_system=None)
    for r in renderables:
        console.print(r)
    return console.export_text()


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.stem)
def test_the_sweep_tables_cut_nothing_at_80_columns(path):
    """Issue 23 item 6: at 80 columns the main job's tables read "bat…", "sam…", "verd…",
    "423… ms–…"."""
    from bench.analysis.recommend import recommend
    from bench.present.display import sweep_table
    from bench.present.tables import recommendation_table

    run = load_result(str(path))
    rec = recommend(run, None, 256, 0.1, noise_scale=300.0, noise_source="given")  # every column
    text = _render(sweep_table(run), recommendation_table(recommend(run)), recommendation_table(rec))
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for header in ("batch", "samples/s", "±CI95", "verdict", "status", "p10–p90", "median"):
        assert header in text, header
    for p in run.points:  # every measured value whole, on one line
        assert f"{p.samples_per_sec:,.1f}" in text
    # wide terminals keep the one table
    wide = Console(width=250, record=True, color_system=None)
    wide.print(sweep_table(run))
    assert "step times and utilisation" not in wide.export_text()


def test_the_profile_table_cuts_nothing_at_80_columns():
    from bench.present.display import profile_lines, profile_table

    run = load_result(str(QUICKSTART))
    cell = SimpleNamespace(
        label="efficientnet_b0 train fp32", skipped=False, sweep=run, search=None, error=None, trace_dir=None,
        sweep_path="bench_results/quickstart/efficientnet_b0_train_fp32.json",
    )  # fmt: skip
    text = _render(profile_table("quickstart", [cell]), *profile_lines([cell], None))
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "efficientnet_b0_train_fp32.json" in text.replace("\n", "")
