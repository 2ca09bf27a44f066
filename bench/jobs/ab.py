"""``bench ab``: one workload measured under two builds, interleaved, until the change is settled.

A side is a directory put first on its children's PYTHONPATH (a checkout or ``git worktree`` of the
code under test; it is also their working directory, so ``-m`` and relative paths resolve there),
an interpreter (a venv's ``python``: a torch or driver upgrade), or both. Every measurement runs in
a fresh child of its side (``bench.jobs.isolate`` with the side's ``Interpreter``): no state, no
allocator and no imported module carries from one to the next. Each round measures both sides once,
in a random order drawn from a seeded generator (the seed and every order are recorded), so drift
on a shared machine hits both alike; ``bench.analysis.paired`` tests the per-round ratios. Rounds go
on until every batch size is settled, or ``max_rounds`` / ``max_time_seconds`` run out.

Each child's window can be short (``DEFAULT_SETTINGS``: 3 warm-up steps, then a fixed 1 s window):
the rounds, not the window, beat the noise. The result file is rewritten after every round, so a
failure or Ctrl-C keeps every finished round.

    from bench.jobs.ab import run_ab, side
    result = run_ab(Workload("resnet18", image_size=64), (8, 32), side("A", "../base"), side("B", "."),
                    threshold=0.10)
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from bench._version import __version__
from bench.analysis.paired import all_settled, settle
from bench.hw import env
from bench.hw.device import open_device
from bench.jobs.isolate import Interpreter, run_isolated
from bench.measure.models import resolve
from bench.measure.runner import run_point
from bench.measure.step import ModelCache
from bench.results import files
from bench.results.ab import ERROR, OK, SIDES, ABResult, Round, Side, SidePoint, SideRun
from bench.results.codec import dumps, to_dict
from bench.results.errors import BenchError, failure_text
from bench.results.schema import MeasureSettings, Workload

DEFAULT_SETTINGS = MeasureSettings(
    warmup_steps=3, min_steps=3, max_time_seconds=1.0, min_time_seconds=1.0, isolate=True
)
MIN_ROUNDS = 5  # no verdict on fewer paired rounds: the first intervals swing the widest
MAX_ROUNDS = 40
MAX_TIME_SECONDS = 1200.0


class ABSideFailed(BenchError):
    """A side failed to import or to run. ``partial_result`` keeps every finished round."""

    def __init__(self, message: str, partial_result: ABResult) -> None:
        super().__init__(message)
        self.partial_result = partial_result


def side(name: str, path: str | Path | None = None, python: str | Path | None = None) -> Side:
    """A checked side: ``path`` an existing directory, ``python`` an executable (default: this
    interpreter). Bad input is one BenchError line naming the side."""
    where = None
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise BenchError(f"side {name}: --{name.lower()} {path}: no such directory")
        where = str(p.resolve())
    exe = sys.executable
    if python is not None:
        found = shutil.which(str(Path(python).expanduser()))
        if found is None:
            raise BenchError(f"side {name}: --{name.lower()}-python {python}: no such executable")
        exe = os.path.abspath(found)
    return Side(name=name, path=where, python=exe, commit=_git_head(where))


def _git_head(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        out = subprocess.run(
            ["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class SideRunner(Protocol):
    """Measures one side once at every batch size and returns what it saw (never raises for a
    side's own failure: that is a SideRun with status "error")."""

    def __call__(
        self, side: Side, workload: Workload, batch_sizes: Sequence[int], settings: MeasureSettings
    ) -> SideRun: ...


def measure_in_child(
    workload: dict[str, Any],
    batch_sizes: Sequence[int],
    settings: dict[str, Any],
    *,
    emit: Callable[[Any], None],
) -> dict[str, Any]:
    """Child body: every batch size once, one model (reset between sizes). Plain data in and out,
    so the two sides' bench versions need only agree on this dictionary."""
    import torch

    wl, st = Workload(**workload), MeasureSettings(**settings)
    device, cache, points = open_device(wl.device), ModelCache(), []
    spec = resolve(wl.model)
    try:
        for b in batch_sizes:
            p = run_point(wl, spec, b, st, device, model_cache=cache, own_process=True)
            if p.status != "ok" or not p.samples_per_sec:
                raise BenchError(f"batch {b}: {p.status} ({p.error})")
            points.append(
                {"batch_size": b, "samples_per_sec": p.samples_per_sec,
                 "window_seconds": p.window_seconds, "step_seconds": list(p.step_seconds)}
            )  # fmt: skip
    finally:
        cache.clear()
    return {"torch_version": torch.__version__, "points": points}


class ChildSideRunner:
    """The real runner: a fresh child of the side per call. ``shim`` is a folder holding only a
    link to this bench package, put on the child's PYTHONPATH after the side's directory, so a
    side's interpreter finds bench without this process's site-packages (its torch) on its path.
    No child may outlive ``timeout_seconds`` (the comparison's whole budget)."""

    def __init__(self, shim: str | None = None, timeout_seconds: float | None = None) -> None:
        self.shim = shim
        self.timeout_seconds = timeout_seconds  # a hung child is killed then: a failed side, not a hung job

    def interpreter(self, s: Side) -> Any:
        env = dict(os.environ)
        parts = [p for p in (s.path, self.shim, env.get("PYTHONPATH")) if p]
        env["PYTHONPATH"] = os.pathsep.join(parts)
        return Interpreter(python=s.python, env=env, cwd=s.path, inherit_path=False)

    def __call__(
        self, side: Side, workload: Workload, batch_sizes: Sequence[int], settings: MeasureSettings
    ) -> SideRun:
        start = time.perf_counter()
        try:
            outcome = run_isolated(
                "bench.jobs.ab:measure_in_child",
                (to_dict(workload), list(batch_sizes), to_dict(settings)),
                where=self.interpreter(side),
                timeout_seconds=self.timeout_seconds,
            )
        except (BenchError, OSError) as exc:
            return SideRun(side.name, ERROR, error=failure_text(exc), seconds=time.perf_counter() - start)
        seconds = time.perf_counter() - start
        if outcome.status != "ok":
            return SideRun(side.name, ERROR, error=outcome.message, seconds=seconds)
        value = outcome.value
        points = tuple(
            SidePoint(p["batch_size"], p["samples_per_sec"], p["window_seconds"], tuple(p["step_seconds"]))
            for p in value["points"]
        )
        return SideRun(side.name, OK, points, seconds=seconds, torch_version=value.get("torch_version"))


@dataclass(frozen=True)
class ABEvent:
    """Sent to ``on_event``: "side" (a side starts in round ``round``), "round" (a round ended:
    ``result`` holds the verdicts so far)."""

    kind: str
    round: int
    side: str | None = None
    result: ABResult | None = None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def default_out_path(workload: Workload) -> Path:
    model = files.slug(workload.model)
    return Path("bench_results") / f"ab-{model}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"


def _pairs(rounds: Sequence[Round], sizes: Sequence[int]) -> dict[int, list[tuple[float, float]]]:
    done = [r for r in rounds if r.complete]
    return {
        b: [(r.run("A").samples_per_sec(b), r.run("B").samples_per_sec(b)) for r in done]  # type: ignore[union-attr]
        for b in sizes
    }


def _with_torch(s: Side, run: SideRun) -> Side:
    return replace(s, torch_version=run.torch_version) if s.torch_version is None and run.torch_version else s


def run_ab(
    workload: Workload,
    batch_sizes: Sequence[int],
    a: Side,
    b: Side,
    *,
    threshold: float,
    settings: MeasureSettings = DEFAULT_SETTINGS,
    min_rounds: int = MIN_ROUNDS,
    max_rounds: int = MAX_ROUNDS,
    max_time_seconds: float = MAX_TIME_SECONDS,
    seed: int | None = None,
    runner: SideRunner | None = None,
    out_path: Path | str | None = None,
    on_event: Callable[[ABEvent], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ABResult:
    """Measure ``workload`` under sides ``a`` and ``b`` in rounds of random order until every
    batch size is settled (``bench.analysis.paired``) or the rounds or time run out.

    ``runner``: how one side is measured once (default ``ChildSideRunner``: a fresh child process);
    tests pass a fake. ``out_path``: the JSON file, rewritten after every round (None: no file).
    Raises ``ABSideFailed`` (a BenchError, with ``partial_result``) when a side fails; Ctrl-C
    propagates with ``partial_result`` on the exception, the file marked "interrupted"."""
    if not batch_sizes:
        raise BenchError("give at least one batch size")
    if not 0 < threshold < 1:
        raise BenchError("threshold must be between 0% and 100%")
    if min_rounds < 2 or max_rounds < min_rounds:
        raise BenchError("need 2 <= --min-rounds <= --max-rounds")
    if not max_time_seconds > 0:
        raise BenchError("--max-time must be > 0 seconds")

    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    emit = on_event or (lambda e: None)
    start = clock()
    wall0 = time.perf_counter()
    out = Path(out_path) if out_path is not None else None
    result = ABResult(
        run_id=f"ab-{files.slug(workload.model)}-{uuid.uuid4().hex[:8]}",
        status="running", started_at=_now(), finished_at=None, environment=env.collect(),
        workload=workload, settings=settings, batch_sizes=tuple(batch_sizes), threshold=threshold,
        a=a, b=b, seed=seed, min_rounds=min_rounds, max_rounds=max_rounds,
        max_time_seconds=max_time_seconds, tool_version=__version__,
    )  # fmt: skip

    def save(r: ABResult) -> ABResult:
        r = replace(r, wall_seconds=time.perf_counter() - wall0)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            files.write_json_atomic(out, dumps(r))
        return r

    try:
        result = save(result)
    except OSError as exc:
        raise BenchError(f"cannot write results to {out}: {exc.strerror or exc}") from None
    shim = tempfile.mkdtemp(prefix="bench-ab-")
    os.symlink(Path(__file__).resolve().parent.parent, Path(shim) / "bench")
    runner = runner or ChildSideRunner(shim, timeout_seconds=max_time_seconds)
    try:
        result = _rounds(result, runner, rng, emit, save, clock, start)
    except KeyboardInterrupt as exc:
        result = save(replace(result, status="interrupted", stopped="interrupted", finished_at=_now()))
        exc.partial_result = result  # type: ignore[attr-defined]
        raise
    finally:
        shutil.rmtree(shim, ignore_errors=True)
    return result


def _rounds(
    result: ABResult,
    runner: SideRunner,
    rng: random.Random,
    emit: Callable[[ABEvent], None],
    save: Callable[[ABResult], ABResult],
    clock: Callable[[], float],
    start: float,
) -> ABResult:
    """The loop: a round per pass, verdicts after each, stop when settled or out of budget."""
    sizes = result.batch_sizes
    while True:
        k = len(result.rounds) + 1
        order = tuple(rng.sample(SIDES, len(SIDES)))
        runs: list[SideRun] = []
        for name in order:
            emit(ABEvent("side", k, side=name))
            run = runner(result.side(name), result.workload, sizes, result.settings)
            runs.append(run)
            if run.status != OK:
                break
            result = replace(result, **{name.lower(): _with_torch(result.side(name), run)})
        result = replace(result, rounds=(*result.rounds, Round(k, order, tuple(runs))))
        verdicts = settle(_pairs(result.rounds, sizes), result.threshold, min_rounds=result.min_rounds)
        result = replace(result, verdicts=verdicts)
        failed = next((r for r in runs if r.status != OK), None)
        if failed is not None:
            s = result.side(failed.side)
            what = f"side {failed.side} ({_describe(s)}) failed in round {k}: {failed.error}"
            result = save(replace(result, status="failed", stopped=what, finished_at=_now()))
            raise ABSideFailed(what, result)
        elapsed = clock() - start
        stopped = ""
        if all_settled(verdicts):
            stopped = "settled"
        elif k >= result.max_rounds:
            stopped = "max rounds"
        elif elapsed + elapsed / k > result.max_time_seconds:  # the next round would not fit
            stopped = "max time"
        if stopped:
            result = save(replace(result, status="complete", stopped=stopped, finished_at=_now()))
            emit(ABEvent("round", k, result=result))
            return result
        result = save(result)
        emit(ABEvent("round", k, result=result))


def _describe(s: Side) -> str:
    parts = [s.path] if s.path else []
    if s.python != sys.executable or not parts:
        parts.append(s.python)
    return ", ".join(parts)
