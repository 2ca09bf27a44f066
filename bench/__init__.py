"""bench: a hardware throughput profiler and benchmark suite for PyTorch training.

Library use::

    from bench import Workload, MeasureSettings, run_sweep
    result = run_sweep(Workload(model="resnet18", image_size=64), batch_sizes=[4, 8])
    print(result.best_point().samples_per_sec)
"""

__version__ = "0.1.0"

from bench.errors import BenchError  # noqa: E402
from bench.schema import MeasureSettings, Point, SweepResult, Workload, load_result  # noqa: E402
from bench.sweep import parse_batch_sizes, run_sweep  # noqa: E402

__all__ = [
    "BenchError",
    "MeasureSettings",
    "Point",
    "SweepResult",
    "Workload",
    "__version__",
    "load_result",
    "parse_batch_sizes",
    "run_sweep",
]
