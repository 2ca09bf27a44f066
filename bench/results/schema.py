"""Frozen dataclasses for what a run is asked to do and what it measured, and their JSON form.

Data flows one way: CLI -> Workload/MeasureSettings -> runner -> Point -> SweepResult -> JSON file.
This module imports no torch, so report/compare code can load results without it.

JSON schema (``schema_version`` 2; ``bench.results.upgrade`` reads every older one), one file per run::

    {
      "schema_version": 2,
      "kind": "sweep",
      "tool_version": "0.1.0",
      "run_id": "20261125-101500-efficientnet_b0-cpu",
      "status": "running" | "complete" | "interrupted" | "failed",
      "started_at": ISO-8601, "finished_at": ISO-8601 | null,
      "environment": {...Environment...},
      "workload": {...Workload...},
      "settings": {...MeasureSettings...},
      "points": [ {...Point...}, ... ],      # one per batch size, in the order run
      "notices": ["...", ...],                # things the user should know (e.g. NVML missing)
      "recommendation": {...Recommendation...} | null  # once finished: picks, ties, caveats
    }

Units live in the field names (``_seconds``, ``_bytes``, ``_watts``, ``_joules``, ``_percent``, ``_mhz``).
A reading that could not be taken is ``null``; the reason is in ``notices`` or the point's ``error``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.results.errors import BenchError

SCHEMA_VERSION = 2  # bump with an upgrader in bench/results/upgrade.py

MODES = ("train", "infer")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
DATA_SOURCES = ("synthetic", "loader")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# Point status values.
OK = "ok"
OOM = "oom"
ERROR = "error"
SKIPPED = "skipped"


@dataclass(frozen=True)
class Workload:
    """What one step does. Everything that changes the measured number is here."""

    model: str
    mode: str = "train"  # "train" | "infer"
    precision: str = "fp32"  # "fp32" | "tf32" | "bf16" | "fp16"
    channels_last: bool = False
    compile: bool = False
    image_size: int = 224  # pixels (square); ignored when the model supplies its own input spec
    device: str = "cpu"  # "cpu" | "cuda" | "cuda:N"
    h2d: bool = False  # pay a pinned host->device copy of the batch every step
    optimizer: str = "sgd"  # "sgd" (momentum 0.9) | "adamw"
    dataset_size: int = 1_281_167  # samples per epoch, for the epoch-time estimate (ImageNet-1k train)
    seq_len: int | None = None  # tokens per sample, for sequence models whose batch maker takes it
    # Input pipeline: "synthetic" = a random batch already on the device (no input cost);
    # "loader" = a DataLoader decoding and augmenting JPEGs in ``workers`` processes (bench.measure.data).
    data: str = "synthetic"
    workers: int = 0  # DataLoader worker processes (0 = in the training process)
    data_dir: str | None = None  # an ImageFolder tree for --data loader; None = in-memory JPEGs
    # cuDNN autotuning (torch.backends.cudnn.benchmark) on CUDA: what real training uses; its cost
    # lands in each new shape's first step (Timing.first_step_seconds), never in the window
    cudnn_benchmark: bool = True
    # the most algorithms cuDNN autotuning tries per shape (torch.backends.cudnn.benchmark_limit;
    # None: torch's default, 10; 0: all): a lower limit shortens each new shape's first step
    cudnn_benchmark_limit: int | None = None
    # torch.compile mode with ``compile``: None = torch's default; "reduce-overhead" adds CUDA graphs
    # (launch overhead gone on GPU), "max-autotune" searches kernels longer
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BenchError(f"unknown mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.precision not in PRECISIONS:
            raise BenchError(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.optimizer not in ("sgd", "adamw"):
            raise BenchError(f"unknown optimizer {self.optimizer!r}: choose sgd or adamw")
        if not isinstance(self.image_size, int) or self.image_size <= 0:
            raise BenchError(f"image size must be a positive integer, got {self.image_size!r}")
        if self.seq_len is not None and (not isinstance(self.seq_len, int) or self.seq_len <= 0):
            raise BenchError(f"sequence length must be a positive integer, got {self.seq_len!r}")
        if not isinstance(self.dataset_size, int) or self.dataset_size <= 0:
            raise BenchError(f"dataset size must be a positive integer, got {self.dataset_size!r}")
        if self.data not in DATA_SOURCES:
            raise BenchError(f"unknown data source {self.data!r}: choose one of {', '.join(DATA_SOURCES)}")
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 0:
            raise BenchError(f"workers must be a non-negative integer, got {self.workers!r}")
        if self.data_dir is not None and self.data != "loader":
            raise BenchError("--data-dir needs --data loader")
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            choices = ", ".join(COMPILE_MODES)
            raise BenchError(f"unknown compile mode {self.compile_mode!r}: choose one of {choices}")
        limit = self.cudnn_benchmark_limit
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise BenchError(f"cuDNN benchmark limit must be an integer >= 0 (0: all), got {limit!r}")
        if self.compile_mode is not None and not self.compile:
            raise BenchError("a compile mode needs --compile")


@dataclass(frozen=True)
class MeasureSettings:
    """How long and how carefully to measure each batch size."""

    warmup_steps: int = 5  # excluded from every statistic (compile, cuDNN autotune, allocator growth)
    min_steps: int = 10  # timed steps before the stopping rule is consulted
    max_steps: int = 10_000  # hard cap on timed steps per point
    max_time_seconds: float = 10.0  # timed-window budget per point; stop even if not converged
    min_time_seconds: float = 1.0  # keep the timed window at least this long (telemetry, energy)
    target_rel_ci: float = 0.02  # stop once the 95% CI half-width is within this fraction of the median
    # telemetry sampling period; None = by device (``default_sample_interval``), resolved before a run
    sample_interval_seconds: float | None = None
    isolate: bool | None = None  # run each point in a child process; None = auto (CPU yes, CUDA no)
    stop_on_oom: bool = True  # stop growing the batch after the first OOM
    # Independent measurements of every batch size (a fresh process on CPU, a fresh model on GPU),
    # interleaved b1, b2, ..., b1, b2, ...: their spread is the run-to-run noise the gate needs.
    repeat: int = 1
    # watch other processes' use of the CPU over every point and mark the points they could slow
    # down as contended (the recommendation does not rank them); off: nothing is watched
    check_contention: bool = True

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise BenchError("warm-up steps must be >= 0")
        if self.min_steps < 2:
            raise BenchError("min steps must be >= 2 (a spread needs two samples)")
        if self.max_steps < self.min_steps:
            raise BenchError("max steps must be >= min steps")
        for name in ("max_time_seconds", "min_time_seconds", "target_rel_ci", "sample_interval_seconds"):
            value = getattr(self, name)
            if value is not None and not _finite_number(value):
                raise BenchError(f"{name.replace('_', ' ')} must be a finite number, got {value!r}")
        if not 0 < self.max_time_seconds <= MAX_TIME_SECONDS:
            raise BenchError(f"max time per point must be > 0 and at most {MAX_TIME_SECONDS:.0f} seconds")
        if self.min_time_seconds < 0 or self.min_time_seconds > self.max_time_seconds:
            raise BenchError("min time per point must be between 0 and the max time")
        if not 0 < self.target_rel_ci < 1:
            raise BenchError("target relative CI must be between 0 and 1 (e.g. 0.02 for 2%)")
        if self.sample_interval_seconds is not None and not self.sample_interval_seconds > 0:
            raise BenchError("sample interval must be > 0 seconds")
        if not isinstance(self.repeat, int) or isinstance(self.repeat, bool) or self.repeat < 1:
            raise BenchError(f"repeat must be a positive integer, got {self.repeat!r}")


MAX_TIME_SECONDS = 86_400.0  # a day per point: anything longer is a typo, not a measurement


def _finite_number(value: object) -> bool:
    """A real number that is neither NaN nor infinite (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


GPU_SAMPLE_INTERVAL_SECONDS = 0.05  # NVML power and utilisation: fine-grained averages are cheap
# CPU: no NVML, and every wake-up of the sampler thread takes the GIL and a core from a 2-thread
# training loop; 4 Hz is plenty for CPU % and RSS.
CPU_SAMPLE_INTERVAL_SECONDS = 0.25


def device_kind(device: str) -> str:
    """'cuda' or 'cpu': the kind of a device string ('cuda:1' -> 'cuda'; checked where it enters,
    by ``bench.hw.device.parse_device``)."""
    return "cuda" if device.startswith("cuda") else "cpu"


def default_sample_interval(device: str) -> float:
    """The telemetry period for a device string when the user gave none."""
    return GPU_SAMPLE_INTERVAL_SECONDS if device_kind(device) == "cuda" else CPU_SAMPLE_INTERVAL_SECONDS


def default_min_time(kwargs: dict[str, Any]) -> None:
    """An unset minimum window defaults to 1 s, or to the maximum when that is shorter (so
    ``--max-time 0.5`` alone is valid)."""
    if kwargs.get("min_time_seconds") is None:
        kwargs.pop("min_time_seconds", None)
        default = MeasureSettings.min_time_seconds
        max_time = kwargs.get("max_time_seconds")
        if isinstance(max_time, (int, float)) and 0 < max_time < default:
            kwargs["min_time_seconds"] = float(max_time)


@dataclass(frozen=True)
class StepStats:
    """Statistics of the timed step durations (seconds), derived from the raw samples."""

    count: int
    median_seconds: float
    mean_seconds: float
    stdev_seconds: float
    p10_seconds: float
    p90_seconds: float
    min_seconds: float
    max_seconds: float
    ci95_low_seconds: float  # 95% confidence interval of the mean step time
    ci95_high_seconds: float
    rel_ci_half_width: float  # CI half-width / median


@dataclass(frozen=True)
class MemoryStats:
    """Peak memory of one point. ``None`` where the backend cannot tell.

    On a GPU the device peaks are the steady ones: the counters are reset after the first warm-up
    step, whose peaks (cuDNN's autotune workspace, 940 MiB at batch 1 on the H100 against 524 MiB
    steady at batch 8) are kept apart in ``first_step_peak_*`` (None in files written before)."""

    device_peak_allocated_bytes: int | None = None  # torch.cuda.max_memory_allocated (steady steps)
    device_peak_reserved_bytes: int | None = None  # torch.cuda.max_memory_reserved (caching allocator)
    device_process_used_bytes: int | None = None  # NVML: memory the driver charges to this process
    device_total_bytes: int | None = None  # capacity of the device
    host_peak_rss_bytes: int | None = None  # peak resident set of the process running the point
    host_rss_method: str | None = None  # "child-maxrss" (exact, own process) | "sampled" (sampler max)
    first_step_peak_allocated_bytes: int | None = None  # the first step of the shape (autotune)
    first_step_peak_reserved_bytes: int | None = None


@dataclass(frozen=True)
class Telemetry:
    """Averages over the timed window only. ``None`` where the sensor is not available."""

    samples: int = 0
    # NVML "GPU utilisation": share of the sample period in which any kernel was running.
    # This is kernel-active time, NOT SM occupancy or SM efficiency.
    gpu_kernel_active_percent: float | None = None
    gpu_memory_controller_percent: float | None = None  # NVML memory utilisation (DRAM busy)
    power_watts_mean: float | None = None
    power_watts_max: float | None = None
    sm_clock_mhz_mean: float | None = None
    temperature_c_max: float | None = None
    clock_event_reasons: tuple[str, ...] = ()  # union of throttle reasons seen in the window
    process_cpu_percent: float | None = None  # 100 = one core fully busy
    system_cpu_percent: float | None = None  # 0-100 over all cores
    # NVML GPM (Hopper and newer, where the driver offers it); None elsewhere. Unlike kernel-active
    # these see inside the kernels: share of SMs busy, of tensor-core pipes busy, of DRAM bandwidth.
    gpm_sm_active_percent: float | None = None
    gpm_tensor_active_percent: float | None = None
    gpm_dram_bandwidth_percent: float | None = None


@dataclass(frozen=True)
class Timing:
    """Where the wall time of one point (or one max-batch probe) went, in seconds.

    ``first_step_seconds`` is the first training step of a new shape, synchronised: cuDNN
    autotuning, torch.compile and allocator growth land there. ``warmup_seconds`` covers the other
    warm-up steps; ``measure_seconds`` the timed window; ``teardown_seconds`` releasing the model and
    returning memory. ``spawn_seconds``: starting a child process and importing torch (isolated
    points only). ``total_seconds`` is the whole point as the caller saw it, so the parts may add up
    to a little less (progress reporting, telemetry start/stop).
    """

    build_seconds: float | None = None  # model, optimizer, batch (and class count) ready
    first_step_seconds: float | None = None
    warmup_seconds: float | None = None  # warm-up steps after the first
    measure_seconds: float | None = None
    teardown_seconds: float | None = None
    total_seconds: float | None = None
    spawn_seconds: float | None = None  # child start-up; None in-process

    @staticmethod
    def total(timings: Sequence[Timing | None]) -> Timing | None:
        """The parts summed over several runs (a point's repeats); a part none recorded stays None."""
        got = [t for t in timings if t is not None]
        if not got:
            return None
        summed: dict[str, float | None] = {}
        for f in dataclasses.fields(Timing):
            values = [getattr(t, f.name) for t in got if getattr(t, f.name) is not None]
            summed[f.name] = sum(values) if values else None
        return Timing(**summed)


@dataclass(frozen=True)
class RepeatSample:
    """One of a point's independent measurements (``--repeat``), in the order they ran."""

    status: str  # OK | OOM | ERROR
    samples_per_sec: float | None = None  # batch * timed steps / window_seconds of this repeat
    step_median_seconds: float | None = None
    window_seconds: float | None = None
    steps: int = 0  # timed steps in the window
    error: str | None = None


@dataclass(frozen=True)
class Contention:
    """Other processes' use of the CPU while one point was measured (the parent process watched
    the whole point: its own process tree's CPU time against the machine's).

    ``others_cpu_percent``: other processes' CPU time over the point, as a share of all cores
    (100 = every core busy with them). ``felt_percent``: the share of the cores the measurement
    needs (torch's threads and the loader workers on a CPU, one core and the workers on a GPU) that
    they took, after the idle cores it does not need: what the measurement could feel.
    ``contended``: ``felt_percent`` at or past ``bench.analysis.contention.CONTENDED_PERCENT``."""

    others_cpu_percent: float
    felt_percent: float
    cores_needed: int
    contended: bool


@dataclass(frozen=True)
class Diagnosis:
    """A bottleneck verdict for one point and the readings behind it, in words and numbers."""

    verdict: str  # see bench.analysis.diagnose.VERDICTS
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepBreakdown:
    """Median seconds per step of each annotated phase over the timed steps (CUDA events on GPU,
    host clocks on CPU). ``None`` where the phase does not run (no optimizer when inferring, no data
    phase with a batch already on the device). The parts need not add up to the step median."""

    forward_seconds: float | None = None  # forward and loss
    backward_seconds: float | None = None
    optimizer_seconds: float | None = None  # step and zero_grad
    data_seconds: float | None = None  # waiting for the next batch and copying it in
    steps: int = 0  # timed steps the medians are taken over
    data_wait_fraction: float | None = None  # total data time / total step time over the window
    data_wait_seconds: tuple[float, ...] = ()  # per timed step, the time it waited for its batch


@dataclass(frozen=True)
class Point:
    """One batch size, measured.

    With ``settings.repeat`` > 1 the headline fields describe all repeats: ``samples_per_sec`` is
    the median over repeats; ``step_seconds``, ``step_stats``, ``window_seconds``, telemetry and
    timing are those of the median repeat (the lower middle one for an even count); memory peaks
    are the largest of any repeat; ``converged`` holds when every repeat converged. ``repeats``
    keeps each repeat (empty in files written before repeats, and for a single measurement).
    """

    batch_size: int
    status: str  # OK | OOM | ERROR | SKIPPED
    error: str | None = None
    warmup_steps: int = 0
    step_seconds: tuple[float, ...] = ()  # raw timed step durations, in order
    window_seconds: float | None = None  # wall time of the timed window (device-synchronised)
    samples_per_sec: float | None = None  # batch * timed steps / window_seconds
    step_stats: StepStats | None = None
    converged: bool = False  # CI target met before the time/step budget ran out
    epoch_seconds_estimate: float | None = None  # dataset_size / samples_per_sec (an estimate)
    energy_joules: float | None = None  # NVML total-energy counter across the timed window
    joules_per_sample: float | None = None
    memory: MemoryStats = field(default_factory=MemoryStats)
    telemetry: Telemetry = field(default_factory=Telemetry)
    timing: Timing = field(default_factory=Timing)
    repeats: tuple[RepeatSample, ...] = ()  # every repeat when settings.repeat > 1
    distributed: PointDistributed | None = None  # data-parallel figures; None for one process
    diagnosis: Diagnosis | None = None  # why not faster; None in files written before verdicts
    flops_per_sample: float | None = None  # model FLOPs (train: forward + backward), FlopCounterMode
    achieved_tflops: float | None = None  # flops_per_sample * samples_per_sec / 1e12
    mfu: float | None = None  # fraction (0.01 = 1%) of the device's dense peak; None if peak unknown
    breakdown: StepBreakdown | None = None  # where a step's time goes
    num_alloc_retries: int | None = None  # caching-allocator cudaMalloc retries in the point (CUDA)
    # other processes' share of the CPU while the point ran; None where not watched (older files,
    # settings.check_contention off, a failed point)
    contention: Contention | None = None

    def repeat_samples_per_sec(self) -> tuple[float, ...]:
        """Throughput of each successful repeat; the headline value alone when there are none."""
        values = tuple(r.samples_per_sec for r in self.repeats if r.status == OK and r.samples_per_sec)
        if values:
            return values
        return (self.samples_per_sec,) if self.samples_per_sec else ()


@dataclass(frozen=True)
class RankStats:
    """One rank's own reading of a data-parallel point (gathered to rank 0)."""

    rank: int
    status: str = OK
    error: str | None = None
    samples_per_sec: float | None = None  # this rank's batch * steps / its window
    window_seconds: float | None = None
    step_stats: StepStats | None = None
    memory: MemoryStats = field(default_factory=MemoryStats)
    allreduce_seconds: float | None = None  # gradient all-reduce in the timed window (comm hook)
    allreduce_calls: int = 0  # bucket all-reduces timed


@dataclass(frozen=True)
class PointDistributed:
    """A point measured by ``world_size`` ranks under torchrun, each with its own batch.

    ``global_samples_per_sec`` = world_size * per-rank batch * steps / the slowest rank's window
    (the same value as the point's ``samples_per_sec``). ``allreduce_seconds_per_step`` is the
    mean over ranks of the time from launching a gradient bucket's all-reduce to its completion,
    summed over buckets, per step: it overlaps backward, so it is not time added to the step.
    ``scaling_efficiency`` = global / (world_size * the 1-rank run's samples/sec at this batch),
    filled in by ``bench sweep --nproc 1,...``.
    """

    world_size: int = 1
    per_rank_batch_size: int | None = None
    global_batch_size: int | None = None
    global_samples_per_sec: float | None = None
    allreduce_seconds_per_step: float | None = None  # None in inference (no gradients)
    allreduce_method: str | None = None  # "comm-hook": wall time of each bucket's all-reduce future
    single_device_samples_per_sec: float | None = None
    scaling_efficiency: float | None = None
    ranks: tuple[RankStats, ...] = ()


@dataclass(frozen=True)
class Distributed:
    """How a run was spread over processes (torchrun). Absent (None) for a one-process run."""

    world_size: int = 1
    backend: str | None = None  # "nccl" | "gloo"
    ddp: bool = True  # model wrapped in DistributedDataParallel (training)
    local_world_size: int | None = None  # ranks on rank 0's node
    nnodes: int | None = None
    timeout_seconds: float | None = None  # on every collective


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_bytes: int | None = None
    uuid: str | None = None


@dataclass(frozen=True)
class Environment:
    hostname: str
    platform: str
    python: str
    cpu_model: str | None
    cpu_physical_cores: int | None
    cpu_logical_cores: int | None
    ram_total_bytes: int | None
    torch_version: str
    torchvision_version: str | None
    timm_version: str | None
    cuda_version: str | None  # the CUDA runtime torch was built with
    cudnn_version: int | None
    gpu_driver_version: str | None
    gpu_count: int
    gpus: tuple[GpuInfo, ...] = ()
    torch_num_threads: int | None = None
    git_commit: str | None = None  # of the working directory the run was started in
    git_dirty: bool | None = None

    @property
    def device_label(self) -> str:
        """A short name for the hardware: the first GPU's name, else the CPU model."""
        if self.gpus:
            return self.gpus[0].name
        return self.cpu_model or "cpu"


@dataclass(frozen=True)
class Advice:
    """A change tried on one flagged point and its measured effect (``bench sweep --advise``).

    ``gain`` = after / before samples/sec (1.30: 30% faster). ``significant``: the two 95% CIs of
    the mean step time do not overlap. A change that failed has ``status`` OOM/ERROR, no ``gain``,
    and is never a suggestion."""

    batch_size: int
    verdict: str  # the point's verdict that prompted it (host-bound, input-bound)
    change: str  # as a command-line change, e.g. "--compile", "--workers 4"
    before_samples_per_sec: float
    after_samples_per_sec: float | None = None
    gain: float | None = None
    significant: bool | None = None
    status: str = OK  # of the re-measure: OK | OOM | ERROR
    error: str | None = None


@dataclass(frozen=True)
class Choice:
    """One recommended batch (``bench.analysis.recommend``). ``samples_per_sec`` is None when that size was
    not measured (a safe max from a max-batch search that the sweep did not run)."""

    batch_size: int
    samples_per_sec: float | None
    why: str
    lr_linear: float | None = None  # starting point: base_lr * batch / base_batch
    lr_sqrt: float | None = None  # starting point: base_lr * sqrt(batch / base_batch)


@dataclass(frozen=True)
class GoodputRow:
    """One measured batch ranked by time to the same loss (``bench.analysis.goodput``), given B_noise."""

    batch_size: int
    samples_per_sec: float
    samples_factor: float  # examples needed relative to the minimum: 1 + B / B_noise
    relative_time: float  # (B + B_noise) / samples_per_sec, over the best batch's (1.0 = best)


@dataclass(frozen=True)
class Recommendation:
    """Which batch sizes to pick from a sweep, and how far the measurements support it
    (computed by ``bench.analysis.recommend.recommend``; written into the result when the sweep finishes)."""

    best: Choice | None  # throughput-optimal
    knee: Choice | None
    safe_max: Choice | None
    base_batch: int | None = None
    base_lr: float | None = None
    notes: tuple[str, ...] = ()  # the caveats, as the table caption and the report show them
    # batches whose 95% throughput interval overlaps the best's: the data cannot rank them
    indistinguishable: tuple[int, ...] = ()
    unconverged: tuple[int, ...] = ()  # measured points that ran out of time before the CI target
    noise_scale: float | None = None  # B_noise, examples: set when goodput was asked for
    noise_scale_source: str | None = None  # "given", or the `bench noise` file it came from
    goodput: Choice | None = None  # the batch with the shortest time to the same loss
    goodput_rows: tuple[GoodputRow, ...] = ()  # per measured batch, ascending
    # measured batches left out of the ranking: contended (other processes took a share of the CPU
    # they needed) or an interval too wide to rank (bench.analysis.recommend.unrankable)
    not_ranked: tuple[int, ...] = ()


@dataclass(frozen=True)
class SweepResult:
    run_id: str
    status: str  # "running" | "complete" | "interrupted" | "failed"
    started_at: str
    finished_at: str | None
    environment: Environment
    workload: Workload
    settings: MeasureSettings
    points: tuple[Point, ...] = ()
    notices: tuple[str, ...] = ()
    tool_version: str = ""
    wall_seconds: float | None = None  # the whole command so far, setup included
    distributed: Distributed | None = None  # None: one process (world size 1)
    advice: tuple[Advice, ...] = ()  # measured effects of changes on flagged points (--advise)
    recommendation: Recommendation | None = None  # None: not finished, or written before it existed
    kind: str = "sweep"
    schema_version: int = SCHEMA_VERSION

    @property
    def world_size(self) -> int:
        return self.distributed.world_size if self.distributed is not None else 1

    def ok_points(self) -> list[Point]:
        return [p for p in self.points if p.status == OK]

    def best_point(self) -> Point | None:
        ok = self.ok_points()
        return max(ok, key=lambda p: p.samples_per_sec or 0.0) if ok else None
