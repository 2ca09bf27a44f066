"""``bench trace``: an annotated PyTorch profiler trace of one batch size, and an Nsight Systems capture.

Outputs under ``--out`` (default ``bench_traces/trace-<model>-<device>-b<N>-<time>/``):

* ``pytorch/rank0.pt.trace.json.gz`` -- Chrome/Perfetto trace of the measured steps only, with the
  ``distributedInfo`` Holistic Trace Analysis needs (alone in its folder: HTA reads every
  ``.json``/``.gz`` in the folder it is given).
* ``ops.md`` -- top operators by self time (device and host), also printed.
* ``nsys/profile.nsys-rep`` and ``nsys/stats_*.csv`` when nsys is available, else
  ``nsys_profile.sh`` -- the exact command to run where it is. The script is written in both cases.
* ``memory_snapshot.pickle`` with ``--memory`` on CUDA.

Under nsys the workload runs again in a child (``bench trace ... --inside-nsys``): the two
profilers both use CUPTI and must not run in one process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from bench.cli.common import (
    WORKLOAD,
    ChannelsLastOpt,
    CompileOpt,
    DeviceOpt,
    H2dOpt,
    ImageSizeOpt,
    ModelArg,
    ModeOpt,
    OptimizerOpt,
    PrecisionOpt,
    build_workload,
    console,
    err_console,
)
from bench.jobs.trace import check_inputs, trace_batch
from bench.measure.models import resolve
from bench.measure.profiler import run_annotated
from bench.results.schema import Workload


def _inside_nsys(workload: Workload, batch_size: int, steps: int, warmup: int) -> None:
    resolve(workload.model)  # an unknown model: one line

    point = run_annotated(workload, batch_size, steps, warmup)
    print(
        f"bench trace (under nsys): batch {batch_size}, {steps} measured steps, "
        f"{point.samples_per_sec:,.1f} samples/s with NVTX ranges"
    )


def trace_cmd(
    model: ModelArg,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="the one batch size to trace")],
    steps: Annotated[int, typer.Option("--steps", help="measured (recorded) steps, at least 2")] = 5,
    warmup: Annotated[int, typer.Option("--warmup", help="unrecorded warm-up steps first")] = 3,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="output folder (default bench_traces/trace-*)")
    ] = None,
    nsys: Annotated[
        str | None, typer.Option("--nsys", help="nsys executable (default: nsys on PATH)")
    ] = None,
    memory: Annotated[
        bool, typer.Option("--memory", help="also record a CUDA allocator snapshot (memory_viz pickle)")
    ] = False,
    top: Annotated[int, typer.Option("--top", help="operators listed per table")] = 15,
    mode: ModeOpt = WORKLOAD.mode,
    precision: PrecisionOpt = WORKLOAD.precision,
    channels_last: ChannelsLastOpt = WORKLOAD.channels_last,
    compile: CompileOpt = WORKLOAD.compile,
    image_size: ImageSizeOpt = WORKLOAD.image_size,
    device: DeviceOpt = None,
    h2d: H2dOpt = WORKLOAD.h2d,
    optimizer: OptimizerOpt = WORKLOAD.optimizer,
    inside_nsys: Annotated[bool, typer.Option("--inside-nsys", hidden=True)] = False,
) -> None:
    """Trace one batch size: PyTorch profiler trace (Perfetto/HTA), top-operator table, nsys capture."""
    check_inputs(batch_size, steps, warmup, top)
    workload = build_workload(
        model, mode=mode, precision=precision, channels_last=channels_last, compile=compile,
        image_size=image_size, device=device, h2d=h2d, optimizer=optimizer, dataset_size=1,
    )  # fmt: skip
    if inside_nsys:
        return _inside_nsys(workload, batch_size, steps, warmup)

    def status(line: str) -> None:
        err_console.print(f"[dim]{escape(line)}[/]")

    run = trace_batch(
        workload, batch_size, steps=steps, warmup=warmup, out_dir=out, nsys=nsys, memory=memory, top=top,
        on_status=status,
    )  # fmt: skip
    print(run.ops_table)
    say(f"PyTorch trace: {run.trace_path} (Perfetto / chrome://tracing / HTA)")
    say(f"operator table: {run.ops_path}")
    if run.samples_per_sec:
        say(f"traced throughput: {run.samples_per_sec:,.1f} samples/s (includes profiler overhead)")
    if run.memory_snapshot is not None:
        say(f"memory snapshot: {run.memory_snapshot} (open at https://pytorch.org/memory_viz)")
    for line in run.lines:
        say(line)


def say(line: str) -> None:
    console.print(line, highlight=False, soft_wrap=True, markup=False)


def register(app: typer.Typer) -> None:
    app.command("trace")(trace_cmd)
