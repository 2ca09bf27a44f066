import random
from dataclasses import replace
from pathlib import Path

import pytest

from bench.analysis.gate import compare, parse_threshold
from bench.analysis.stats import samples_per_sec, summarize
from bench.cli import main
from bench.present.tables import to_markdown
from bench.results.codec import dumps, load_result
from bench.results.errors import BenchError

DATA = Path(__file__).parent / "data" / "cpu_resnet18.json"


def with_steps(result, make_steps):
    """Same run, with each point's raw steps replaced (and its statistics derived again)."""
    points = []
    for p in result.points:
        steps = tuple(make_steps(p.batch_size))
        window = sum(steps)
        points.append(
            replace(
                p,
                step_seconds=steps,
                window_seconds=window,
                samples_per_sec=samples_per_sec(p.batch_size, len(steps), window),
                step_stats=summarize(steps),
            )
        )
    return replace(result, points=tuple(points))


def steady(scale, spread=0.01, seed=0):
    rng = random.Random(seed)
    return lambda b: [0.01 * b * scale * (1 + rng.gauss(0, spread)) for _ in range(40)]


@pytest.fixture
def base():
    return with_steps(load_result(str(DATA)), steady(1.0, seed=1))


def test_ten_percent_drop_between_single_runs_is_inconclusive_not_a_regression(base):
    """One run a side, no history: the step-level interval excludes zero, but between-run noise
    is unknown (an unchanged build differed by 14% on the shared CPU), so no REGRESSION: the gate
    says INCONCLUSIVE and how to settle it. Repeats turn it into a verdict (tests/test_gate.py)."""
    slower = with_steps(base, steady(1.0 / 0.9, seed=2))  # 10% fewer samples/s
    cmp = compare(base, slower, 0.05)
    assert cmp.regressions == [] and len(cmp.inconclusive) == len(base.points)
    for c in cmp.changes:
        assert c.change == pytest.approx(-0.10, abs=0.01)
        assert c.ci_high < 0 and c.significant and c.evidence == "steps"
    md = to_markdown(cmp)
    assert "INCONCLUSIVE (between-run noise unknown: --repeat 3)" in md and "REGRESSION" not in md
    assert any("between-run noise is UNKNOWN" in n for n in cmp.notes)


def test_change_inside_threshold_is_not(base):
    cmp = compare(base, with_steps(base, steady(1.02, seed=3)), 0.05)
    assert cmp.regressions == []


def test_drop_inside_the_noise_is_not(base):
    # 10% slower on average, but steps alternate between 0.5x and 1.5x: not distinguishable from noise
    def alternating(scale):
        return lambda b: [0.01 * b * scale * (1.5 if i % 2 else 0.5) for i in range(12)]

    noisy = with_steps(base, alternating(1.0 / 0.9))
    noisy_base = with_steps(base, alternating(1.0))
    cmp = compare(noisy_base, noisy, 0.05)
    assert cmp.regressions == []
    assert all(not c.significant for c in cmp.changes)


def test_improvement_is_not_a_regression(base):
    cmp = compare(base, with_steps(base, steady(0.8, seed=6)), 0.05)
    assert cmp.regressions == [] and all(c.change > 0.2 and c.significant for c in cmp.changes)
    assert not any(c.improvement for c in cmp.changes)  # single runs: no verdict either way


def test_different_model_or_hardware_warns(base):
    other = replace(
        base,
        workload=replace(base.workload, model="resnet50"),
        environment=replace(base.environment, cpu_model="Other CPU"),
    )
    warnings = compare(base, other).warnings
    assert any("different models" in w for w in warnings)
    assert any("different hardware" in w for w in warnings)


def test_parse_threshold():
    assert parse_threshold("5%") == pytest.approx(0.05)
    assert parse_threshold("0.1") == pytest.approx(0.1)
    assert parse_threshold("7") == pytest.approx(0.07)
    for bad in ("fast", "0", "150%"):
        with pytest.raises(BenchError):
            parse_threshold(bad)


