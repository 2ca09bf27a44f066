"""Where a command's wall time went, in one line: pure logic over ``schema.Timing``, no torch.

On the first H100 run a sweep spent ~50 s of wall time per point for 3 s of measuring, and nobody
could tell where the rest went. Every point and max-batch probe now records a ``Timing``; this
module adds them up for the terminal summary, e.g.
"7 points in 84 s: 21 s measuring, 48 s first steps (cuDNN autotune), 15 s building".
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.results.schema import Timing

MIN_SHOWN_SHARE = 0.02  # parts below this share of the wall time are left out of the line


def _fmt(seconds: float) -> str:
    if seconds >= 100:
        return f"{seconds:.0f} s"
    if seconds >= 10:
        return f"{seconds:.0f} s"
    return f"{seconds:.1f} s"


def first_step_label(device_kind: str, compile: bool) -> str:
    """What the first step of a new shape pays for, in words."""
    causes = []
    if compile:
        causes.append("torch.compile")
    if device_kind == "cuda":
        causes.append("cuDNN autotune")
    return "first steps" + (f" ({', '.join(causes)})" if causes else "")


def parts(timings: Sequence[Timing], *, first_step: str = "first steps") -> list[tuple[str, float]]:
    """(label, seconds) summed over ``timings``, largest first; parts nobody recorded are left out."""

    total = Timing.total(timings) or Timing()
    named = [
        ("measuring", total.measure_seconds),
        (first_step, total.first_step_seconds),
        ("warm-up", total.warmup_seconds),
        ("building", total.build_seconds),
        ("process start-up", total.spawn_seconds),
        ("teardown", total.teardown_seconds),
    ]
    # runs stopped from outside part-way (a child killed over its RSS budget) know only their total
    stopped = [t.total_seconds for t in timings if t.total_seconds and _no_parts(t)]
    named.append(("stopped part-way", sum(stopped) if stopped else None))
    found = [(label, s) for label, s in named if s is not None]
    return sorted(found, key=lambda item: -item[1])


def _no_parts(t: Timing) -> bool:
    return all(
        v is None
        for v in (t.build_seconds, t.first_step_seconds, t.warmup_seconds, t.measure_seconds,
                  t.teardown_seconds, t.spawn_seconds)
    )  # fmt: skip


def summary_line(
    timings: Sequence[Timing],
    wall_seconds: float | None,
    *,
    noun: str = "points",
    first_step: str = "first steps",
    what: str | None = None,
) -> str | None:
    """One line: how many, in how long, and the parts that mattered (None when nothing ran).
    ``what`` replaces the "N points" count (e.g. "9 probes + 1 soak run")."""
    if not timings:
        return None
    wall = wall_seconds if wall_seconds is not None else sum(t.total_seconds or 0.0 for t in timings)
    found = parts(timings, first_step=first_step)
    accounted = sum(s for _, s in found)
    other = wall - accounted
    if other > 0:
        found.append(("other (setup, writing, display)", other))
    shown = [(label, s) for label, s in found if wall <= 0 or s / wall >= MIN_SHOWN_SHARE]
    words = ", ".join(f"{_fmt(s)} {label}" for label, s in shown)
    n = len(timings)
    what = what or f"{n} {noun if n != 1 else noun.rstrip('s')}"
    return f"{what} in {_fmt(wall)}" + (f": {words}" if words else "")
