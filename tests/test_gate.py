"""The regression gate on repeat-level evidence (issue 12): synthetic repeat values, no timing."""

import math
import random
import statistics
from dataclasses import replace
from pathlib import Path

import pytest

from bench.analysis.gate import REGRESSION, WITHIN, compare, noise_floor
from bench.analysis.stats import (
    combine_repeats,
    holm,
    repeat_interval,
    repeats_to_settle,
    t_critical,
    t_two_sided_p,
)
from bench.cli import main
from bench.present.tables import to_markdown
from bench.results.codec import dumps, load_result, result_from_dict, to_dict
from bench.results.schema import MemoryStats, RepeatSample, Telemetry, Timing

DATA = Path(__file__).parent / "data" / "cpu_resnet18.json"


def with_repeats(result, values_for, run_id=None):
    """The reference run with each point's repeats set to ``values_for(batch)`` (samples/s); the
    headline is their median, as a sweep with --repeat writes it."""
    points = []
    for p in result.points:
        values = values_for(p.batch_size)
        reps = tuple(RepeatSample(status="ok", samples_per_sec=v, steps=10) for v in values)
        ordered = sorted(values)
        points.append(
            replace(
                p,
                repeats=reps if len(values) > 1 else (),
                samples_per_sec=ordered[(len(ordered) - 1) // 2]
                if len(values) % 2
                else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2,
            )
        )
    return replace(
        result,
        points=tuple(points),
        settings=replace(result.settings, repeat=max(1, len(values_for(1)))),
        run_id=run_id or result.run_id,
    )


def noisy(level, sd, n=3, seed=0):
    rng = random.Random(seed)
    return lambda b: [100.0 * b * level * math.exp(rng.gauss(0, sd)) for _ in range(n)]


@pytest.fixture
def ref():
    return load_result(str(DATA))


def test_student_t_and_holm():
    assert t_critical(0.05, 4) == pytest.approx(2.776, abs=1e-3)
    assert t_critical(0.05, 30) == pytest.approx(2.042, abs=1e-3)
    assert t_two_sided_p(2.776, 4) == pytest.approx(0.05, abs=1e-3)
    assert t_two_sided_p(0.0, 7) == pytest.approx(1.0)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []


def test_repeats_to_settle_grows_with_noise():
    assert repeats_to_settle(0.01, 0.05) == 2
    assert repeats_to_settle(0.05, 0.05) > repeats_to_settle(0.02, 0.05)
    assert repeats_to_settle(1.0, 0.01) is None


def test_a_real_drop_with_tight_repeats_is_a_regression(ref):
    base = with_repeats(ref, noisy(1.0, 0.01, seed=1))
    cur = with_repeats(ref, noisy(0.8, 0.01, seed=2))
    cmp = compare(base, cur, 0.05)
    assert all(c.verdict == REGRESSION and c.evidence == "repeats" for c in cmp.changes)
    assert all(c.baseline_repeats == 3 and c.p_value < 0.05 for c in cmp.changes)
    assert "Holm" in " ".join(cmp.notes)


def test_a_a_with_run_to_run_noise_is_not_a_regression(ref):
    # a 3% spread between repeats, unchanged build: no alarm at a 10% threshold
    for seed in range(10):
        cmp = compare(
            with_repeats(ref, noisy(1.0, 0.03, seed=seed)),
            with_repeats(ref, noisy(1.0, 0.03, seed=99 + seed)),
            0.10,
        )
        assert cmp.regressions == []


def test_noise_wider_than_the_threshold_is_inconclusive_and_says_how_many_repeats(ref, tmp_path, capsys):
    base = with_repeats(ref, noisy(1.0, 0.15, seed=3))
    cur = with_repeats(ref, noisy(0.97, 0.15, seed=4))
    cmp = compare(base, cur, 0.05)
    assert cmp.regressions == [] and cmp.inconclusive
    c = cmp.inconclusive[0]
    assert c.repeats_needed is None or c.repeats_needed > 3
    assert "repeats per side would settle it" in to_markdown(cmp)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(dumps(base))
    b.write_text(dumps(cur))
    db = ["--db", str(tmp_path / "h.db")]
    assert main(["compare", str(a), str(b), *db]) == 0
    assert "INCONCLUSIVE" in capsys.readouterr().out
    assert main(["compare", str(a), str(b), "--strict", *db]) == 1


def test_small_change_on_tight_repeats_is_within_threshold(ref):
    cmp = compare(
        with_repeats(ref, noisy(1.0, 0.005, seed=5)), with_repeats(ref, noisy(0.98, 0.005, seed=6)), 0.05
    )
    assert {c.verdict for c in cmp.changes} == {WITHIN}


def test_holm_keeps_one_borderline_size_from_failing_the_gate(ref):
    """One batch size of many with a drop just past significance: uncorrected it would fail."""
    drop = {2: 0.86}

    def base(b):
        return [100.0 * b * f for f in (1.0, 1.06, 0.94)]

    def cur(b):
        return [100.0 * b * drop.get(b, 1.0) * f for f in (1.0, 1.06, 0.94)]

    cmp = compare(with_repeats(ref, base), with_repeats(ref, cur), 0.05)
    one = next(c for c in cmp.changes if c.batch_size == 2)
    sd = statistics.stdev(math.log(f) for f in (1.0, 1.06, 0.94))
    raw_p = t_two_sided_p(math.log(0.86) / (sd * math.sqrt(2 / 3)), 4)
    assert raw_p < 0.05  # significant on its own
    assert one.p_value == pytest.approx(min(1.0, raw_p * len(cmp.changes)), rel=0.05)
    assert one.verdict != REGRESSION


def test_one_repeat_without_history_says_the_noise_is_unknown(ref):
    cmp = compare(ref, ref, 0.05)
    assert all(c.evidence == "steps" for c in cmp.changes)
    assert any("between-run noise is UNKNOWN" in n for n in cmp.notes)


def test_one_repeat_uses_the_history_noise_floor(ref):
    history = [with_repeats(ref, noisy(1.0, 0.02, n=1, seed=s), run_id=f"old-{s}") for s in range(6)]
    floor = noise_floor(history, ref, exclude=("old-0",))
    assert set(floor) == {p.batch_size for p in ref.points if p.status == "ok"}
    assert all(f.runs == 5 and f.dof == 4 for f in floor.values())
    cur = with_repeats(ref, noisy(0.75, 0.0, n=1, seed=7))
    base = with_repeats(ref, noisy(1.0, 0.0, n=1, seed=8))
    cmp = compare(base, cur, 0.10, history_noise=floor)
    assert all(c.evidence == "history" and c.verdict == REGRESSION for c in cmp.changes)
    assert any("history's noise floor" in n for n in cmp.notes)
    # a run of another configuration does not count
    other = [replace(h, workload=replace(h.workload, optimizer="adamw")) for h in history]
    assert noise_floor(other, ref) == {}


def test_history_noise_from_the_cli(ref, tmp_path):
    from bench.results.store import save_run

    db = tmp_path / "h.db"
    for s in range(5):
        save_run(db, with_repeats(ref, noisy(1.0, 0.02, n=1, seed=s), run_id=f"old-{s}"))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(dumps(with_repeats(ref, noisy(1.0, 0.0, n=1), run_id="a")))
    b.write_text(dumps(with_repeats(ref, noisy(0.7, 0.0, n=1), run_id="b")))
    assert main(["compare", str(a), str(b), "--db", str(db)]) == 1


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: replace(r, workload=replace(r.workload, optimizer="adamw")), "different optimizer"),
        (lambda r: replace(r, workload=replace(r.workload, seq_len=128)), "different seq_len"),
        (
            lambda r: replace(r, settings=replace(r.settings, warmup_steps=1)),
            "different settings.warmup_steps",
        ),
        (
            lambda r: replace(r, environment=replace(r.environment, torch_version="9.9")),
            "different torch version",
        ),
        (lambda r: replace(r, workload=replace(r.workload, device="cuda:1")), "different device"),
        (
            lambda r: replace(r, workload=replace(r.workload, cudnn_benchmark=False)),
            "different cudnn_benchmark",
        ),
        (
            lambda r: replace(r, workload=replace(r.workload, compile=True, compile_mode="max-autotune")),
            "different compile_mode",
        ),
        (
            lambda r: replace(r, workload=replace(r.workload, data="loader", data_dir="/data/imagenet")),
            "different data_dir",
        ),
    ],
)
def test_unlike_runs_are_refused_unless_allowed(ref, tmp_path, capsys, change, message):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(dumps(ref))
    b.write_text(dumps(change(ref)))
    db = ["--db", str(tmp_path / "h.db")]
    assert main(["compare", str(a), str(b), *db]) == 2
    err = capsys.readouterr().err
    assert "not like with like" in err and message in err
    assert main(["compare", str(a), str(b), "--allow-mismatch", *db]) == 0
    assert message in capsys.readouterr().err


