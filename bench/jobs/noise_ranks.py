"""``bench noise`` under torchrun: each rank's gradient is the small batch, the all-reduced one the big.

No backward pass beyond the one data-parallel training does: a DDP comm hook adds each gradient
bucket's |·|² to this rank's |g_local|² before the averaging all-reduce, and DDP leaves the
all-reduced gradient in ``.grad`` (|g_global|²). The ranks' |g_local|² are averaged (one scalar
all-reduce), so a draw is B_local·world distinct examples: a permutation every rank draws from the
same seed, rank r taking its r-th slice (without replacement, as a distributed sampler does).
Rank 0 decides when to stop and every rank follows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.analysis.noise_scale import estimate
from bench.jobs.distributed import RankEnv, open_ranks, parse_timeout, rank_device
from bench.results.errors import BenchError
from bench.results.noise import NoiseDraw, NoiseResult


def measure_on_ranks(
    model: Any, data: Any, described: str, device: str, checkpoint: str | None, settings: Any, env: RankEnv,
    out_path: Any, on_progress: Callable[[Any], None] | None, clock: Callable[[], float], started: str,
    t_wall: float,
) -> NoiseResult:  # fmt: skip
    """``bench.jobs.noise.measure_noise`` on this rank; every rank returns the same estimate."""
    from bench.hw.device import open_device
    from bench.jobs.noise import _finish, _source
    from bench.measure.noise import check_fits, train_steps

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

    from bench.jobs.noise import NoiseProgress
    from bench.measure.noise import (
        GradientSource,
        LocalNormHook,
        frozen_buffers,
        local_norm_allreduce_hook,
        rank_draw,
    )

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
