"""The trace job (``bench trace``, a profile's ``trace = true`` cells): one batch size under the
PyTorch profiler (a Perfetto/HTA trace and the top-operator tables), optionally a CUDA allocator
snapshot, and an Nsight Systems capture of the same workload (or the script to take one).

``trace_batch`` returns one frozen ``TraceRun``; the command prints it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.measure import profiler
from bench.measure.models import resolve
from bench.measure.nsys import nsys_capture, resolve_nsys
from bench.present.ops_tables import ops_json, ops_table_markdown
from bench.results import files
from bench.results.errors import BenchError
from bench.results.schema import Workload, device_kind


@dataclass(frozen=True)
class TraceRun:
    """What a trace wrote: the folder, the PyTorch trace, ``ops.md`` and its table, the traced
    samples/sec (profiler overhead included: a structure reading, not a throughput figure)."""

    out_dir: Path
    trace_path: Path
    ops_path: Path
    ops_table: str
    samples_per_sec: float | None
    memory_snapshot: Path | None = None
    lines: tuple[str, ...] = ()  # what else happened: a skipped snapshot, the nsys capture


def check_inputs(batch_size: int, steps: int, warmup: int, top: int) -> None:
    """The numbers of a trace, one BenchError line each."""
    if batch_size <= 0:
        raise BenchError(f"--batch-size must be positive, got {batch_size}")
    if steps < 2:
        raise BenchError(f"--steps must be at least 2, got {steps}")
    if warmup < 0:
        raise BenchError(f"--warmup must be >= 0, got {warmup}")
    if top <= 0:
        raise BenchError(f"--top must be positive, got {top}")


def trace_batch(
    workload: Workload,
    batch_size: int,
    *,
    steps: int = 5,
    warmup: int = 3,
    out_dir: Path | None = None,
    nsys: str | None = None,
    memory: bool = False,
    top: int = 15,
    capture_nsys: bool = True,
    on_status: Callable[[str], None] | None = None,
) -> TraceRun:
    """Trace ``batch_size`` of ``workload``: ``warmup`` unrecorded steps, then ``steps`` recorded.

    Writes ``pytorch/rank0.pt.trace.json.gz``, ``ops.md``/``ops.json`` and (``memory``, CUDA only)
    ``memory_snapshot.pickle`` under ``out_dir`` (default ``bench_traces/trace-*``); then the nsys
    capture (``capture_nsys``) in a child, the two profilers being unable to share a process.
    ``on_status`` sees progress lines. Bad input is a BenchError before any folder is made."""
    check_inputs(batch_size, steps, warmup, top)
    resolve(workload.model)
    out_dir = out_dir or profiler.default_trace_dir(workload, batch_size)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    if nsys is not None:
        resolve_nsys(nsys)  # a bad --nsys is the user's to fix before anything runs
    status = on_status or (lambda line: None)
    status(f"tracing {workload.model} batch {batch_size}: {warmup} warm-up + {steps} recorded steps...")
    recorded = profiler.record_torch_trace(
        workload, batch_size, steps, warmup, out_dir / "pytorch" / "rank0.pt.trace.json.gz"
    )
    w = workload
    title = f"bench trace: {w.model}, batch {batch_size}, {w.device}, {w.precision}, {w.mode}"
    ops_path, table = write_ops_tables(recorded, out_dir, title, top=top)
    lines: list[str] = []
    snapshot = None
    if memory and device_kind(workload.device) != "cuda":
        lines.append("--memory needs CUDA (it snapshots the CUDA caching allocator); skipped on CPU")
    elif memory:
        snapshot = profiler.record_memory_snapshot(
            workload, batch_size, steps, warmup, out_dir / "memory_snapshot.pickle"
        )
    if capture_nsys:
        lines += nsys_capture(workload, batch_size, steps, warmup, out_dir, nsys, on_status=status)
    return TraceRun(
        out_dir, recorded.trace_path, ops_path, table, recorded.samples_per_sec, snapshot, tuple(lines)
    )


def write_ops_tables(
    result: profiler.TorchTrace, out_dir: Path, title: str, top: int = 15
) -> tuple[Path, str]:
    """``ops.md`` (the top operators and kernels, shares of the measured step) and ``ops.json``
    (every operator and kernel) of a recorded trace into ``out_dir``; returns the Markdown path and
    the table. One writer for `bench trace` and a profile's ``trace = true`` cells."""
    table = ops_table_markdown(
        result.ops, result.measured_steps, result.device_kind, top=top, step_seconds=result.step_seconds
    )
    ops_path = out_dir / "ops.md"
    files.write_atomic(ops_path, f"# {title}\n\n{table}\n")
    doc = ops_json(result.ops, result.measured_steps, result.step_seconds)
    files.write_atomic(out_dir / "ops.json", json.dumps(doc, indent=1))
    return ops_path, table