def test_more_repeats_on_one_side_is_still_like_with_like(ref):
    assert compare(ref, with_repeats(ref, noisy(1.0, 0.01))).mismatches == ()


def test_clock_events_in_the_window_warn(ref):
    throttled = replace(
        ref,
        points=tuple(
            replace(p, telemetry=Telemetry(clock_event_reasons=("gpu_idle", "hw_thermal_slowdown")))
            for p in ref.points
        ),
    )
    warnings = compare(ref, throttled).warnings
    assert any("hw_thermal_slowdown" in w and "current run" in w for w in warnings)
    assert not any("gpu_idle" in w for w in warnings)


def test_repeats_round_trip_and_old_files_load(ref):
    rep = with_repeats(ref, noisy(1.0, 0.02))
    again = result_from_dict(to_dict(rep))
    assert again.points[0].repeats == rep.points[0].repeats and again.settings.repeat == 3
    assert ref.points[0].repeats == () and ref.settings.repeat == 1  # written before repeats
    assert ref.points[0].repeat_samples_per_sec() == (ref.points[0].samples_per_sec,)


def test_combine_repeats_headline_is_the_median_repeat(ref):
    p = ref.points[0]
    runs = [
        replace(p, samples_per_sec=v, memory=MemoryStats(host_peak_rss_bytes=m), converged=True,
                timing=Timing(measure_seconds=v / 100, total_seconds=v / 10, spawn_seconds=None))
        for v, m in ((90.0, 5), (110.0, 7), (100.0, 6))
    ]  # fmt: skip
    merged = combine_repeats(runs, dataset_size=1000)
    assert merged.samples_per_sec == 100.0
    # the point's wall time is every repeat's, not the median one's (else the summary line's "other" grows)
    assert merged.timing.total_seconds == pytest.approx(
        30.0
    ) and merged.timing.measure_seconds == pytest.approx(3.0)
    assert merged.timing.spawn_seconds is None
    assert [r.samples_per_sec for r in merged.repeats] == [90.0, 110.0, 100.0]
    assert merged.memory.host_peak_rss_bytes == 7
    assert merged.epoch_seconds_estimate == pytest.approx(10.0)
    assert combine_repeats(runs[:1]) is runs[0]
    lo, hi = repeat_interval([90.0, 110.0, 100.0])
    assert lo < 100 < hi


