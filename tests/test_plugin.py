"""The bench_model fixture under pytest-benchmark's own flags, run as a user would (a subprocess
pytest with the installed plugin): samples/sec in the JSON with a known answer, and
--benchmark-save / --benchmark-compare-fail catching a known slowdown and passing an unchanged run.
"""

import json
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HERE = Path(__file__).parent
INNER = """
def test_sleepy_step(bench_model):
    result = bench_model("sleepy_model:build", batch_size=4, warmup=1, rounds=12, device="cpu")
    assert result.samples_per_sec > 0
"""


def _setup(pytester):
    shutil.copy(HERE / "sleepy_model.py", pytester.path / "sleepy_model.py")
    pytester.makepyfile(test_inner=INNER)


@pytest.mark.slow
def test_samples_per_sec_lands_in_extra_info(pytester, monkeypatch):
    _setup(pytester)
    monkeypatch.setenv("BENCH_TEST_STEP_SECONDS", "0.02")
    monkeypatch.setenv("BENCH_TEST_FAKE_CLOCK", "1")  # a step takes exactly 20 ms on this clock
    res = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--benchmark-json=out.json", "--benchmark-timer=sleepy_model.fake_clock"
    )
    res.assert_outcomes(passed=1)
    (bm,) = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    info = bm["extra_info"]
    assert info["batch_size"] == 4 and info["mode"] == "train" and info["device"] == "cpu"
    assert bm["stats"]["rounds"] == 12  # warm-up rounds are not among them
    assert info["samples_per_sec"] == pytest.approx(4 / 0.02)
    assert info["samples_per_sec"] == 4 / bm["stats"]["median"]


@pytest.mark.slow
def test_compare_fail_catches_a_slowdown_and_passes_an_unchanged_run(pytester, monkeypatch):
    _setup(pytester)
    storage = f"--benchmark-storage=file://{pytester.path / 'bm'}"
    timer = "--benchmark-timer=sleepy_model.fake_clock"  # exact step times: no wall-clock dependence
    monkeypatch.setenv("BENCH_TEST_FAKE_CLOCK", "1")
    monkeypatch.setenv("BENCH_TEST_STEP_SECONDS", "0.01")
    pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", storage, timer, "--benchmark-save=base"
    ).assert_outcomes(passed=1)
    gate = (
        "-p",
        "no:cacheprovider",
        storage,
        timer,
        "--benchmark-compare=0001",
        "--benchmark-compare-fail=median:40%",
    )
    monkeypatch.setenv("BENCH_TEST_STEP_SECONDS", "0.025")  # 2.5x slower
    slow = pytester.runpytest_subprocess(*gate)
    assert slow.ret != 0
    assert "Performance has regressed" in slow.stdout.str() + slow.stderr.str()
    monkeypatch.setenv("BENCH_TEST_STEP_SECONDS", "0.01")
    same = pytester.runpytest_subprocess(*gate)
    assert same.ret == 0, same.stdout.str()[-2000:]


GATED = """
def test_sleepy_step(bench_model):
    bench_model("sleepy_model:build", batch_size=4, warmup=1, rounds=4, steps_per_round=3, repeat=3, device="cpu")
"""


@pytest.mark.slow
def test_repeats_land_in_extra_info(pytester, monkeypatch):
    shutil.copy(HERE / "sleepy_model.py", pytester.path / "sleepy_model.py")
    pytester.makepyfile(test_inner=GATED)
    monkeypatch.setenv("BENCH_TEST_STEP_SECONDS", "0.002")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark-json=base.json").assert_outcomes(
        passed=1
    )
    (bm,) = json.loads((pytester.path / "base.json").read_text())["benchmarks"]
    assert len(bm["extra_info"]["repeat_samples_per_sec"]) == 3
    assert bm["stats"]["rounds"] == 4 and bm["stats"]["iterations"] == 3


class _FakeBenchmark:
    name = "test_step"
    extra_info: dict = {}


def _gate(saved_values, current_values, threshold="10%"):
    import pytest as _pytest

    from bench.jobs.plugin import ModelStepRunner, StepBenchmark

    saved = {"benchmarks": [{"name": "test_step", "extra_info": {"repeat_samples_per_sec": saved_values}}]}
    runner = ModelStepRunner(_FakeBenchmark(), "cpu", saved, threshold)
    result = StepBenchmark("m", 4, "train", "fp32", "cpu", 0.01, current_values[0], tuple(current_values))
    try:
        runner._check_gate(result)
    except _pytest.fail.Exception as exc:
        return str(exc)
    return None


def test_the_bench_gate_fails_a_regression_and_passes_noise():
    """--bench-gate on synthetic repeat values (no timing): bench compare's rule."""
    import warnings

    assert "REGRESSION" in _gate([100.0, 101.0, 99.0], [70.0, 71.0, 69.5])
    assert _gate([100.0, 101.0, 99.0], [100.5, 99.0, 100.0]) is None
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert _gate([100.0, 150.0, 60.0], [80.0, 130.0, 50.0]) is None  # noise wider than 10%
    assert any("INCONCLUSIVE" in str(w.message) for w in seen)


def test_the_bench_gate_does_not_pass_a_wide_interval_as_within_threshold():
    """Issue 21: -8.7% with an interval reaching -15% is INCONCLUSIVE (a warning), not a silent pass."""
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert _gate([100.0, 103.0, 97.0], [92.0, 94.0, 88.0]) is None
    assert any("INCONCLUSIVE" in str(w.message) and "-8.7%" in str(w.message) for w in seen)  # geometric
