"""Step annotations (NVTX + profiler ranges), the Nsight Systems command line, and trace runs.

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

import datetime as dt
import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.measure.runner import NO_HOOKS, Hooks
from bench.results import files
from bench.results.errors import BenchError, first_line
from bench.results.schema import Workload, device_kind

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
    try:
        import torch

        torch_push, torch_pop = torch.cuda.nvtx.range_push, torch.cuda.nvtx.range_pop

        def push_plain(name: str, colour: int) -> None:  # torch.cuda.nvtx has no colour argument
            torch_push(name)

        def pop_plain() -> None:
            torch_pop()

        torch_push("bench-probe")  # a CPU-only build of torch raises here
        torch_pop()
        return push_plain, pop_plain
    except Exception:  # noqa: BLE001 - no NVTX here is data, not a crash
        return None


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
            import torch.cuda.profiler as cuda_profiler

            self._cuda_profiler = cuda_profiler

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


class ProfilerStepHooks(TraceHooks):
    """TraceHooks that also advance a ``torch.profiler.profile`` schedule, one step per bench step.

    The profiler is started lazily at the first step (so model building is never recorded) and
    advanced at the *start* of every later step and once more in ``window_stop``. That puts the
    end of the last recorded profiler step after the runner's closing device synchronise, so
    every kernel of the last measured step has finished before the trace is collected.
    """

    def __init__(
        self, profiler: Any, batch_size: int | None, *, nvtx: bool, cuda_profiler_range: bool
    ) -> None:
        super().__init__(batch_size, nvtx=nvtx, record_function=True, cuda_profiler_range=cuda_profiler_range)
        self._profiler = profiler
        self._started = False

    def step(self, phase: str, index: int) -> AbstractContextManager[Any]:
        if not self._started:
            self._profiler.start()
            self._started = True
        else:
            self._profiler.step()
        return super().step(phase, index)

    def window_stop(self) -> None:
        super().window_stop()
        if self._started:
            self._profiler.step()

    def close(self) -> None:
        if self._started:
            self._profiler.stop()
            self._started = False


def profiler_schedule_counts(warmup_steps: int, measured_steps: int) -> tuple[int, int, int]:
    """(wait, warmup, active) for ``torch.profiler.schedule`` so only measured steps are recorded.

    bench's warm-up steps are the profiler's wait steps, except the last one, which becomes the
    profiler's own warm-up step (it sets up the tracer without recording, so recording starts
    cleanly at measured step 0).
    """
    if warmup_steps < 0 or measured_steps < 1:
        raise BenchError("need warm-up steps >= 0 and at least one measured step")
    profiler_warmup = 1 if warmup_steps >= 1 else 0
    return warmup_steps - profiler_warmup, profiler_warmup, measured_steps


# --------------------------------------------------------------------------- nsys command lines

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


# --------------------------------------------------------------------------- PyTorch profiler trace


@dataclass(frozen=True)
class OpRow:
    """One operator's totals over the recorded (measured) steps. Times in microseconds."""

    name: str
    calls: int
    self_host_us: float
    host_total_us: float
    self_device_us: float
    kind: str = "operator"  # "operator" (aten::..., runtime calls) | "kernel" (a GPU kernel)


@dataclass(frozen=True)
class TorchTrace:
    trace_path: Path
    ops: tuple[OpRow, ...]
    samples_per_sec: float | None
    measured_steps: int
    device_kind: str
    notices: tuple[str, ...] = field(default_factory=tuple)
    step_seconds: float | None = None  # median traced step (profiler overhead included)


def _is_annotation(name: str) -> bool:
    return name in PHASES or name.startswith("step ") or name.startswith("ProfilerStep#")


