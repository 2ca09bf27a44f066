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


def doubler(start, *, emit, receive):
    """A ChildSession target: answers each number with twice it, "raise" with an error, "hang" by
    sleeping; returns how many it answered."""
    n = start
    while (request := receive()) is not None:
        if request == "raise":
            raise ValueError("asked to fail")
        if request == "hang":
            time.sleep(60)
        emit(2 * request)
        n += 1
    return n


# Model factories that misbehave (issue 23, item 15): bench reports each in one line.


def _tiny():
    from tests.tiny_models import tiny_cnn

    return tiny_cnn()


def factory_exits():
    import sys

    sys.exit(0)


def factory_prints():
    print("building my model...")
    return _tiny()


def factory_hangs():
    time.sleep(3600)


def factory_parses_args():
    import argparse
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()
    assert sys.argv[1:] == [] and args.lr == 0.1, sys.argv  # never bench's own arguments
    return _tiny()


def factory_needs_args():
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.parse_args()
