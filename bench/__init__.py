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


def find_max_batch(workload, **kwargs):
    """Largest training batch that fits, exactly; see ``bench.maxbatch.find_max_batch``.

    Builds its own model and optimizer: the caller's are never touched.
    """
    from bench.maxbatch import find_max_batch as _find

    return _find(workload, **kwargs)


__all__ = [
    "BenchError",
    "MeasureSettings",
    "Point",
    "SweepResult",
    "Workload",
    "__version__",
    "find_max_batch",
    "load_result",
    "parse_batch_sizes",
    "run_sweep",
]
