"""The measuring loop of a sweep: every batch size in turn, then the repeats; the result file
rewritten after each point. ``bench.jobs.sweep.run_sweep`` (the job) calls it.

Each point is measured by ``runner.run_point`` either in this process (default on CUDA) or in a
fresh child process (default on CPU, so each point's peak RSS is its own). The JSON results file
is rewritten atomically after every point, so Ctrl-C or a crash keeps every finished point.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench._version import __version__
from bench.analysis.contention import assess, cores_needed
from bench.analysis.diagnose import with_diagnoses
from bench.analysis.stats import combine_repeats
from bench.hw import cpu_load, env
from bench.hw.device import check_device, open_device, parse_device
from bench.hw.nvml import open_monitor
from bench.jobs.isolate import run_isolated
from bench.measure.annotate import sweep_instrumentation
from bench.measure.flops import count_flops_per_sample, peak_notice
from bench.measure.flops import figures as flop_figures
from bench.measure.models import resolve
from bench.measure.runner import run_point
from bench.measure.step import ModelCache
from bench.measure.telemetry import busy_cpu_notice
from bench.results import files
from bench.results.codec import dumps
from bench.results.errors import STICKY, BenchError, classify_message, failure_text, sticky_stop
from bench.results.files import slug
from bench.results.schema import (
    ERROR,
    OK,
    OOM,
    MeasureSettings,
    Point,
    SweepResult,
    Timing,
    Workload,
    default_sample_interval,
    device_kind,
)

DEFAULT_BATCH_SIZES = {
    "cpu": (1, 2, 4, 8, 16, 32),
    "cuda": (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
}


MAX_FAILURES_IN_ROW = 2  # sizes failing (not OOM) one after another before the sweep gives up


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def default_out_path(workload: Workload, started: dt.datetime | None = None) -> Path:
    """bench_results/sweep-<model>-<device>-<precision>-<mode>-<timestamp>.json in the cwd."""
    started = started or dt.datetime.now()
    model = slug(workload.model)
    device = workload.device.replace(":", "")
    stamp = started.strftime("%Y%m%d-%H%M%S")
    return Path("bench_results") / f"sweep-{model}-{device}-{workload.precision}-{workload.mode}-{stamp}.json"


class ResultWriter:
    """Writes the result file atomically (temp file + rename): a reader never sees half a file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.fallback: Path | None = None  # where results go after the first failed write
        self.lost = False  # not even the fallback could be written: memory (and the history) only
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_dir():
                raise BenchError(f"cannot write results to {self.path}: it is a directory")
            with tempfile.NamedTemporaryFile(dir=self.path.parent, prefix=".bench-check-"):
                pass
        except OSError as exc:
            raise BenchError(f"cannot write results to {self.path}: {exc.strerror or exc}") from None

    def write(self, result: SweepResult) -> None:
        files.write_json_atomic(self.path, dumps(result))

    @property
    def where(self) -> Path | None:
        """Where the results are now: the path asked for, the fallback file after a failed write,
        or None when not even that could be written (memory and the history only)."""
        return None if self.lost else (self.fallback or self.path)

    def save(self, result: SweepResult) -> str | None:
        """``write``, except that a failed write (a full disk) never loses the run: the result goes
        to a file of the same name in the temp folder from then on, or, if that fails too, stays in
        memory (the returned result, the history). Returns one line saying so the first time each
        happens, else None."""
        if self.lost:
            return None
        target = self.fallback or self.path
        try:
            files.write_json_atomic(target, dumps(result))
            return None
        except OSError as exc:
            why = f"{target}: {exc.strerror or exc}"
        if self.fallback is None:
            fallback = Path(tempfile.gettempdir()) / self.path.name
            try:
                files.write_json_atomic(fallback, dumps(result))
                self.fallback = fallback
                return f"cannot write {why}; every point is saved in {fallback} instead"
            except OSError:
                pass
        self.lost = True
        return f"cannot write {why}; the points are kept in memory only (the returned result, the history)"


