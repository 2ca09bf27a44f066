"""`bench ab` (issue 21): the paired test with known answers, the interleaved rounds with a fake side
runner (seeded noise, a known ratio, no processes), the result file, history and report, the CLI."""

from __future__ import annotations

import json
import math
import random

import pytest

from bench.analysis.gate import IMPROVEMENT, INCONCLUSIVE, REGRESSION, WITHIN
from bench.analysis.paired import rounds_to_settle, settle
from bench.cli import main
from bench.jobs.ab import ABSideFailed, SideError, run_ab, side
from bench.results.ab import ERROR, Side, ab_from_dict, load_ab
from bench.results.schema import MeasureSettings, Workload

WORKLOAD = Workload(model="abmodel:build", image_size=32, device="cpu")
SETTINGS = MeasureSettings(warmup_steps=1, min_steps=2, max_time_seconds=0.1, min_time_seconds=0.1)
A, B = Side("A", "/src/base", "/usr/bin/python3"), Side("B", "/src/pr", "/usr/bin/python3")


class FakeSides:
    """Starts fake children that measure nothing: side B runs at ``ratio`` times side A's speed.
    The machine's speed drifts as a random walk shared by both sides (``drift_sd`` per timed
    window, plus a load step to a third of the speed after ``load_after`` windows); each child has
    its own speed (``process_sd``) and each window its own noise (``noise_sd``)."""

    def __init__(
        self, ratio, noise_sd=0.02, drift_sd=0.02, seed=0, fail=None, load_after=None, process_sd=0.0
    ):
        self.ratio, self.noise_sd, self.drift_sd, self.process_sd = ratio, noise_sd, drift_sd, process_sd
        self.rng = random.Random(seed)
        self.level = 1.0
        self.calls: list[str] = []  # a side name per child started
        self.windows: list[str] = []  # a side name per timed window
        self.sessions: list[FakeSession] = []
        self.fail = fail  # (side, on its n-th child)
        self.load_after = load_after

    def __call__(self, s, workload, settings):
        self.calls.append(s.name)
        if self.fail and s.name == self.fail[0] and self.calls.count(s.name) >= self.fail[1]:
            raise SideError("ImportError: No module named 'abmodel'")
        session = FakeSession(self, s.name, math.exp(self.rng.gauss(0, self.process_sd)))
        self.sessions.append(session)
        return session


class FakeSession:
    def __init__(self, machine, name, speed):
        self.machine, self.name, self.speed = machine, name, speed
        self.prepared, self.state = None, "running"

    def prepare(self, b):
        self.prepared = b

    def window(self, b):
        m = self.machine
        assert self.prepared == b and self.state == "running"
        m.windows.append(self.name)
        m.level *= math.exp(m.rng.gauss(0, m.drift_sd))
        if m.load_after is not None and len(m.windows) == m.load_after:
            m.level /= 3
        f = m.ratio if self.name == "B" else 1.0
        return 100.0 * b * m.level * f * self.speed * math.exp(m.rng.gauss(0, m.noise_sd)), 0.1, (0.05, 0.05)

    def close(self):
        self.state = "closed"
        return "2.14.1"

    def kill(self):
        if self.state == "running":
            self.state = "killed"


class FakeClock:
    def __init__(self, per_call=0.0):
        self.t, self.per_call = 0.0, per_call

    def __call__(self):
        self.t += self.per_call
        return self.t


def ab(runner, threshold=0.05, **kw):
    kw.setdefault("seed", 7)
    kw.setdefault("clock", FakeClock())
    return run_ab(WORKLOAD, (8, 32), A, B, threshold=threshold, settings=SETTINGS, runner=runner, **kw)


# ------------------------------------------------------------------ the paired test, known answers


def test_a_steady_ten_percent_slowdown_is_a_regression_at_five_percent():
    pairs = {8: [(100.0, 90.0 * f) for f in (1.0, 1.01, 0.99, 1.005, 0.995)]}
    (v,) = settle(pairs, 0.05, min_rounds=5)
    assert v.verdict == REGRESSION and v.ci_high < -0.05
    assert v.change == pytest.approx(
        math.exp(sum(math.log(0.9 * f) for f in (1.0, 1.01, 0.99, 1.005, 0.995)) / 5) - 1
    )
    assert v.confidence == pytest.approx(0.95)


