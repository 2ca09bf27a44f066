"""Measured error rates of the regression gate on this machine (issue 12): printed, not a test.

Two builds of one small CNN: "A", and "B" that does more convolution work per step (by default two
extra layers beside the four of A, forward and backward: a real slowdown of about a third, not a
sleep, so it scales with the machine as a code regression would). Sweeps run alternately, A, B, A, B, ..., so
drift on a shared machine hits both alike, each with ``--repeat`` independent measurements per batch
size (a fresh process each). Then:

* A/A pairs (A_i, A_i+1): how often the gate raises a false alarm (REGRESSION on an unchanged build);
* A/B pairs (A_i, B_i): how often it detects the slowdown (REGRESSION at one batch size or more).

Consecutive pairs share a run (21 sweeps for 10 + 10 pairs, not 40), which keeps it under ten
minutes on two cores; the pairs are therefore not fully independent.

    python -m bench.benchmarks.gate_error_rates                 # 10 + 10 pairs, --repeat 3, batch 16
    python -m bench.benchmarks.gate_error_rates --pairs 3 --repeat 2 --max-time 0.2   # smoke
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench.analysis.gate import compare
from bench.jobs.sweep import run_sweep
from bench.results.schema import MeasureSettings, SweepResult, Workload

EXTRA_WORK_ENV = "BENCH_GATE_EXTRA_LAYERS"  # extra layers of build B (the child processes inherit it)
MODEL = "bench.benchmarks.gate_error_rates:gate_model"


class GateCNN(nn.Module):
    """Four 16-channel 3x3 convolutions at full resolution; B adds ``extra_layers`` more of the
    same size whose output joins the graph (times zero), so forward and backward both pay for it."""

    def __init__(self, extra_layers: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.ModuleList(nn.Conv2d(16, 16, 3, padding=1) for _ in range(3))
        self.extra = nn.ModuleList(nn.Conv2d(16, 16, 3, padding=1) for _ in range(extra_layers))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        for conv in self.body:
            x = torch.relu(conv(x))
        for conv in self.extra:
            x = x + 0.0 * conv(x)
        return self.head(x.mean(dim=(2, 3)))


def gate_model() -> nn.Module:
    return GateCNN(extra_layers=int(os.environ.get(EXTRA_WORK_ENV) or 0))


def sweep(build: str, args: argparse.Namespace, out: Path) -> SweepResult:
    os.environ[EXTRA_WORK_ENV] = str(args.extra_layers) if build == "B" else "0"
    workload = Workload(model=MODEL, image_size=args.image_size, device="cpu")
    settings = MeasureSettings(
        warmup_steps=2, min_steps=5, max_time_seconds=args.max_time, min_time_seconds=args.max_time,
        repeat=args.repeat,
    )  # fmt: skip
    return run_sweep(workload, args.batch_sizes, settings, out_path=out, annotate_steps=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=10, help="A/A pairs and A/B pairs, each")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=0.10, help="the gate's threshold (0.10 = 10%%)")
    ap.add_argument("--max-time", type=float, default=0.4, help="seconds of timed steps per measurement")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--extra-layers", type=int, default=2, help="B's extra convolutions (A has four)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of the measuring processes: with two threads on a shared two-core machine, "
        "every step stalls whenever a neighbour takes a core",
    )
    ap.add_argument("--batch-sizes", type=lambda s: [int(b) for b in s.split(",")], default=[16])
    args = ap.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the children inherit it
    started = time.perf_counter()
    runs: dict[str, list[SweepResult]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs + 1):
            for build in ("A", "B") if i < args.pairs else ("A",):
                result = sweep(build, args, Path(tmp) / f"{build}{i}.json")
                runs[build].append(result)
                line = "  ".join(
                    f"b{p.batch_size}: " + "/".join(f"{v:.0f}" for v in p.repeat_samples_per_sec())
                    for p in result.points
                )
                print(f"{build}{i}  {line}  samples/s per repeat", flush=True)

    def gate(base: SweepResult, cur: SweepResult) -> str:
        cmp = compare(base, cur, args.threshold)
        assert not cmp.mismatches, cmp.mismatches
        verdicts = ", ".join(f"b{c.batch_size} {c.change:+.1%} {c.verdict}" for c in cmp.changes)
        return ("ALARM" if cmp.regressions else "pass ") + "  " + verdicts

    false_alarms = detections = 0
    print(f"\nA/A pairs (unchanged build), threshold {args.threshold:.0%}, --repeat {args.repeat}:")
    for i in range(args.pairs):
        line = gate(runs["A"][i], runs["A"][i + 1])
        false_alarms += line.startswith("ALARM")
        print(f"  A{i} vs A{i + 1}: {line}")
    print(f"A/B pairs (B runs {args.extra_layers} extra convolutions beside A's four):")
    for i in range(args.pairs):
        line = gate(runs["A"][i], runs["B"][i])
        detections += line.startswith("ALARM")
        print(f"  A{i} vs B{i}: {line}")
    print(
        f"\nfalse alarms: {false_alarms}/{args.pairs}   detections: {detections}/{args.pairs}   "
        f"({time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
