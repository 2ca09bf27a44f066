"""Every test is hermetic: it runs in its own temp folder, and the results history the CLI uses by
default (``$BENCH_DB``) lives there too, so no test writes ``.bench/``, ``bench_results/``,
``bench_report/`` or ``bench_traces/`` into the repository or the user's history. Subprocesses
inherit both (the environment, and the cwd unless a test names one)."""

from __future__ import annotations

import pytest

from bench.cli.common import DB_ENV


@pytest.fixture(autouse=True)
def _idle_machine(monkeypatch):
    """Sweeps in tests see an idle machine: the meter that watches other processes' CPU use over
    each point (``MeasureSettings.check_contention``) is a fake with no neighbour, so no test
    depends on the load of the machine it runs on. A test that wants a neighbour patches its own
    ``FakeCpuLoad`` over this one."""
    from bench.hw import cpu_load

    monkeypatch.setattr(cpu_load, "default_meter", lambda: cpu_load.FakeCpuLoad(others=0.0))


@pytest.fixture(autouse=True)
def _hermetic(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".bench").mkdir()  # a --db folder must exist (only the default one is created)
    monkeypatch.setenv(DB_ENV, str(tmp_path / ".bench" / "results.db"))


def pytest_configure(config):
    """`python -m pytest -q` stays quiet: pytest-benchmark's results table (over 200 columns) is
    printed only when asked for (without -q, or with --benchmark-verbose). Its own pytest_configure
    runs last, so it reads the option set here."""
    if config.get_verbosity() < 0:
        config.option.benchmark_quiet = True


def pytest_collection_modifyitems(items):
    """The README's plugin example stays as a user writes it (no marker), but it times real
    ResNet-18 steps: slow."""
    for item in items:
        if item.path.name == "test_plugin_example.py":
            item.add_marker(pytest.mark.slow)
