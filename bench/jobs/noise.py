"""``bench noise``: the simple gradient noise scale of a model at given weights, on a real data set.

One entry, ``measure_noise``: build the model (its own weights, or a checkpoint), optionally train
it ``train_steps`` SGD steps to reach a later stage, then draw batches at those fixed weights until
the 95% interval of B_noise is within ``target_rel_ci`` of it, or ``max_time_seconds`` ran out.
Under torchrun (``measure_on_ranks``) each rank's gradient is the small batch and the all-reduced
one the big batch: a DDP comm hook adds each gradient bucket's |·|² to this rank's |g_local|² before
the averaging all-reduce, DDP leaves the all-reduced gradient in ``.grad``, so no backward pass is
added to the one data-parallel training does. A draw is B_local·world distinct examples: a
permutation every rank draws from the same seed, rank r taking its r-th slice. Rank 0 decides when
to stop and every rank follows.
The result is frozen (``bench.results.noise.NoiseResult``), written atomically and returned.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.analysis.noise_scale import estimate
from bench.hw.device import default_device, open_device
from bench.hw.env import collect
from bench.jobs.distributed import detect, open_ranks, parse_timeout, rank_device
from bench.measure.data import image_folder, train_transform
from bench.measure.models import resolve
from bench.measure.noise import (
    GradientSource,
    LocalNormHook,
    check_fits,
    draw_indices,
    frozen_buffers,
    load_checkpoint,
    load_dataset,
    local_norm_allreduce_hook,
    loss_function,
    rank_draw,
    train_steps,
)
from bench.results import files
from bench.results.errors import BenchError
from bench.results.noise import NoiseDraw, NoiseEstimate, NoiseResult


@dataclass(frozen=True)
class NoiseSettings:
    """How long and with what batches to measure (batches in examples, times in seconds)."""

    small_batch: int = 32  # the micro-batch (under torchrun: each rank's batch)
    # examples per draw, a multiple of small_batch; None: 1024, or the data set rounded down to a
    # multiple if smaller (torchrun: small × ranks). A bigger draw pins |G|² down faster: on a
    # 4,096-example set, 32/1024 reached a given interval in about half the time 16/128 needed.
    big_batch: int | None = None
    target_rel_ci: float = 0.10  # stop when the 95% CI half-width is within this fraction
    max_time_seconds: float = 60.0  # of measuring, at most
    min_draws: int = 8
    train_steps: int = 0  # SGD steps (momentum 0.9) before measuring
    train_lr: float = 0.05
    seed: int = 0
    finite_population: bool = True  # correct for drawing without replacement from N examples

    def check(self, world_size: int = 1) -> None:
        if self.small_batch < 1:
            raise BenchError(f"--small-batch must be >= 1, got {self.small_batch}")
        big = self.big_batch
        if world_size == 1 and big is not None and (big <= self.small_batch or big % self.small_batch):
            raise BenchError(
                f"--big-batch {big} must be a multiple of --small-batch {self.small_batch}, and larger"
            )
        if not (0 < self.target_rel_ci < 1):
            raise BenchError(f"--target-ci must be a fraction in (0, 1), got {self.target_rel_ci}")
        if not self.max_time_seconds > 0:
            raise BenchError(f"--max-time must be > 0 seconds, got {self.max_time_seconds}")
        if self.train_steps < 0 or not self.train_lr > 0:
            raise BenchError("--train-steps must be >= 0 and --lr > 0")


@dataclass(frozen=True)
class NoiseProgress:
    draws: int
    seconds: float
    estimate: NoiseEstimate


def default_noise_path(model: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("bench_results") / f"noise-{files.slug(model)}-{stamp}.json"


def open_dataset(dataset: Any, data_dir: str | None, image_size: int) -> tuple[Any, str]:
    """(the data set, its description): a factory spec or object, or an ImageFolder tree."""
    if (dataset is None) == (data_dir is None):
        raise BenchError("give one data set: --dataset package.module:factory or --data-dir FOLDER")
    if data_dir is not None:
        return image_folder(data_dir, train_transform(image_size)), data_dir
    if isinstance(dataset, str):
        return load_dataset(dataset), dataset
    return dataset, type(dataset).__name__


def _source(model: Any, dataset: Any, device: str, checkpoint: str | None) -> tuple[Any, str]:
    """(GradientSource on the device, the model's name)."""
    import torch

    if isinstance(model, torch.nn.Module):
        module, loss, name = model, torch.nn.functional.cross_entropy, type(model).__name__
    else:
        spec = resolve(model)
        module, loss, name = spec.build(), loss_function(spec), model
    if checkpoint is not None:
        load_checkpoint(module, checkpoint)
    return GradientSource(module.to(device), loss, dataset, device), name


def measure_noise(
    model: Any,
    dataset: Any = None,
    *,
    data_dir: str | None = None,
    image_size: int = 224,
    checkpoint: str | None = None,
    device: str | None = None,
    settings: NoiseSettings = NoiseSettings(),  # noqa: B008 - frozen
    out_path: str | Path | None = None,
    on_progress: Callable[[NoiseProgress], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> NoiseResult:
    """The simple noise scale of ``model`` (a bench model name or an ``nn.Module``) on ``dataset``
    (``package.module:factory`` or a map-style data set of (input, target)) or ``data_dir``.
    Bad input is a BenchError before any measuring; the result file is written when ``out_path``."""
    t_wall = clock()
    started = dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")
    rank_env = detect()
    settings.check(rank_env.world_size if rank_env else 1)
    device = device or default_device()
    data, described = open_dataset(dataset, data_dir, image_size)
    if rank_env is not None:
        return measure_on_ranks(model, data, described, device, checkpoint, settings, rank_env,
                                out_path, on_progress, clock, started, t_wall)  # fmt: skip
    source, name = _source(model, data, device, checkpoint)
    n, settings = _checked(source, settings)
    draws, seconds, converged, interrupted = _measure(source, settings, n, on_progress, clock)
    population = n if settings.finite_population else None
    return _finish(
        name, device, described, n, settings, checkpoint, draws, population, seconds, converged,
        started, clock() - t_wall, out_path, settings.small_batch, settings.big_batch,
        interrupted=interrupted,
    )  # fmt: skip


DEFAULT_BIG_BATCH = 1024


def _checked(source: Any, settings: NoiseSettings) -> tuple[int, NoiseSettings]:
    """(data set size, the settings with the big batch decided) once the data set fits the model."""
    small, big = settings.small_batch, settings.big_batch
    check_fits(source, small)
    n = len(source.dataset)
    if big is None:
        big = min(DEFAULT_BIG_BATCH, n // small * small)
        if big < 2 * small:
            raise BenchError(
                f"the data set ({n} examples) holds fewer than two --small-batch {small}: give a smaller one"
            )
    if big > n:
        raise BenchError(f"--big-batch {big} is larger than the data set ({n} examples)")
    return n, replace(settings, big_batch=big)


def _measure(
    source: Any, settings: NoiseSettings, n: int, on_progress: Any, clock: Callable[[], float]
) -> tuple[list[NoiseDraw], float, bool, bool]:
    """Train (if asked), then draw until the interval is narrow enough or the time is up:
    (draws, seconds, converged, interrupted). Ctrl-C after a draw keeps the draws so far."""
    import torch

    gen = torch.Generator().manual_seed(settings.seed)
    train_steps(source, settings.train_steps, settings.big_batch, settings.train_lr, gen)
    draws: list[NoiseDraw] = []
    population = n if settings.finite_population else None
    t0 = clock()
    with frozen_buffers(source.model):
        try:
            while True:
                draws.append(source.draw(draw_indices(n, settings.small_batch, settings.big_batch, gen)))
                est = estimate(draws, settings.small_batch, settings.big_batch, population)
                seconds = clock() - t0
                if on_progress is not None:
                    on_progress(NoiseProgress(len(draws), seconds, est))
                done = len(draws) >= settings.min_draws and est.relative_half_width <= settings.target_rel_ci
                if done or seconds >= settings.max_time_seconds:
                    return draws, seconds, done, False
        except KeyboardInterrupt:
            if not draws:
                raise
            return draws, clock() - t0, False, True


def _finish(
    name: str, device: str, described: str, n: int | None, settings: NoiseSettings, checkpoint: str | None,
    draws: list[NoiseDraw], population: int | None, seconds: float, converged: bool, started: str,
    wall: float, out_path: Any, small: int, big: int, world_size: int = 1, interrupted: bool = False,
) -> NoiseResult:  # fmt: skip

    est = estimate(draws, small, big, population)
    notices = []
    if interrupted:
        notices.append(f"interrupted after {len(draws)} draws: the estimate is theirs")
    elif not converged:
        notices.append(
            f"the 95% interval did not reach ±{settings.target_rel_ci:.0%} in {settings.max_time_seconds:g} s "
            f"({len(draws)} draws): treat the value as rough, or give more --max-time"
        )
    if est.noise_scale is None:
        notices.append(
            "|G|² was not resolved above zero: the gradient is all noise at this stage (B_noise huge)"
        )
    result = NoiseResult(
        run_id=f"noise-{uuid.uuid4().hex[:12]}", started_at=started, model=name, device=device,
        dataset=described, dataset_size=n, small_batch=small, big_batch=big, checkpoint=checkpoint,
        train_steps=settings.train_steps, train_lr=settings.train_lr if settings.train_steps else None,
        estimate=est, draws=tuple(draws), converged=converged, target_rel_ci=settings.target_rel_ci,
        max_time_seconds=settings.max_time_seconds, seconds=seconds, wall_seconds=wall,
        environment=collect(), world_size=world_size, notices=tuple(notices),
        status="interrupted" if interrupted else "complete",
    )  # fmt: skip
    if out_path is not None:
        write_noise(result, Path(out_path))
    return result


def write_noise(result: NoiseResult, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.dump_json_atomic(path, result.to_dict())
    except OSError as exc:
        raise BenchError(f"cannot write {path}: {exc.strerror}") from None


# --------------------------------------------------------------------------- torchrun


def measure_on_ranks(
    model: Any, data: Any, described: str, device: str, checkpoint: str | None, settings: Any, env: Any,
    out_path: Any, on_progress: Callable[[Any], None] | None, clock: Callable[[], float], started: str,
    t_wall: float,
) -> NoiseResult:  # fmt: skip
    """``bench.jobs.noise.measure_noise`` on this rank; every rank returns the same estimate."""
    dev = open_device(rank_device(device, env))
    dev_name = "cpu" if dev.kind == "cpu" else f"cuda:{dev.index}"
    small, big = settings.small_batch, settings.small_batch * env.world_size
    with open_ranks(env, dev, parse_timeout(None)) as ranks:
        source, name = _source(model, data, dev_name, checkpoint)
        check_fits(source, small)
        n = len(data)
        if big > n:
            raise BenchError(
                f"--small-batch {small} × {env.world_size} ranks is larger than the data set ({n})"
            )
        import torch

        gen = torch.Generator().manual_seed(settings.seed)  # the same stream on every rank
        train_steps(source, settings.train_steps, big, settings.train_lr, gen)  # identical on every rank
        draws, seconds, converged = _draw_loop(
            source, ranks, settings, n, small, big, gen, on_progress, clock
        )
    population = n if settings.finite_population else None
    return _finish(
        name, device, described, n, settings, checkpoint, draws, population, seconds, converged, started,
        clock() - t_wall, out_path, small, big, world_size=env.world_size,
    )  # fmt: skip


def _draw_loop(
    source: Any, ranks: Any, settings: Any, n: int, small: int, big: int, gen: Any,
    on_progress: Any, clock: Callable[[], float],
) -> tuple[list[NoiseDraw], float, bool]:  # fmt: skip
    import torch
    from torch.nn.parallel import DistributedDataParallel

    ids = [ranks.device.index] if ranks.device.kind == "cuda" else None
    ddp = DistributedDataParallel(source.model, device_ids=ids)
    hook = LocalNormHook()
    ddp.register_comm_hook(hook, local_norm_allreduce_hook)
    wrapped = GradientSource(ddp, source.loss, source.dataset, source.device)
    population = n if settings.finite_population else None
    rank = ranks.env.rank
    draws: list[NoiseDraw] = []
    t0 = clock()
    with frozen_buffers(ddp):
        while True:
            chosen = torch.randperm(n, generator=gen)[:big].tolist()
            draws.append(rank_draw(wrapped, hook, chosen[rank * small : (rank + 1) * small]))
            est = estimate(draws, small, big, population)
            seconds = clock() - t0
            if on_progress is not None:
                on_progress(NoiseProgress(len(draws), seconds, est))
            done = len(draws) >= settings.min_draws and est.relative_half_width <= settings.target_rel_ci
            if ranks.sync.should_stop(done or seconds >= settings.max_time_seconds):
                return draws, seconds, done