def op_rows(key_averages: Any) -> list[OpRow]:
    """Operators from ``prof.key_averages()``; bench's own ranges are not operators and are left out."""
    rows = []
    for ev in key_averages:
        if _is_annotation(ev.key):
            continue
        self_device = getattr(ev, "self_device_time_total", None)
        if self_device is None:  # torch < 2.4
            self_device = getattr(ev, "self_cuda_time_total", 0.0)
        # Kernels are events of their own (device type CUDA); an operator's self device time is the
        # time of the kernels it launched itself. Each kernel microsecond is in both, so the two
        # never share a table.
        is_kernel = str(getattr(ev, "device_type", "")).rsplit(".", 1)[-1] in ("CUDA", "PrivateUse1")
        rows.append(
            OpRow(
                name=ev.key,
                calls=int(ev.count),
                self_host_us=float(ev.self_cpu_time_total),
                host_total_us=float(ev.cpu_time_total),
                self_device_us=float(self_device or 0.0),
                kind="kernel" if is_kernel else "operator",
            )
        )
    return rows


def add_distributed_info(trace: dict[str, Any], rank: int = 0, world_size: int = 1) -> dict[str, Any]:
    """Make a single-process trace loadable by Holistic Trace Analysis.

    HTA maps files to ranks through a top-level ``"distributedInfo": {"rank": N}``; torch only
    writes it when torch.distributed is initialised, and HTA refuses a trace without it.
    """
    info = trace.get("distributedInfo")
    if not isinstance(info, dict):
        info = {}
    info.setdefault("rank", rank)
    info.setdefault("world_size", world_size)
    trace["distributedInfo"] = info
    return trace


def export_trace_gz(prof: Any, path: Path) -> Path:
    """Export Chrome/Perfetto JSON, add ``distributedInfo``, write gzipped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".trace-", suffix=".json", dir=path.parent)
    os.close(fd)
    try:
        prof.export_chrome_trace(tmp)
        with open(tmp, encoding="utf-8") as fh:
            data = json.load(fh)
    finally:
        os.unlink(tmp)
    add_distributed_info(data)
    with files.atomic_file(path) as raw, gzip.open(raw, "wt", encoding="utf-8") as fh:
        json.dump(data, fh)
    return path


def fixed_step_settings(warmup_steps: int, measured_steps: int) -> Any:
    """MeasureSettings for exactly ``measured_steps`` timed steps (a trace, not a convergence run)."""
    from bench.results.schema import MAX_TIME_SECONDS, MeasureSettings

    if measured_steps < 2:
        raise BenchError(f"--steps must be at least 2, got {measured_steps}")
    if warmup_steps < 0:
        raise BenchError(f"--warmup must be >= 0, got {warmup_steps}")
    return MeasureSettings(
        warmup_steps=warmup_steps,
        min_steps=measured_steps,
        max_steps=measured_steps,
        max_time_seconds=MAX_TIME_SECONDS,  # the step count decides, never the clock
        min_time_seconds=0.0,
        target_rel_ci=0.5,
    )


def _point_or_raise(point: Any, what: str) -> Any:
    from bench.results.schema import OK

    if point.status != OK:
        raise BenchError(f"{what} failed at batch {point.batch_size} ({point.status}): {point.error}")
    return point


def record_torch_trace(
    workload: Any,
    batch_size: int,
    measured_steps: int,
    warmup_steps: int,
    trace_path: Path,
    *,
    nvtx: bool | None = None,
    device: Any = None,
) -> TorchTrace:
    """Run the workload under torch.profiler, recording the measured steps only.

    Writes ``trace_path`` (gzipped Chrome/Perfetto JSON with ``distributedInfo``) and returns the
    operator totals. The samples/sec it returns includes profiler overhead: a structure reading,
    not a throughput figure.
    """
    if os.environ.get("KINETO_LOG_LEVEL") is None:
        # Kineto logs "gpuGetDeviceCount failed" as an ERROR on every CPU-only trace; keep only fatal
        # messages unless the user asked for more.
        os.environ["KINETO_LOG_LEVEL"] = "5"
    import torch

    from bench.hw.device import open_device
    from bench.measure.models import resolve
    from bench.measure.runner import run_point

    settings = fixed_step_settings(warmup_steps, measured_steps)
    spec = resolve(workload.model)
    device = device or open_device(workload.device)
    on_cuda = device.kind == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU]
    if on_cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    wait, warm, active = profiler_schedule_counts(warmup_steps, measured_steps)
    captured: dict[str, Any] = {}

    def on_ready(prof: Any) -> None:
        captured["rows"] = op_rows(prof.key_averages())
        captured["path"] = export_trace_gz(prof, trace_path)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "profiler won't be using warmup" when warm-up is 0
        prof = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=wait, warmup=warm, active=active, repeat=1),
            on_trace_ready=on_ready,
        )
        hooks = ProfilerStepHooks(prof, batch_size, nvtx=bool(nvtx and on_cuda), cuda_profiler_range=False)
        try:
            point = run_point(
                workload, spec, batch_size, settings, device, annotate=hooks.annotate, hooks=hooks
            )
        finally:
            hooks.close()
    _point_or_raise(point, "the traced run")
    if "path" not in captured:
        raise BenchError("the profiler recorded no steps (the run ended before the measured steps)")
    return TorchTrace(
        trace_path=captured["path"],
        ops=tuple(captured["rows"]),
        samples_per_sec=point.samples_per_sec,
        measured_steps=measured_steps,
        device_kind=device.kind,
        step_seconds=point.step_stats.median_seconds if point.step_stats is not None else None,
    )


def run_annotated(workload: Any, batch_size: int, measured_steps: int, warmup_steps: int) -> Any:
    """The nsys child's body: the workload with NVTX ranges and the cudaProfilerStart/Stop window."""
    from bench.hw.device import open_device
    from bench.measure.models import resolve
    from bench.measure.runner import run_point

    settings = fixed_step_settings(warmup_steps, measured_steps)
    device = open_device(workload.device)
    on_cuda = device.kind == "cuda"
    # On CPU nsys records the whole run; NVTX still frames the steps when it is available.
    hooks = TraceHooks(
        batch_size, nvtx=on_cuda or nvtx_available(), record_function=False, cuda_profiler_range=on_cuda
    )
    point = run_point(
        workload, resolve(workload.model), batch_size, settings, device, annotate=hooks.annotate, hooks=hooks
    )
    return _point_or_raise(point, "the run under nsys")