def test_baseline_set_list_and_compare(ref, tmp_path, capsys):
    db = ["--db", str(tmp_path / "h.db")]
    base, fast, slow = tmp_path / "base.json", tmp_path / "fast.json", tmp_path / "slow.json"
    base.write_text(dumps(with_repeats(ref, noisy(1.0, 0.01, seed=1), run_id="base")))
    fast.write_text(dumps(with_repeats(ref, noisy(1.0, 0.01, seed=2), run_id="same")))
    slow.write_text(dumps(with_repeats(ref, noisy(0.7, 0.01, seed=3), run_id="slow")))
    assert main(["baseline", "set", "main", str(base), *db]) == 0  # a file: imported, then named
    assert "baseline main" in capsys.readouterr().out
    assert main(["baseline", "list", *db]) == 0
    assert "main" in capsys.readouterr().out
    assert main(["compare", "--baseline", "main", str(fast), *db]) == 0
    assert main(["compare", "--baseline", "main", str(slow), *db]) == 1
    assert main(["compare", "--baseline", "nope", str(slow), *db]) == 2
    assert "no baseline named 'nope'" in capsys.readouterr().err
    assert main(["compare", "--baseline", "main", str(slow), str(fast), *db]) == 2
    assert main(["baseline", "frobnicate", *db]) == 2


