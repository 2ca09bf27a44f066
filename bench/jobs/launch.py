"""``bench sweep --nproc N[,M,...]``: start the same sweep through torchrun, once per world size.

The distributed engine is PyTorch's own: this builds a ``python -m torch.distributed.run
--standalone --nproc-per-node N -m bench sweep ...`` command line and waits for it. Multi-node
runs call torchrun directly with its rendezvous flags (README); nothing here re-implements them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.analysis.scaling import scaling_rows, scaling_to_dict, single_device_rates, with_efficiency
from bench.hw.device import cuda_device_count
from bench.jobs.sweep import ResultWriter
from bench.results import files
from bench.results.codec import load_result
from bench.results.errors import BenchError
from bench.results.schema import device_kind

INTERRUPT_GRACE_SECONDS = 5.0  # torchrun got the terminal's Ctrl-C itself: let it stop its workers
TERMINATE_GRACE_SECONDS = 60.0  # after SIGTERM, before SIGKILL


def parse_nproc(text: str, device: str, available: int | None = None) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4), checked against the devices present (``available``: GPUs on CUDA,
    CPU cores on CPU, where more processes than cores only measure contention)."""
    tokens = [t.strip() for t in str(text).split(",") if t.strip()]
    if not tokens or any(not re.fullmatch(r"\d+", t) for t in tokens):
        raise BenchError(f"--nproc {text!r}: give process counts such as 2 or 1,2,4")
    counts = tuple(sorted(dict.fromkeys(int(t) for t in tokens)))
    if counts[0] < 1:
        raise BenchError("--nproc: process counts must be at least 1")
    cuda = device_kind(device) == "cuda"
    if available is None:
        if cuda:
            available = cuda_device_count()
        else:
            available = os.cpu_count() or 1
    if counts[-1] > available:
        what = "GPUs visible" if cuda else "CPU cores"
        raise BenchError(f"--nproc {counts[-1]}: only {available} {what} here")
    return counts


def torchrun_command(nproc: int, bench_args: Sequence[str]) -> list[str]:
    """One node, ``nproc`` ranks; torchrun picks a free port (--standalone)."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "bench", *bench_args,
    ]  # fmt: skip


def run_torchrun(cmd: Sequence[str], *, quiet: bool = False) -> int:
    """Run torchrun and return its exit code. Ctrl-C in a terminal reaches torchrun too (same
    process group), which stops its workers; a SIGTERM to bench alone is passed on to it.
    ``quiet``: discard the ranks' stdout (the result files hold everything)."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL if quiet else None)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        try:
            proc.wait(timeout=INTERRUPT_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=TERMINATE_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise


def out_path_for(base: Path, nproc: int, several: bool) -> Path:
    """The result file of one world size: ``base`` itself for a single one, else ``stem-npN``."""
    return base.with_name(f"{base.stem}-np{nproc}{base.suffix}") if several else base


def scaling_path(base: Path) -> Path:
    return base.with_name(f"{base.stem}-scaling.json")


def click_args(ctx: Any, drop: Sequence[str]) -> list[str]:
    """The command line of ``ctx``'s command as the user gave it, less the parameters in ``drop``:
    every value that differs from its default, spelled with the option's first flag."""
    out: list[str] = []
    positional: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if name in drop or name not in ctx.params:
            continue
        value = ctx.params[name]
        if param.param_type_name == "argument":
            positional.append(str(value))
            continue
        if value == param.default or value is None:
            continue
        if getattr(param, "is_flag", False) or isinstance(value, bool):
            flags = param.opts if value else param.secondary_opts
            if flags:
                out.append(flags[0])
            continue
        out += [param.opts[0], str(value)]
    return positional + out


def launch_sweeps(
    counts: Sequence[int],
    args_for: Callable[[int, Path], list[str]],
    base_out: Path,
    *,
    run: Callable[[Sequence[str]], int] = run_torchrun,
) -> list[tuple[int, Path]]:
    """Run one torchrun sweep per process count, in ascending order; (count, result file) for each.

    A run that fails stops the series (one error naming it); its result file, if any, stays.
    """
    several = len(counts) > 1
    done = []
    for n in counts:
        path = out_path_for(base_out, n, several)
        rc = run(torchrun_command(n, args_for(n, path)))
        if rc != 0:
            kept = f"; its partial results are in {path}" if path.exists() else ""
            raise BenchError(f"the {n}-process run failed (torchrun exit {rc}){kept}")
        done.append((n, path))
    return done


def finish_scaling(
    runs: Sequence[tuple[int, Path]], summary_path: Path | None
) -> tuple[list[Any], list[Any]]:
    """Load each world size's result, fill in scaling efficiency against the 1-process run,
    rewrite the files, and write the summary; returns (results, rows)."""
    results = [load_result(str(path)) for _, path in runs]
    single = single_device_rates(results)
    if single:
        results = [with_efficiency(r, single) for r in results]
        for r, (_, path) in zip(results, runs, strict=True):
            ResultWriter(path).write(r)
    rows = scaling_rows(results)
    if summary_path is not None:
        files.dump_json_atomic(
            summary_path,
            scaling_to_dict(
                rows,
                [(r.world_size, str(path), r.run_id) for r, (_, path) in zip(results, runs, strict=True)],
            ),
        )
    return results, rows
