"""Fidelity of bench's own measurement: its samples/sec against a minimal hand-written loop.

Same model, batch, precision and device, interleaved in rounds in one process, so machine drift
hits both alike. Prints each round and the ratio bench / hand-written (1.00 = identical; the target
is >= 0.98). The hand loop is what an engineer would write: warm up, synchronise, time N steps with
a host clock, synchronise, samples/sec = N * batch / elapsed.

    python -m bench.benchmarks.fidelity                      # EfficientNet-b0, CPU-sized
    python -m bench.benchmarks.fidelity --device cuda --image-size 224 --batch-size 256 \\
        --precision bf16 --channels-last
    python -m bench.benchmarks.fidelity --cli                # also through the `bench sweep` command

``--cli`` adds a third arm: the command a user runs (``bench sweep``, in its own process: on CPU
the isolated child per point, the sampler, the annotations and the live display), its samples/sec
read from the result file, measured over the same fixed number of steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.hw.device import open_device
from bench.measure.models import resolve
from bench.measure.runner import run_point
from bench.results.schema import MAX_TIME_SECONDS, MeasureSettings, Workload


def hand_loop(args: argparse.Namespace, device: str) -> float:
    """The minimal training loop, written out by hand. Returns samples/sec."""
    torch.manual_seed(0)
    model = resolve(args.model).build().to(device)  # the same constructor bench uses, nothing else
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    with torch.no_grad():
        classes = model.eval()(x[:2]).shape[-1]
    model.train()
    y = torch.randint(0, classes, (args.batch_size,), device=device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    kind = "cuda" if device.startswith("cuda") else "cpu"

    def step() -> None:
        with torch.autocast(kind, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if kind == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if kind == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - t0)


def bench_point(args: argparse.Namespace, device_name: str) -> float:
    """bench's own measurement of the same step. Returns samples/sec."""
    device = open_device(device_name)
    workload = Workload(
        model=args.model,
        image_size=args.image_size,
        precision=args.precision,
        channels_last=args.channels_last,
        device=device_name,
    )
    settings = MeasureSettings(
        warmup_steps=args.warmup,
        min_steps=args.steps,
        max_steps=args.steps,
        max_time_seconds=MAX_TIME_SECONDS,
        min_time_seconds=0.0,
        isolate=False,
    )
    point = run_point(workload, resolve(args.model), args.batch_size, settings, device)
    if point.samples_per_sec is None:
        raise SystemExit(f"bench failed at batch {args.batch_size}: {point.error}")
    return point.samples_per_sec


def _child_env() -> dict[str, str]:
    """A child's environment that resolves `package.module:factory` names as this process does
    (it may run in another folder): this process's import path on PYTHONPATH."""
    here = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    installed = tuple(os.path.abspath(p) for p in {sys.prefix, sys.base_prefix})
    here += [p for p in sys.path if p and os.path.isdir(p) and not os.path.abspath(p).startswith(installed)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(os.path.abspath(p) for p in here))}


def cli_point(args: argparse.Namespace, device_name: str, isolate: bool | None = None) -> float:
    """The same point through ``bench sweep`` as a user runs it. Returns samples/sec."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sweep.json"
        cmd = [
            sys.executable, "-m", "bench", "sweep", args.model, "-b", str(args.batch_size),
            "--image-size", str(args.image_size), "--precision", args.precision, "--device", device_name,
            "--warmup", str(args.warmup), "--min-steps", str(args.steps),
            "--max-time", "0.001", "--min-time", "0",  # exactly --steps timed steps: one chunk
            "--no-history", "-o", str(out),
        ] + (["--channels-last"] if args.channels_last else [])  # fmt: skip
        if isolate is not None:
            cmd.append("--isolate" if isolate else "--no-isolate")
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=_child_env())
        if done.returncode != 0 or not out.exists():
            raise SystemExit(f"bench sweep failed: {(done.stderr or done.stdout).strip()[-400:]}")
        point = json.loads(out.read_text())["points"][0]
    if point["samples_per_sec"] is None:
        raise SystemExit(f"bench sweep failed at batch {args.batch_size}: {point['error']}")
    return float(point["samples_per_sec"])


def _hand_precision(args: argparse.Namespace) -> None:
    """Match bench's precision_mode for the hand loop."""
    if args.precision == "tf32" or (args.precision == "fp32" and args.device.startswith("cuda")):
        torch.backends.cudnn.allow_tf32 = args.precision == "tf32"
        torch.set_float32_matmul_precision("high" if args.precision == "tf32" else "highest")
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True


