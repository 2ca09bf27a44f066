"""Measured error rates of ``bench ab`` on this machine (issue 21): printed, not a test.

Two checkouts of one small CNN, as a pull request would have them: directory ``A`` holds
``abmodel.py`` as it was, ``B`` the same module whose ``forward`` applies its last convolution once
more (a real slowdown, not a sleep, so it scales with the machine as a code regression would).
How much the extra convolution costs depends on the depth, and not smoothly (the 2-core VM, fresh
processes alternating, ``reports/cpu-xeon-2core/ab/alternating/calibrate_body.log``): with nine
body convolutions B measured 11-14% slower, with ten 3%, with eleven 11%; eleven it is. The
slowdown bench ab measured is printed with the rates, and is the size they hold for. ``A2`` is an
identical copy of ``A``. Same model name
(``abmodel:build``), same interpreter and environment; only the directory first on the children's
PYTHONPATH differs. Then, at ``--threshold`` (5%):

* A/B comparisons (A vs B): how often ``bench ab`` says REGRESSION (the target: at least 9 of 10);
* A/A comparisons (A vs A2): how often it says "within threshold" (at least 9 of 10) and never
  REGRESSION;

alternating A/B and A/A, so drift hits both alike, each comparison bounded by ``--max-time``. Then
the same again with a CPU-bound neighbour process beside it (a busy loop bounded by the phase's
time budget, killed at the end). The measured slowdown of B is printed from the rounds themselves.

    python -m bench.benchmarks.ab_error_rates                  # 10 + 10, idle then with a neighbour
    python -m bench.benchmarks.ab_error_rates --phases neighbour                 # the second half alone
    python -m bench.benchmarks.ab_error_rates --comparisons 1 --max-time 120     # smoke
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.analysis.gate import REGRESSION, WITHIN
from bench.jobs.ab import ABSideFailed, run_ab, side
from bench.results.ab import ABResult
from bench.results.schema import MeasureSettings, Workload

MODEL = '''"""A small CNN: a 3->16 stem, eleven 16->16 3x3 convolutions, a linear head."""
import torch
from torch import nn

EXTRA = {extra}  # times the last convolution runs again in forward (the "slower code")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.ModuleList(nn.Conv2d(16, 16, 3, padding=1) for _ in range(11))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for conv in self.body:
            x = torch.relu(conv(x))
        for _ in range(EXTRA):
            x = torch.relu(self.body[-1](x))
        return self.head(x.mean(dim=(2, 3)))


def build():
    return Net()
'''

NEIGHBOUR = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def write_sides(root: Path) -> dict[str, Path]:
    dirs = {}
    for name, extra in (("A", 0), ("A2", 0), ("B", 1)):
        d = root / name
        d.mkdir()
        (d / "abmodel.py").write_text(MODEL.format(extra=extra))
        dirs[name] = d
    return dirs


def compare(base: Path, cur: Path, args: argparse.Namespace, seed: int) -> tuple[ABResult | None, str]:
    workload = Workload(model="abmodel:build", image_size=args.image_size, device="cpu")
    settings = MeasureSettings(
        warmup_steps=args.warmup, min_steps=3, max_time_seconds=args.window, min_time_seconds=args.window,
        isolate=True,
    )  # fmt: skip
    try:
        result = run_ab(
            workload, args.batch_sizes, side("A", base), side("B", cur), threshold=args.threshold,
            settings=settings, min_rounds=args.min_rounds, max_rounds=args.max_rounds,
            max_time_seconds=args.max_time, windows=args.windows, alternate=not args.sequential, seed=seed,
        )  # fmt: skip
    except ABSideFailed as exc:
        return exc.partial_result, f"error: {exc}"
    line = "  ".join(
        f"b{v.batch_size} {v.change:+.1%} [{v.ci_low:+.1%} … {v.ci_high:+.1%}] {v.verdict}"
        + (f" (~{v.rounds_needed} rounds)" if v.rounds_needed else "")
        + (f" sd {v.log_ratio_sd:.3f}" if v.log_ratio_sd is not None else "")
        if v.change is not None and v.ci_low is not None
        else f"b{v.batch_size} {v.verdict}"
        for v in result.verdicts
    )
    return result, f"{line}  {len(result.rounds)} rounds, {result.wall_seconds:.0f} s, {result.stopped}"


def verdict(result: ABResult | None) -> str:
    if result is None or not result.verdicts or result.status == "failed":
        return "error"
    if any(v.verdict == REGRESSION for v in result.verdicts):
        return REGRESSION
    if all(v.verdict == WITHIN for v in result.verdicts):
        return WITHIN
    return "other"


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def phase(title: str, dirs: dict[str, Path], args: argparse.Namespace, seed0: int) -> list[str]:
    print(f"\n{title} ({load()} at the start)", flush=True)
    ab_v: list[str] = []
    aa_v: list[str] = []
    ratios: list[float] = []
    started = time.perf_counter()
    for i in range(args.comparisons):
        for kind, cur in (("A/B", dirs["B"]), ("A/A", dirs["A2"])):
            result, line = compare(dirs["A"], cur, args, seed=seed0 + 2 * i + (kind == "A/A"))
            (ab_v if kind == "A/B" else aa_v).append(verdict(result))
            if kind == "A/B" and result is not None:
                ratios += [v.change for v in result.verdicts if v.change is not None]
            print(f"  {kind} {i + 1}: {line}", flush=True)
    slow = statistics.median(ratios) if ratios else math.nan
    return [
        f"{title}: A/B REGRESSION {ab_v.count(REGRESSION)}/{len(ab_v)} (B measured {slow:+.1%} median); "
        f"A/A within threshold {aa_v.count(WITHIN)}/{len(aa_v)}, REGRESSION {aa_v.count(REGRESSION)}/{len(aa_v)}; "
        f"{time.perf_counter() - started:.0f} s, {load()} at the end"
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comparisons", type=int, default=10, help="A/B and A/A comparisons per phase, each")
    ap.add_argument("--threshold", type=float, default=0.05, help="0.05 = 5%%")
    ap.add_argument("--max-time", type=float, default=300.0, help="seconds per comparison at most")
    ap.add_argument("--min-rounds", type=int, default=5)
    ap.add_argument("--max-rounds", type=int, default=60)
    ap.add_argument("--window", type=float, default=0.2, help="seconds of one timed window")
    ap.add_argument("--windows", type=int, default=10, help="timed windows per side and round")
    ap.add_argument("--sequential", action="store_true", help="a round's children one after the other")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-sizes", type=lambda s: tuple(int(b) for b in s.split(",")), default=(16,))
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the measuring children")
    ap.add_argument(
        "--phases",
        default="idle,neighbour",
        help="idle, neighbour, or both (idle,neighbour): run the two halves as separate commands if need be",
    )
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the children inherit it
    started = time.perf_counter()
    lines = []
    phases = {p.strip() for p in args.phases.split(",")}
    if not phases <= {"idle", "neighbour"} or not phases:
        ap.error("--phases: idle, neighbour or idle,neighbour")
    with tempfile.TemporaryDirectory() as tmp:
        dirs = write_sides(Path(tmp))
        if "idle" in phases:
            lines += phase("idle (nothing else started)", dirs, args, args.seed)
        if "neighbour" in phases:
            budget = 2 * args.comparisons * args.max_time + 60  # the neighbour never outlives the phase
            neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR.format(seconds=budget)])
            try:
                lines += phase("with a CPU-bound neighbour process", dirs, args, args.seed + 1000)
            finally:
                neighbour.kill()
                neighbour.wait()
    print()
    for line in lines:
        print(line)
    print(
        f"total {time.perf_counter() - started:.0f} s; threshold {args.threshold:.0%}, batch {args.batch_sizes}"
    )


if __name__ == "__main__":
    main()
