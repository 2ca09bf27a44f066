"""CI runs the tests that used to skip there (issue 23 item 12): .ci/run installs Chromium when it
is missing and apt is there, and installs bench the README's way."""

from pathlib import Path

CI = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()


def test_ci_installs_chromium_when_missing():
    assert "command -v chromium" in CI and "apt-get install -y -qq chromium" in CI


def test_ci_runs_the_readme_test_command_after_installing():
    assert CI.index("apt-get install") < CI.index("python -m pytest -q")
    assert "editable_mode=compat" in CI