def hand_process(args: argparse.Namespace, device_name: str) -> float:
    """The hand-written loop in a fresh process of its own, as a user's script would run: the
    reference for the `bench sweep` arm, which also measures in a fresh process. Returns samples/sec."""
    cmd = [
        sys.executable, "-m", "bench.benchmarks.fidelity", "--emit-hand", "--model", args.model,
        "--batch-size", str(args.batch_size), "--image-size", str(args.image_size), "--device", device_name,
        "--precision", args.precision, "--warmup", str(args.warmup), "--steps", str(args.steps),
    ] + (["--channels-last"] if args.channels_last else [])  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
    if done.returncode != 0:
        raise SystemExit(f"hand-written loop failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return float(done.stdout.strip().splitlines()[-1])


# --arms key -> the label printed for that arm
ARMS = {
    "hand": "hand-written",
    "run_point": "run_point",
    "hand-proc": "hand (own process)",
    "sweep": "bench sweep",
    "sweep-inproc": "sweep --no-isolate",
}
ARM_KEYS = tuple(ARMS)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cli", action="store_true", help="also measure through the `bench sweep` command")
    parser.add_argument(
        "--no-isolate-arm",
        action="store_true",
        help="with --cli: also `bench sweep --no-isolate` (the point in the command's own process)",
    )
    parser.add_argument(
        "--arms",
        help=f"comma-separated, the first is the reference: {', '.join(ARM_KEYS)} "
        "(default: hand,run_point, plus hand-proc,sweep with --cli)",
    )
    parser.add_argument("--emit-hand", action="store_true", help=argparse.SUPPRESS)  # one hand loop, print it
    args = parser.parse_args()
    if args.emit_hand:
        _hand_precision(args)
        print(hand_loop(args, args.device))
        return
    _hand_precision(args)

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"fidelity: {args.model} train {args.precision}{' channels-last' if args.channels_last else ''} "
        f"batch {args.batch_size} image {args.image_size} on {name} ({args.device}), "
        f"{args.steps} timed steps x {args.rounds} rounds"
    )
    run = {
        "hand": lambda: hand_loop(args, args.device),
        "run_point": lambda: bench_point(args, args.device),
        "hand-proc": lambda: hand_process(args, args.device),
        "sweep": lambda: cli_point(args, args.device),
        "sweep-inproc": lambda: cli_point(args, args.device, isolate=False),
    }
    wanted = ["hand", "run_point"] + (["hand-proc", "sweep"] if args.cli else [])
    wanted += ["sweep-inproc"] if args.no_isolate_arm else []
    if args.arms:
        wanted = [a.strip() for a in args.arms.split(",") if a.strip()]
        unknown = [a for a in wanted if a not in ARMS]
        if unknown or not wanted:
            parser.error(f"--arms takes {', '.join(ARM_KEYS)}; got {args.arms!r}")
    arms = {ARMS[a]: run[a] for a in dict.fromkeys(wanted)}
    names = list(arms)
    base = names[0]  # each round's ratios are against the first arm
    got: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate: no arm always goes first
        for n in order:
            got[n].append(arms[n]())
        ref = got[base][-1]
        row = "   ".join(f"{n} {got[n][-1]:10.1f} ({got[n][-1] / ref:.3f})" for n in names)
        print(f"  round {r + 1}: {row}", flush=True)
    ref_median = statistics.median(got[base])
    print(f"median: {base} {ref_median:.1f} samples/s")
    for n in names[1:]:
        ratio = statistics.median(got[n]) / ref_median
        paired = [a / b for a, b in zip(got[n], got[base], strict=True)]
        print(
            f"  {n:<19} {statistics.median(got[n]):10.1f} samples/s -> fidelity ratio {ratio:.3f} "
            f"(target >= 0.98); per-round ratios: median {statistics.median(paired):.3f}, "
            f"{min(paired):.3f}..{max(paired):.3f}"
        )
    # Like with like: the command measures in a fresh process, as does a user's own script;
    # run_point measures in this process, as does the hand-written loop.
    for arm, ref in (("bench sweep", "hand (own process)"), ("run_point", "hand-written")):
        if arm in got and ref in got and base != ref:
            paired = [a / b for a, b in zip(got[arm], got[ref], strict=True)]
            print(
                f"  {arm} / {ref}: median of per-round ratios {statistics.median(paired):.3f} "
                f"(rounds: {', '.join(f'{r:.3f}' for r in paired)})"
            )


if __name__ == "__main__":
    main()
