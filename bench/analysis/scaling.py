"""Scaling efficiency across world sizes: pure logic over sweep results (no torch).

efficiency = global samples/sec at N ranks / (N x samples/sec of one rank alone), per per-rank
batch size. 1.0 is perfect data-parallel scaling; NVIDIA's published EfficientNet-b0 8xA100 AMP
figure is 6.68x one A100, i.e. 0.835.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from bench.results.schema import OK, PointDistributed, SweepResult


@dataclass(frozen=True)
class ScalingRow:
    batch_size: int  # per rank
    world_size: int
    global_batch_size: int
    global_samples_per_sec: float | None
    single_device_samples_per_sec: float | None
    efficiency: float | None
    status: str = OK


def efficiency(global_samples_per_sec: float | None, world_size: int, single: float | None) -> float | None:
    if not global_samples_per_sec or not single or world_size < 1:
        return None
    return global_samples_per_sec / (world_size * single)


def single_device_rates(results: Sequence[SweepResult]) -> dict[int, float]:
    """samples/sec per batch size of the (first) one-rank run among ``results``; {} if none."""
    base = next((r for r in results if r.world_size == 1), None)
    if base is None:
        return {}
    return {p.batch_size: p.samples_per_sec for p in base.ok_points() if p.samples_per_sec}


def scaling_rows(results: Sequence[SweepResult]) -> list[ScalingRow]:
    """One row per (world size, per-rank batch), ordered by batch then world size."""
    single = single_device_rates(results)
    rows = []
    for r in results:
        n = r.world_size
        for p in r.points:
            rate = p.samples_per_sec if p.status == OK else None
            rows.append(
                ScalingRow(
                    batch_size=p.batch_size,
                    world_size=n,
                    global_batch_size=p.batch_size * n,
                    global_samples_per_sec=rate,
                    single_device_samples_per_sec=single.get(p.batch_size),
                    efficiency=efficiency(rate, n, single.get(p.batch_size)),
                    status=p.status,
                )
            )
    return sorted(rows, key=lambda row: (row.batch_size, row.world_size))


def with_efficiency(result: SweepResult, single: dict[int, float]) -> SweepResult:
    """``result`` with each point's scaling efficiency against the one-rank rates filled in."""
    n = result.world_size
    points = []
    for p in result.points:
        info = p.distributed or PointDistributed(
            world_size=n, per_rank_batch_size=p.batch_size, global_batch_size=p.batch_size * n,
            global_samples_per_sec=p.samples_per_sec,
        )  # fmt: skip
        base = single.get(p.batch_size)
        rate = p.samples_per_sec if p.status == OK else None
        points.append(
            replace(p, distributed=replace(
                info, single_device_samples_per_sec=base, scaling_efficiency=efficiency(rate, n, base)
            ))
        )  # fmt: skip
    return replace(result, points=tuple(points))


def scaling_to_dict(
    rows: Sequence[ScalingRow], runs: Sequence[tuple[int, str, str | None]]
) -> dict[str, Any]:
    """The scaling summary file: ``runs`` are (world size, result file, run id)."""
    return {
        "schema_version": 1,
        "kind": "scaling",
        "runs": [{"world_size": n, "path": path, "run_id": run_id} for n, path, run_id in runs],
        "rows": [row.__dict__ for row in rows],
    }
