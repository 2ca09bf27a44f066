"""The report job (``bench report``, a profile's report): the runs' recommendations, then the page.

A sweep carries its recommendation (``finish_sweep`` makes it as the sweep finishes); the report
shows that one. Only a run without one (a file from before recommendations were stored, an
interrupted sweep) or one that a max-batch search of the same workload now completes (its safe max)
gets its recommendation here, through the sweep's own ``recommend_run``: the one place picks are made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from bench.jobs.sweep import recommend_run
from bench.present.report import ReportFiles, ReportRun, build_report


def with_recommendation(run: ReportRun) -> ReportRun:
    """``run`` whose result carries its recommendation (the stored one when it has one)."""
    stored = run.result.recommendation
    completes = (
        stored is not None
        and stored.safe_max is None
        and run.max_batch is not None
        and run.max_batch.safe_batch_size is not None
    )
    if stored is not None and not completes:
        return run
    rec = recommend_run(
        run.result,
        run.max_batch,
        stored.base_batch if stored else None,
        stored.base_lr if stored else None,
        noise_scale=stored.noise_scale if stored else None,
        noise_source=stored.noise_scale_source if stored else None,
    )
    return dataclasses.replace(run, result=dataclasses.replace(run.result, recommendation=rec))


def write_report(runs: Sequence[ReportRun], out_dir: Path | str, *, title: str | None = None) -> ReportFiles:
    """index.html, report.md and the plots of ``runs`` (each with its recommendation) in ``out_dir``."""
    return build_report([with_recommendation(run) for run in runs], out_dir, title=title)
