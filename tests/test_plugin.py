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
