"""The sweep job: ``run_sweep`` is the one entry that ``bench sweep``, ``bench recommend``, profiles,
``bench.run_sweep`` and Python users call.

It measures every batch size (``bench.jobs.sweep_loop``), picks the batch sizes worth using
(``recommend``, with the max-batch search from the history when there is one), re-measures the
flagged points with the change their verdict points to (``advise=True``), writes the result file
and stores the run in the history (``store=``). It returns one frozen ``SweepResult`` carrying all
of it; the command line only parses options before and renders after.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.analysis.recommend import check_lr_reference, recommend
from bench.hw.device import check_device
from bench.jobs.advise import sweep_measure, with_advice
from bench.jobs.history import StoreArg, history_path, store_run
from bench.jobs.sweep_loop import (  # noqa: F401 - the sweep's public names live here
    DEFAULT_BATCH_SIZES,
    EventFn,
    ResultWriter,
    SweepEvent,
    default_out_path,
    measure_sweep,
    with_analysis,
)
from bench.measure.models import resolve
from bench.present.display import PlainProgress
from bench.results.errors import BenchError
from bench.results.maxbatch import MaxBatchResult, maxbatch_from_dict
from bench.results.schema import MeasureSettings, Recommendation, SweepResult, Workload
from bench.results.store import matching_max_batch

MAX_BATCH_SIZE = 2**63 - 1  # the largest integer the results history (SQLite) can hold


def powers_of_two_up_to(limit: int, low: int = 1) -> tuple[int, ...]:
    """``low``, the powers of two above it up to ``limit``, then ``limit``: the ends are kept whether
    or not they are powers of two. (64) -> 1, 2, 4, ..., 64; (100, 6) -> 6, 8, 16, 32, 64, 100."""
    sizes = [low] if low <= limit else []
    p = 1
    while p <= limit:
        if p > low:
            sizes.append(p)
        p *= 2
    if not sizes or sizes[-1] != limit:
        sizes.append(limit)
    return tuple(sizes)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,2,4,8' -> (1, 2, 4, 8); '8:256' -> powers of two from 8 to 256 inclusive.

    A range's ends need not be powers of two: '6:100' -> 6, 8, 16, 32, 64, 100 (ends included).
    """
    text = text.strip()
    if not text:
        raise BenchError("batch sizes are empty: give e.g. 1,2,4,8 or 8:256")

    def one(tok: str) -> int:
        tok = tok.strip()
        if not re.fullmatch(r"[+-]?\d+", tok):
            raise BenchError(f"batch size {tok!r} is not an integer")
        value = int(tok)
        if value <= 0:
            raise BenchError(f"batch size must be positive, got {value}")
        if value > MAX_BATCH_SIZE:
            raise BenchError(f"batch size {tok} is too large (at most {MAX_BATCH_SIZE}, 2**63 - 1)")
        return value

    if ":" in text:
        parts = text.split(":")
        if len(parts) != 2:
            raise BenchError(f"batch size range {text!r} must look like LOW:HIGH, e.g. 8:256")
        low, high = one(parts[0]), one(parts[1])
        if low > high:
            raise BenchError(f"batch size range {text!r} is empty (low > high)")
        return powers_of_two_up_to(high, low)
    tokens = text.split(",")
    if tokens[-1].strip() == "":  # a trailing comma is harmless; an empty item inside is a typo
        tokens.pop()
    if any(not t.strip() for t in tokens):
        raise BenchError(f"batch sizes {text!r} have an empty item: give e.g. 1,2,4,8")
    values = [one(t) for t in tokens]
    if not values:
        raise BenchError("batch sizes are empty: give e.g. 1,2,4,8 or 8:256")
    return tuple(dict.fromkeys(values))  # keep order, drop repeats