def test_cli_exit_codes(base, tmp_path, capsys):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(dumps(base))
    b.write_text(dumps(with_steps(base, steady(1.0 / 0.9, seed=7))))
    c.write_text(dumps(with_steps(base, steady(1.01, seed=8))))
    assert main(["compare", str(a), str(b), "--db", str(tmp_path / "db")]) == 0  # single runs: INCONCLUSIVE
    assert main(["compare", str(a), str(b), "--strict", "--db", str(tmp_path / "db")]) == 1
    assert main(["compare", str(a), str(c), "--db", str(tmp_path / "db")]) == 0
    assert main(["compare", str(a), str(c), "--markdown", "--db", str(tmp_path / "db")]) == 0
    assert "| batch |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [
        ("{ not json", "not valid JSON"),
        ('{"schema_version": 1, "kind": "sweep", "poin', "not valid JSON"),
        ('{"hello": "world"}', "not a bench result"),
        ('{"schema_version": 99, "kind": "sweep"}', "newer than this bench"),
        ("[1, 2, 3]", "not a bench result"),
    ],
)
def test_corrupt_truncated_or_foreign_files(content, message, tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(DATA.read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    code = main(["compare", str(good), str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_reference_runs_a_ten_percent_slower_gpu_run_fails_a_strict_gate(capsys):
    """Reference files (tests/data): the same modelled GPU run, then one 10% slower at every batch.
    Single runs: INCONCLUSIVE at every batch, so only --strict fails the gate."""
    data = Path(__file__).parent / "data"
    base, slow = str(data / "gpu_resnet50_fp32.json"), str(data / "gpu_resnet50_fp32_slow10.json")
    assert main(["compare", base, slow, "--strict"]) == 1
    assert main(["compare", base, slow]) == 0
    cmp = compare(load_result(base), load_result(slow), 0.05)
    assert {c.batch_size for c in cmp.inconclusive} == {8, 16, 32, 64, 128, 256}
    assert all(c.change == pytest.approx(-0.10, abs=0.01) for c in cmp.changes)
    assert main(["compare", base, base, "--strict"]) == 0  # a run against itself: nothing


def test_gate_with_nothing_in_common_is_bad_input_not_a_pass(base, tmp_path, capsys):
    """Runs that share no measured batch size compare nothing: exit 2, never a green gate."""
    other = replace(base, points=tuple(replace(p, batch_size=p.batch_size * 1000) for p in base.points))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(dumps(base))
    b.write_text(dumps(other))
    assert main(["compare", str(a), str(b)]) == 2
    assert "nothing to compare" in capsys.readouterr().err


def test_history_since_must_be_a_date(tmp_path, capsys):
    assert main(["history", "--since", "notadate", "--db", str(tmp_path / "h.db")]) == 2
    assert "--since 'notadate' is not a date" in capsys.readouterr().err


def test_the_bootstrap_of_10000_step_points_is_vectorised_not_a_python_loop():
    """Issue 23 item 21: `bench compare` of single runs took 28.8 s at 10,000 steps a point, one
    Python call per resampled step. Counted, not timed: the bootstrap of two 10,000-step points
    makes a few hundred Python-level calls at most (the old loop made 40 million; the hook stops
    it after the budget, so this fails fast before the fix too)."""
    import random
    import sys

    from bench.analysis.gate import bootstrap_ratio_ci

    rng = random.Random(7)
    base = tuple(0.1 + rng.random() * 0.01 for _ in range(10_000))
    cur = tuple(0.1 + rng.random() * 0.01 for _ in range(10_000))
    calls = {"n": 0}
    budget = 5_000

    class TooManyCalls(Exception):
        pass

    def count(frame, event, arg):
        if event in ("call", "c_call"):
            calls["n"] += 1
            if calls["n"] > budget:
                raise TooManyCalls

    bootstrap_ratio_ci((1.0, 2.0), (1.0, 2.0), samples=10)  # imports done before counting
    sys.setprofile(count)
    try:
        lo, hi = bootstrap_ratio_ci(base, cur)
    finally:
        sys.setprofile(None)
    assert calls["n"] <= budget
    assert lo < 1.0 < hi and hi - lo < 0.01  # the same means: an interval around 1, narrow at n=10,000
