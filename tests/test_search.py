import random

import pytest

from bench.search import Probe, fit_model, search_max_batch

MiB = 2**20
GiB = 2**30


def simulator(memory, budget, fails=None):
    """try_batch for a simulated memory function; records every probed size."""
    seen = []

    def try_batch(b):
        seen.append(b)
        peak = memory(b)
        ok = peak <= budget and not (fails and fails(b))
        return Probe(b, ok, int(peak), outcome="fit" if ok else "oom")

    return try_batch, seen


def brute_force(memory, budget, g, limit=100_000):
    best = None
    b = g
    while b <= limit:
        if memory(b) <= budget:
            best = b
        else:
            break
        b += g
    return best


def check_certificate(result, try_seen, g):
    """The max was probed and fit; max+g was probed and did not."""
    fits = {p.batch_size: p.fits for p in result.probes}
    assert fits[result.max_batch_size] is True
    assert fits[result.max_batch_size + g] is False
    assert set(fits) == set(try_seen)  # every reported size was really run


def linear(b):
    return 1.5 * GiB + 37.3 * MiB * b


@pytest.mark.parametrize("g", [1, 8])
def test_linear_memory_exact_in_few_probes(g):
    budget = 40 * GiB
    try_batch, seen = simulator(linear, budget)
    res = search_max_batch(try_batch, budget_bytes=budget, granularity=g)
    assert res.max_batch_size == brute_force(linear, budget, g)
    check_certificate(res, seen, g)
    assert res.probe_count <= 6
    assert res.model.per_sample_bytes == pytest.approx(37.3 * MiB)


def test_step_wise_allocator_rounding_and_workspace_jump():
    def stepped(b):
        raw = 800 * MiB + 21 * MiB * b + (600 * MiB if b > 300 else 0)  # cuDNN picks a bigger workspace
        return -(-raw // (20 * MiB)) * (20 * MiB)  # allocator rounds up to 20 MiB blocks

    budget = 10 * GiB
    try_batch, seen = simulator(stepped, budget)
    res = search_max_batch(try_batch, budget_bytes=budget)
    assert res.max_batch_size == brute_force(stepped, budget, 1)
    check_certificate(res, seen, 1)
    assert res.probe_count <= 16


def test_noisy_memory():
    rng = random.Random(7)
    noise = {b: rng.uniform(-0.02, 0.02) for b in range(1, 5000)}

    def noisy(b):
        return (2 * GiB + 50 * MiB * b) * (1 + noise[b] * (b > 8))

    budget = 60 * GiB
    try_batch, seen = simulator(noisy, budget)
    res = search_max_batch(try_batch, budget_bytes=budget)
    # noise makes "the" max ill-defined; the certificate must hold and be near the truth
    check_certificate(res, seen, 1)
    assert abs(res.max_batch_size - brute_force(lambda b: 2 * GiB + 50 * MiB * b, budget, 1)) <= 30
    assert res.probe_count <= 20


def test_non_monotone_near_the_edge():
    # 200 fails (fragmentation) though 201..205 fit; the answer must still carry a certificate
    budget = 12 * GiB

    def mem(b):
        return GiB + 50 * MiB * b

    try_batch, seen = simulator(mem, budget, fails=lambda b: b == 200)
    res = search_max_batch(try_batch, budget_bytes=budget)
    check_certificate(res, seen, 1)
    assert res.max_batch_size in (199, brute_force(mem, budget, 1))


def test_nothing_fits():
    try_batch, seen = simulator(linear, budget=1 * GiB)
    res = search_max_batch(try_batch, budget_bytes=GiB)
    assert res.max_batch_size is None
    assert seen == [1]


def test_only_batch_one_fits():
    budget = linear(1) + 1
    try_batch, seen = simulator(linear, budget)
    res = search_max_batch(try_batch, budget_bytes=budget)
    assert res.max_batch_size == 1
    check_certificate(res, seen, 1)


def test_cap_stops_the_search():
    try_batch, seen = simulator(linear, 40 * GiB)
    res = search_max_batch(try_batch, budget_bytes=40 * GiB, granularity=8, cap=100)
    assert res.max_batch_size == 96 and res.cap_reached
    assert max(seen) == 96


def test_without_peak_readings_falls_back_to_growth_and_bisection():
    def try_batch(b):
        return Probe(b, b <= 777, None)

    res = search_max_batch(try_batch, budget_bytes=None)
    assert res.max_batch_size == 777 and res.failed_batch_size == 778
    assert res.probe_count <= 2 * 10 + 4


def test_fit_model():
    assert fit_model([(1, 100), (9, 900)]).per_sample_bytes == 100
    assert fit_model([(1, 100)]) is None
    assert fit_model([(1, 100), (2, 90)]) is None


def test_concave_cpu_like_memory_converges_by_secant_steps():
    """CPU RSS grows faster at small batches (thread pools, allocator arenas): the first two-point
    fit overestimates the slope; refitting after each probe must still land in a few probes."""
    budget = 3 * GiB

    def concave(b):
        return 0.9 * GiB + 22 * MiB * b + 90 * MiB * b**0.5

    try_batch, seen = simulator(concave, budget)
    res = search_max_batch(try_batch, budget_bytes=budget)
    assert res.max_batch_size == brute_force(concave, budget, 1)
    check_certificate(res, seen, 1)
    assert res.probe_count <= 6, seen