class NoWriter(ResultWriter):
    """For the ranks other than 0 of a data-parallel run: rank 0 alone writes the file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def write(self, result: SweepResult) -> None:
        pass

    def save(self, result: SweepResult) -> str | None:
        return None


@dataclass(frozen=True)
class SweepEvent:
    """Sent to ``on_event``: kind is "start", "point_start", "progress", "point_done", "notice" or
    "moved" (a results write failed: from now on they are in ``results_path``; None: in memory
    only). A "moved" event follows the notice that says so. The job (``bench.jobs.sweep``) adds
    "warning" (the history could not be read or written) and "advice" (a re-measure starts)."""

    kind: str
    batch_size: int | None = None
    progress: Any = None  # runner.Progress for "progress"
    point: Point | None = None
    message: str | None = None
    result: SweepResult | None = None
    results_path: Path | None = None  # for "moved"


EventFn = Callable[[SweepEvent], None]


def _point_in_child(
    workload: Workload,
    batch_size: int,
    settings: MeasureSettings,
    annotate_steps: bool = True,
    *,
    emit: Callable[[Any], None],
) -> Point:
    """Child-process body: a fresh interpreter measures one point and returns it."""
    device = open_device(workload.device)
    monitor = open_monitor(device.index, device.uuid())
    annotate, hooks = sweep_instrumentation(annotate_steps, device.kind, batch_size=batch_size)
    try:
        return run_point(
            workload,
            resolve(workload.model),
            batch_size,
            settings,
            device,
            monitor,
            on_progress=emit,
            annotate=annotate,
            hooks=hooks,
            own_process=True,
        )
    finally:
        monitor.close()


def _measure_point_isolated(
    workload: Workload,
    batch_size: int,
    settings: MeasureSettings,
    report: Callable[[Any], None],
    annotate_steps: bool,
) -> Point:
    start = time.perf_counter()
    outcome = run_isolated(
        "bench.jobs.sweep_loop:_point_in_child",
        (workload, batch_size, settings, annotate_steps),
        on_message=report,
    )
    total = time.perf_counter() - start
    if outcome.status == "ok":
        point: Point = outcome.value
        inner = point.timing.total_seconds or 0.0
        # the child's own accounting plus what it cost to start it and import torch there
        return replace(
            point, timing=replace(point.timing, spawn_seconds=max(total - inner, 0.0), total_seconds=total)
        )
    status = OOM if outcome.exitcode == -9 else ERROR
    return Point(
        batch_size=batch_size, status=status, error=outcome.message, timing=Timing(total_seconds=total)
    )


def _repeat_rounds(
    result: SweepResult,
    points: list[Point],
    repeat: int,
    workload: Workload,
    measure: Callable[[int, Callable[[Any], None]], Point],
    save: Callable[[SweepResult], SweepResult],
    emit: EventFn,
    new_round: Callable[[], None] = lambda: None,
) -> SweepResult:
    """Rounds 2..``repeat`` of a sweep: every size that measured ok in round 1, again, in the same
    order (b1, b2, ..., b1, b2, ...), so drift over the run hits every size alike. ``points`` (one
    per size) is updated in place with ``combine_repeats``; the file is rewritten after each.
    ``new_round`` runs before each round (an in-process sweep builds its model anew there)."""
    runs = {p.batch_size: [p] for p in points}
    again = [p.batch_size for p in points if p.status == OK]
    for r in range(2, repeat + 1):
        if not again:
            break
        emit(SweepEvent("notice", message=f"repeat {r} of {repeat}: batch {', '.join(map(str, again))}"))
        new_round()
        for b in again:
            emit(SweepEvent("point_start", batch_size=b))

            def report(progress: Any, b: int = b) -> None:
                emit(SweepEvent("progress", batch_size=b, progress=progress))

            point = measure(b, report)
            runs[b].append(point)
            i = next(i for i, p in enumerate(points) if p.batch_size == b)
            points[i] = combine_repeats(runs[b], workload.dataset_size)
            result = save(replace(result, points=tuple(points)))
            emit(SweepEvent("point_done", batch_size=b, point=point))
            if point.status != OK:
                note = f"batch {b}, repeat {r}: {point.status} ({point.error}); kept in its repeats"
                result = replace(result, notices=(*result.notices, note))
                emit(SweepEvent("notice", message=note))
    return result


def _contention_watch(
    settings: MeasureSettings, kind: str, environment: Any, workload: Workload, single: bool = True
) -> Callable[[Callable[[], Point]], Point]:
    """Runs one measurement and marks its point with other processes' share of the CPU over it
    (``settings.check_contention``; off, or one rank of several (``single`` False): the point as
    measured)."""
    if not settings.check_contention or not single:
        return lambda run: run()
    meter = cpu_load.default_meter()
    workers = workload.workers if workload.data == "loader" else 0

    def watched(run: Callable[[], Point]) -> Point:
        start = meter.read()
        point = run()
        end = meter.read()
        others = cpu_load.others_cores(start, end)
        if point.status != OK or others is None:
            return point
        needed = cores_needed(kind, end.cpus, environment.torch_num_threads, workers)
        return replace(point, contention=assess(others, end.cpus, needed))

    return watched


def gpu_in_use(workload: Workload, environment: Any) -> str | None:
    """The name of the GPU the run measured on: the workload's CUDA index among the environment's
    GPUs (rank 0's, on ``cuda:LOCAL_RANK`` = 0, under torchrun); None on CPU or when not listed."""
    if device_kind(workload.device) != "cuda":
        return None
    _, _, index = workload.device.partition(":")
    want = int(index) if index.isdigit() else 0
    return next((g.name for g in environment.gpus if g.index == want), None)


def _process_memory_note(monitor: Any, point: Point) -> str | None:
    """Why NVML's per-process memory is null on a measured point, when NVML itself works."""
    if monitor is None or not monitor.available or point.status != OK:
        return None
    if point.memory.device_process_used_bytes is not None:
        return None
    reason = getattr(monitor, "process_memory_reason", None)
    return f"per-process GPU memory is null: {reason}" if reason else None


def with_analysis(result: SweepResult, flops_per_sample: float | None) -> SweepResult:
    """Each measured point's FLOP figures (achieved TFLOP/s, MFU per GPU against its dense peak) and
    every point's bottleneck verdict (which needs the neighbouring batch sizes: redone per save)."""
    gpu = gpu_in_use(result.workload, result.environment)  # a CPU has no peak in the table
    precision, world = result.workload.precision, result.world_size
    points = tuple(
        replace(
            p, **dataclasses.asdict(flop_figures(flops_per_sample, p.samples_per_sec, gpu, precision, world))
        )
        if p.status == OK
        else p
        for p in result.points
    )
    return with_diagnoses(replace(result, points=points))


def measure_sweep(
    workload: Workload,
    batch_sizes: Sequence[int] | None = None,
    settings: MeasureSettings | None = None,
    *,
    out_path: Path | str | None = None,
    on_event: EventFn | None = None,
    annotate_steps: bool = True,
    ranks: Any = None,
    finish: Callable[[SweepResult], SweepResult] | None = None,
) -> SweepResult:
    """Measure ``workload`` at each batch size (ascending as given). Returns the full result.

    ``finish``: turns the finished result (complete, failed or interrupted) into the final one
    (its recommendation, its advice) before the file's last write; the job supplies it.

    ``annotate_steps``: NVTX (CUDA) and profiler ranges per step and phase, and
    cudaProfilerStart/Stop around each timed window (``bench.measure.annotate``); their cost measured
    0.04% of a CPU step (``bench.benchmarks.annotation_overhead``).

    ``ranks``: a ``bench.jobs.distributed.Ranks`` when this process is one rank of a torchrun job:
    points are measured in-process by every rank in DDP, and only rank 0 writes the file.

    Raises BenchError for bad input before anything runs. KeyboardInterrupt propagates after the
    result file is marked "interrupted" with every finished point in it; any other exception
    after the start propagates after the file is marked "failed" the same way. Either exception
    carries the final result as ``exc.partial_result``. A results file that cannot be written
    mid-sweep (a full disk) is a notice: measuring goes on (``ResultWriter.save``).
    """
    command_start = time.perf_counter()
    emit = on_event or (lambda e: None)
    spec, kind, sizes, settings = _plan(workload, batch_sizes, settings or MeasureSettings(), ranks)
    isolate = bool(settings.isolate)
    writer = (ResultWriter if ranks is None or ranks.is_main else NoWriter)(
        out_path or default_out_path(workload)
    )
    notices = _start_notices(workload, kind)
    device, monitor = _open_monitor(workload, isolate, ranks, notices)
    environment = env.collect()
    if note := peak_notice(gpu_in_use(workload, environment), workload.precision):
        notices.append(note)
    result = SweepResult(
        run_id=f"{writer.path.stem}-{uuid.uuid4().hex[:8]}",  # unique: re-runs to one path keep their history
        status="running",
        started_at=_now(),
        finished_at=None,
        environment=environment,
        workload=replace(workload, model=spec.name),
        settings=settings,
        notices=tuple(notices),
        tool_version=__version__,
        distributed=ranks.info(workload.mode == "train") if ranks is not None else None,
    )
    try:
        writer.write(result)
    except OSError as exc:  # nothing measured yet: a plain error
        raise BenchError(f"cannot write results to {writer.path}: {exc.strerror or exc}") from None
    emit(SweepEvent("start", result=result))

    flops_per_sample: float | None = None  # counted inside the try below: the count builds the model

    def save(result: SweepResult) -> SweepResult:
        """Rewrite the file; a failed write (a full disk) is a notice, said once, never a lost point."""
        result = with_analysis(result, flops_per_sample)
        result = replace(result, wall_seconds=time.perf_counter() - command_start)
        if result.finished_at is not None and finish is not None:
            result = finish(result)  # the picks, the advice: in the file's last write
        while (note := writer.save(result)) is not None:
            result = replace(result, notices=(*result.notices, note))
            emit(SweepEvent("notice", message=note))
            emit(SweepEvent("moved", results_path=writer.where))
        return result

    for note in notices:
        emit(SweepEvent("notice", message=note))

    # In-process: one model for the whole sweep, reset before every point (ModelCache): building
    # it again per batch size cost seconds a point on the H100 and measured nothing.
    model_cache = ModelCache() if not isolate and ranks is None else None
    measure = _point_measurer(workload, spec, settings, annotate_steps, device, monitor, ranks, model_cache)
    # under torchrun the other ranks share the cores by design: they would read as a neighbour
    watch = _contention_watch(settings, kind, result.environment, workload, ranks is None)

    def measure_watched(b: int, report: Callable[[Any], None]) -> Point:
        """One measurement of batch ``b``, with other processes' share of the CPU over it."""
        return watch(lambda: measure(b, report))

    points: list[Point] = []
    try:
        # the first build of the user's model: a factory that exits or hangs ends here, with the
        # file finalised (failed or interrupted) rather than left "running"
        flops_per_sample = count_flops_per_sample(spec, workload.mode, workload.image_size, workload.seq_len)
        result = _measure_sizes(result, sizes, points, measure_watched, save, emit, monitor)
        result = _repeat_rounds(
            result, points, settings.repeat, workload, measure_watched, save, emit,
            new_round=model_cache.clear if model_cache is not None else lambda: None,
        )  # fmt: skip
    except KeyboardInterrupt as exc:
        # ``points`` holds every finished measurement, repeats included (``_repeat_rounds`` updates
        # it in place): a repeat is a finished measurement, kept like a point
        result = save(replace(result, points=tuple(points), status="interrupted", finished_at=_now()))
        exc.partial_result = result  # type: ignore[attr-defined]  # for the CLI's history
        raise
    except Exception as exc:
        # A later point failed hard (a factory that stops returning a module, a bug): the file is
        # finalised with every finished point, and the caller gets them with the exception.
        note = f"stopped after {len(points)} measured point(s): {failure_text(exc)}"
        result = replace(result, points=tuple(points), notices=(*result.notices, note))
        result = save(replace(result, status="failed", finished_at=_now()))
        exc.partial_result = result  # type: ignore[attr-defined]
        raise
    finally:
        if monitor is not None:
            monitor.close()
        if model_cache is not None:
            model_cache.clear()
    status = "complete" if any(p.status == OK for p in points) else "failed"
    return save(replace(result, status=status, finished_at=_now()))


def _plan(
    workload: Workload, batch_sizes: Sequence[int] | None, settings: MeasureSettings, ranks: Any
) -> tuple[Any, str, tuple[int, ...], MeasureSettings]:
    """(model spec, device kind, batch sizes, settings as recorded: the telemetry period and whether
    points run isolated filled in); BenchError for bad input before anything runs."""
    check_device(workload.device)
    spec = resolve(workload.model)  # fail fast on unknown models, before writing anything
    kind = device_kind(workload.device)
    sizes = tuple(batch_sizes) if batch_sizes else DEFAULT_BATCH_SIZES[kind]
    if any((not isinstance(b, int)) or b <= 0 for b in sizes):
        raise BenchError(f"batch sizes must be positive integers, got {list(sizes)}")
    if settings.sample_interval_seconds is None:  # recorded in the file as the value used
        settings = replace(settings, sample_interval_seconds=default_sample_interval(workload.device))
    isolate = settings.isolate if settings.isolate is not None else kind == "cpu"
    isolate = isolate and ranks is None  # a rank measures in its own process already
    return spec, kind, sizes, replace(settings, isolate=isolate)


def _start_notices(workload: Workload, kind: str) -> list[str]:
    """What the user should know before the first point: options without effect, a busy machine."""
    notices: list[str] = []
    if workload.h2d and kind == "cpu":
        notices.append("--h2d has no effect on CPU: the batch already lives in host memory")
    if workload.precision == "tf32" and kind == "cpu":
        notices.append("tf32 only changes GPU math; on CPU it runs as fp32")
    if kind == "cpu":
        if busy := busy_cpu_notice(0.2):
            notices.append(busy)
    return notices


def _open_monitor(workload: Workload, isolate: bool, ranks: Any, notices: list[str]) -> tuple[Any, Any]:
    """(device, GPU monitor) for in-process points; (None, None) when isolated (the children open
    their own; NVML is opened here only to learn whether it works). Missing telemetry is a notice."""
    device = None
    if not isolate:
        device = open_device(workload.device) if ranks is None else ranks.device
        monitor = open_monitor(device.index, device.uuid())
    else:
        monitor = open_monitor(parse_device(workload.device)[1])
    if not monitor.available:
        notices.append(
            f"GPU telemetry unavailable ({monitor.reason}): GPU utilisation, power and energy are null"
        )
    if isolate:
        monitor.close()
        monitor = None
    return device, monitor


def _point_measurer(
    workload: Workload, spec: Any, settings: MeasureSettings, annotate_steps: bool,
    device: Any, monitor: Any, ranks: Any, model_cache: ModelCache | None,
) -> Callable[[int, Callable[[Any], None]], Point]:  # fmt: skip
    """``measure(b, report)``: one independent measurement of batch ``b``, in a fresh process
    (isolated), on every rank (torchrun), or in this process with the cached model reset."""
    kind = device_kind(workload.device)

    def measure(b: int, report: Callable[[Any], None]) -> Point:
        if settings.isolate:
            return _measure_point_isolated(workload, b, settings, report, annotate_steps)
        annotate, hooks = sweep_instrumentation(annotate_steps, kind, batch_size=b)
        if ranks is not None:
            point = ranks.run_point(
                workload, spec, b, settings, device, monitor,
                on_progress=report, annotate=annotate, hooks=hooks,
            )  # fmt: skip
        else:
            point = run_point(
                workload, spec, b, settings, device, monitor,
                on_progress=report, annotate=annotate, hooks=hooks, model_cache=model_cache,
            )  # fmt: skip
        if point.status == ERROR and classify_message(point.error or "") == STICKY:  # the context is dead
            raise sticky_stop(b, point.error or "", "sweep", "the finished points are kept")
        return point

    return measure


def _measure_sizes(
    result: SweepResult,
    sizes: Sequence[int],
    points: list[Point],
    measure: Callable[[int, Callable[[Any], None]], Point],
    save: Callable[[SweepResult], SweepResult],
    emit: EventFn,
    monitor: Any = None,
) -> SweepResult:
    """Every batch size in turn, ``points`` and the file updated after each; stops at an OOM (when
    ``stop_on_oom``) or after ``MAX_FAILURES_IN_ROW`` failed sizes in a row."""
    failures_in_row = 0
    for b in sizes:
        emit(SweepEvent("point_start", batch_size=b))

        def report(progress: Any, b: int = b) -> None:
            emit(SweepEvent("progress", batch_size=b, progress=progress))

        point = measure(b, report)
        points.append(point)
        if (note := _process_memory_note(monitor, point)) and note not in result.notices:
            result = replace(result, notices=(*result.notices, note))
            emit(SweepEvent("notice", message=note))
        result = save(replace(result, points=tuple(points)))
        emit(SweepEvent("point_done", batch_size=b, point=point))
        if point.status == OOM and result.settings.stop_on_oom:
            note = f"out of memory at batch {b}: stopped growing the batch there"
            result = replace(result, notices=(*result.notices, note))
            emit(SweepEvent("notice", message=note))
            break
        if point.status == ERROR:
            # One size can fail where others work (BatchNorm at batch 1, a kernel without a
            # path for one shape): record it and go on. Two failures in a row mean the
            # workload itself is broken: stop rather than fail at every size.
            failures_in_row += 1
            stop = failures_in_row >= MAX_FAILURES_IN_ROW
            then = (
                f"{failures_in_row} sizes in a row failed: stopped" if stop else "going on with the next size"
            )
            note = f"batch {b} failed ({point.error}); {then}"
            result = replace(result, notices=(*result.notices, note))
            emit(SweepEvent("notice", message=note))
            if stop:
                break
        else:
            failures_in_row = 0
    return result
