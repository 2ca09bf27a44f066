"""Readable at 80 columns (issue 23 items 6-7): `bench sweep --help` in panels, every help text
whole, no `<bool>`; the sweep's tables with no cell cut short ("bat…", "sam…")."""

from __future__ import annotations

import re

import typer

from bench.cli import app, main


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
