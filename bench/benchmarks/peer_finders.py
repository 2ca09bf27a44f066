"""Max-batch finders side by side on one workload: bench's exact search, Lightning's
``Tuner.scale_batch_size(mode="binsearch")`` and Accelerate's ``find_executable_batch_size``.

For each: the batch it answers, whether that answer is exact (bench's search proves its own max:
max ran and fit, max + 1 ran and did not), how many distinct batch sizes it ran, and the seconds.
Lightning and Accelerate are optional: a finder whose package is missing is reported as such.

    python -m bench.benchmarks.peer_finders --model efficientnet_b0 --device cuda
    python -m bench.benchmarks.peer_finders --model resnet50 --device cuda --precision bf16 --json out.json

On a CPU the peers only ever stop on an out-of-memory *exception*, which a CPU does not raise
before the kernel's OOM killer; use a model that raises one (tests/tiny_models.py: ``oom_above_4``)
to exercise this script without a GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from typing import Any

from bench import find_max_batch
from bench.hw.device import open_device
from bench.measure.models import resolve
from bench.measure.step import _autocast, precision_mode
from bench.results import files
from bench.results.schema import Workload

PRECISION_TO_LIGHTNING = {"fp32": "32-true", "tf32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


def _sync(torch: Any, device: str) -> None:
    open_device(device).synchronize()


def _clean(torch: Any, device: str) -> None:
    gc.collect()
    open_device(device).empty_cache()


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    workload = Workload(
        model=args.model, device=args.device, precision=args.precision,
        channels_last=args.channels_last, image_size=args.image_size,
    )  # fmt: skip
    t0 = time.perf_counter()
    res = find_max_batch(workload, granularity=1, soak_steps=args.steps)
    seconds = time.perf_counter() - t0
    sizes = sorted(
        {p.batch_size for p in res.probes} | {p.batch_size for p in (res.soak.probes if res.soak else ())}
    )
    return {
        "finder": "bench max-batch",
        "answer": res.max_batch_size,
        "safe": res.safe_batch_size,
        "exact": res.exact,
        "failed_batch_size": res.failed_batch_size,
        "sizes_run": sizes,
        "runs": res.probe_count + (len(res.soak.probes) if res.soak else 0),
        "seconds": seconds,
    }


def _spec(args: argparse.Namespace) -> Any:
    return resolve(args.model)


def run_lightning(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import lightning.pytorch as pl
        from lightning.pytorch.tuner import Tuner
    except ImportError:
        return {"finder": "Lightning Tuner (binsearch)", "error": "lightning is not installed"}
    import torch
    from torch.utils.data import DataLoader, Dataset

    spec = _spec(args)
    size = args.image_size

    class Images(Dataset):  # one random image repeated: no host cost that grows with the batch
        def __init__(self, n: int) -> None:
            self.n = n
            self.x = torch.randn(3, size, size)

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int) -> tuple[Any, int]:
            return self.x, i % 10

    tried: list[int] = []

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = spec.build()
            if args.channels_last:
                self.net = self.net.to(memory_format=torch.channels_last)
            self.batch_size = 2

        def train_dataloader(self) -> Any:
            return DataLoader(Images(self.batch_size * (args.steps + 1)), batch_size=self.batch_size)

        def training_step(self, batch: Any, index: int) -> Any:
            if not tried or tried[-1] != self.batch_size:
                tried.append(self.batch_size)
            x, y = batch
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    trainer = pl.Trainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu", devices=1,
        precision=PRECISION_TO_LIGHTNING[args.precision], max_epochs=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    module = Module()
    t0 = time.perf_counter()
    try:
        found = Tuner(trainer).scale_batch_size(
            module,
            mode="binsearch",
            steps_per_trial=args.steps,
            init_val=2,
            max_trials=25,
            max_val=args.max_val,
        )
    except Exception as exc:  # report, do not crash the comparison
        return {"finder": "Lightning Tuner (binsearch)", "error": f"{type(exc).__name__}: {exc}"[:300]}
    seconds = time.perf_counter() - t0
    del module, trainer
    _clean(torch, args.device)
    return {
        "finder": "Lightning Tuner (binsearch)",
        "answer": found,
        "sizes_run": sorted(set(tried)),
        "runs": len(tried),
        "seconds": seconds,
        "ran_answer": found in tried,  # Lightning applies a 5% margin: its answer may never have run
    }


def run_accelerate(args: argparse.Namespace, start: int) -> dict[str, Any]:
    try:
        from accelerate.utils import find_executable_batch_size
    except ImportError:
        return {"finder": "Accelerate find_executable_batch_size", "error": "accelerate is not installed"}
    import torch

    spec = _spec(args)
    dev = torch.device(args.device)
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    tried: list[int] = []

    @find_executable_batch_size(starting_batch_size=start)
    def train(batch_size: int) -> int:
        tried.append(batch_size)
        net = spec.build().to(dev)
        if args.channels_last:
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(batch_size, 3, args.image_size, args.image_size, device=dev)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch_size,), device=dev)
        for _ in range(args.steps):
            with _autocast(torch, args.precision, kind):
                loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        _sync(torch, args.device)
        return batch_size

    t0 = time.perf_counter()
    try:
        with precision_mode(args.precision, kind):
            found = train()
    except Exception as exc:
        return {
            "finder": "Accelerate find_executable_batch_size",
            "error": f"{type(exc).__name__}: {exc}"[:300],
        }
    seconds = time.perf_counter() - t0
    _clean(torch, args.device)
    return {
        "finder": "Accelerate find_executable_batch_size",
        "answer": found,
        "start": start,
        "sizes_run": sorted(set(tried)),
        "runs": len(tried),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--precision", default="fp32", choices=list(PRECISION_TO_LIGHTNING))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--steps", type=int, default=3, help="training steps per trial (all finders)")
    parser.add_argument("--max-val", type=int, default=8192, help="Lightning's upper bound")
    parser.add_argument("--accelerate-start", type=int, default=None,
                        help="Accelerate's starting batch (default: the power of two above twice bench's max)")  # fmt: skip
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)

    rows = [run_bench(args)]
    truth = rows[0]["answer"]
    rows.append(run_lightning(args))
    start = args.accelerate_start or (1 << max(1, 2 * (truth or 64) - 1).bit_length())
    rows.append(run_accelerate(args, start))
    for row in rows[1:]:
        if truth is not None and row.get("answer") is not None:
            row["vs_exact_max"] = row["answer"] - truth  # < 0: leaves batch on the table; > 0: would OOM
    print(f"max-batch finders: {args.model} train {args.precision} {args.image_size}px on {args.device}")
    print(f"  {'finder':<40} {'answer':>7} {'vs exact':>9} {'sizes run':>10} {'seconds':>8}")
    for row in rows:
        if "error" in row:
            print(f"  {row['finder']:<40} {'-':>7} {'-':>9} {'-':>10} {'-':>8}   ({row['error']})")
            continue
        vs = row.get("vs_exact_max")
        print(
            f"  {row['finder']:<40} {row['answer']!s:>7} {('exact' if vs is None else f'{vs:+d}'):>9} "
            f"{len(row['sizes_run']):>10} {row['seconds']:>8.1f}"
        )
    if args.json:
        doc = {"model": args.model, "device": args.device, "precision": args.precision,
               "image_size": args.image_size, "rows": rows}  # fmt: skip
        files.write_atomic(args.json, json.dumps(doc, indent=2))
    return rows


if __name__ == "__main__":
    main()
