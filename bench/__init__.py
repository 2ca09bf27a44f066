"""bench: a hardware throughput profiler and benchmark suite for PyTorch training.

Library use::

    from bench import Workload, MeasureSettings, run_sweep
    result = run_sweep(Workload(model="resnet18", image_size=64), batch_sizes=[4, 8])
    print(result.best_point().samples_per_sec)  # BenchError instead when no batch size ran
"""

# Only the results layer at import: `import bench.present.report` runs this file first, and must load
# neither torch nor the measuring modules (the functions below import them when called).
from bench._version import __version__
from bench.results.errors import BenchError
from bench.results.schema import MeasureSettings, Point, SweepResult, Workload, load_result


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,2,4,8' -> (1, 2, 4, 8); '8:256' -> powers of two from 8 to 256; see ``bench.jobs.sweep``."""
    from bench.jobs.sweep import parse_batch_sizes as _parse

    return _parse(text)


def run_sweep(workload, batch_sizes=None, settings=None, **kwargs):
    """Measure ``workload`` at each batch size; see ``bench.jobs.sweep.run_sweep``.

    Raises BenchError when no batch size could be measured (instead of returning a result whose
    ``best_point()`` is None); the message names the results file and the first failure. The
    result file and its failed points are kept either way.
    """
    from bench.jobs.sweep import run_sweep as _run

    result = _run(workload, batch_sizes, settings, **kwargs)
    if result.best_point() is None:
        first = next((p for p in result.points if p.error), None)
        why = f"batch {first.batch_size}: {first.error}" if first is not None else "no point ran"
        raise BenchError(f"no batch size of {result.workload.model} could be measured ({why})")
    return result


def find_max_batch(workload, **kwargs):
    """Largest training batch that fits, exactly; see ``bench.jobs.maxbatch.find_max_batch``.

    Builds its own model and optimizer: the caller's are never touched.
    """
    from bench.jobs.maxbatch import find_max_batch as _find

    return _find(workload, **kwargs)


def measure_noise(model, dataset=None, **kwargs):
    """The gradient noise scale B_noise of ``model`` at fixed weights on ``dataset`` (a map-style
    data set of (input, target), or ``package.module:factory``); see ``bench.jobs.noise.measure_noise``.
    The model's weights and buffers are left as they were."""
    from bench.jobs.noise import measure_noise as _measure

    return _measure(model, dataset, **kwargs)


__all__ = [
    "BenchError",
    "MeasureSettings",
    "Point",
    "SweepResult",
    "Workload",
    "__version__",
    "find_max_batch",
    "load_result",
    "measure_noise",
    "parse_batch_sizes",
    "run_sweep",
]
