"""Data-parallel measurement under torchrun: one process per device, the model in DDP.

``torchrun --nproc-per-node N -m bench sweep ...`` starts N copies of bench; torchrun sets
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``, and ``detect`` reads them. Each rank then measures
in its own process (no child per point), on ``cuda:LOCAL_RANK`` or the CPU:

* The process group uses NCCL on GPUs and gloo on CPU, with ``timeout`` on every collective, so a
  rank that dies or stops answering ends the run with an error instead of a hang. A second, gloo
  group carries bench's own control traffic (window alignment, stop decision, gathering results),
  kept apart from DDP's gradient all-reduce.
* Training wraps the model in ``DistributedDataParallel``; a communication hook times each
  gradient bucket's all-reduce (``CommTimer``). Inference has no gradients, so no DDP.
* Every rank must run the same steps, or DDP would wait for a rank that has stopped: the timed
  window opens with a barrier, and rank 0 decides each chunk's length and when to stop and
  broadcasts it (``RankSync``, the runner's ``Sync`` hook).
* After each point the ranks' own points are gathered; every rank combines them the same way
  (``combine``) so the sweep's decisions (stop on OOM, failures in a row) agree. Rank 0 alone
  writes the result file and prints.

A point that fails on only some ranks leaves the others waiting in a collective: the failing rank
waits at a monitored barrier for at most ``failure_wait_seconds`` and then stops the run with one
error line naming itself; torchrun stops the rest. A point that fails on every rank (the same OOM
everywhere) is recorded like any failed point.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from bench.analysis import stats
from bench.hw.device import open_device, parse_device
from bench.measure.runner import Sync, run_point
from bench.results.errors import BenchError, first_line
from bench.results.schema import (
    ERROR,
    OK,
    OOM,
    Distributed,
    MemoryStats,
    Point,
    PointDistributed,
    RankStats,
)

DEFAULT_TIMEOUT_SECONDS = 300.0  # a first step with torch.compile can take minutes on one rank
TRAIN_FAILURE_WAIT_SECONDS = 30.0  # DDP couples ranks each step: a shared failure comes within it
ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class RankEnv:
    """Where this process sits in a torchrun job."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    nnodes: int | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = RankEnv(rank=0, local_rank=0, world_size=1, local_world_size=1, nnodes=1)


def detect(environ: Mapping[str, str] | None = None) -> RankEnv | None:
    """The torchrun rank of this process, or None when not started by torchrun.

    A partial or non-numeric set of the variables is a BenchError: measuring as one process when
    the user meant N would write a result that looks right and is not.
    """
    env = os.environ if environ is None else environ
    present = [k for k in ENV_KEYS if k in env]
    if not present:
        return None
    if len(present) != len(ENV_KEYS):
        missing = ", ".join(k for k in ENV_KEYS if k not in env)
        raise BenchError(f"partial torchrun environment ({missing} not set): start bench with torchrun")
    try:
        values = {k: int(env[k]) for k in ENV_KEYS}
        local_world = int(env.get("LOCAL_WORLD_SIZE", values["WORLD_SIZE"]))
        nnodes = int(env["GROUP_WORLD_SIZE"]) if "GROUP_WORLD_SIZE" in env else None
    except ValueError:
        shown = ", ".join(f"{k}={env.get(k)!r}" for k in ENV_KEYS)
        raise BenchError(f"torchrun environment is not numeric ({shown})") from None
    world, rank, local = values["WORLD_SIZE"], values["RANK"], values["LOCAL_RANK"]
    if world < 1 or not 0 <= rank < world or local < 0:
        raise BenchError(f"torchrun environment is inconsistent: RANK={rank}, WORLD_SIZE={world}")
    return RankEnv(rank, local, world, local_world, nnodes)