def run_sweep(
    workload: Workload,
    batch_sizes: Sequence[int] | None = None,
    settings: MeasureSettings | None = None,
    *,
    out_path: Path | str | None = None,
    on_event: EventFn | None = None,
    annotate_steps: bool = True,
    ranks: Any = None,
    store: StoreArg = None,
    advise: bool = False,
    search: MaxBatchResult | None = None,
    base_batch: int | None = None,
    base_lr: float | None = None,
    noise_scale: float | None = None,
    noise_source: str | None = None,
    progress: bool | None = None,
) -> SweepResult:
    """Measure ``workload`` at each batch size, recommend, advise (when asked), write the result
    file and store it in the history (when asked). Returns the final result.

    ``store``: True for the default history (``.bench/results.db``), a path for another, None or
    False for none. A history that cannot take the run is a "warning" event, never a lost run.
    ``advise``: re-measure host-bound points with ``--compile`` (and CUDA graphs on a GPU) and
    input-bound points with twice the loader workers; the gains land in ``result.advice``.
    ``search``: the max-batch search whose safe batch the recommendation names; by default the
    newest matching one in the history (when ``store`` names one).
    ``base_batch``/``base_lr``: your current batch and learning rate, for scaled starting points.
    ``noise_scale``: B_noise (``bench noise``; ``noise_source`` says where it came from): the
    recommendation adds the goodput-optimal batch, ranked by time to the same loss.

    ``progress``: plain progress lines on stderr (where the results go, each batch as it finishes);
    None = when no ``on_event`` is given (a Python user's script or notebook).
    ``annotate_steps``, ``ranks`` and the exceptions: see ``bench.jobs.sweep_loop.measure_sweep``;
    an interrupted or failed sweep is stored with its finished points before the exception leaves.
    """
    db = check_inputs(workload, store=store, base_batch=base_batch, base_lr=base_lr)
    main = ranks is None or ranks.is_main  # the other ranks of a data-parallel run write nothing
    out_path = Path(out_path) if out_path is not None else default_out_path(workload)
    emit = on_event or (lambda e: None)
    if progress or (progress is None and on_event is None and main):
        emit = _both(on_event, PlainProgress())
        stored = f"; history {db}" if db is not None else ""
        emit(SweepEvent("notice", message=f"results in {out_path}{stored}"))
    where: list[Path | None] = [out_path]

    def track(event: SweepEvent) -> None:
        if event.kind == "moved":
            where[0] = event.results_path
        emit(event)

    def finish(result: SweepResult) -> SweepResult:
        return finish_sweep(
            result, db=db if main else None, search=search, base_batch=base_batch, base_lr=base_lr,
            advise=advise and main, on_event=emit, noise_scale=noise_scale, noise_source=noise_source,
        )  # fmt: skip

    try:
        result = measure_sweep(
            workload, batch_sizes, settings, out_path=out_path, on_event=track,
            annotate_steps=annotate_steps, ranks=ranks, finish=finish,
        )  # fmt: skip
    except BaseException as exc:  # Ctrl-C or a later point failing hard: keep what was measured
        partial = getattr(exc, "partial_result", None)
        if main and isinstance(exc, KeyboardInterrupt):
            _store(db, partial or (where[0] if where[0] is not None and where[0].is_file() else None), emit)
        elif main and partial is not None and partial.points:
            _store(db, partial, emit)
        raise
    if main:
        _store(db, result, emit)
        if progress or (progress is None and on_event is None):
            emit(SweepEvent("notice", message=f"done: results in {where[0] or 'memory only'}"))
    return result


def _both(first: EventFn | None, second: EventFn) -> EventFn:
    def both(event: SweepEvent) -> None:
        if first is not None:
            first(event)
        second(event)

    return both


def check_inputs(
    workload: Workload, *, store: StoreArg = None, base_batch: int | None = None, base_lr: float | None = None
) -> Path | None:
    """Bad input as one BenchError line before anything runs (the command calls it before its live
    display starts): the device, the model, the learning-rate reference, the history's folder.
    Returns the history path (None: not stored)."""
    check_device(workload.device)
    resolve(workload.model)
    check_lr_reference(base_batch, base_lr)
    return history_path(store)


def finish_sweep(
    result: SweepResult,
    *,
    db: Path | None = None,
    search: MaxBatchResult | None = None,
    base_batch: int | None = None,
    base_lr: float | None = None,
    advise: bool = False,
    on_event: EventFn | None = None,
    noise_scale: float | None = None,
    noise_source: str | None = None,
) -> SweepResult:
    """The finished result with its measured advice (``advise``, complete runs only) and its
    recommendation: the one place a sweep's picks are made."""
    emit = on_event or (lambda e: None)
    if search is None and db is not None and result.best_point() is not None:
        search = _history_search(db, result, emit)
    if advise and result.status == "complete":
        result = _with_measured_advice(result, emit)
    rec = recommend_run(
        result, search, base_batch, base_lr, noise_scale=noise_scale, noise_source=noise_source
    )
    return replace(result, recommendation=rec)


def recommend_run(
    result: SweepResult,
    search: MaxBatchResult | None = None,
    base_batch: int | None = None,
    base_lr: float | None = None,
    *,
    noise_scale: float | None = None,
    noise_source: str | None = None,
) -> Recommendation:
    """The one call of ``bench.analysis.recommend.recommend``: a finishing sweep (``finish_sweep``)
    and a report of a run stored without its picks (``bench.jobs.report``) both come here."""
    return recommend(result, search, base_batch, base_lr, noise_scale=noise_scale, noise_source=noise_source)


def _history_search(db: Path, result: SweepResult, emit: EventFn) -> MaxBatchResult | None:
    """`bench max-batch` run earlier on the same workload and hardware (None: none; a broken
    history is a warning)."""
    try:
        found = matching_max_batch(db, result)
    except BenchError as exc:
        emit(SweepEvent("warning", message=f"history not read: {exc}"))
        return None
    return maxbatch_from_dict(found) if found is not None else None


def _with_measured_advice(result: SweepResult, emit: EventFn) -> SweepResult:
    """Re-measure the flagged points with the change each verdict points to (``bench.jobs.advise``)."""

    def say(batch_size: int, change: str) -> None:
        emit(SweepEvent("advice", batch_size=batch_size, message=f"batch {batch_size} again with {change}"))

    result = with_advice(result, sweep_measure(result.settings), on_change=say)
    if not result.advice:
        emit(SweepEvent("advice", message="no host-bound or input-bound point with a change to try"))
    return result


def _store(db: Path | None, run: Any, emit: EventFn) -> None:
    if run is not None and (warning := store_run(db, run)) is not None:
        emit(SweepEvent("warning", message=warning))
