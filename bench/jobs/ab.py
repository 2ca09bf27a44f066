"""``bench ab``: one workload measured under two builds, interleaved, until the change is settled.

A side is a directory put first on its children's PYTHONPATH (a checkout or ``git worktree`` of the
code under test; it is also their working directory, so ``-m`` and relative paths resolve there),
an interpreter (a venv's ``python``: a torch or driver upgrade), or both.

A round starts a fresh child of each side (``bench.measure.windows`` in a
``bench.jobs.isolate.ChildSession``): no state, allocator or imported module carries from one round
to the next. By default (``alternate``) both children start and warm up, then take turns: one
short timed window of A, one of B, ``windows`` times per batch size, each pair in a random order
drawn from a seeded generator (the seed and every order are recorded). So the two builds are
measured a fraction of a second apart and the machine's drift hits both alike; fresh children
every round average out what differs from one process to the next. ``bench.analysis.paired`` tests
the per-round ratios (the geometric mean of a round's window ratios). ``alternate=False`` runs the
round's two children one after the other (on a GPU, when a batch size needs more than half its
memory: alternating children hold theirs together).

Why windows and not one window per child: on the 2-core CI VM one build's speed wanders by 20-40%
within a minute, so two children measured ten seconds apart disagree by that much
(``reports/cpu-xeon-2core/ab/alternating/``). Rounds go on until every batch size is settled, or
``max_rounds`` / ``max_time_seconds`` run out. The result file is rewritten after every round, so a
failure or Ctrl-C keeps every finished round.

    from bench.jobs.ab import run_ab, side
    result = run_ab(Workload("resnet18", image_size=64), (8, 32), side("A", "../base"), side("B", "."),
                    threshold=0.10)
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import shutil
import statistics
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
from bench.jobs.isolate import ChildFailed, ChildSession, Interpreter
from bench.results import files
from bench.results.ab import ERROR, OK, SIDES, ABResult, Round, Side, SidePoint, SideRun
from bench.results.codec import dumps, to_dict
from bench.results.errors import BenchError, failure_text
from bench.results.schema import MeasureSettings, Workload

DEFAULT_SETTINGS = MeasureSettings(  # of one timed window: at least 2 steps and 0.2 s
    warmup_steps=3, min_steps=2, max_time_seconds=0.2, min_time_seconds=0.2, isolate=True
)
WINDOWS = 10  # timed windows per side, batch size and round
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


class SideError(Exception):
    """A side's child failed (its build does not import, it ran out of memory, it died or hung):
    one line, the side's failure."""


class SideSession(Protocol):
    """One fresh child of one side, warm for one batch size at a time (``bench.measure.windows``).
    Every method raises ``SideError`` for the side's own failure."""

    def prepare(self, batch_size: int) -> None:
        """Build (or reuse) the model for ``batch_size`` and run the warm-up steps."""

    def window(self, batch_size: int) -> tuple[float, float, tuple[float, ...]]:
        """One timed window: (samples/sec, its seconds, its step times)."""

    def close(self) -> str | None:
        """No more windows; the child's torch version."""

    def kill(self) -> None:
        """Stop the child now (a no-op once closed)."""


class SideStarter(Protocol):
    """Starts a side's child (``ChildSides``; tests pass a fake)."""

    def __call__(self, side: Side, workload: Workload, settings: MeasureSettings) -> SideSession: ...


class _ChildSide:
    def __init__(self, session: ChildSession) -> None:
        self.session = session

    def _ask(self, request: tuple[Any, ...]) -> Any:
        try:
            return self.session.ask(request)
        except ChildFailed as exc:
            raise SideError(str(exc)) from None

    def prepare(self, batch_size: int) -> None:
        self._ask(("prepare", batch_size))

    def window(self, batch_size: int) -> tuple[float, float, tuple[float, ...]]:
        _, _, sps, seconds, steps = self._ask(("window", batch_size))
        return float(sps), float(seconds), tuple(steps)

    def close(self) -> str | None:
        try:
            value = self.session.close()
        except ChildFailed as exc:
            raise SideError(str(exc)) from None
        return value.get("torch_version") if isinstance(value, dict) else None

    def kill(self) -> None:
        self.session.kill()


