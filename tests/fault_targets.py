"""Targets for ``bench.isolate.run_isolated`` in fault tests (importable by a child process)."""

from __future__ import annotations

import os
import time


def report_pid_then_sleep(seconds: float, *, emit) -> None:
    """Tell the parent our pid, then outlive any reasonable test unless killed."""
    emit(os.getpid())
    time.sleep(seconds)


def echo(value, *, emit):
    emit("hello")
    return value


def builds_once():
    """A factory that works the first time and then returns something that is not a module.

    The count lives in the file named by BENCH_TEST_BUILD_COUNT, so it spans child processes."""
    from pathlib import Path

    from tests.tiny_models import tiny_cnn

    counter = Path(os.environ["BENCH_TEST_BUILD_COUNT"])
    builds = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(builds + 1))
    return tiny_cnn() if builds == 0 else 42