def rank_device(spec: str, env: RankEnv) -> str:
    """The device this rank measures on: its local GPU (``cuda:LOCAL_RANK``), or the CPU."""
    kind, index = parse_device(spec)
    if kind == "cpu":
        return "cpu"
    if spec.strip().lower() != "cuda" and index != env.local_rank and env.local_world_size > 1:
        raise BenchError(
            f"--device {spec} under torchrun: each rank uses cuda:LOCAL_RANK; give --device cuda "
            "and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    return f"cuda:{env.local_rank}"


MAX_TIMEOUT_SECONDS = 7 * 86_400.0  # a week: torch's timedelta overflows on far larger values


def parse_timeout(value: float | str | None) -> float:
    """Seconds for every collective; ``None`` reads BENCH_DIST_TIMEOUT, else the default."""
    if value is None:
        value = os.environ.get("BENCH_DIST_TIMEOUT", DEFAULT_TIMEOUT_SECONDS)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise BenchError(f"distributed timeout must be a number of seconds, got {value!r}") from None
    if not 0 < seconds <= MAX_TIMEOUT_SECONDS:  # NaN and inf fail here too
        raise BenchError(
            f"distributed timeout must be > 0 and at most {MAX_TIMEOUT_SECONDS:.0f} seconds, got {value!r}"
        )
    return seconds


# --------------------------------------------------------------------------- all-reduce timing


class CommTimer:
    """State of the DDP communication hook: one timer per gradient bucket all-reduce.

    Each span runs from the moment DDP hands a ready bucket to the hook to the completion of its
    all-reduce (host clock on CPU; CUDA events on GPU, the end recorded on the stream the
    collective's result arrives on). Spans overlap backward and each other, so their sum says how
    much communication there was, not how much it added to the step. ``harvest`` (after every
    synchronised chunk: ``RankSync.chunk_steps``) reads the finished timers and reuses them, so
    their CUDA events do not pile up to the end of the point.
    """

    def __init__(self, make_timer: Callable[[], Any], group: Any = None) -> None:
        self._make_timer = make_timer
        self.group = group
        self._lock = threading.Lock()
        self._running: list[Any] = []  # started, maybe not yet stopped
        self._free: list[Any] = []  # read, ready to time another bucket
        self._spans: list[float] = []

    def reset(self) -> None:
        self.harvest()
        with self._lock:
            self._spans = []

    def begin(self) -> Any:
        with self._lock:
            timer = self._free.pop() if self._free else self._make_timer()
            self._running.append(timer)
        timer.start()
        return timer

    def harvest(self) -> None:
        """Read every finished span (call after a device synchronise) and free those timers."""
        with self._lock:
            running, self._running = self._running, []
            for timer in running:
                spans = timer.collect()
                self._spans.extend(spans)
                (self._free if spans else self._running).append(timer)  # an unfinished one stays

    def collect(self) -> list[float]:
        """Seconds of each finished all-reduce since ``reset`` (call after a device synchronise)."""
        self.harvest()
        with self._lock:
            out, self._spans = self._spans, []
        return out


def timed_allreduce_hook(state, bucket):  # noqa: ANN001 - DDP checks real annotations; strings fail
    """DDP comm hook: the default all-reduce (average of gradients), timed per bucket."""
    import torch.distributed as dist

    group = state.group if state.group is not None else dist.group.WORLD
    timer = state.begin()
    tensor = bucket.buffer()
    tensor.div_(dist.get_world_size(group))
    fut = dist.all_reduce(tensor, group=group, async_op=True).get_future()

    def done(f):  # noqa: ANN001
        timer.stop()
        return f.value()[0]

    return fut.then(done)


# --------------------------------------------------------------------------- rank agreement


class RankSync(Sync):
    """The runner's ``Sync`` over the control group: rank 0 decides, every rank follows."""

    def __init__(self, control: Any, comm: CommTimer | None = None) -> None:
        self._control = control
        self._comm = comm

    def _from_rank0(self, value: int) -> int:
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.int64)
        _collective("agreeing on the measurement", dist.broadcast, t, src=0, group=self._control)
        return int(t.item())

    def window_start(self) -> None:
        import torch.distributed as dist

        _collective("aligning the timed window", dist.barrier, group=self._control)
        if self._comm is not None:
            self._comm.reset()  # warm-up all-reduces are not the window's

    def chunk_steps(self, steps: int) -> int:
        if self._comm is not None:
            self._comm.harvest()  # the device is synchronised here: read the last chunk's spans
        return self._from_rank0(steps)

    def should_stop(self, stop: bool) -> bool:
        return bool(self._from_rank0(int(stop)))