class ChildSides:
    """The real starter: a fresh child of the side (``bench.measure.windows:serve`` in a
    ``ChildSession``). ``shim`` is a folder holding only a link to this bench package, put on the
    child's PYTHONPATH after the side's directory, so a side's interpreter finds bench without this
    process's site-packages (its torch) on its path. No child may outlive ``timeout_seconds`` (the
    comparison's whole budget) from its start: a hung child is a failed side, not a hung job."""

    def __init__(self, shim: str | None = None, timeout_seconds: float | None = None) -> None:
        self.shim = shim
        self.timeout_seconds = timeout_seconds

    def interpreter(self, s: Side) -> Interpreter:
        env = dict(os.environ)
        parts = [p for p in (s.path, self.shim, env.get("PYTHONPATH")) if p]
        env["PYTHONPATH"] = os.pathsep.join(parts)
        return Interpreter(python=s.python, env=env, cwd=s.path, inherit_path=False)

    def __call__(self, side: Side, workload: Workload, settings: MeasureSettings) -> SideSession:
        deadline = time.monotonic() + self.timeout_seconds if self.timeout_seconds is not None else None
        try:
            session = ChildSession(
                "bench.measure.windows:serve", (to_dict(workload), to_dict(settings)),
                where=self.interpreter(side), deadline=deadline,
            )  # fmt: skip
        except (BenchError, OSError) as exc:
            raise SideError(failure_text(exc)) from None
        return _ChildSide(session)


