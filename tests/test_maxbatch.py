import gc

import pytest

from bench.errors import BenchError
from bench.hw.device import CpuDevice
from bench.maxbatch import find_max_batch, parse_bytes, probe_in_process, probe_isolated
from bench.schema import Workload
from bench.search import Probe, search_max_batch
from tests import tiny_models

MiB = 2**20


def test_parse_bytes():
    assert parse_bytes("4GiB") == 4 * 2**30
    assert parse_bytes("3000MB") == 3_000_000_000
    assert parse_bytes("1.5g") == int(1.5 * 2**30)
    for bad in ("lots", "4XB", "-1GiB", "0"):
        with pytest.raises(BenchError):
            parse_bytes(bad)


def test_oom_cleanup_in_process_nothing_leaks():
    """A model that raises CUDA OOM above batch 4: the search finds exactly 4, and every model built
    for a probe (including those that raised, whose tracebacks held tensors) is freed."""
    tiny_models.LIVE_MODELS.clear()
    wl = Workload(model="tests.tiny_models:oom_above_4", image_size=8)
    device = CpuDevice()
    outcomes = []

    def try_batch(b):
        rec = probe_in_process(wl, b, device)
        outcomes.append((b, rec.outcome))
        gc.collect()
        assert all(ref() is None for ref in tiny_models.LIVE_MODELS), f"leak after batch {b}"
        return Probe(b, rec.outcome == "fit", None, rec.seconds, rec.outcome)

    res = search_max_batch(try_batch, budget_bytes=None)
    assert res.max_batch_size == 4 and res.failed_batch_size == 5
    assert ("5", "oom") not in outcomes and (5, "oom") in outcomes
    assert len(tiny_models.LIVE_MODELS) == len(outcomes)


def test_real_cpu_search_matches_brute_force():
    """Real child-process probes under an RSS budget, against brute force over the same probe.

    ~100 MiB of activations per 256x256 sample keeps the boundary well above RSS noise (~50 MiB).
    """
    wl = Workload(model="tests.tiny_models:fat", image_size=256, device="cpu")
    base = probe_isolated(wl, 1, None)
    assert base.outcome == "fit" and base.peak_bytes > 0
    limit = base.peak_bytes + 250 * MiB
    res = find_max_batch(wl, granularity=1, memory_limit=limit, soak_steps=3)
    assert res.max_batch_size is not None and res.budget_bytes == limit
    by_size = {p.batch_size: p for p in res.probes}
    assert by_size[res.max_batch_size].outcome == "fit"
    assert by_size[res.max_batch_size + 1].outcome in ("over_budget", "oom")
    assert res.probe_count <= 6
    truth = 0
    for b in range(1, 10):  # brute force: every size up to the first failure
        if probe_isolated(wl, b, limit).outcome != "fit":
            break
        truth = b
    assert res.max_batch_size == truth
    assert 1 <= res.safe_batch_size <= res.max_batch_size
    assert res.soak_ok is True
    d = res.to_dict()
    assert d["kind"] == "max_batch" and d["probe_count"] == res.probe_count
    assert d["memory_model"]["per_sample_bytes"] > 50 * MiB


def test_bad_arguments():
    with pytest.raises(BenchError, match="granularity"):
        find_max_batch(Workload(model="resnet18", image_size=8), granularity=0)
    with pytest.raises(BenchError, match="below the granularity"):
        find_max_batch(Workload(model="resnet18", image_size=8), granularity=8, cap=4)
    with pytest.raises(BenchError, match="unknown model"):
        find_max_batch(Workload(model="resnet_nope", image_size=8))
