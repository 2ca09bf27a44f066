"""bench: a hardware throughput profiler and benchmark suite for PyTorch training.

Library use (the same job ``bench sweep`` runs: measure, recommend, write, store)::

    from bench import Workload, run_sweep
    result = run_sweep(Workload(model="resnet18", image_size=64), batch_sizes=[4, 8], store=True)
    print(result.best_point().samples_per_sec)  # BenchError instead when no batch size ran
    print(result.recommendation.knee.batch_size)  # the picks `bench sweep` prints
"""

# Only the results layer at import: `import bench.present.report` runs this file first, and must load
# neither torch nor the measuring modules (the functions below import them when called).
from bench._version import __version__
from bench.results.codec import load_result
from bench.results.errors import BenchError
from bench.results.schema import MeasureSettings, Point, SweepResult, Workload


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,2,4,8' -> (1, 2, 4, 8); '8:256' -> powers of two from 8 to 256; see ``bench.jobs.sweep``."""
    from bench.jobs.sweep import parse_batch_sizes as _parse

    return _parse(text)


def run_sweep(workload, batch_sizes=None, settings=None, **kwargs):
    """The sweep job ``bench sweep`` runs: measure ``workload`` at each batch size, recommend,
    advise (``advise=True``), write the result file and store it in the history (``store=True``
    or a database path); see ``bench.jobs.sweep.run_sweep``.

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
    """Largest training batch that fits, exactly, and a safe one; written (``out_path=``) and
    stored (``store=``) as ``bench max-batch`` does; see ``bench.jobs.maxbatch.find_max_batch``.

    Builds its own model and optimizer: the caller's are never touched.
    """
    from bench.jobs.maxbatch import find_max_batch as _find

    return _find(workload, **kwargs)


def compare_runs(runs, **kwargs):
    """The regression gate ``bench compare`` runs over two stored runs; see
    ``bench.jobs.compare.compare_runs``. Returns the frozen ``Comparison``."""
    from bench.jobs.compare import compare_runs as _compare

    return _compare(runs, **kwargs)


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
    "compare_runs",
    "find_max_batch",
    "load_result",
    "measure_noise",
    "parse_batch_sizes",
    "run_sweep",
]
