"""Was a point contended: did other processes take a share of the CPU the measurement could feel?

A CPU run needs the cores its torch threads (and DataLoader workers) spin on; a GPU run one core
to launch kernels (and the workers). Other processes' CPU use first fills the cores the
measurement does not need; what is left over is taken from it. On the 2-core VM one neighbour
busy on one core took half of a CPU sweep's cores, and batches measured 0.6-1.8 samples/s against
15.8-28.6 idle (issue 23): such a point measures the neighbour, and the recommendation must not
rank it as if it were clean.
"""

from __future__ import annotations

from bench.results.schema import Contention

CONTENDED_PERCENT = 10.0  # others took at least this share of the cores the measurement needs


def cores_needed(device_kind: str, cpus: int, torch_threads: int | None, workers: int = 0) -> int:
    """Cores a point keeps busy: torch's threads on a CPU (all cores when unknown), one on a GPU;
    plus the loader workers; never more than the machine has."""
    own = (torch_threads or cpus) if device_kind == "cpu" else 1
    return max(1, min(cpus, own + max(workers, 0)))


def assess(others_cores: float, cpus: int, needed: int) -> Contention:
    """``others_cores``: other processes' CPU use over the point, in cores (from ``bench.hw.cpu_load``)."""
    spare = max(cpus - needed, 0)
    felt = max(others_cores - spare, 0.0) / needed * 100
    felt = min(felt, 100.0)
    return Contention(
        others_cpu_percent=round(others_cores / cpus * 100, 1),
        felt_percent=round(felt, 1),
        cores_needed=needed,
        contended=felt >= CONTENDED_PERCENT,
    )


def contended_label(c: Contention | None) -> str | None:
    """ "contended 48%" (the share of the measurement's cores others took), or None when clean."""
    if c is None or not c.contended:
        return None
    return f"contended {c.felt_percent:.0f}%"
