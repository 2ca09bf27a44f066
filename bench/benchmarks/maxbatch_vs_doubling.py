"""Probes and seconds to the exact max batch: bench's search against plain doubling + bisection.

Both use the same probe (fresh model, 3 full training steps, child process on CPU under the same
RSS budget), on the same workload, one after the other in one run. Doubling + bisection is what
Lightning's "binsearch" and similar finders do: grow x2 until a failure, then bisect.

    python -m bench.benchmarks.maxbatch_vs_doubling                    # CPU, EfficientNet-b0 @128px, 3 GiB
    python -m bench.benchmarks.maxbatch_vs_doubling --device cuda --image-size 224 --precision bf16
"""

from __future__ import annotations

import argparse
import time

from bench.maxbatch import find_max_batch, parse_bytes, probe_in_process, probe_isolated
from bench.schema import Workload


def doubling_bisection(workload: Workload, budget: int | None, isolate: bool) -> tuple[int | None, int, float]:
    """(max batch, probes, seconds) by growth x2 then bisection to exactness (granularity 1)."""
    from bench.hw.device import open_device

    device = None if isolate else open_device(workload.device)
    probes = 0
    start = time.perf_counter()

    def fits(b: int) -> bool:
        nonlocal probes
        probes += 1
        rec = probe_isolated(workload, b, budget) if isolate else probe_in_process(workload, b, device)
        print(f"    doubling probe {b:>6}: {rec.outcome}")
        return rec.outcome == "fit"

    lo, hi = 0, None
    b = 1
    while hi is None:
        if fits(b):
            lo, b = b, b * 2
        else:
            hi = b
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return (lo or None), probes, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--memory-limit", default="3GiB", help="CPU budget (ignored on CUDA: free memory)")
    ap.add_argument("--isolate", action="store_true", help="GPU: child process per probe")
    args = ap.parse_args()
    cpu = args.device == "cpu"
    wl = Workload(model=args.model, image_size=args.image_size, precision=args.precision, device=args.device)
    budget = parse_bytes(args.memory_limit) if cpu else None
    print(f"{args.model} train {args.precision} {args.image_size}px on {args.device}"
          + (f", budget {args.memory_limit}" if cpu else ""))  # fmt: skip

    print("  bench search:")
    res = find_max_batch(
        wl, granularity=1, memory_limit=budget, isolate=args.isolate, soak_steps=0,
        on_probe=lambda r: print(f"    bench probe {r.batch_size:>6}: {r.outcome}"),
    )  # fmt: skip
    print("  doubling + bisection:")
    d_max, d_probes, d_seconds = doubling_bisection(wl, budget, isolate=cpu or args.isolate)
    print(
        f"bench:                max {res.max_batch_size} in {res.probe_count} probes, {res.seconds:.1f} s\n"
        f"doubling + bisection: max {d_max} in {d_probes} probes, {d_seconds:.1f} s\n"
        f"ratio: {d_probes / res.probe_count:.1f}x fewer probes, {d_seconds / res.seconds:.1f}x less time"
    )


if __name__ == "__main__":
    main()
