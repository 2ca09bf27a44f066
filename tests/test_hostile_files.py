"""Every result file, however malformed, huge or hostile, either loads or is refused in one `error:`
line by every command that reads it (issue 23, item 16). The corpus is generated from the valid CPU
fixture by tests/data/hostile/make_hostile.py (so it follows the schema); in-process, no subprocess."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bench.cli import main

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("make_hostile", HERE / "data" / "hostile" / "make_hostile.py")
make_hostile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_hostile)

MARKUP = "[/x][bold]"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    make_hostile.write_corpus(folder)
    return folder


def _holds(rc: int, err: str, what: str) -> None:
    """Loaded (exit 0, or 1 for a compare verdict) or refused in one `error:` line with exit 2."""
    assert "internal error" not in err and "Traceback" not in err, f"{what}: {err}"
    if rc == 2:
        errors = [line for line in err.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: "), f"{what}: {err}"
    else:
        assert rc in (0, 1), f"{what}: exit {rc}: {err}"


@pytest.mark.parametrize("case", sorted(make_hostile.CASES))
def test_every_reading_command_loads_or_refuses_in_one_line(case, corpus, tmp_path, capsys):
    path, valid, db = corpus / f"{case}.json", corpus / "valid.json", tmp_path / "h.db"
    commands = {
        "import": ["import", str(path), "--db", str(db)],
        "history": ["history", "--db", str(db)],
        "diagnose file": ["diagnose", str(path)],
        "diagnose stored": ["diagnose", "latest", "--db", str(db)],
        "baseline set": ["baseline", "set", "main", str(path), "--db", str(db)],
        "baseline list": ["baseline", "list", "--db", str(db)],
        "report": ["report", str(path), "-o", str(tmp_path / "rep")],
        "compare new": ["compare", str(valid), str(path)],
        "compare old": ["compare", str(path), str(valid)],
    }
    for what, args in commands.items():
        rc = main(args)
        _holds(rc, capsys.readouterr().err, f"{case}: bench {what}")


def test_the_corpus_refuses_what_it_should(corpus, capsys):
    """Not every file may simply load: these are refused (exit 2) by `bench diagnose`."""
    refused = ["deep_nesting", "huge_int", "batch_zero", "batch_negative", "nan_samples_per_sec",
               "inf_samples_per_sec", "negative_samples_per_sec", "median_zero", "unknown_point_status",
               "negative_repeat", "truncated", "not_utf8", "empty", "future_schema"]  # fmt: skip
    for case in refused:
        assert main(["diagnose", str(corpus / f"{case}.json")]) == 2, case
    assert main(["diagnose", str(corpus / "valid.json")]) == 0
    capsys.readouterr()


def test_a_50_mb_result_file_is_refused_at_once(corpus, tmp_path, capsys):
    big = tmp_path / "big.json"
    text = (corpus / "valid.json").read_text()
    big.write_text(text[:-1] + ', "padding": "' + "x" * (50 * 2**20) + '"}')
    for args in (
        ["compare", str(corpus / "valid.json"), str(big)],
        ["import", str(big), "--db", str(tmp_path / "h.db")],
    ):
        rc = main(args)
        err = capsys.readouterr().err
        _holds(rc, err, " ".join(args[:1]))
        assert rc == 2 and "too large" in err


def test_markup_in_names_and_paths_is_printed_as_text(corpus, tmp_path, capsys):
    db = tmp_path / "h[bold].db"  # a path cannot hold "[/x]": a closing tag needs a slash
    assert main(["import", str(corpus / "markup_model_name.json"), "--db", str(db)]) == 0
    assert main(["baseline", "set", f"rel{MARKUP}", "1", "--db", str(db)]) == 0
    assert main(["baseline", "list", "--db", str(db)]) == 0
    assert main(["history", "--db", str(db)]) == 0
    out = capsys.readouterr().out.replace("\n", "")
    assert f"rel{MARKUP}" in out and MARKUP in out and "h[bold].db" in out
    assert main(["diagnose", "²", "--db", str(db)]) == 2  # a digit to str.isdigit, not to int()
    _holds(2, capsys.readouterr().err, "diagnose ²")


def test_markup_in_a_profile_name_and_description_is_printed_as_text(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "p[bold].toml"
    path.write_text(
        f'description = "d{MARKUP}"\nmodels = ["tests.tiny_models:tiny_cnn"]\ndevice = "cpu"\nimage_size = 8\n'
        "batch_sizes = [2]\n[measure]\nwarmup = 1\nmin_steps = 3\nmax_time = 0.2\nmin_time = 0.0\n"
        "isolate = false\n"
    )
    assert main(["run", str(path), "--db", str(tmp_path / "h.db"), "--out", str(tmp_path / "rep")]) == 0
    err = capsys.readouterr().err.replace("\n", "")
    assert "p[bold].toml" in err and f"d{MARKUP}" in err


def test_nothing_to_compare_is_one_line(corpus, capsys):
    for case in ("no_points", "all_failed"):
        assert main(["compare", str(corpus / "valid.json"), str(corpus / f"{case}.json")]) == 2
        err = capsys.readouterr().err
        _holds(2, err, case)
        assert "nothing to compare" in err
