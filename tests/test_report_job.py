"""The report shows the recommendation stored with a run; recommend() is called from one place."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from bench.jobs import report as report_job
from bench.jobs.sweep import recommend_run
from bench.present.report import ReportRun
from bench.results.codec import load_result

ROOT = Path(__file__).resolve().parent.parent
CPU = Path(__file__).parent / "data" / "cpu_resnet18.json"


def test_a_stored_recommendation_is_shown_not_recomputed(monkeypatch):
    result = load_result(str(CPU))
    stored = dataclasses.replace(recommend_run(result), notes=("the stored one",))
    run = ReportRun("cpu", dataclasses.replace(result, recommendation=stored))
    monkeypatch.setattr(report_job, "recommend_run", lambda *a, **k: pytest.fail("recomputed"))
    assert report_job.with_recommendation(run).result.recommendation is stored


def test_a_run_stored_without_picks_gets_them_from_the_sweep_s_own_function():
    result = load_result(str(CPU))  # schema 1: written before results carried a recommendation
    assert result.recommendation is None
    rec = report_job.with_recommendation(ReportRun("cpu", result)).result.recommendation
    assert rec == recommend_run(result)
    assert rec.best is not None and rec.best.batch_size == result.best_point().batch_size


def test_recommend_is_called_from_one_place():
    calls = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "recommend":
                calls.append(str(path.relative_to(ROOT)))
    assert calls == ["bench/jobs/sweep.py"]
