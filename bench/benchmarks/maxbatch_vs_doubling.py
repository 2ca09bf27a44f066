"""Probes and seconds to the exact max batch: bench's search against plain doubling + bisection.

Both use the same probe (fresh model, 3 full training steps; on CPU a child process under the same
RSS budget), on the same workload, one after the other in one run, and neither soaks (the soak is
the same extra cost for both). Doubling + bisection is what Lightning's "binsearch" scaler and
similar finders do: grow x2 until a failure, then bisect to exactness.

    python -m bench.benchmarks.maxbatch_vs_doubling                    # CPU, EfficientNet-b0 @128px, 3 GiB
    python -m bench.benchmarks.maxbatch_vs_doubling --device cuda --image-size 224 --precision bf16

Near the edge CPU peak RSS varies by some MiB from run to run, so the two methods can certify
different maxima a sample or two apart; each answer is printed with its certificate.
"""

from __future__ import annotations

import argparse
import time

from bench.hw.device import open_device
from bench.jobs.maxbatch import find_max_batch, probe_in_process, probe_isolated
from bench.results.schema import Workload


def doubling_bisection(
    workload: Workload, budget: int | None, isolate: bool
) -> tuple[int | None, int, float, list[tuple[int, str]]]:
    """(max batch, probes, seconds, [(batch, outcome)]) by growth x2 then bisection (granularity 1)."""
    device = None if isolate else open_device(workload.device)
    probes: list[tuple[int, str]] = []
    start = time.perf_counter()

    def fits(b: int) -> bool:
        if isolate:
            rec = probe_isolated(workload, b, budget)
        else:
            rec = probe_in_process(workload, b, device)
        ok = rec.fits and (budget is None or rec.peak_bytes is None or rec.peak_bytes <= budget)
        probes.append((b, rec.outcome if ok or not rec.fits else "over_budget"))
        print(f"    doubling probe {b:>6}: {probes[-1][1]}", flush=True)
        return ok

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
    return (lo or None), len(probes), time.perf_counter() - start, probes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument(
        "--memory-limit", default=None, help="budget (CPU default 3GiB; CUDA default: free memory)"
    )
    ap.add_argument("--isolate", action="store_true", help="GPU: child process per probe")
    args = ap.parse_args()
    cpu = args.device == "cpu"
    limit = args.memory_limit or ("3GiB" if cpu else None)
    wl = Workload(model=args.model, image_size=args.image_size, precision=args.precision, device=args.device)
    print(
        f"{args.model} train {args.precision} {args.image_size}px on {args.device}, budget {limit or 'free memory'}"
    )

    print("  bench search:", flush=True)
    res = find_max_batch(
        wl, granularity=1, memory_limit=limit, isolate=args.isolate, soak_steps=0,
        on_probe=lambda r: print(f"    bench probe    {r.batch_size:>6}: {r.outcome}", flush=True),
    )  # fmt: skip
    budget = res.budget_bytes
    print("  doubling + bisection:", flush=True)
    d_max, d_probes, d_seconds, d_seen = doubling_bisection(wl, budget, isolate=cpu or args.isolate)
    bench_seq = ", ".join(f"{p.batch_size}{'' if p.fits else ' x'}" for p in res.probes)
    d_seq = ", ".join(f"{b}{'' if o == 'fit' else ' x'}" for b, o in d_seen)
    print()
    print(f"{'method':<22}{'max':>6}{'probes':>8}{'seconds':>10}  probes in order (x = did not fit)")
    print(
        f"{'bench search':<22}{res.max_batch_size!s:>6}{res.probe_count:>8}{res.seconds:>10.1f}  {bench_seq}"
    )
    print(f"{'doubling + bisection':<22}{d_max!s:>6}{d_probes:>8}{d_seconds:>10.1f}  {d_seq}")
    print(
        f"bench needs {d_probes / res.probe_count:.1f}x fewer probes and {d_seconds / res.seconds:.1f}x less time"
    )
    if d_max != res.max_batch_size:
        print(
            f"the two certified maxima differ by {abs((d_max or 0) - (res.max_batch_size or 0))}: peak memory "
            "at the edge varies from run to run; each max ran and fit, and max+1 ran and did not"
        )


if __name__ == "__main__":
    main()
