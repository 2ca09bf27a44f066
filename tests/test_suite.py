import os
from pathlib import Path

import pytest

from bench.jobs.profile_run import Manifest, fingerprint, powers_of_two_up_to, run_profile
from bench.jobs.profiles import parse_profile

TINY = {
    "models": ["tests.tiny_models:tiny_cnn"],
    "precisions": ["fp32", "bf16"],
    "device": "cpu",
    "image_size": 8,
    "batch_sizes": [1, 2],
    "measure": {"warmup": 1, "min_steps": 3, "max_time": 0.2, "min_time": 0.0, "isolate": False},
}


def test_powers_of_two_up_to():
    assert powers_of_two_up_to(1) == (1,)
    assert powers_of_two_up_to(8) == (1, 2, 4, 8)
    assert powers_of_two_up_to(100) == (1, 2, 4, 8, 16, 32, 64, 100)


@pytest.mark.slow
def test_profile_runs_every_cell_then_resume_skips(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prof = parse_profile(TINY, "tiny.toml", "tiny")
    states = []
    suite = run_profile(prof, on_cell=lambda i, n, e, s: states.append((i, s)), manifest_dir=tmp_path / "m")
    assert [c.skipped for c in suite.cells] == [False, False]
    assert all(Path(c.sweep_path).is_file() for c in suite.cells)
    assert [len(c.sweep.points) for c in suite.cells] == [2, 2]
    assert states == [(0, "start"), (0, "done"), (1, "start"), (1, "done")]

    from rich.console import Console

    from bench.jobs.profile_run import finish_profile
    from bench.results.store import list_runs

    finish_profile(
        suite,
        db_path=tmp_path / "h.db",
        report_dir=tmp_path / "rep",
        console=Console(file=open(os.devnull, "w")),
    )
    assert len(list_runs(tmp_path / "h.db")) == 2  # every run is in the history
    html = (tmp_path / "rep" / "index.html").read_text()
    assert suite.report_paths == [str(tmp_path / "rep" / "index.html"), str(tmp_path / "rep" / "report.md")]
    for cell in suite.cells:  # one recommendation row and one points table per cell, labelled by precision
        best = cell.sweep.best_point()
        assert f'data-run="{cell.sweep.workload.precision}"' in html
        assert f"{best.samples_per_sec:,.1f}" in html
    assert 'id="plot-throughput"' in html and (tmp_path / "rep" / "throughput.png").is_file()

    again = run_profile(prof, resume=True, manifest_dir=tmp_path / "m")
    assert [c.skipped for c in again.cells] == [True, True]
    assert [c.sweep_path for c in again.cells] == [c.sweep_path for c in suite.cells]


@pytest.mark.slow
def test_resume_reruns_what_changed_or_is_incomplete(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prof = parse_profile({**TINY, "precisions": ["fp32"]}, "tiny.toml", "tiny")
    first = run_profile(prof, manifest_dir=tmp_path / "m")
    # a different configuration (image size) is not the same measurement
    changed = parse_profile({**TINY, "precisions": ["fp32"], "image_size": 12}, "tiny.toml", "tiny")
    assert run_profile(changed, resume=True, manifest_dir=tmp_path / "m").cells[0].skipped is False
    # an interrupted result file is measured again
    path = Path(first.cells[0].sweep_path)
    path.write_text(path.read_text().replace('"status": "complete"', '"status": "interrupted"'))
    assert run_profile(prof, resume=True, manifest_dir=tmp_path / "m").cells[0].skipped is False


def test_fingerprint_depends_on_environment(tmp_path):
    from dataclasses import replace

    from bench.hw import env

    prof = parse_profile(TINY, "tiny.toml", "tiny")
    e = env.collect()
    a = fingerprint(prof.entries[0], e)
    assert a == fingerprint(prof.entries[0], e)
    assert a != fingerprint(prof.entries[0], replace(e, torch_version="0.0"))
    assert a != fingerprint(prof.entries[1], e)
    m = Manifest("x", tmp_path)
    assert m.done(a) is None


@pytest.mark.slow
def test_profile_with_trace_and_default_report_dir(tmp_path, monkeypatch):
    """`trace = true` records a PyTorch profiler trace of each cell's best batch, linked from the
    report, which goes to the profile's own `report` folder when none is given."""
    monkeypatch.chdir(tmp_path)
    from rich.console import Console

    from bench.jobs.profile_run import finish_profile

    prof = parse_profile(
        {**TINY, "precisions": ["fp32"], "trace": True, "report": "out/rep"}, "tiny.toml", "tiny"
    )
    states = []
    suite = run_profile(prof, on_cell=lambda i, n, e, s: states.append(s), manifest_dir=tmp_path / "m")
    assert states == ["start", "trace", "done"]
    (cell,) = suite.cells
    assert (Path(cell.trace_dir) / "pytorch" / "rank0.pt.trace.json.gz").is_file()
    ops_md = (Path(cell.trace_dir) / "ops.md").read_text()
    assert f"batch {cell.sweep.best_point().batch_size}" in ops_md
    assert "% of step" in ops_md  # shares of the measured step, as `bench trace` writes it: one writer
    import json

    doc = json.loads((Path(cell.trace_dir) / "ops.json").read_text())
    assert doc["measured_steps"] >= 1 and doc["step_seconds"] > 0 and doc["operators"]
    finish_profile(
        suite, db_path=tmp_path / "h.db", report_dir=None, console=Console(file=open(os.devnull, "w"))
    )
    md = (tmp_path / "out" / "rep" / "report.md").read_text()
    assert "trace of the best batch: [../../bench_results/tiny/traces/" in md


TINY_TOML = """
# tiny: two precisions of a tiny CNN, for the end-to-end test.
description = "tiny end-to-end profile"
models = ["tests.tiny_models:tiny_cnn"]
precisions = ["fp32", "bf16"]
device = "cpu"
image_size = 8
batch_sizes = [1, 2]
report = "reports/tiny"

[measure]
warmup = 1
min_steps = 3
max_time = 0.2
min_time = 0.0
isolate = false
"""


@pytest.mark.slow
def test_bench_run_end_to_end_history_report_and_resume(tmp_path, monkeypatch, capsys):
    """`bench run FILE` as a user runs it: history rows, the profile's report, then --resume."""
    from bench.cli import main
    from bench.results.store import list_runs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    assert main(["run", "tiny.toml"]) == 0
    out = capsys.readouterr().out
    assert "recommendations" in out and "reports/tiny/index.html" in out
    assert len(list_runs(tmp_path / ".bench" / "results.db")) == 2
    assert (tmp_path / "reports" / "tiny" / "report.md").is_file()
    copies = sorted(p.name for p in (tmp_path / "reports" / "tiny" / "results").iterdir())
    assert copies == [
        "tests.tiny_models_tiny_cnn_train_bf16.json",
        "tests.tiny_models_tiny_cnn_train_fp32.json",
    ]
    assert main(["run", "tiny.toml", "--resume", "--out", "again"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("skip (already measured)") == 2
    assert len(list_runs(tmp_path / ".bench" / "results.db")) == 2  # nothing re-measured, nothing re-stored
    assert "fp32" in (tmp_path / "again" / "index.html").read_text()  # the report covers resumed cells
    assert main(["run", "missing.toml"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.slow
def test_finished_cells_reach_the_history_even_when_a_later_cell_fails(tmp_path, monkeypatch):
    """Each cell is stored as it finishes: trouble in the next one (here a model that breaks at
    every size, interrupted as it starts) loses nothing already measured."""
    from bench.results.store import list_runs

    monkeypatch.chdir(tmp_path)
    prof = parse_profile(
        {
            **TINY,
            "models": ["tests.tiny_models:tiny_cnn", "tests.tiny_models:fails_in_training"],
            "precisions": ["fp32"],
        },
        "tiny.toml",
        "tiny",
    )
    db = tmp_path / "h.db"
    calls = []

    def on_cell(i, n, entry, state):
        calls.append((i, state))
        if (i, state) == (1, "start"):
            raise KeyboardInterrupt  # Ctrl-C as the second configuration starts

    import pytest

    with pytest.raises(KeyboardInterrupt):
        run_profile(prof, on_cell=on_cell, manifest_dir=tmp_path / "m", db_path=db)
    rows = list_runs(db)
    assert [r.model for r in rows] == ["tests.tiny_models:tiny_cnn"]
    again = run_profile(prof, resume=True, manifest_dir=tmp_path / "m", db_path=db)
    assert [c.skipped for c in again.cells] == [True, False]
    assert len(list_runs(db)) == 2  # the resumed cell is not stored twice; the new one is added


@pytest.mark.slow
def test_inference_cells_sweep_up_to_their_training_twins_max(tmp_path, monkeypatch):
    """batch_sizes = "max" with train and infer: the search runs for the train cell only, and the
    infer cell of the same model/precision sweeps up to that searched safe max too."""
    import bench.jobs.profile_run as suite_mod
    from tests.test_recommend import max_result

    monkeypatch.chdir(tmp_path)
    searched = []

    def fake_search(entry, out_path):  # the search itself is tested elsewhere; here only its use
        searched.append(entry.workload.mode)
        result = max_result(safe=4, mx=5)  # the fields the recommendation reads
        result.to_dict = lambda: {
            "kind": "max_batch",
            "schema_version": 1,
            "safe_batch_size": 4,
            "max_batch_size": 5,
        }
        return result, None

    monkeypatch.setattr(suite_mod, "_search_max_batch", fake_search)
    prof = parse_profile(
        {
            **TINY,
            "precisions": ["fp32"],
            "modes": ["train", "infer"],
            "max_batch": True,
            "batch_sizes": "max",
        },
        "tiny.toml",
        "tiny",
    )
    suite = run_profile(prof, manifest_dir=tmp_path / "m")
    assert searched == ["train"]
    assert [[p.batch_size for p in c.sweep.points] for c in suite.cells] == [[1, 2, 4], [1, 2, 4]]


def test_recommendations_say_what_the_measurements_cannot_support(tmp_path):
    """`bench run`'s recommendation table carries the same caveats as `bench sweep` (issue 15, item
    17): batches the data cannot rank, points that ran out of time."""
    import dataclasses
    import io

    from rich.console import Console

    from bench.jobs.profile_run import CellOutcome, SuiteResult, finish_profile
    from bench.results.codec import load_result
    from bench.results.schema import Recommendation

    data = Path(__file__).parent / "data" / "cpu_resnet18.json"
    rec = Recommendation(best=None, knee=None, safe_max=None, notes=("batches 4, 8 are indistinguishable",))
    sweep = dataclasses.replace(load_result(str(data)), recommendation=rec)
    prof = parse_profile(TINY, "tiny.toml", "tiny")
    suite = SuiteResult(profile=prof, cells=[CellOutcome(label="resnet18 train fp32", sweep_path=None,
                                                          sweep=sweep, stored=True)])  # fmt: skip
    buf = io.StringIO()
    finish_profile(
        suite, db_path=tmp_path / "h.db", report_dir=tmp_path / "r", console=Console(file=buf, width=200)
    )
    assert "note resnet18 train fp32: batches 4, 8 are indistinguishable" in buf.getvalue()