def test_within_threshold_needs_the_interval_inside_it():
    tight = {8: [(100.0, 100.0 * f) for f in (1.0, 1.01, 0.99, 1.005, 0.995)]}
    assert settle(tight, 0.05)[0].verdict == WITHIN
    wide = {8: [(100.0, 100.0 * f) for f in (1.0, 1.10, 0.91, 1.08, 0.93)]}
    v = settle(wide, 0.05)[0]
    assert v.verdict == INCONCLUSIVE and v.ci_low < -0.05 and v.ci_high > 0.05
    assert v.rounds_needed is not None and v.rounds_needed > 5


def test_a_significant_change_that_straddles_the_threshold_is_not_settled():
    # -5% +- a little at a 5% threshold: significant, but it could be either side of the bound
    v = settle({8: [(100.0, 95.0 * f) for f in (1.0, 1.02, 0.98, 1.01, 0.99)]}, 0.05)[0]
    assert v.verdict == INCONCLUSIVE and v.ci_low < -0.05 < v.ci_high < 0


def test_improvement_and_too_few_rounds():
    up = {8: [(100.0, 130.0 * f) for f in (1.0, 1.01, 0.99, 1.005, 0.995)]}
    assert settle(up, 0.05)[0].verdict == IMPROVEMENT
    assert settle(up, 0.05, min_rounds=6)[0].verdict == INCONCLUSIVE  # no verdict before min rounds


def test_holm_levels_across_batch_sizes():
    rows = [(100.0, 90.0 * f) for f in (1.0, 1.01, 0.99, 1.005, 0.995)]
    v8, v32 = settle({8: rows, 32: [(a, b * 0.999) for a, b in rows]}, 0.05)
    assert sorted([v8.confidence, v32.confidence]) == pytest.approx([0.95, 0.975])
    assert {v8.verdict, v32.verdict} == {REGRESSION}


def test_rounds_to_settle():
    assert rounds_to_settle(0.05, 0.05, 0.05, 2) == 7  # 2.447 / sqrt(7) < 1 < 2.571 / sqrt(6)
    assert rounds_to_settle(0.05, 0.0, 0.05, 2) is None


# ------------------------------------------------------------------ interleaved rounds, fake sides


def test_ten_percent_slower_settles_to_regression(tmp_path):
    result = ab(FakeSides(0.90, seed=1, load_after=5), out_path=tmp_path / "ab.json")
    assert result.stopped == "settled" and result.status == "complete"
    assert {v.verdict for v in result.verdicts} == {REGRESSION}
    assert all(v.change == pytest.approx(-0.10, abs=0.03) for v in result.verdicts)
    assert len(result.rounds) >= 5  # the minimum before any verdict
    assert load_ab(tmp_path / "ab.json") == result  # every round of both sides, in the file


def test_a_a_settles_within_threshold_despite_a_load_step():
    # the machine drops to a third of its speed between rounds 3 and 4: a stored baseline from
    # before would call that a 67% regression; the paired ratios do not see it
    result = ab(FakeSides(1.0, seed=2, load_after=7))
    assert result.stopped == "settled"
    assert {v.verdict for v in result.verdicts} == {WITHIN}


def test_huge_noise_stops_inconclusive_at_max_rounds_with_an_estimate():
    result = ab(FakeSides(0.95, noise_sd=0.3, seed=3), max_rounds=8)
    assert result.stopped == "max rounds" and len(result.rounds) == 8
    assert {v.verdict for v in result.verdicts} == {INCONCLUSIVE}
    assert all(v.rounds_needed is None or v.rounds_needed > 8 for v in result.verdicts)
    assert any(v.rounds_needed for v in result.verdicts)


def test_max_time_stops_before_a_round_that_would_not_fit():
    result = ab(FakeSides(0.95, noise_sd=0.3, seed=3), max_time_seconds=100, clock=FakeClock(per_call=9.0))
    assert result.stopped == "max time" and len(result.rounds) < 40