def record_memory_snapshot(
    workload: Any,
    batch_size: int,
    measured_steps: int,
    warmup_steps: int,
    path: Path,
    *,
    max_entries: int = 100_000,
) -> Path:
    """Allocator history of one traced point (build, warm-up, measured steps) as a pickle.

    Open it at https://pytorch.org/memory_viz. A separate run from the profiler trace: recording
    a stack per allocation would distort the operator times.
    """
    import torch

    from bench.hw.device import open_device
    from bench.measure.models import resolve
    from bench.measure.runner import run_point

    device = open_device(workload.device)
    if device.kind != "cuda":
        raise BenchError("--memory needs CUDA: the snapshot records the CUDA caching allocator")
    settings = fixed_step_settings(warmup_steps, measured_steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.cuda.memory._record_memory_history(max_entries=max_entries)
    try:
        point = run_point(workload, resolve(workload.model), batch_size, settings, device)
        torch.cuda.memory._dump_snapshot(str(path))
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    _point_or_raise(point, "the memory-snapshot run")
    return path


# --- bench trace's nsys capture: the command line nsys runs, and the run itself ---

NSYS_NAME = "profile"


def default_trace_dir(workload: Workload, batch_size: int, started: dt.datetime | None = None) -> Path:
    """``bench_traces/trace-<model>-<device>-b<N>-<time>``: one folder per trace, named so a listing sorts by model."""
    started = started or dt.datetime.now()
    model = files.slug(workload.model)
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
