"""The fidelity benchmark's plumbing (its numbers are for a quiet machine, never asserted here)."""

from __future__ import annotations

import sys

import pytest

from bench.benchmarks import fidelity


@pytest.mark.slow
def test_every_arm_runs_and_the_ratios_are_printed(monkeypatch, capsys):
    argv = ["fidelity", "--model", "tests.tiny_models:tiny_cnn", "--image-size", "8", "--batch-size", "2",
            "--warmup", "1", "--steps", "3", "--rounds", "1", "--device", "cpu",
            "--arms", "hand-proc,hand,run_point,sweep,sweep-inproc"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    fidelity.main()
    out = capsys.readouterr().out
    assert "median: hand (own process)" in out  # the first arm is the reference
    for arm in ("hand-written", "run_point", "bench sweep", "sweep --no-isolate"):
        assert f"  {arm}" in out and "per-round ratios" in out
    assert "  run_point / hand-written: median of per-round ratios" in out  # the in-process pair


def test_unknown_arm_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["fidelity", "--arms", "hand,nope"])
    with pytest.raises(SystemExit) as exc:
        fidelity.main()
    assert exc.value.code == 2
    assert "--arms takes hand, run_point" in capsys.readouterr().err
