"""bench installs as a package: the shipped profiles travel as package data, found from any directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from bench.jobs.profiles import available_profiles, load_profile, shipped_profiles_dir

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_profiles_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no profiles/ here
    names = {name for name, _ in available_profiles()}
    assert {"quickstart", "ci"} <= names
    assert Path(load_profile("quickstart", device_override="cpu").path).parent == shipped_profiles_dir()


def test_own_profile_by_path(tmp_path, monkeypatch):
    own = tmp_path / "mine.toml"
    own.write_text('description = "mine"\nmodels = ["resnet18"]\ndevice = "cpu"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_profile("mine.toml").name == "mine"
    assert load_profile(str(own)).path == str(own)


def test_every_package_is_listed_in_pyproject():
    """pyproject lists packages by hand (to map profiles/ in); a new bench/ folder must be added there."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "bench").rglob("*")
        if p.is_file() and p.suffix in (".py", ".j2") and "__pycache__" not in p.parts
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"


@pytest.mark.slow
def test_wheel_carries_profiles_templates_and_every_module(tmp_path):
    src = tmp_path / "src"  # build from a copy: no build/ or egg-info in the shared working tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "bench", src / "bench", ignore=ignore)
    shutil.copytree(ROOT / "profiles", src / "profiles", ignore=ignore)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for toml in (ROOT / "profiles").glob("*.toml"):
        assert f"bench/profiles_data/{toml.name}" in names
    assert "bench/present/templates/report.html.j2" in names
    modules = {p.relative_to(src).as_posix() for p in (src / "bench").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
