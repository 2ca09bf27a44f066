"""How close ``bench noise`` comes to the exact gradient noise scale, and how it moves with training.

A data set bench's tests never use, made here (nothing downloaded): ``--examples`` random 3×16×16
images labelled by a fixed random teacher CNN. A small student CNN (no BatchNorm, so per-example
gradients are well defined) is measured at fixed weights at a few stages of SGD training:

- exact: |G|² and tr(Σ) over the whole set from per-example gradients (torch.func vmap + grad),
  Σ with N − 1 in the denominator, B_exact = tr(Σ)/|G|²;
- bench: ``bench.jobs.measure_noise`` (the entry ``bench noise`` calls) on the same weights and
  data set, with its defaults and the finite-population correction, time-boxed to ``--max-time``.

    python -m bench.benchmarks.noise_accuracy [--examples 4096] [--stages 0,300,1500,3000] [--anneal-after 1500] [--max-time 55]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn
from torch.utils.data import TensorDataset

from bench.jobs.noise import NoiseSettings, measure_noise
from bench.measure.noise import exact_gradient_stats


def student(seed: int, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, classes),
    )  # fmt: skip


def teacher_dataset(n: int, seed: int = 1234, classes: int = 10, label_noise: float = 0.2) -> TensorDataset:
    """Random images, labels from a random CNN's argmax, a ``label_noise`` share of them replaced by
    random classes: learnable by the student, finite, and with a loss floor above zero, as real data
    has (on a set the student can fit exactly every per-example gradient vanishes together)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=gen)
    teacher = student(seed + 1, classes)
    with torch.no_grad():
        logits = teacher(x)
        y = ((logits - logits.mean(0)) / logits.std(0)).argmax(1)  # balanced-ish classes
    flip = torch.rand(n, generator=gen) < label_noise
    y[flip] = torch.randint(0, classes, (int(flip.sum()),), generator=gen)
    return TensorDataset(x, y)


def train(model: nn.Module, data: TensorDataset, steps: int, lr: float, batch: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    x, y = data.tensors
    for _ in range(max(steps, 0)):
        idx = torch.randint(0, len(data), (batch,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def evaluate(model: nn.Module, data: TensorDataset) -> tuple[float, float]:
    x, y = data.tensors
    with torch.no_grad():
        out = model(x)
    return float(nn.functional.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=4096)
    ap.add_argument("--stages", default="0,300,1500,3000", help="cumulative SGD steps at which to measure")
    ap.add_argument(
        "--max-time",
        type=float,
        default=55.0,
        help="measuring seconds (the whole call must stay within 60 s)",
    )
    ap.add_argument("--target-ci", type=float, default=NoiseSettings.target_rel_ci)
    ap.add_argument("--small-batch", type=int, default=NoiseSettings.small_batch)
    ap.add_argument("--big-batch", type=int, default=NoiseSettings.big_batch)
    ap.add_argument("--label-noise", type=float, default=0.2, help="share of labels replaced at random")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument(
        "--anneal-after", type=int, default=1500,
        help="steps after this one train at lr/10, as a decaying schedule ends (constant-LR SGD keeps |G|² "
        "up by bouncing around the minimum)",
    )  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads (1: a 5k-parameter CNN gains nothing from more, and on a shared "
        "machine spinning OpenMP threads made a draw 10-25x slower)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}  torch threads: {torch.get_num_threads()}")
    data = teacher_dataset(args.examples, label_noise=args.label_noise)
    model = student(args.seed)
    loss = nn.functional.cross_entropy
    settings = NoiseSettings(
        small_batch=args.small_batch, big_batch=args.big_batch, target_rel_ci=args.target_ci,
        max_time_seconds=args.max_time, seed=args.seed,
    )  # fmt: skip
    print(
        f"data: {args.examples} teacher-labelled 3x16x16 images ({args.label_noise:.0%} labels random); student CNN "
        f"{sum(p.numel() for p in model.parameters())} parameters; small {args.small_batch}, big {args.big_batch or 'default (1024 here)'}, "
        f"target ±{args.target_ci:.0%}, max {args.max_time:g} s; SGD momentum 0.9 batch 64, lr {args.lr:g}, "
        f"lr/10 after step {args.anneal_after}"
    )
    print(
        f"{'steps':>6} {'loss':>6} {'acc':>5} {'B_exact':>9} {'B_bench':>9} {'95% CI':>15} {'error':>7} {'draws':>6} {'seconds':>8}"
    )
    done, worst, slowest = 0, 0.0, 0.0
    for stage in [int(s) for s in args.stages.split(",")]:
        hot = min(stage, args.anneal_after) - min(done, args.anneal_after)
        train(model, data, hot, args.lr, 64, args.seed + stage)
        train(model, data, stage - done - hot, args.lr / 10, 64, args.seed + stage + 1)
        done = stage
        g2, trace = exact_gradient_stats(model, loss, data)
        exact = trace / g2
        t0 = time.perf_counter()
        res = measure_noise(model, data, device="cpu", settings=settings)
        wall = time.perf_counter() - t0
        est = res.estimate
        err = (est.noise_scale - exact) / exact if est.noise_scale is not None else float("nan")
        worst, slowest = max(worst, abs(err)), max(slowest, wall)
        lo, hi = est.ci_low or float("nan"), est.ci_high or float("nan")
        l_, acc = evaluate(model, data)
        print(
            f"{stage:>6} {l_:6.3f} {acc:5.2f} {exact:9.1f} {est.noise_scale or float('nan'):9.1f} "
            f"{lo:7.1f}–{hi:<7.1f} {err:+7.1%} {est.draws:>6} {wall:8.1f}"
            f"{'' if res.converged else '  (time budget)'}"
        )
    print(f"worst error {worst:.1%}; slowest measurement {slowest:.1f} s (wall, the library call)")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