def test_the_order_is_random_seeded_and_recorded():
    runner = FakeSides(1.0, seed=4)
    result = ab(runner, seed=11, max_rounds=12, min_rounds=12)
    orders = [r.order for r in result.rounds]
    assert set(orders) == {("A", "B"), ("B", "A")}  # both orders happen
    assert runner.calls == [s for o in orders for s in o]  # the sides ran in the recorded order
    assert result.seed == 11
    again = ab(FakeSides(1.0, seed=4), seed=11, max_rounds=12, min_rounds=12)
    assert [r.order for r in again.rounds] == orders


def test_the_children_take_turns_window_by_window_in_recorded_orders():
    runner = FakeSides(1.0, seed=4)
    result = ab(runner, seed=11, max_rounds=6, min_rounds=6, windows=4)
    assert result.windows == 4 and result.alternate
    for r in result.rounds:
        assert len(r.window_orders) == 4 * 2  # four pairs per batch size, two sizes
        assert r.window_orders[0] == "".join(r.order)  # the first pair goes in the round's order
        assert all(len(r.run(s).points[0].windows) == 4 for s in "AB")
    ran = [s for r in result.rounds for pair in r.window_orders for s in pair]
    assert runner.windows == ran  # the windows ran in the recorded orders
    assert {p for r in result.rounds for p in r.window_orders} == {"AB", "BA"}
    assert all(x.state == "closed" for x in runner.sessions)  # every child ended, none left running


def test_a_round_side_point_is_the_geometric_mean_of_its_windows():
    from bench.jobs.ab import side_point

    p = side_point(8, [(100.0, 0.2, (0.1,)), (400.0, 0.2, (0.1, 0.1))])
    assert p.samples_per_sec == pytest.approx(200.0)
    assert p.windows == (100.0, 400.0) and p.window_seconds == pytest.approx(0.4) and len(p.step_seconds) == 3
    with pytest.raises(SideError, match="batch 8: a window timed no steps"):
        side_point(8, [(0.0, 0.2, ())])


def test_alternating_windows_beat_a_drift_that_sequential_children_do_not():
    """The machine's speed wanders by 6% from one window to the next (a random walk) and every
    child is 3% faster or slower than the next: A/A alternating settles within 5%; the same
    machine with the round's children one after the other cannot (its pairs sit ten windows apart)."""
    machine = dict(drift_sd=0.06, noise_sd=0.01, process_sd=0.03)
    alternating = ab(FakeSides(1.0, seed=9, **machine), max_rounds=40)
    assert {v.verdict for v in alternating.verdicts} == {WITHIN}
    apart = ab(FakeSides(1.0, seed=9, **machine), max_rounds=40, alternate=False)
    assert not apart.alternate and {r.window_orders[0] for r in apart.rounds} <= {"AB", "BA"}
    assert INCONCLUSIVE in {v.verdict for v in apart.verdicts}
    assert max(v.log_ratio_sd for v in apart.verdicts) > 2 * max(v.log_ratio_sd for v in alternating.verdicts)


def test_a_side_failing_mid_round_stops_the_other_child(tmp_path):
    runner = FakeSides(1.0, seed=5, fail=("B", 2))
    with pytest.raises(ABSideFailed, match="failed in round 2"):
        ab(runner, out_path=tmp_path / "ab.json")
    assert [x.state for x in runner.sessions[-1:]] == ["killed"]  # round 2's side A, alive when B failed


def test_a_failing_side_keeps_the_measured_rounds(tmp_path):
    out = tmp_path / "ab.json"
    with pytest.raises(
        ABSideFailed, match=r"side B \(/src/pr, /usr/bin/python3\) failed in round 3: ImportError"
    ) as info:
        ab(FakeSides(1.0, seed=5, fail=("B", 3)), out_path=out)
    partial = info.value.partial_result
    assert partial.status == "failed" and len(partial.rounds) == 3
    assert sum(r.complete for r in partial.rounds) == 2
    assert load_ab(out).rounds == partial.rounds