def test_a_repeated_point_shows_the_interval_between_its_repeats(ref):
    """Issue 12 item 1: with repeats, a point's interval comes from the spread between them (table,
    report, the recommendation's 'indistinguishable'), not from the steps of the median repeat."""
    from bench.analysis.stats import interval_label, throughput_interval

    p = ref.points[0]
    one = replace(p, repeats=())
    lo, hi, source = throughput_interval(one)
    assert source == "steps" and lo < p.samples_per_sec < hi
    # one run: the step times' CI half-width, as the live display showed it while measuring
    assert interval_label(one) == f"±{p.step_stats.rel_ci_half_width:.1%}"
    values = (90.0, 100.0, 110.0)
    rep = replace(
        p, samples_per_sec=100.0, repeats=tuple(RepeatSample("ok", samples_per_sec=v) for v in values)
    )
    lo, hi, source = throughput_interval(rep)
    assert source == "repeats" and (lo, hi) == pytest.approx(repeat_interval(values))
    assert interval_label(rep).endswith("(3 runs)") and interval_label(rep).startswith("±2")  # ~±25%
    # two repeated sizes whose repeat intervals overlap are indistinguishable, whatever their steps say
    from bench.analysis.recommend import confidence

    other = replace(rep, batch_size=p.batch_size * 2, samples_per_sec=104.0,
                    repeats=tuple(RepeatSample("ok", samples_per_sec=v) for v in (95.0, 104.0, 113.0)))  # fmt: skip
    same, _, notes = confidence([rep, other], other)
    assert same == (rep.batch_size, other.batch_size) and "indistinguishable" in notes[0]


def test_a_small_change_with_a_wide_interval_is_not_within_threshold():
    """Issue 21: [100, 103, 97] vs [92, 94, 88] is -8% with a 95% interval of about -15% ... -1.8%:
    a change beyond 10% fits in it, so it must not pass as "within threshold"."""
    from bench.analysis.gate import INCONCLUSIVE, gate_values

    v = gate_values([100, 103, 97], [92, 94, 88], 0.10)
    assert v.ci_low == pytest.approx(-0.15, abs=0.01) and v.ci_high == pytest.approx(-0.018, abs=0.005)
    assert v.verdict == INCONCLUSIVE
    # the change shown is the estimator the test uses: the ratio of geometric means, not of medians
    geo = math.exp(
        statistics.fmean(map(math.log, [92, 94, 88])) - statistics.fmean(map(math.log, [100, 103, 97]))
    )
    assert v.change == pytest.approx(geo - 1)
    assert v.change != pytest.approx(92 / 100 - 1)


def test_within_threshold_only_when_the_interval_lies_inside_it():
    """Issue 21: an idle A/A run printed "within threshold" for -8.7% ... +10.9% at 10%."""
    from bench.analysis.gate import INCONCLUSIVE, _decide

    assert _decide(0.01, False, -0.087, 0.109, 0.10) == INCONCLUSIVE
    assert _decide(0.01, False, -0.087, 0.099, 0.10) == WITHIN
    assert _decide(-0.08, True, -0.15, -0.018, 0.10) == INCONCLUSIVE
    assert _decide(-0.3, True, -0.35, -0.25, 0.10) == REGRESSION


