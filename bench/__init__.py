"""bench: a hardware throughput profiler and benchmark suite for PyTorch training.

Library use::

    from bench import Workload, MeasureSettings, run_sweep
    result = run_sweep(Workload(model="resnet18", image_size=64), batch_sizes=[4, 8])
    print(result.best_point().samples_per_sec)  # BenchError instead when no batch size ran
"""

__version__ = "0.1.0"

from bench.errors import BenchError  # noqa: E402
from bench.schema import MeasureSettings, Point, SweepResult, Workload, load_result  # noqa: E402
from bench.sweep import parse_batch_sizes  # noqa: E402


def run_sweep(workload, batch_sizes=None, settings=None, **kwargs):
    """Measure ``workload`` at each batch size; see ``bench.sweep.run_sweep``.

    Raises BenchError when no batch size could be measured (instead of returning a result whose
    ``best_point()`` is None); the message names the results file and the first failure. The
    result file and its failed points are kept either way.
    """
    from bench.sweep import run_sweep as _run

    result = _run(workload, batch_sizes, settings, **kwargs)
    if result.best_point() is None:
        first = next((p for p in result.points if p.error), None)
        why = f"batch {first.batch_size}: {first.error}" if first is not None else "no point ran"
        raise BenchError(f"no batch size of {result.workload.model} could be measured ({why})")
    return result


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
