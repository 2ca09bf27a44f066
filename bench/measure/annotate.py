"""Step annotations: NVTX and torch.profiler ranges around every step and phase, used by every sweep.

Three consumers, one set of names:

* **Nsight Systems** sees NVTX ranges: ``step b=64 i=3 measure`` around every step and ``data``,
  ``forward``, ``backward``, ``optimizer`` inside it. The timed window is bracketed by
  ``cudaProfilerStart``/``cudaProfilerStop`` right after the device synchronise that opens/closes
  it, so ``nsys profile --capture-range=cudaProfilerApi`` records the measured steps only.
* **torch.profiler** sees ``record_function`` ranges with the same names, so a Chrome/Perfetto
  trace shows the same structure as the nsys timeline.
* **bench sweep** uses the same hooks (``sweep_instrumentation``) so a sweep run under nsys is
  annotated too; they cost one Python call per range when no profiler is attached (measured by
  ``python -m bench.benchmarks.annotation_overhead``).

Colours: ``torch.cuda.nvtx`` has no colour argument. When the ``nvtx`` package
(``pip install nvtx``) is importable its ``push_range(color=...)`` is used and each phase gets the
colour in ``PHASE_COLOURS_ARGB``; without it the ranges are the same but uncoloured. It is an
optional extra, never a hard dependency.

The Nsight Systems command lines are in ``bench.measure.nsys``; the profiler trace runs in
``bench.measure.profiler``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from bench.hw import tracing
from bench.measure.runner import NO_HOOKS, Hooks
from bench.results.errors import BenchError

PHASES = ("data", "forward", "backward", "optimizer")

# ARGB colours per range kind (used only when the ``nvtx`` package is installed).
PHASE_COLOURS_ARGB = {
    "step-warmup": 0xFF9E9E9E,  # grey: excluded from every statistic
    "step-measure": 0xFF43A047,  # green: a timed step
    "data": 0xFFFFB300,  # amber: host->device copy
    "forward": 0xFF1E88E5,  # blue
    "backward": 0xFFE53935,  # red
    "optimizer": 0xFF8E24AA,  # purple
}
_DEFAULT_COLOUR_ARGB = 0xFF757575

Annotate = Callable[[str], AbstractContextManager[Any]]


def step_range_name(batch_size: int | None, index: int, phase: str) -> str:
    """'step b=64 i=3 measure': batch size, step index within its phase, and the phase."""
    batch = f" b={batch_size}" if batch_size is not None else ""
    return f"step{batch} i={index} {phase}"


# --------------------------------------------------------------------------- range backends


def nvtx_available() -> bool:
    """True when NVTX ranges can be emitted here (the ``nvtx`` package, or a CUDA build of torch)."""
    return _nvtx_backend() is not None


def _nvtx_backend() -> tuple[Callable[[str, int], None], Callable[[], None]] | None:
    """(push(name, colour_argb), pop()) or None. Prefers the ``nvtx`` package for colours."""
    try:
        import nvtx  # type: ignore[import-not-found]

        def push(name: str, colour: int) -> None:
            nvtx.push_range(message=name, color=colour)

        return push, nvtx.pop_range
    except ImportError:
        pass
    ranges = tracing.torch_nvtx_ranges()
    if ranges is None:
        return None
    torch_push, torch_pop = ranges

    def push_plain(name: str, colour: int) -> None:  # torch.cuda.nvtx has no colour argument
        torch_push(name)

    return push_plain, torch_pop


class _Range:
    """One NVTX and/or record_function range. A plain class: cheaper than @contextmanager."""

    __slots__ = ("_name", "_colour", "_marks", "_rf")

    def __init__(self, name: str, colour: int, marks: _Marks) -> None:
        self._name = name
        self._colour = colour
        self._marks = marks
        self._rf: Any = None

    def __enter__(self) -> None:
        marks = self._marks
        if marks.push is not None:
            marks.push(self._name, self._colour)
        if marks.record_function is not None:
            self._rf = marks.record_function(self._name)
            self._rf.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._rf is not None:
            self._rf.__exit__(None, None, None)
            self._rf = None
        if self._marks.pop is not None:
            self._marks.pop()


class _Marks:
    """Which range backends are on: NVTX (push/pop) and/or torch.profiler.record_function."""

    def __init__(self, *, nvtx: bool, record_function: bool) -> None:
        self.push: Callable[[str, int], None] | None = None
        self.pop: Callable[[], None] | None = None
        self.record_function: Any = None
        if nvtx:
            backend = _nvtx_backend()
            if backend is None:
                raise BenchError("NVTX is not available: install a CUDA build of torch or `pip install nvtx`")
            self.push, self.pop = backend
        if record_function:
            import torch

            self.record_function = torch.profiler.record_function

    def range(self, name: str, colour_key: str | None = None) -> _Range:
        colour = PHASE_COLOURS_ARGB.get(colour_key or name, _DEFAULT_COLOUR_ARGB)
        return _Range(name, colour, self)


def make_annotate(*, nvtx: bool, record_function: bool = True) -> Annotate:
    """The ``annotate(name)`` that ``workload.prepare`` wraps around data/forward/backward/optimizer."""
    marks = _Marks(nvtx=nvtx, record_function=record_function)

    def annotate(name: str) -> AbstractContextManager[Any]:
        return marks.range(name)

    return annotate


class TraceHooks(Hooks):
    """Runner hooks: a named range around every step, and cudaProfilerStart/Stop on the window.

    ``cuda_profiler_range``: call ``torch.cuda.profiler.start()`` in ``window_start`` and
    ``stop()`` in ``window_stop``. The runner calls both right after a device synchronise, so the
    nsys capture range (``--capture-range=cudaProfilerApi``) holds exactly the measured steps and
    none of the warm-up. Needs CUDA (the call fails without a driver).
    """

    def __init__(
        self,
        batch_size: int | None = None,
        *,
        nvtx: bool,
        record_function: bool = True,
        cuda_profiler_range: bool = False,
    ) -> None:
        self.batch_size = batch_size
        self._marks = _Marks(nvtx=nvtx, record_function=record_function)
        self._cuda_profiler = None
        if cuda_profiler_range:
            self._cuda_profiler = tracing.cuda_profiler()

    def annotate(self, name: str) -> AbstractContextManager[Any]:
        """Same backends as the step ranges, for the phases inside a step."""
        return self._marks.range(name)

    def step(self, phase: str, index: int) -> AbstractContextManager[Any]:
        return self._marks.range(step_range_name(self.batch_size, index, phase), f"step-{phase}")

    def window_start(self) -> None:
        if self._cuda_profiler is not None:
            self._cuda_profiler.start()

    def window_stop(self) -> None:
        if self._cuda_profiler is not None:
            self._cuda_profiler.stop()


def sweep_instrumentation(
    enabled: bool, device_kind: str, batch_size: int | None = None
) -> tuple[Annotate | None, Hooks]:
    """(annotate, hooks) for ``runner.run_point`` in a sweep; (None, NO_HOOKS) when disabled.

    On CUDA: NVTX + record_function ranges and cudaProfilerStart/Stop around each point's timed
    window (run a sweep under ``nsys profile --capture-range=cudaProfilerApi
    --capture-range-end=repeat`` to capture every point's window). On CPU: record_function only
    (NVTX is for Nsight, which needs CUDA for its capture range). Pass the point's
    ``batch_size`` so step ranges carry it; call once per point.
    """
    if not enabled:
        return None, NO_HOOKS
    if device_kind not in ("cpu", "cuda"):
        raise BenchError(f"unknown device kind {device_kind!r}: expected cpu or cuda")
    on_cuda = device_kind == "cuda"
    hooks = TraceHooks(batch_size, nvtx=on_cuda, record_function=True, cuda_profiler_range=on_cuda)
    return hooks.annotate, hooks
