"""Advice with a measured effect: re-measure the points a verdict flags, with the change it points to.

A verdict says why a point is not faster; it does not say what a fix is worth. Here each flagged
point is measured again with one change and the gain is the ratio of the two samples/sec, so
nothing is suggested without a number beside it:

- ``host-bound`` (Python and kernel launches set the pace): ``--compile`` (torch.compile fuses
  kernels and removes Python per op), and on CUDA also ``--compile-mode reduce-overhead`` (CUDA
  graphs: one launch replays the whole step).
- ``input-bound`` (the step waits for the DataLoader): twice the workers (at least 2), capped at
  the machine's cores.

The measuring is injected (``measure(workload, batch_size) -> Point``), so the logic is tested with
fakes of known gain; ``sweep_measure`` is the real one (one point through ``measure_sweep``). This
module imports no torch.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from bench.analysis.diagnose import diagnose_run
from bench.jobs.sweep_loop import measure_sweep
from bench.results.errors import BenchError, first_line
from bench.results.schema import ERROR, OK, Advice, MeasureSettings, Point, SweepResult, Workload

__all__ = ["Advice", "Change", "advise", "changes_for", "sweep_measure"]

MeasureFn = Callable[[Workload, int], Point]

HOST_BOUND = "host-bound"
INPUT_BOUND = "input-bound"


class Change:
    """One change to a workload, as the user would type it."""

    def __init__(self, label: str, workload: Workload) -> None:
        self.label = label
        self.workload = workload

    def __repr__(self) -> str:  # for test failure messages
        return f"Change({self.label!r})"


def changes_for(verdict: str, workload: Workload, *, cpu_count: int | None = None) -> list[Change]:
    """The changes worth measuring for a verdict (empty when there is nothing to try).

    ``cpu_count``: the most loader workers to suggest (default: this machine's cores)."""
    on_cuda = workload.device.startswith("cuda")
    out: list[Change] = []
    if verdict == HOST_BOUND:
        if not workload.compile:
            out.append(Change("--compile", replace(workload, compile=True, compile_mode=None)))
        if on_cuda and workload.compile_mode != "reduce-overhead":
            out.append(
                Change(
                    "--compile --compile-mode reduce-overhead",
                    replace(workload, compile=True, compile_mode="reduce-overhead"),
                )
            )
    elif verdict == INPUT_BOUND and workload.data == "loader":
        cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
        workers = min(max(2, 2 * workload.workers), cores)
        if workers > workload.workers:
            out.append(Change(f"--workers {workers}", replace(workload, workers=workers)))
    return out


def _significant(before: Point, after: Point) -> bool | None:
    """Do the 95% CIs of the mean step time not overlap? None when either lacks them."""
    a, b = before.step_stats, after.step_stats
    if a is None or b is None:
        return None
    return a.ci95_high_seconds < b.ci95_low_seconds or b.ci95_high_seconds < a.ci95_low_seconds


def advise(
    result: SweepResult,
    measure: MeasureFn,
    *,
    batch_sizes: Sequence[int] | None = None,
    cpu_count: int | None = None,
    on_change: Callable[[int, str], None] | None = None,
) -> tuple[Advice, ...]:
    """Measure each flagged point of ``result`` again with each change its verdict points to.

    Verdicts are those stored with the run (recomputed for files written before verdicts).
    ``batch_sizes`` limits which flagged points are re-measured (default: all). ``on_change(b, label)``
    is called before each re-measure (progress). A re-measure that fails (torch.compile missing a
    compiler, an OOM) is kept as an ``Advice`` with its status and error and no gain."""
    verdicts = [p.diagnosis for p in result.points]
    if any(d is None for p, d in zip(result.points, verdicts, strict=True) if p.status == OK):
        verdicts = diagnose_run(result)
    out: list[Advice] = []
    for point, diagnosis in zip(result.points, verdicts, strict=True):
        if point.status != OK or diagnosis is None or not point.samples_per_sec:
            continue
        if batch_sizes is not None and point.batch_size not in batch_sizes:
            continue
        for change in changes_for(diagnosis.verdict, result.workload, cpu_count=cpu_count):
            if on_change is not None:
                on_change(point.batch_size, change.label)
            try:
                after = measure(change.workload, point.batch_size)
            except BenchError as exc:
                after = Point(batch_size=point.batch_size, status=ERROR, error=str(exc))
            except Exception as exc:  # a compiler crash is a failed change, not a lost sweep
                after = Point(batch_size=point.batch_size, status=ERROR, error=first_line(exc))
            base = Advice(
                batch_size=point.batch_size,
                verdict=diagnosis.verdict,
                change=change.label,
                before_samples_per_sec=point.samples_per_sec,
            )
            if after.status != OK or not after.samples_per_sec:
                out.append(
                    replace(base, status=after.status if after.status != OK else ERROR, error=after.error)
                )
                continue
            out.append(
                replace(
                    base,
                    after_samples_per_sec=after.samples_per_sec,
                    gain=after.samples_per_sec / point.samples_per_sec,
                    significant=_significant(point, after),
                )
            )
    return tuple(out)


def with_advice(result: SweepResult, measure: MeasureFn, **kwargs: object) -> SweepResult:
    """The run with ``advice`` filled in (see ``advise``)."""
    return replace(result, advice=advise(result, measure, **kwargs))  # type: ignore[arg-type]


def sweep_measure(settings: MeasureSettings, *, annotate_steps: bool = False) -> MeasureFn:
    """The real measure: one point of the changed workload through ``measure_sweep`` (its own process
    on CPU, as the sweep's points were), with the sweep's settings; its file goes to a temp folder."""

    def measure(workload: Workload, batch_size: int) -> Point:
        with tempfile.TemporaryDirectory(prefix="bench-advise-") as tmp:
            result = measure_sweep(
                workload,
                [batch_size],
                replace(settings, repeat=1),
                out_path=Path(tmp) / "advise.json",
                annotate_steps=annotate_steps,
            )
        return result.points[0]

    return measure
