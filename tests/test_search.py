"""The max-batch search against simulated memory functions whose true answer is brute-forced."""

import math
import random

import pytest

from bench.analysis.maxbatch_search import ProbeResult, fit_model, search_down, search_max_batch

MiB = 2**20
GiB = 2**30


def simulator(memory, budget, fails=None):
    """try_batch for a simulated memory function; records every probed size in order."""
    seen = []

    def try_batch(b):
        seen.append(b)
        peak = memory(b)
        ok = peak <= budget and not (fails and fails(b))
        return ProbeResult(b, ok, int(peak), outcome="fit" if ok else "oom")

    return try_batch, seen


def brute_force(memory, budget, g, fails=None, limit=1_000_000):
    """The largest multiple of g such that every multiple of g up to it fits (the honest max)."""
    best = None
    b = g
    while b <= limit and memory(b) <= budget and not (fails and fails(b)):
        best = b
        b += g
    return best


def check_certificate(result, seen, g):
    """The max was probed and fit; max+g was probed and did not; nothing reported was not run."""
    fits = {p.batch_size: p.fits for p in result.probes}
    assert result.exact
    assert fits[result.max_batch_size] is True
    assert fits[result.max_batch_size + g] is False
    assert result.failed_batch_size == result.max_batch_size + g
    assert [p.batch_size for p in result.probes] == seen
    assert len(set(seen)) == len(seen), "a size was probed twice"
    # consistent with monotone memory: nothing above the max fit, nothing at or below it failed
    assert all(p.fits == (p.batch_size <= result.max_batch_size) for p in result.probes)


def linear(b):
    return 1.5 * GiB + 37.3 * MiB * b


def effnet_b0_like(b):
    """EfficientNet-b0 fp32 training on an 80 GB GPU: ~1.1 GiB fixed, ~95 MiB per 224px sample,
    a little curvature (cuDNN workspaces) and the caching allocator's 2 MiB rounding."""
    raw = 1.1 * GiB + 95 * MiB * b + 3 * MiB * math.sqrt(b)
    return math.ceil(raw / (2 * MiB)) * 2 * MiB


@pytest.mark.parametrize("g", [1, 8])
def test_linear_memory_exact_in_six_probes(g):
    budget = 40 * GiB
    try_batch, seen = simulator(linear, budget)
    res = search_max_batch(try_batch, budget_bytes=budget, granularity=g)
    assert res.max_batch_size == brute_force(linear, budget, g) == 1056
    check_certificate(res, seen, g)
    # g, 16g, 128g (growth never reaches past 8x what fit), the 97% jump, the refitted edge, edge + g
    # (at g = 8 the jump from 128 granules is already the edge)
    assert res.probe_count == (6 if g == 1 else 5)
    assert res.model.per_sample_bytes == pytest.approx(37.3 * MiB)
    assert res.model.fixed_bytes == pytest.approx(1.5 * GiB)


@pytest.mark.parametrize("budget_gib", [10, 23.5, 39, 79])
@pytest.mark.parametrize("g", [1, 8])
def test_efficientnet_like_curve_in_at_most_six_probes(budget_gib, g):
    budget = budget_gib * GiB
    try_batch, seen = simulator(effnet_b0_like, budget)
    res = search_max_batch(try_batch, budget_bytes=budget, granularity=g)
    assert res.max_batch_size == brute_force(effnet_b0_like, budget, g)
    check_certificate(res, seen, g)
    assert res.probe_count <= 6, seen