def _collective(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one collective; a timeout or a lost peer becomes one BenchError line."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:  # DistBackendError, gloo/NCCL timeouts, closed connections
        rank = _rank()
        raise BenchError(f"rank {rank}: {what} failed: {_plain(first_line(exc))}") from None


def _plain(text: str | None) -> str:
    """gloo/NCCL messages carry "[file.cc:78]" tags: round brackets, so no console reads markup."""
    return (text or "").replace("[", "(").replace("]", ")")


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


# --------------------------------------------------------------------------- combining ranks


def _max_or_none(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def max_memory(memories: list[MemoryStats]) -> MemoryStats:
    """Field by field the largest of any rank: the GPU closest to its limit decides what fits."""
    first = memories[0]
    return MemoryStats(
        device_peak_allocated_bytes=_max_or_none([m.device_peak_allocated_bytes for m in memories]),
        device_peak_reserved_bytes=_max_or_none([m.device_peak_reserved_bytes for m in memories]),
        device_process_used_bytes=_max_or_none([m.device_process_used_bytes for m in memories]),
        device_total_bytes=first.device_total_bytes,
        host_peak_rss_bytes=_max_or_none([m.host_peak_rss_bytes for m in memories]),
        host_rss_method=first.host_rss_method,
        first_step_peak_allocated_bytes=_max_or_none([m.first_step_peak_allocated_bytes for m in memories]),
        first_step_peak_reserved_bytes=_max_or_none([m.first_step_peak_reserved_bytes for m in memories]),
    )


def rank_stats(rank: int, point: Point, allreduce_spans: list[float] | None) -> RankStats:
    """One rank's reading of its point, for gathering."""
    return RankStats(
        rank=rank,
        status=point.status,
        error=point.error,
        samples_per_sec=point.samples_per_sec,
        window_seconds=point.window_seconds,
        step_stats=point.step_stats,
        memory=point.memory,
        allreduce_seconds=sum(allreduce_spans) if allreduce_spans else None,
        allreduce_calls=len(allreduce_spans or ()),
    )


# What a rank reports when a collective gave up on a peer that failed (gloo, NCCL, the store): a
# consequence of another rank's failure, never its cause.
_PEER_WAIT_MARKERS = (
    "timed out waiting",
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
    "watchdog caught collective operation timeout",
    "nccl communicator was aborted",
    "socket timeout",
)


def waited_on_a_peer(error: str | None) -> bool:
    """True when a rank's error says only that a collective waited on a peer in vain."""
    text = (error or "").lower()
    return any(marker in text for marker in _PEER_WAIT_MARKERS)


def combine(points: list[Point], ranks: list[RankStats], dataset_size: int) -> Point:
    """One point from every rank's (index = rank): global figures, rank 0's raw step times.

    Every rank ran the same number of timed steps (agreed); the global rate divides the samples of
    all ranks by the slowest rank's window, so a straggler lowers it as it would in training.
    """
    world = len(points)
    base = points[0]
    batch = base.batch_size
    info = PointDistributed(
        world_size=world,
        per_rank_batch_size=batch,
        global_batch_size=batch * world,
        ranks=tuple(ranks),
    )
    failed = [(i, p) for i, p in enumerate(points) if p.status != OK]
    if failed:
        causes = [(i, p) for i, p in failed if not waited_on_a_peer(p.error)] or failed
        status = OOM if any(p.status == OOM for _, p in causes) else ERROR
        where = ", ".join(str(i) for i, _ in causes)
        rank, first = causes[0]
        error = f"rank {where}: {first.error}" if len(causes) < world else first.error
        return replace(
            base, status=status, error=error, memory=max_memory([p.memory for p in points]),
            samples_per_sec=None, epoch_seconds_estimate=None, distributed=info,
        )  # fmt: skip
    steps = len(base.step_seconds)
    window = max(p.window_seconds or 0.0 for p in points)
    global_rate = stats.samples_per_sec(batch * world, steps, window) if window > 0 and steps else None
    spans = [r.allreduce_seconds for r in ranks if r.allreduce_calls]
    per_step = (sum(spans) / len(spans)) / steps if spans and steps else None
    info = replace(
        info,
        global_samples_per_sec=global_rate,
        allreduce_seconds_per_step=per_step,
        allreduce_method="comm-hook" if per_step is not None else None,
    )
    return replace(
        base,
        samples_per_sec=global_rate,
        window_seconds=window,
        converged=all(p.converged for p in points),
        epoch_seconds_estimate=stats.epoch_seconds(dataset_size, global_rate) if global_rate else None,
        memory=max_memory([p.memory for p in points]),
        distributed=info,
    )


# --------------------------------------------------------------------------- the rank group


class Ranks:
    """This process's membership of a data-parallel run (see ``open_ranks``)."""

    def __init__(self, env: RankEnv, device: Any, backend: str, control: Any, timeout_seconds: float) -> None:
        self.env = env
        self.device = device
        self.backend = backend
        self.control = control
        self.timeout_seconds = timeout_seconds
        self.comm = CommTimer(device.make_timer)
        self.sync = RankSync(control, self.comm)

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    def info(self, train: bool = True) -> Distributed:
        return Distributed(
            world_size=self.env.world_size,
            backend=self.backend,
            ddp=train,
            local_world_size=self.env.local_world_size,
            nnodes=self.env.nnodes,
            timeout_seconds=self.timeout_seconds,
        )

    def wrap(self, model: Any) -> Any:
        """The model in DDP, with the timing comm hook (gradient buckets allocated here)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.kind == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=ids)
        ddp.register_comm_hook(self.comm, timed_allreduce_hook)
        return ddp

    def barrier(self, what: str, timeout_seconds: float | None = None) -> None:
        """Wait for every rank (gloo monitored barrier: a rank that does not come is named)."""
        import torch.distributed as dist

        seconds = timeout_seconds if timeout_seconds is not None else self.timeout_seconds
        _collective(what, dist.monitored_barrier, group=self.control, timeout=dt.timedelta(seconds=seconds))

    def gather(self, obj: Any, what: str) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.env.world_size
        _collective(what, dist.all_gather_object, out, obj, group=self.control)
        return out

    def run_point(self, workload: Any, spec: Any, batch_size: int, settings: Any, device: Any,
                  monitor: Any = None, **kwargs: Any) -> Point:  # fmt: skip
        """``runner.run_point`` on every rank with DDP and agreed windows; the combined point.

        Every rank returns the same combined point. A point that failed here but not on every
        rank is a BenchError naming this rank (the others are stuck in an all-reduce).
        """
        train = workload.mode == "train"
        self.comm.reset()
        point = run_point(
            workload, spec, batch_size, settings, device, monitor,
            wrap=self.wrap if train else None, sync=self.sync, **kwargs,
        )  # fmt: skip
        spans = self.comm.collect() if point.status == OK else None
        if point.status == OK:
            self.barrier(f"batch {batch_size}: waiting for every rank to finish the point")
        else:
            wait = min(self.timeout_seconds, TRAIN_FAILURE_WAIT_SECONDS) if train else self.timeout_seconds
            try:
                self.barrier("", wait)
            except BenchError:
                raise BenchError(
                    f"rank {self.env.rank}: batch {batch_size} failed ({_plain(point.error)}); the other ranks "
                    f"did not fail within {wait:g} s, so the run stops"
                ) from None
        gathered = self.gather(
            (point, rank_stats(self.env.rank, point, spans)), "gathering the ranks' points"
        )
        points = [p for p, _ in gathered]
        causes = [(i, p) for i, p in enumerate(points) if p.status == ERROR and not waited_on_a_peer(p.error)]
        if causes and len(causes) < len(points):  # the others failed only waiting for it: the group is broken
            rank, cause = causes[0]
            raise BenchError(
                f"rank {rank}: batch {batch_size} failed ({_plain(cause.error)}); the other ranks stopped "
                "waiting for it, so the run stops"
            )
        return combine(points, [r for _, r in gathered], workload.dataset_size)


@contextmanager
def open_ranks(
    env: RankEnv, device: Any, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, *, store: Any = None
) -> Iterator[Ranks]:
    """Join the process group (NCCL on GPU, gloo on CPU; ``timeout_seconds`` on every collective)
    and leave it afterwards. ``store``: a rendezvous store for a one-process group outside
    torchrun (``max-batch --ddp``); otherwise torchrun's environment (env://)."""
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise BenchError("this torch build has no torch.distributed: data-parallel runs need it")
    if dist.is_initialized():
        raise BenchError("a torch.distributed process group already exists in this process")
    backend = "nccl" if device.kind == "cuda" else "gloo"
    timeout = dt.timedelta(seconds=timeout_seconds)
    kwargs: dict[str, Any] = {"backend": backend, "timeout": timeout}
    if device.kind == "cuda":
        kwargs["device_id"] = torch.device("cuda", device.index)
    if store is not None:
        kwargs.update(store=store, rank=env.rank, world_size=env.world_size)
    try:
        dist.init_process_group(**kwargs)
        control = dist.new_group(backend="gloo", timeout=timeout)
    except (RuntimeError, ValueError) as exc:
        if dist.is_initialized():
            dist.destroy_process_group()
        raise BenchError(
            f"rank {env.rank}: could not join the {backend} process group: {first_line(exc)}"
        ) from None
    try:
        yield Ranks(env, device, backend, control, timeout_seconds)
    finally:
        dist.destroy_process_group()


def one_rank_store() -> Any:
    """An in-memory rendezvous store for a one-process group (no port, no environment)."""
    import torch.distributed as dist

    return dist.HashStore()


@contextmanager
def maybe_ranks(
    workload: Any, timeout_seconds: float | str | None = None
) -> Iterator[tuple[Any, Ranks | None]]:
    """(workload, ranks) for this process: under torchrun the process group joined for the
    duration, on this rank's device (``ranks.device``; the workload keeps the device as the user
    gave it, so a 1-process torchrun run and a plain sweep record the same workload); otherwise
    the workload as given and None."""
    env = detect()
    if env is None:
        yield workload, None
        return

    device = open_device(rank_device(workload.device, env))
    with open_ranks(env, device, parse_timeout(timeout_seconds)) as ranks:
        yield workload, ranks


# --------------------------------------------------------------------------- max-batch probes in DDP

_probe_ranks: Ranks | None = None  # a one-process group, opened by the first DDP probe of a process
_probe_group: Any = None  # its context manager: held, or collecting it would close the group


def probe_wrap(device: Any) -> Callable[[Any], Any]:
    """The DDP wrapper for a max-batch probe (``find_max_batch(ddp=True)``).

    DDP allocates its gradient buckets (about one more copy of the gradients) and the reducer's
    state per rank, whatever the world size: a one-process group (gloo on CPU, NCCL on GPU, an
    in-memory store) is enough to measure the per-GPU maximum with them allocated. The group stays
    open for the life of the probing process.
    """
    global _probe_ranks, _probe_group
    if _probe_ranks is None:
        _probe_group = open_ranks(SINGLE, device, parse_timeout(None), store=one_rank_store())
        _probe_ranks = _probe_group.__enter__()  # closed when the process exits
    return _probe_ranks.wrap


def check_ddp_probes() -> None:
    """DDP probes run as one process: BenchError under torchrun."""
    if detect() is not None:
        raise BenchError(
            "max-batch under torchrun: run it as one process with --ddp (DDP's per-GPU buckets do not "
            "depend on the world size)"
        )


def close_probe_group() -> None:
    """Leave the probes' one-process group (tests; a probing process otherwise keeps it)."""
    global _probe_ranks, _probe_group
    if _probe_group is not None:
        _probe_group.__exit__(None, None, None)
    _probe_ranks = _probe_group = None
