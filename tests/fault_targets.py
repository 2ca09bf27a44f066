"""Targets for ``bench.jobs.isolate.run_isolated`` in fault tests (importable by a child process)."""

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