def test_step_wise_allocator_rounding_and_workspace_jump():
    def stepped(b):
        raw = 800 * MiB + 21 * MiB * b + (600 * MiB if b > 300 else 0)  # cuDNN picks a bigger workspace
        return -(-raw // (20 * MiB)) * (20 * MiB)  # allocator rounds up to 20 MiB blocks

    for budget in (7 * GiB, 10 * GiB):  # the jump below and above the edge
        try_batch, seen = simulator(stepped, budget)
        res = search_max_batch(try_batch, budget_bytes=budget)
        assert res.max_batch_size == brute_force(stepped, budget, 1)
        check_certificate(res, seen, 1)
        assert res.probe_count <= 12, seen


def test_workspace_jump_right_at_the_edge_falls_back_to_bisection():
    # the line from small batches says ~432, but above 300 a 1.2 GiB workspace appears: 300 is the max
    def jump(b):
        return GiB + 20 * MiB * b + (1200 * MiB if b > 300 else 0)

    budget = jump(300) + 5 * MiB
    try_batch, seen = simulator(jump, budget)
    res = search_max_batch(try_batch, budget_bytes=budget)
    assert res.max_batch_size == 300 == brute_force(jump, budget, 1)
    check_certificate(res, seen, 1)
    assert res.probe_count <= 14, seen


@pytest.mark.parametrize("seed", range(6))
def test_noisy_memory(seed):
    rng = random.Random(seed)
    noise = {b: rng.uniform(-0.01, 0.01) for b in range(1, 5000)}

    def noisy(b):
        return (2 * GiB + 50 * MiB * b) * (1 + noise[b])

    budget = 60 * GiB
    try_batch, seen = simulator(noisy, budget)
    res = search_max_batch(try_batch, budget_bytes=budget)
    # noise makes memory non-monotone near the edge, so "the" max is a band; the answer must carry
    # a certificate and lie in the band where the noiseless line crosses the budget +-1%
    check_certificate(res, seen, 1)
    band = [b for b in range(1, 5000) if abs((2 * GiB + 50 * MiB * b) / budget - 1) <= 0.011]
    assert min(band) <= res.max_batch_size <= max(band)
    assert res.probe_count <= 12, seen


def test_hole_below_the_edge_gives_the_certified_size_below_it():
    """Fragmentation: one size under the edge fails although larger ones fit. Make it the size the
    search jumps to first: the search never probes above a failure, so it certifies the size just
    below the hole (what brute force from below finds too)."""
    budget = 12 * GiB

    def mem(b):
        return GiB + 50 * MiB * b

    edge = brute_force(mem, budget, 1)
    clean, seen_clean = simulator(mem, budget)
    search_max_batch(clean, budget_bytes=budget)
    hole = seen_clean[3]  # the model's first jump (after g, 16g and 8x that) lands on the edge
    assert 0.9 * edge < hole <= edge

    try_batch, seen = simulator(mem, budget, fails=lambda b: b == hole)
    res = search_max_batch(try_batch, budget_bytes=budget)
    check_certificate(res, seen, 1)
    assert hole in seen
    # the model overshot into the hole, so the search stepped down: hole - 1 fit, the hole did not
    assert res.max_batch_size == hole - 1 == brute_force(mem, budget, 1, fails=lambda b: b == hole)
    assert res.probe_count <= 5, seen


def test_band_of_failures_below_the_edge():
    """Several sizes under the edge fail (an allocator pathology); whatever side of the band the
    search ends on, the certificate holds, and below the band it is the brute-force max."""
    budget = 12 * GiB

    def mem(b):
        return GiB + 50 * MiB * b

    def band(b):
        return 190 < b <= 222

    try_batch, seen = simulator(mem, budget, fails=band)
    res = search_max_batch(try_batch, budget_bytes=budget)
    check_certificate(res, seen, 1)
    below = brute_force(mem, budget, 1, fails=band)
    assert below == 190
    # the model's jump lands above the band here, so the certified pair is the true edge (225, 226)
    assert res.max_batch_size in (below, brute_force(mem, budget, 1))
    assert res.probe_count <= 16, seen


def test_nothing_fits():
    try_batch, seen = simulator(linear, budget=1 * GiB)
    res = search_max_batch(try_batch, budget_bytes=GiB)
    assert res.max_batch_size is None and res.failed_batch_size == 1 and res.exact
    assert seen == [1]


def test_nothing_fits_at_granularity_8():
    budget = linear(7)
    try_batch, seen = simulator(linear, budget)
    res = search_max_batch(try_batch, budget_bytes=budget, granularity=8)
    assert res.max_batch_size is None and res.failed_batch_size == 8
    assert seen == [8]


def test_only_batch_one_fits():
    budget = linear(1) + 1
    try_batch, seen = simulator(linear, budget)
    res = search_max_batch(try_batch, budget_bytes=budget)
    assert res.max_batch_size == 1
    check_certificate(res, seen, 1)
    assert seen == [1, 16, 8, 4, 2]  # one peak reading: no model, bisection


def test_cap_stops_the_search():
    try_batch, seen = simulator(linear, 40 * GiB)
    res = search_max_batch(try_batch, budget_bytes=40 * GiB, granularity=8, cap=100)
    assert res.max_batch_size == 96 and res.cap_reached and res.exact
    assert res.failed_batch_size is None
    assert max(seen) == 96


def test_cap_above_the_max_is_not_reached():
    try_batch, seen = simulator(linear, 40 * GiB)
    res = search_max_batch(try_batch, budget_bytes=40 * GiB, cap=5000)
    assert res.max_batch_size == 1056 and not res.cap_reached
    check_certificate(res, seen, 1)


def test_without_peak_readings_falls_back_to_growth_and_bisection():
    seen = []

    def try_batch(b):
        seen.append(b)
        return ProbeResult(b, b <= 777, None)

    res = search_max_batch(try_batch, budget_bytes=None)
    assert res.max_batch_size == 777 and res.failed_batch_size == 778 and res.exact
    # 1, 16, growth x8 to 1024 (2 more probes), then bisection of 128..1024 (10 probes)
    assert seen[:4] == [1, 16, 128, 1024]
    assert res.probe_count == 4 + 10, seen
    assert res.model is None


def test_probe_limit_gives_an_inexact_answer_not_a_wrong_one():
    try_batch, seen = simulator(linear, 40 * GiB)
    res = search_max_batch(try_batch, budget_bytes=None, max_probes=4)
    assert res.probe_count == 4 and not res.exact
    assert res.max_batch_size in seen and res.max_batch_size < 1056


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


@pytest.mark.parametrize("seed", range(40))
def test_random_curves_against_brute_force(seed):
    """Random fixed/per-sample/curvature/rounding/granularity: always exact, and few probes."""
    rng = random.Random(1000 + seed)
    fixed = rng.uniform(0.2, 4) * GiB
    per = rng.uniform(0.5, 200) * MiB
    curve = rng.choice([0.0, 0.5, 1.5]) * MiB
    block = rng.choice([1, 2 * MiB, 20 * MiB])
    g = rng.choice([1, 1, 2, 8, 32])
    budget = fixed + per * rng.uniform(5, 3000)

    def mem(b):
        return math.ceil((fixed + per * b + curve * b**0.75) / block) * block

    try_batch, seen = simulator(mem, budget)
    res = search_max_batch(try_batch, budget_bytes=budget, granularity=g)
    truth = brute_force(mem, budget, g)
    assert res.max_batch_size == truth
    if truth is not None:
        check_certificate(res, seen, g)
    assert res.probe_count <= 10, seen


def test_fit_model():
    assert fit_model([(1, 100), (9, 900)]).per_sample_bytes == 100
    assert fit_model([(1, 100), (5, 480), (9, 900)]).fixed_bytes == 0  # the wide baseline: 1 and 9
    assert fit_model([(1, 100)]) is None
    assert fit_model([(1, 100), (2, 90)]) is None


def test_bad_arguments():
    try_batch, _ = simulator(linear, GiB)
    with pytest.raises(ValueError, match="granularity"):
        search_max_batch(try_batch, budget_bytes=GiB, granularity=0)
    with pytest.raises(ValueError, match="cap"):
        search_max_batch(try_batch, budget_bytes=GiB, granularity=8, cap=7)


@pytest.mark.parametrize(("true_max", "g", "failed"), [(95, 1, 100), (60, 1, 100), (1, 1, 100), (48, 8, 96)])
def test_search_down_after_a_failed_soak(true_max, g, failed):
    seen = []

    def soak(b):
        seen.append(b)
        return ProbeResult(b, b <= true_max)

    res = search_down(soak, failed_batch_size=failed, granularity=g)
    assert res.max_batch_size == true_max and res.failed_batch_size == true_max + g and res.exact
    assert seen[-1] in (true_max, true_max + g)
    assert res.probe_count <= 2 * math.log2(failed / g) + 2


def test_search_down_when_nothing_passes():
    res = search_down(lambda b: ProbeResult(b, False), failed_batch_size=64, granularity=8)
    assert res.max_batch_size is None and res.failed_batch_size == 8
    assert [p.batch_size for p in res.probes] == [56, 48, 32, 8]


# --------------------------------------------------------------------------- GPU-shaped curves


def test_gpu_shaped_curves_exact_in_few_probes_never_far_above():
    """Curves shaped like the first H100 run (bench.benchmarks.search_sim): 0.2-3 GiB fixed, 20-90 MiB
    per sample, budgets 22-139 GiB, +-1% deviation per size, an autotune workspace spike of 0.2-1 GiB
    in the first-step peak of small batches. Exact (certified) every time, a median of <= 9 probes,
    at most 14 at the 99th percentile, and never more than one probe above 1.25x the true max."""
    import statistics

    from bench.benchmarks.search_sim import random_curve

    counts = []
    for seed in range(300):
        curve = random_curve(seed)
        truth = curve.true_max(1)
        try_batch, seen = curve.try_batch()
        res = search_max_batch(try_batch, budget_bytes=curve.budget_bytes)
        assert res.exact and curve.certified(res.max_batch_size, 1), (seed, seen)
        assert sum(b > 1.25 * truth for b in seen) <= 1, (seed, seen)
        counts.append(len(seen))
    counts.sort()
    assert statistics.median(counts) <= 9
    assert counts[int(0.99 * len(counts))] <= 14, counts[-10:]


def test_first_step_spike_does_not_flatten_the_fit():
    """Batch 1's first step peaks above batch 16's (cuDNN autotune workspace): the model is fitted
    to steady peaks, so the jump lands near the edge instead of thousands of samples above it."""
    from bench.benchmarks.search_sim import GpuCurve

    curve = GpuCurve(
        fixed_bytes=0.3 * GiB, per_sample_bytes=40 * MiB, budget_bytes=76 * GiB,
        spike_bytes=0.9 * GiB, spike_until=16, noise=0.0, seed=1,
    )  # fmt: skip
    try_batch, seen = curve.try_batch()
    res = search_max_batch(try_batch, budget_bytes=curve.budget_bytes)
    assert res.max_batch_size == curve.true_max(1)
    assert res.probe_count <= 7, seen
    assert all(b <= 1.25 * curve.true_max(1) for b in seen), seen
    # the fitted slope is the steady one, not the spike-flattened first-step one
    assert res.model.per_sample_bytes == pytest.approx(40 * MiB, rel=0.01)


def test_time_budget_stops_with_the_best_bracket():
    """--max-seconds: the probes' own seconds add up; the search stops with a proven bracket."""

    def try_batch(b):
        return ProbeResult(b, b <= 777, None, seconds=10.0)

    res = search_max_batch(try_batch, budget_bytes=None, max_seconds=45)
    assert res.probe_count == 5 and not res.exact and res.stopped == "time budget"
    assert res.max_batch_size == 576 and res.failed_batch_size == 1024
