"""A/A through ``run_ab``: one model in both sides (A and its identical copy), ROUNDS rounds at batch
16, every child's samples/s printed: how much one build varies from one fresh process to the next.

    PYTHONPATH=. python reports/cpu-xeon-2core/ab/per_process_spread.py WINDOW_SECONDS ROUNDS
"""

import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.benchmarks.ab_error_rates import write_sides
from bench.jobs.ab import run_ab, side
from bench.results.schema import MeasureSettings, Workload

os.environ.setdefault("OMP_NUM_THREADS", "1")
window, rounds = float(sys.argv[1]), int(sys.argv[2])
with tempfile.TemporaryDirectory() as tmp:
    dirs = write_sides(Path(tmp))
    workload = Workload(model="abmodel:build", image_size=32, device="cpu")
    settings = MeasureSettings(
        warmup_steps=3, min_steps=3, max_time_seconds=window, min_time_seconds=window, isolate=True
    )
    t0 = time.perf_counter()
    result = run_ab(
        workload, (16,), side("A", dirs["A"]), side("B", dirs["A2"]), threshold=0.05, settings=settings,
        min_rounds=rounds, max_rounds=rounds, max_time_seconds=600, seed=1,
    )  # fmt: skip
    rates = [
        {run.side: run.points[0].samples_per_sec for run in rd.runs if run.points} for rd in result.rounds
    ]
    a, b = [r["A"] for r in rates], [r["B"] for r in rates]
    log_ratios = [math.log(y / x) for x, y in zip(a, b, strict=True)]
    v = result.verdicts[0]
    print(f"window {window}s: A {[round(x, 1) for x in a]}")
    print(f"window {window}s: B {[round(x, 1) for x in b]}")
    print(
        f"window {window}s: per-round log ratio sd {statistics.stdev(log_ratios):.3f}; "
        f"A cv {statistics.stdev(a) / statistics.mean(a):.3f}; {time.perf_counter() - t0:.0f} s; "
        f"verdict {v.verdict} {v.change:+.1%}"
    )
