"""The CUDA side of tracing: NVTX ranges through ``torch.cuda.nvtx``, the cudaProfilerApi capture
range (``torch.cuda.profiler``), and the caching allocator's history for a memory snapshot. The
ranges and hooks built on them are in ``bench.measure.annotate``; the traced runs in
``bench.measure.profiler``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def torch_nvtx_ranges() -> tuple[Callable[[str], None], Callable[[], None]] | None:
    """(push(name), pop()) of ``torch.cuda.nvtx``, or None where NVTX cannot be emitted (a CPU-only
    build of torch raises on the first push, which is tried here)."""
    try:
        import torch

        push, pop = torch.cuda.nvtx.range_push, torch.cuda.nvtx.range_pop
        push("bench-probe")
        pop()
    except Exception:  # noqa: BLE001 - no NVTX here is data, not a crash
        return None
    return push, pop


def cuda_profiler() -> Any:
    """``torch.cuda.profiler``: ``start()``/``stop()`` open and close nsys's
    ``--capture-range=cudaProfilerApi`` (the calls need a CUDA driver)."""
    import torch.cuda.profiler as profiler

    return profiler


@contextlib.contextmanager
def allocator_history(max_entries: int) -> Iterator[Callable[[Path], None]]:
    """Record the CUDA caching allocator's history (a stack per allocation) inside the block; the
    yielded ``dump(path)`` writes the snapshot pickle (https://pytorch.org/memory_viz). Recording
    stops when the block ends, however it ends."""
    import torch

    torch.cuda.memory._record_memory_history(max_entries=max_entries)
    try:
        yield lambda path: torch.cuda.memory._dump_snapshot(str(path))
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
