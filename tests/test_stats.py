import math
import statistics

import pytest

from bench.analysis import stats


def test_percentile_matches_linear_interpolation():
    data = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert stats.percentile(data, 0) == 1.0
    assert stats.percentile(data, 50) == 3.0
    assert stats.percentile(data, 100) == 5.0
    assert stats.percentile(data, 10) == pytest.approx(1.4)
    assert stats.percentile(data, 90) == pytest.approx(4.6)


def test_t95_table():
    assert stats.t95(1) == pytest.approx(12.706)
    assert stats.t95(9) == pytest.approx(2.262)
    assert stats.t95(30) == pytest.approx(2.042)
    assert stats.t95(50) == pytest.approx(2.000)
    assert stats.t95(10_000) == pytest.approx(1.960)
    with pytest.raises(ValueError):
        stats.t95(0)


def test_summarize_known_answer():
    times = [0.010, 0.011, 0.012, 0.013, 0.014]
    s = stats.summarize(times)
    assert s.count == 5
    assert s.median_seconds == pytest.approx(0.012)
    assert s.mean_seconds == pytest.approx(0.012)
    sd = statistics.stdev(times)
    assert s.stdev_seconds == pytest.approx(sd)
    half = 2.776 * sd / math.sqrt(5)
    assert s.ci95_low_seconds == pytest.approx(0.012 - half)
    assert s.ci95_high_seconds == pytest.approx(0.012 + half)
    assert s.rel_ci_half_width == pytest.approx(half / 0.012)
    assert s.p10_seconds == pytest.approx(0.0104)
    assert s.p90_seconds == pytest.approx(0.0136)


def test_converged_threshold():
    steady = [0.100] * 9 + [0.101]
    assert stats.converged(steady, 0.02)
    noisy = [0.05, 0.15] * 5
    assert not stats.converged(noisy, 0.02)
    assert not stats.converged([0.1], 0.02)


def test_samples_per_sec_and_epoch():
    # 20 steps of batch 32 in 4 s -> 160 samples/s; ImageNet epoch at that rate
    sps = stats.samples_per_sec(32, 20, 4.0)
    assert sps == pytest.approx(160.0)
    assert stats.epoch_seconds(1_281_167, sps) == pytest.approx(1_281_167 / 160.0)
    with pytest.raises(ValueError):
        stats.samples_per_sec(32, 20, 0.0)
