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

import datetime as dt
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

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
from bench.errors import BenchError
from bench.schema import Workload, device_kind

NSYS_NAME = "profile"


def default_trace_dir(workload: Workload, batch_size: int, started: dt.datetime | None = None) -> Path:
    started = started or dt.datetime.now()
    model = re.sub(r"[^A-Za-z0-9_.-]+", "_", workload.model)
    device = workload.device.replace(":", "")
    return Path("bench_traces") / f"trace-{model}-{device}-b{batch_size}-{started.strftime('%Y%m%d-%H%M%S')}"


def child_argv(workload: Workload, batch_size: int, steps: int, warmup: int) -> list[str]:
    """The command nsys runs: this same trace, annotated, without the PyTorch profiler."""
    return [
        sys.executable, "-m", "bench", "trace", workload.model,
        "--batch-size", str(batch_size), "--steps", str(steps), "--warmup", str(warmup),
        "--device", workload.device, "--mode", workload.mode, "--precision", workload.precision,
        "--image-size", str(workload.image_size), "--optimizer", workload.optimizer,
        "--channels-last" if workload.channels_last else "--no-channels-last",
        "--compile" if workload.compile else "--no-compile",
        "--h2d" if workload.h2d else "--no-h2d",
        "--inside-nsys",
    ]  # fmt: skip


def _inside_nsys(workload: Workload, batch_size: int, steps: int, warmup: int) -> None:
    from bench.trace import run_annotated

    point = run_annotated(workload, batch_size, steps, warmup)
    print(
        f"bench trace (under nsys): batch {batch_size}, {steps} measured steps, "
        f"{point.samples_per_sec:,.1f} samples/s with NVTX ranges"
    )


def _nsys_part(
    workload: Workload, batch_size: int, steps: int, warmup: int, out_dir: Path, nsys_opt: str | None
) -> list[str]:
    """Run (or script) the nsys capture. Returns lines to print."""
    from bench import trace

    kind = device_kind(workload.device)
    nsys = trace.resolve_nsys(nsys_opt)
    argv = child_argv(workload, batch_size, steps, warmup)
    nsys_dir = out_dir / "nsys"
    script = out_dir / "nsys_profile.sh"
    if nsys is None:
        version = trace.SCRIPT_ASSUMED_VERSION
        profile_cmd = trace.build_nsys_command(version, nsys_dir, argv, device_kind=kind, name=NSYS_NAME)
        stats_cmd = trace.build_nsys_stats_command(
            nsys_dir / f"{NSYS_NAME}.nsys-rep",
            trace.stats_report_names(version, kind),
            nsys_dir / "stats",
        )
        trace.write_nsys_script(
            script, profile_cmd, stats_cmd, os.getcwd(), "Nsight Systems capture of the measured steps"
        )
        return [
            f"nsys not found (PATH or --nsys): wrote the capture command to {script}; run it where nsys is installed"
        ]

    version = trace.nsys_version(nsys)
    profile_cmd = trace.build_nsys_command(
        version, nsys_dir, argv, nsys=nsys, device_kind=kind, name=NSYS_NAME
    )
    available = trace.available_stats_reports(nsys)
    reports = trace.stats_report_names(version, kind, available)

    def stats_for(report: Path) -> list[str]:
        return trace.build_nsys_stats_command(report, reports, nsys_dir / "stats", nsys=nsys)

    trace.write_nsys_script(
        script,
        profile_cmd,
        stats_for(nsys_dir / f"{NSYS_NAME}.nsys-rep"),
        os.getcwd(),
        "the capture bench trace ran",
    )
    shown = ".".join(str(v) for v in version) if version else "unknown version"
    err_console.print(f"[dim]nsys {shown}: capturing the measured steps in a child process...[/]")
    outcome = trace.run_nsys(nsys, profile_cmd, stats_for, nsys_dir, name=NSYS_NAME)
    lines = [f"warning: {n}" for n in outcome.notices]
    if outcome.report_path is not None:
        lines.append(f"nsys report: {outcome.report_path}")
    if outcome.stats_csv:
        lines.append(f"nsys stats: {len(outcome.stats_csv)} CSV summaries in {nsys_dir} (stats_*.csv)")
    return lines


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
    if batch_size <= 0:
        raise BenchError(f"--batch-size must be positive, got {batch_size}")
    if steps < 2:
        raise BenchError(f"--steps must be at least 2, got {steps}")
    if warmup < 0:
        raise BenchError(f"--warmup must be >= 0, got {warmup}")
    if top <= 0:
        raise BenchError(f"--top must be positive, got {top}")
    workload = build_workload(
        model, mode=mode, precision=precision, channels_last=channels_last, compile=compile,
        image_size=image_size, device=device, h2d=h2d, optimizer=optimizer, dataset_size=1,
    )  # fmt: skip
    from bench.models import resolve

    resolve(workload.model)  # fail fast on an unknown model, before any folder is made
    if inside_nsys:
        _inside_nsys(workload, batch_size, steps, warmup)
        return

    from bench import trace

    out_dir = out or default_trace_dir(workload, batch_size)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    kind = device_kind(workload.device)
    if nsys is not None:
        trace.resolve_nsys(nsys)  # a bad --nsys is the user's to fix before anything runs

    err_console.print(
        f"[dim]tracing {workload.model} batch {batch_size}: {warmup} warm-up + {steps} recorded steps...[/]"
    )
    result = trace.record_torch_trace(
        workload, batch_size, steps, warmup, out_dir / "pytorch" / "rank0.pt.trace.json.gz"
    )
    table = trace.ops_table_markdown(
        result.ops, result.measured_steps, result.device_kind, top=top, step_seconds=result.step_seconds
    )
    ops_path = out_dir / "ops.md"
    header = f"# bench trace: {workload.model}, batch {batch_size}, {workload.device}, {workload.precision}, {workload.mode}\n\n"
    ops_path.write_text(header + table + "\n", encoding="utf-8")
    doc = trace.ops_json(result.ops, result.measured_steps, result.step_seconds)
    (out_dir / "ops.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    print(table)
    say(f"PyTorch trace: {result.trace_path} (Perfetto / chrome://tracing / HTA)")
    say(f"operator table: {ops_path}")
    if result.samples_per_sec:
        say(f"traced throughput: {result.samples_per_sec:,.1f} samples/s (includes profiler overhead)")

    if memory:
        if kind != "cuda":
            say("--memory needs CUDA (it snapshots the CUDA caching allocator); skipped on CPU")
        else:
            snap = trace.record_memory_snapshot(
                workload, batch_size, steps, warmup, out_dir / "memory_snapshot.pickle"
            )
            say(f"memory snapshot: {snap} (open at https://pytorch.org/memory_viz)")

    for line in _nsys_part(workload, batch_size, steps, warmup, out_dir, nsys):
        say(line)


def say(line: str) -> None:
    console.print(line, highlight=False, soft_wrap=True, markup=False)


def register(app: typer.Typer) -> None:
    app.command("trace")(trace_cmd)
