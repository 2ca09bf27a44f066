"""The recommend job (``bench recommend``): the max-batch search, a sweep of powers of two up to
the safe batch it found, and the batch sizes to pick, in one call a Python user can make."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.analysis.recommend import check_lr_reference
from bench.jobs.history import StoreArg, history_path, store_run
from bench.jobs.sweep import powers_of_two_up_to, run_sweep
from bench.results.errors import BenchError
from bench.results.maxbatch import MaxBatchResult
from bench.results.schema import MeasureSettings, Recommendation, SweepResult, Workload


@dataclass(frozen=True)
class RecommendRun:
    """`bench recommend`'s answer: the max-batch search, the sweep it bounded, and the pick."""

    search: MaxBatchResult
    sweep: SweepResult
    recommendation: Recommendation
    sweep_path: Path
    warnings: tuple[str, ...] = ()  # the history could not take the search (the files have it)


def recommend_for(
    workload: Workload,
    settings: MeasureSettings,
    *,
    out_path: Path | str,
    base_batch: int | None = None,
    base_lr: float | None = None,
    store: StoreArg = None,
    on_search: Callable[[MaxBatchResult], None] | None = None,
    sweep_display: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    find: Callable[..., MaxBatchResult] | None = None,
    sweep: Callable[..., SweepResult] = run_sweep,
    **search_options: Any,
) -> RecommendRun:
    """Max batch, then a sweep of powers of two up to the safe batch (the largest that keeps the
    memory headroom), then the batch to pick: one call for what a user would otherwise chain by hand.

    ``search_options`` go to ``find_max_batch`` (granularity, memory_limit, cap, isolate, on_probe).
    ``store``: as ``run_sweep``'s; the search and the sweep are stored. ``on_search`` sees the
    search before the sweep starts (the CLI prints it); ``sweep_display()`` is entered around the
    sweep and its value, if not None, receives the sweep's events (the CLI's live table). ``find``
    and ``sweep`` stand in for ``find_max_batch`` and ``run_sweep`` (tests). BenchError when no
    batch fits with headroom: there is nothing to sweep.
    """
    check_lr_reference(base_batch, base_lr)
    db = history_path(store)
    if find is None:
        pass
    search = find(workload, **search_options)
    warning = store_run(db, search)
    if on_search is not None:
        on_search(search)
    if search.safe_batch_size is None:
        raise BenchError("no batch size fits with headroom: nothing to sweep")
    sizes = powers_of_two_up_to(search.safe_batch_size)
    with sweep_display() as on_event:
        result = sweep(
            workload, sizes, settings, out_path=out_path, on_event=on_event, store=db, search=search,
            base_batch=base_batch, base_lr=base_lr,
        )  # fmt: skip
    assert result.recommendation is not None  # a finished sweep carries its picks
    return RecommendRun(search, result, result.recommendation, Path(out_path), (warning,) if warning else ())