def test_bad_sides_are_one_line_naming_the_side(tmp_path):
    from bench.results.errors import BenchError

    with pytest.raises(BenchError, match="side B: --b-python /no/such/python: no such executable"):
        side("B", None, "/no/such/python")
    with pytest.raises(BenchError, match="side A: --a .*: no such directory"):
        side("A", tmp_path / "missing")


def test_history_and_report_show_both_sides(tmp_path):
    from bench.jobs.report import write_report
    from bench.present.ab import ab_markdown
    from bench.present.report import load_runs
    from bench.results.store import import_file, list_runs

    out = tmp_path / "ab.json"
    result = ab(FakeSides(0.90, seed=1), out_path=out)
    db = tmp_path / "h.db"
    import_file(db, str(out))
    (row,) = list_runs(db)
    assert row.kind == "ab" and row.model == "abmodel:build"
    runs = load_runs([str(row.id)], db)
    assert [r.label[:3] for r in runs] == ["A (", "B ("]
    a_point = runs[0].result.points[0]
    assert len(a_point.repeats) == len(result.rounds)  # every round of the side
    files = write_report(runs, tmp_path / "report")
    assert "throughput" in files.plots
    md = ab_markdown(result)
    assert "REGRESSION" in md and f"seed {result.seed}" in md and "| 8 |" in md


def test_malformed_ab_file_is_one_line(tmp_path):
    from bench.results.errors import BenchError

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 1, "kind": "ab", "rounds": [{"order": "AB"}]}))
    with pytest.raises(BenchError, match="bad.json"):
        load_ab(bad)
    with pytest.raises(BenchError, match="expected an ab result"):
        ab_from_dict({"schema_version": 1, "kind": "sweep"})


# ------------------------------------------------------------------ the command


@pytest.fixture
def fake_children(monkeypatch):
    """The command with a fake side runner in place of child processes."""
    made = {}

    def factory(shim=None, timeout_seconds=None):
        made["runner"] = FakeSides(made.get("ratio", 1.0), seed=6)
        return made["runner"]

    monkeypatch.setattr("bench.jobs.ab.ChildSides", factory)
    return made