def test_compare_shows_geometric_means_and_their_change(ref):
    base = with_repeats(ref, lambda b: [100.0, 103.0, 97.0])
    cur = with_repeats(ref, lambda b: [92.0, 94.0, 88.0])
    c = compare(base, cur, 0.10).changes[0]
    assert c.baseline_samples_per_sec == pytest.approx((100 * 103 * 97) ** (1 / 3))
    assert c.change == pytest.approx(c.current_samples_per_sec / c.baseline_samples_per_sec - 1)
    assert c.verdict != WITHIN


def test_the_default_threshold_is_the_readmes_10_percent(ref, tmp_path, capsys):
    """Issue 23 item 4: every README example gates at 10%; so does the default."""
    from bench.jobs.compare import compare_runs

    base, cur = tmp_path / "base.json", tmp_path / "cur.json"
    base.write_text(dumps(with_repeats(ref, noisy(1.0, 0.01, seed=1), run_id="base")))
    cur.write_text(dumps(with_repeats(ref, noisy(1.0, 0.01, seed=2), run_id="cur")))
    assert compare(ref, ref).threshold == 0.10
    assert compare_runs([str(base), str(cur)], db=tmp_path / "h.db").threshold == 0.10
    assert main(["compare", str(base), str(cur), "--db", str(tmp_path / "h.db")]) == 0
    assert "threshold 10%" in capsys.readouterr().out


def test_a_run_compared_with_itself_says_so_in_one_line(ref, tmp_path, capsys):
    """Issue 23 item 4: `baseline set main latest` then `compare --baseline main latest` compared a
    run with itself ("+0.0%") without a word, and said the noise was UNKNOWN and then "beyond
    between-run noise"."""
    db = ["--db", str(tmp_path / "h.db")]
    run = tmp_path / "run.json"
    run.write_text(dumps(ref))
    assert main(["import", str(run), *db]) == 0
    assert main(["baseline", "set", "main", "latest", *db]) == 0
    capsys.readouterr()
    assert main(["compare", "--baseline", "main", "latest", *db]) == 0
    out, err = capsys.readouterr()
    same = [line for line in err.splitlines() if "same run" in line]
    assert len(same) == 1 and "compared with itself" in same[0]
    assert "beyond between-run noise" not in out
    assert "between-run noise unknown" in out
    other = compare(ref, with_repeats(ref, noisy(1.0, 0.01, seed=2), run_id="other"))
    assert not any("same run" in w for w in other.warnings)


def test_a_contended_side_is_never_a_regression(ref):
    """Issue 23 item 2: a stored-baseline A/A comparison said REGRESSION (-97.7%) while a
    neighbour shared the cores."""
    from bench.analysis.contention import assess

    base = with_repeats(ref, noisy(1.0, 0.01, seed=1), run_id="base")
    slow = with_repeats(ref, noisy(0.3, 0.01, seed=2), run_id="slow")
    assert all(c.verdict == REGRESSION for c in compare(base, slow, 0.10).changes)
    busy = replace(slow, points=tuple(replace(p, contention=assess(1.0, 2, 2)) for p in slow.points))
    cmp = compare(base, busy, 0.10)
    assert not cmp.regressions and all(c.verdict == "INCONCLUSIVE" for c in cmp.changes)
    assert any("current 50%" in w and "not a verdict" in w for w in cmp.warnings)


def test_an_unbounded_change_interval_is_never_printed_as_inf(ref):
    """Issue 23 item 2: no interval is ever printed as `inf` (two single runs without raw steps)."""
    from rich.console import Console

    from bench.present.tables import to_table

    bare = replace(ref, points=tuple(replace(p, step_seconds=()) for p in ref.points), run_id="bare")
    cmp = compare(bare, replace(bare, run_id="bare2"), 0.10)
    console = Console(width=200, record=True)
    console.print(to_table(cmp))
    text = console.export_text() + to_markdown(cmp)
    assert "inf" not in text and "unknown (no spread recorded)" in text
