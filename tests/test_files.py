"""bench.results.files: the one atomic writer (mode, fsync, no temp file left) and the one slug."""

from __future__ import annotations

import ast
import gzip
import json
import os
from pathlib import Path

import pytest

from bench.results import files

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_written_file_gets_open_s_mode_under_the_umask(tmp_path, umask_022):
    files.write_atomic(tmp_path / "a.json", "{}")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    os.umask(0o077)
    files.write_atomic(tmp_path / "b.json", "{}")
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    files.write_atomic(tmp_path / "run.sh", "#!/bin/sh\n", mode=0o755)
    assert (tmp_path / "run.sh").stat().st_mode & 0o777 == 0o755


def test_the_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    order: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (order.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append("replace"), real_replace(a, b))[1])
    files.write_atomic(tmp_path / "a.json", "[1, 2]")
    assert order == ["fsync", "replace"]
    assert json.loads((tmp_path / "a.json").read_text(encoding="utf-8")) == [1, 2]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    target = tmp_path / "a.json"
    files.write_atomic(target, '{"old": true}')

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        files.write_atomic(target, '{"new": true}')
    assert json.loads(target.read_text(encoding="utf-8")) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_an_exception_while_streaming_leaves_no_file(tmp_path):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    with pytest.raises(RuntimeError), files.atomic_file(tmp_path / "t.json.gz") as raw:
        with gzip.open(raw, "wt", encoding="utf-8") as fh:
            fh.write("{")
        raise RuntimeError("the trace export failed")
    assert list(tmp_path.iterdir()) == []


def test_a_streamed_gzip_reads_back(tmp_path):
    with files.atomic_file(tmp_path / "t.json.gz") as raw, gzip.open(raw, "wt", encoding="utf-8") as fh:
        json.dump({"traceEvents": []}, fh)
    with gzip.open(tmp_path / "t.json.gz", "rt", encoding="utf-8") as fh:
        assert json.load(fh) == {"traceEvents": []}


def test_dump_json_refuses_nan_and_writes_nothing(tmp_path):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    with pytest.raises(ValueError):
        files.dump_json_atomic(tmp_path / "a.json", {"x": float("nan")})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("resnet50", "resnet50"),
        ("timm:vit/b 16", "timm_vit_b_16"),
        ("tests.m:f", "tests.m_f"),
        ("a$$b-c", "a_b-c"),
    ],
)
def test_slug(text, expected):
    assert files.slug(text) == expected


def test_no_other_module_writes_atomically_or_slugs_by_itself():
    """One writer, one slug: no mkstemp + os.replace or slug regex of its own elsewhere in bench/."""
    problems = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        if path == ROOT / "bench" / "results" / "files.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "replace"
                and getattr(node.value, "id", "") == "os"
            ):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: os.replace")
            if isinstance(node, ast.Constant) and node.value == "[^A-Za-z0-9_.-]+":
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: a slug regex")
    assert not problems, "use bench.results.files:\n" + "\n".join(problems)
