"""Entry point of an isolated child: ``python -m bench.jobs.child MSG_FD`` (started by ``bench.jobs.isolate``).

Why a module of its own: a child started this way never imports the caller's ``__main__``, so the
library works from a plain script without an ``if __name__ == "__main__":`` guard, and from a
notebook. Protocol: stdin carries one pickle, ``(parent sys.path, pickle of (target, args))``, and
then stays open until the parent is done; the child writes pickled ``(kind, payload)`` messages to
the file descriptor ``MSG_FD`` ("msg", "result", "bench_error", "error"). stdout and stderr are the
parent's, so a model's prints and warnings show as they would in-process.

The child must never outlive its parent (a SIGKILLed sweep would leave it measuring for its whole
point): on Linux the kernel sends it SIGKILL when the parent goes (PR_SET_PDEATHSIG), and on every
platform a watchdog thread exits as soon as stdin reaches EOF, which happens when the parent dies.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
from typing import Any, BinaryIO

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGKILL when the parent dies (Linux); then close the race in which the
    parent died before the request was made."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc/prctl: the stdin watchdog still covers it
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _watch_stdin(stdin: BinaryIO) -> None:
    """Exit as soon as the parent's end of stdin closes (the parent finished or died)."""
    try:
        while stdin.read(65536):
            pass
    except (OSError, ValueError):
        pass
    os._exit(1)


def _serve(stdin: BinaryIO, out: BinaryIO) -> None:
    lock = threading.Lock()  # emit may be called from a telemetry thread

    def send(kind: str, payload: Any) -> None:
        data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
        with lock:
            out.write(data)
            out.flush()

    parent_path, inner = pickle.load(stdin)
    sys.path[:0] = [p for p in parent_path if p not in sys.path]  # the caller's modules resolve here too
    threading.Thread(target=_watch_stdin, args=(stdin,), daemon=True, name="bench-parent-watch").start()

    from bench.results.errors import BenchError, first_line

    try:
        import importlib

        target, args = pickle.loads(inner)
        module_name, _, fn_name = target.partition(":")
        fn = getattr(importlib.import_module(module_name), fn_name)
        value = fn(*args, emit=lambda msg: send("msg", msg))
        send("result", value)
    except BenchError as exc:
        send("bench_error", str(exc))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, one line
        send("error", first_line(exc))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    msg_fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    _die_with_parent(parent_pid)
    with os.fdopen(msg_fd, "wb") as out:
        _serve(sys.stdin.buffer, out)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown: torch's can take seconds and adds nothing here


if __name__ == "__main__":
    main()