def side_point(batch_size: int, windows: Sequence[tuple[float, float, tuple[float, ...]]]) -> SidePoint:
    """A side's batch size in one round from its windows: the geometric mean of their samples/sec
    (so the round's log ratio B/A is the mean of the window pairs' log ratios)."""
    rates = [w[0] for w in windows]
    if not rates or min(rates) <= 0:
        raise SideError(f"batch {batch_size}: a window timed no steps")
    return SidePoint(
        batch_size=batch_size,
        samples_per_sec=math.exp(statistics.fmean(math.log(r) for r in rates)),
        window_seconds=sum(w[1] for w in windows),
        step_seconds=tuple(t for w in windows for t in w[2]),
        windows=tuple(rates),
    )


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
    windows: int = WINDOWS,
    alternate: bool = True,
    seed: int | None = None,
    runner: SideStarter | None = None,
    out_path: Path | str | None = None,
    on_event: Callable[[ABEvent], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ABResult:
    """Measure ``workload`` under sides ``a`` and ``b`` in rounds of random order until every
    batch size is settled (``bench.analysis.paired``) or the rounds or time run out.

    ``windows``: timed windows per side and batch size in a round; ``alternate``: the round's two
    children take turns window by window (else one after the other). ``runner``: starts a side's
    child (default ``ChildSides``: a fresh process); tests pass a fake. ``out_path``: the JSON file, rewritten after every round (None: no file).
    Raises ``ABSideFailed`` (a BenchError, with ``partial_result``) when a side fails; Ctrl-C
    propagates with ``partial_result`` on the exception, the file marked "interrupted"."""
    if not batch_sizes:
        raise BenchError("give at least one batch size")
    if not 0 < threshold < 1:
        raise BenchError("threshold must be between 0% and 100%")
    if min_rounds < 2 or max_rounds < min_rounds:
        raise BenchError("need 2 <= --min-rounds <= --max-rounds")
    if windows < 1:
        raise BenchError("--windows must be at least 1")
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
        max_time_seconds=max_time_seconds, windows=windows, alternate=alternate, tool_version=__version__,
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
    runner = runner or ChildSides(shim, timeout_seconds=max_time_seconds)
    try:
        result = _rounds(result, runner, rng, emit, save, clock, start)
    except KeyboardInterrupt as exc:
        result = save(replace(result, status="interrupted", stopped="interrupted", finished_at=_now()))
        exc.partial_result = result  # type: ignore[attr-defined]
        raise
    finally:
        shutil.rmtree(shim, ignore_errors=True)
    return result


class _RoundRun:
    """One round being measured: the sessions started, the windows they timed, who is at work."""

    def __init__(
        self, result: ABResult, starter: SideStarter, emit: Callable[[ABEvent], None], k: int
    ) -> None:
        self.result, self.starter, self.emit, self.k = result, starter, emit, k
        self.sessions: dict[str, SideSession] = {}
        self.started: dict[str, float] = {}
        self.finished: dict[str, SideRun] = {}
        self.got: dict[str, dict[int, list[tuple[float, float, tuple[float, ...]]]]] = {
            s: {b: [] for b in result.batch_sizes} for s in SIDES
        }
        self.current = ""

    def start(self, name: str) -> None:
        self.current = name
        self.emit(ABEvent("side", self.k, side=name))
        self.started[name] = time.perf_counter()
        self.sessions[name] = self.starter(self.result.side(name), self.result.workload, self.result.settings)

    def prepare(self, name: str, b: int) -> None:
        self.current = name
        self.sessions[name].prepare(b)

    def window(self, name: str, b: int) -> None:
        self.current = name
        self.got[name][b].append(self.sessions[name].window(b))

    def finish(self, name: str) -> None:
        self.current = name
        torch_version = self.sessions[name].close()
        points = tuple(side_point(b, self.got[name][b]) for b in self.result.batch_sizes)
        seconds = time.perf_counter() - self.started[name]
        self.finished[name] = SideRun(name, OK, points, seconds=seconds, torch_version=torch_version)

    def kill(self) -> None:
        for session in self.sessions.values():
            session.kill()


def _measure_round(
    result: ABResult, starter: SideStarter, rng: random.Random, emit: Callable[[ABEvent], None], k: int
) -> Round:
    """Round ``k``: a fresh child per side, ``result.windows`` timed windows each per batch size.
    Alternating: both children start and warm up, then take turns window by window, each pair in a
    random order. Else one child after the other, in the round's random order."""
    order = tuple(rng.sample(SIDES, len(SIDES)))
    run = _RoundRun(result, starter, emit, k)
    pairs: list[str] = []
    failure: str | None = None
    try:
        if result.alternate:
            for name in order:
                run.start(name)
            for b in result.batch_sizes:
                for name in order:
                    run.prepare(name, b)
                for i in range(result.windows):
                    pair = order if i == 0 else tuple(rng.sample(SIDES, len(SIDES)))
                    pairs.append("".join(pair))
                    for name in pair:
                        run.window(name, b)
            for name in order:
                run.finish(name)
        else:
            for name in order:
                run.start(name)
                for b in result.batch_sizes:
                    run.prepare(name, b)
                    for _ in range(result.windows):
                        run.window(name, b)
                run.finish(name)
            pairs = ["".join(order)] * (result.windows * len(result.batch_sizes))
    except SideError as exc:
        failure = str(exc) or type(exc).__name__
    finally:
        run.kill()
    runs = [run.finished[name] for name in order if name in run.finished]
    if failure is not None:
        seconds = time.perf_counter() - run.started.get(run.current, time.perf_counter())
        runs.append(SideRun(run.current, ERROR, error=failure, seconds=seconds))
    return Round(k, order, tuple(runs), window_orders=tuple(pairs))


def _rounds(
    result: ABResult,
    starter: SideStarter,
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
        rnd = _measure_round(result, starter, rng, emit, k)
        for r in rnd.runs:
            if r.status == OK:
                result = replace(result, **{r.side.lower(): _with_torch(result.side(r.side), r)})
        result = replace(result, rounds=(*result.rounds, rnd))
        verdicts = settle(_pairs(result.rounds, sizes), result.threshold, min_rounds=result.min_rounds)
        result = replace(result, verdicts=verdicts)
        failed = next((r for r in rnd.runs if r.status != OK), None)
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