def test_cli_regression_exits_1_and_prints_a_pull_request_comment(tmp_path, fake_children, capsys):
    fake_children["ratio"] = 0.85
    a, b = tmp_path / "base", tmp_path / "pr"
    a.mkdir(), b.mkdir()
    args = ["ab", "abmodel:build", "-b", "8", "--a", str(a), "--b", str(b), "--threshold", "5%"]
    code = main([*args, "--markdown", "-o", str(tmp_path / "ab.json"), "--seed", "3"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("### bench ab") and "REGRESSION" in out and str(b) in out
    assert load_ab(tmp_path / "ab.json").seed == 3
    assert main(["history"]) == 0 and " ab " in capsys.readouterr().out


def test_cli_a_a_exits_0(tmp_path, fake_children, capsys):
    args = ["ab", "abmodel:build", "-b", "8,32", "--threshold", "5%", "--seed", "3"]
    code = main([*args, "-o", str(tmp_path / "ab.json")])
    assert code == 0
    assert "within threshold" in capsys.readouterr().out


def test_cli_inconclusive_exits_0_or_1_with_strict(tmp_path, fake_children, capsys):
    args = ["ab", "abmodel:build", "-b", "8", "--threshold", "0.2%", "--max-rounds", "5", "--seed", "3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "INCONCLUSIVE" in out and "rounds would settle it" in out and "threshold 0.2%" in out
    assert main([*args, "--strict"]) == 1


def test_cli_missing_interpreter_is_one_error_line(tmp_path, capsys):
    code = main(["ab", "abmodel:build", "-b", "8", "--b-python", str(tmp_path / "nope" / "python")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "side B" in err


BROKEN = "raise ImportError('this build does not import')\n"
GOOD = """
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
"""


@pytest.mark.slow
def test_cli_real_children_a_broken_side_b_is_one_error_line_with_rounds_kept(tmp_path, capsys):
    """Real child processes: side B's directory shadows the model with a module that raises."""
    a, b = tmp_path / "base", tmp_path / "pr"
    a.mkdir(), b.mkdir()
    (a / "abmodel.py").write_text(GOOD)
    (b / "abmodel.py").write_text(BROKEN)
    out = tmp_path / "ab.json"
    # seed 1 puts A first in round 1
    assert random.Random(1).sample(("A", "B"), 2) == ["A", "B"]
    args = ["ab", "abmodel:build", "-b", "2", "--a", str(a), "--b", str(b), "--image-size", "8"]
    code = main([*args, "--window", "0.05", "--warmup", "1", "--seed", "1", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("error:") == 1 and "side B" in err and "this build does not import" in err
    kept = load_ab(out)
    assert kept.status == "failed" and kept.rounds[0].run("B").status == ERROR
    assert "this build does not import" in kept.rounds[0].run("B").error


@pytest.mark.slow
def test_a_hung_child_is_killed_at_its_timeout():
    """A side whose child never finishes fails; it does not hang the comparison (no torch needed)."""
    import time

    from bench.jobs.isolate import run_isolated

    start = time.monotonic()
    outcome = run_isolated("tests.fault_targets:report_pid_then_sleep", (60.0,), timeout_seconds=1.0)
    assert outcome.status == "died" and "still running after 1 s" in outcome.message
    assert time.monotonic() - start < 30


def test_a_side_runs_with_its_directory_first_and_its_interpreter(tmp_path):
    """The child's environment: the side's directory first on PYTHONPATH and its working directory,
    this process's sys.path not handed over (it would shadow the side's modules)."""
    from bench.jobs.ab import ChildSides

    s = side("B", tmp_path)
    where = ChildSides("/tmp/shim").interpreter(s)
    assert where.env["PYTHONPATH"].split(":")[:2] == [str(tmp_path.resolve()), "/tmp/shim"]
    assert where.cwd == str(tmp_path.resolve()) and where.inherit_path is False
    assert where.python == s.python


def test_a_child_session_answers_requests_and_fails_in_one_line():
    """The process a side runs in: requests down its pipe, replies back; a failure is one line."""
    import time

    from bench.jobs.isolate import ChildFailed, ChildSession

    s = ChildSession("tests.fault_targets:doubler", (0,))
    assert s.ask(3) == 6 and s.ask(5) == 10
    assert s.close() == 2 and s.proc.returncode == 0
    bad = ChildSession("tests.fault_targets:doubler", (0,))
    with pytest.raises(ChildFailed, match="ValueError: asked to fail"):
        bad.ask("raise")
    hung = ChildSession("tests.fault_targets:doubler", (0,), deadline=time.monotonic() + 2)
    start = time.monotonic()
    with pytest.raises(ChildFailed, match="still busy at the comparison's deadline"):
        hung.ask("hang")
    assert hung.proc.poll() is not None and time.monotonic() - start < 30  # killed, not waited for


def test_a_side_child_times_windows_of_a_warm_model():
    """``bench.measure.windows.serve`` in this process, on the CPU, with a tiny model."""
    from bench.measure.windows import serve

    requests = iter([("prepare", 2), ("window", 2), ("window", 2), ("prepare", 4), ("window", 4), None])
    replies = []
    settings = MeasureSettings(warmup_steps=1, min_steps=3, max_time_seconds=0.01, min_time_seconds=0.01)
    workload = Workload(model="tests.tiny_models:tiny_cnn", image_size=8, device="cpu")
    from bench.results.codec import to_dict

    value = serve(to_dict(workload), to_dict(settings), emit=replies.append, receive=lambda: next(requests))
    assert [r[0] for r in replies] == ["prepared", "window", "window", "prepared", "window"]
    kind, b, sps, seconds, steps = replies[-1]
    assert b == 4 and len(steps) >= 3 and sps == pytest.approx(4 * len(steps) / seconds)
    assert value["torch_version"]
    with pytest.raises(Exception, match="bad request"):
        serve(to_dict(workload), to_dict(settings), emit=replies.append, receive=lambda: ("window", 2))
