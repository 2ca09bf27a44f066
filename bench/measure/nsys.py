"""Nsight Systems: version parsing, the ``nsys profile`` / ``nsys stats`` command lines, running
them, and ``bench trace``'s capture (the workload again in a child under nsys).

nsys version cut-offs this module assumes (``build_nsys_command``). These come from the
Nsight Systems release notes and CLI help as far as they could be checked; the option names are
stable, the exact release an option appeared in is the uncertain part, so gates err late:

* ``--capture-range=cudaProfilerApi``, ``--trace=cuda,nvtx,osrt,cudnn,cublas``,
  ``--force-overwrite``, ``--output``, ``--cpuctxsw``: every release this supports (>= 2020.1).
* ``--capture-range-end`` from 2021.2 (older releases had ``--stop-on-range-end``, default true,
  which is what ``--capture-range-end=stop`` means, so leaving it out there changes nothing).
  From 2021.2 the default is ``stop-shutdown`` (kill the app when the range ends), which is why
  the flag is passed explicitly: the child should finish cleanly.
* ``--sample=process-tree`` from 2021.1; older releases call CPU sampling ``--sample=cpu``.
* ``nsys stats`` report names: ``cuda_gpu_kern_sum``, ``cuda_api_sum``,
  ``cuda_gpu_mem_time_sum``, ``nvtx_sum``, ``osrt_sum`` from 2023.1; before that
  ``gpukernsum``, ``cudaapisum``, ``gpumemtimesum``, ``nvtxsum``, ``osrtsum``. When the installed
  nsys answers ``nsys stats --help-reports`` the names it lists win over this table.
* The report file is ``NAME.nsys-rep`` from 2021.4 and ``NAME.qdrep`` before; the caller looks
  for either.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.results import files
from bench.results.errors import BenchError, first_line
from bench.results.schema import Workload, device_kind

NsysVersion = tuple[int, ...]

CAPTURE_RANGE_END_SINCE: NsysVersion = (2021, 2)
PROCESS_TREE_SAMPLING_SINCE: NsysVersion = (2021, 1)
NEW_STATS_NAMES_SINCE: NsysVersion = (2023, 1)
# The version the written script assumes (any current release): its flags need >= 2021.2.
SCRIPT_ASSUMED_VERSION: NsysVersion = (2024, 1)

# report -> (name from 2023.1, name before). CUDA reports are dropped for a CPU run.
STATS_REPORTS = (
    ("cuda_gpu_kern_sum", "gpukernsum"),
    ("cuda_api_sum", "cudaapisum"),
    ("cuda_gpu_mem_time_sum", "gpumemtimesum"),
    ("nvtx_sum", "nvtxsum"),
    ("osrt_sum", "osrtsum"),
)


def parse_nsys_version(text: str) -> NsysVersion | None:
    """'NVIDIA Nsight Systems version 2023.4.4.54-234433681190v0' -> (2023, 4, 4, 54)."""
    match = re.search(r"(\d{4})\.(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if match is None:
        return None
    return tuple(int(g) for g in match.groups() if g is not None)


def nsys_version(nsys: str, *, timeout_seconds: float = 60.0) -> NsysVersion | None:
    """Ask ``nsys --version``; None when it does not say (then current-release flags are used)."""
    try:
        proc = subprocess.run(
            [nsys, "--version"], capture_output=True, text=True, timeout=timeout_seconds, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"cannot run {nsys} --version ({first_line(exc)})") from None
    return parse_nsys_version(proc.stdout + proc.stderr)


def _at_least(version: NsysVersion | None, since: NsysVersion) -> bool:
    return version is None or tuple(version[:2]) >= since


def build_nsys_command(
    nsys_version: NsysVersion | None,
    out_dir: str | os.PathLike[str],
    child_argv: Sequence[str],
    *,
    nsys: str = "nsys",
    name: str = "profile",
    device_kind: str = "cuda",
    cpu_sampling: bool = False,
) -> list[str]:
    """``nsys profile`` argv that runs ``child_argv`` and writes ``out_dir/name.nsys-rep``.

    ``nsys_version``: from ``nsys --version``; None = unknown, assume a current release.
    On CUDA only the cudaProfilerStart/Stop range is captured (the measured steps) and CPU
    sampling is off unless asked for (it needs perf_event access, often missing in containers,
    and a GPU-bound step is read from the CUDA/NVTX rows). On CPU there is no CUDA capture range,
    so the whole run is recorded with CPU sampling on: the NVTX rows then frame the samples.
    """
    if device_kind not in ("cpu", "cuda"):
        raise BenchError(f"unknown device kind {device_kind!r}: expected cpu or cuda")
    if not child_argv:
        raise BenchError("nothing to profile: the child command is empty")
    on_cuda = device_kind == "cuda"
    trace = "cuda,nvtx,osrt,cudnn,cublas" if on_cuda else "nvtx,osrt"
    cmd = [nsys, "profile", f"--trace={trace}"]
    if on_cuda:
        cmd.append("--capture-range=cudaProfilerApi")
        if _at_least(nsys_version, CAPTURE_RANGE_END_SINCE):
            cmd.append("--capture-range-end=stop")
    if cpu_sampling or not on_cuda:
        sample = "process-tree" if _at_least(nsys_version, PROCESS_TREE_SAMPLING_SINCE) else "cpu"
        cmd += [f"--sample={sample}", "--cpuctxsw=process-tree"]
    else:
        cmd += ["--sample=none", "--cpuctxsw=none"]
    cmd += ["--force-overwrite=true", "--output", str(Path(out_dir) / name), *child_argv]
    return cmd


def stats_report_names(
    nsys_version: NsysVersion | None, device_kind: str, available: str | None = None
) -> list[str]:
    """The ``nsys stats`` reports to run: names from ``--help-reports`` output when given."""
    cuda_only = {"cuda_gpu_kern_sum", "cuda_api_sum", "cuda_gpu_mem_time_sum"}
    names = []
    for new, old in STATS_REPORTS:
        if device_kind != "cuda" and new in cuda_only:
            continue
        if available is not None and re.search(rf"\b{new}\b", available):
            names.append(new)
        elif available is not None and re.search(rf"\b{old}\b", available):
            names.append(old)
        elif available is None:
            names.append(new if _at_least(nsys_version, NEW_STATS_NAMES_SINCE) else old)
    return names


def build_nsys_stats_command(
    report_path: str | os.PathLike[str],
    reports: Sequence[str],
    out_prefix: str | os.PathLike[str],
    *,
    nsys: str = "nsys",
) -> list[str]:
    """``nsys stats`` argv: one CSV per report, ``<out_prefix>_<report>.csv``."""
    return [
        nsys, "stats", "--report", ",".join(reports), "--format", "csv",
        "--output", str(out_prefix), "--force-export=true", "--force-overwrite=true", str(report_path),
    ]  # fmt: skip


def available_stats_reports(nsys: str, *, timeout_seconds: float = 60.0) -> str | None:
    """Text of ``nsys stats --help-reports`` (names this nsys knows), or None if it will not say."""
    try:
        proc = subprocess.run(
            [nsys, "stats", "--help-reports"],
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = proc.stdout + proc.stderr
    return text if proc.returncode == 0 and text.strip() else None


def find_nsys_report(out_dir: str | os.PathLike[str], name: str = "profile") -> Path | None:
    """The report nsys wrote: NAME.nsys-rep (2021.4+) or NAME.qdrep (older)."""
    for suffix in (".nsys-rep", ".qdrep"):
        path = Path(out_dir) / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def write_nsys_script(
    path: Path, profile_cmd: Sequence[str], stats_cmd: Sequence[str], cwd: str, note: str
) -> Path:
    """An executable shell script that reproduces the nsys capture and its summaries."""
    lines = [
        "#!/bin/sh",
        f"# {note}",
        "# Written by `bench trace`; flags assume Nsight Systems >= 2021.2 (for an older nsys drop",
        "# --capture-range-end=stop, and use --sample=cpu instead of --sample=process-tree).",
        "set -e",
        f"cd {shlex.quote(cwd)}",
        shlex.join(profile_cmd),
        shlex.join(stats_cmd),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, "\n".join(lines), mode=0o755)
    return path


@dataclass(frozen=True)
class NsysOutcome:
    report_path: Path | None
    stats_csv: tuple[Path, ...] = ()
    notices: tuple[str, ...] = ()


def _tail(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def run_nsys(
    nsys: str,
    profile_cmd: Sequence[str],
    stats_for: Callable[[Path], list[str]],
    out_dir: Path,
    *,
    name: str = "profile",
    timeout_seconds: float | None = None,
) -> NsysOutcome:
    """Run the capture (failure -> BenchError, one line) and then the summaries (failure -> notice)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "nsys_profile.log"
    try:
        proc = subprocess.run(
            profile_cmd, capture_output=True, text=True, timeout=timeout_seconds, check=False
        )
    except OSError as exc:
        raise BenchError(f"cannot run {nsys} ({first_line(exc)})") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"nsys profile did not finish within {timeout_seconds:.0f} s") from None
    log_path.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise BenchError(
            f"nsys profile failed (exit {proc.returncode}): {_tail(proc.stderr or proc.stdout)} (log: {log_path})"
        )
    report = find_nsys_report(out_dir, name)
    if report is None:
        return NsysOutcome(None, notices=(f"nsys profile wrote no report in {out_dir} (log: {log_path})",))
    stats_cmd = stats_for(report)
    notices: list[str] = []
    try:
        stats = subprocess.run(
            stats_cmd, capture_output=True, text=True, timeout=timeout_seconds, check=False
        )
        (out_dir / "nsys_stats.log").write_text(stats.stdout + stats.stderr, encoding="utf-8")
        if stats.returncode != 0:
            notices.append(
                f"nsys stats failed (exit {stats.returncode}): {_tail(stats.stderr or stats.stdout)}"
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        notices.append(f"nsys stats did not run ({first_line(exc)})")
    csvs = tuple(sorted(out_dir.glob("stats_*.csv")))
    return NsysOutcome(report, csvs, tuple(notices))


def resolve_nsys(explicit: str | None) -> str | None:
    """The nsys to use: ``--nsys PATH`` (must be an executable) or ``nsys`` on PATH, else None."""
    if explicit:
        path = shutil.which(explicit) or (
            explicit if os.access(explicit, os.X_OK) and Path(explicit).is_file() else None
        )
        if path is None:
            raise BenchError(f"--nsys {explicit}: not an executable file")
        return str(path)
    return shutil.which("nsys")


# --- bench trace's nsys capture: the command line nsys runs, and the run itself ---

NSYS_NAME = "profile"


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


def nsys_capture(
    workload: Workload,
    batch_size: int,
    steps: int,
    warmup: int,
    out_dir: Path,
    nsys_opt: str | None,
    *,
    on_status: Callable[[str], None] | None = None,
) -> list[str]:
    """The Nsight Systems half of ``bench trace``: run the workload again under nsys in a child
    (``child_argv``; the two profilers both use CUPTI and must not share a process), then its stats
    as CSV, into ``out_dir/nsys``. ``out_dir/nsys_profile.sh`` holds the exact commands in every
    case; without nsys (PATH or ``nsys_opt``) it is all that is written. Returns the lines to show
    the user (report paths, warnings); ``on_status`` hears progress. BenchError when nsys fails.
    """
    kind = device_kind(workload.device)
    nsys = resolve_nsys(nsys_opt)
    argv = child_argv(workload, batch_size, steps, warmup)
    nsys_dir = out_dir / "nsys"
    script = out_dir / "nsys_profile.sh"
    if nsys is None:
        version = SCRIPT_ASSUMED_VERSION
        profile_cmd = build_nsys_command(version, nsys_dir, argv, device_kind=kind, name=NSYS_NAME)
        stats_cmd = build_nsys_stats_command(
            nsys_dir / f"{NSYS_NAME}.nsys-rep",
            stats_report_names(version, kind),
            nsys_dir / "stats",
        )
        write_nsys_script(
            script, profile_cmd, stats_cmd, os.getcwd(), "Nsight Systems capture of the measured steps"
        )
        return [
            f"nsys not found (PATH or --nsys): wrote the capture command to {script}; run it where nsys is installed"
        ]

    version = nsys_version(nsys)
    profile_cmd = build_nsys_command(version, nsys_dir, argv, nsys=nsys, device_kind=kind, name=NSYS_NAME)
    available = available_stats_reports(nsys)
    reports = stats_report_names(version, kind, available)

    def stats_for(report: Path) -> list[str]:
        return build_nsys_stats_command(report, reports, nsys_dir / "stats", nsys=nsys)

    write_nsys_script(
        script,
        profile_cmd,
        stats_for(nsys_dir / f"{NSYS_NAME}.nsys-rep"),
        os.getcwd(),
        "the capture bench trace ran",
    )
    shown = ".".join(str(v) for v in version) if version else "unknown version"
    if on_status is not None:
        on_status(f"nsys {shown}: capturing the measured steps in a child process...")
    outcome = run_nsys(nsys, profile_cmd, stats_for, nsys_dir, name=NSYS_NAME)
    lines = [f"warning: {n}" for n in outcome.notices]
    if outcome.report_path is not None:
        lines.append(f"nsys report: {outcome.report_path}")
    if outcome.stats_csv:
        lines.append(f"nsys stats: {len(outcome.stats_csv)} CSV summaries in {nsys_dir} (stats_*.csv)")
    return lines
