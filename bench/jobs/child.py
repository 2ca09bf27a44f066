"""Entry point of an isolated child: ``python -m bench.jobs.child MSG_FD PARENT_PID WORK_FD``
(started by ``bench.jobs.isolate``).

Why a module of its own: a child started this way never imports the caller's ``__main__``, so the
library works from a plain script without an ``if __name__ == "__main__":`` guard, and from a
notebook. Protocol: the pipe ``WORK_FD`` carries one pickle, ``(parent sys.path, pickle of
(target, args), serves)``, and then stays open until the parent is done; when ``serves`` (a
``bench.jobs.isolate.ChildSession``) every later pickle on it is a request the target reads with
``receive()`` (None: no more requests); the child writes pickled
``(kind, payload)`` messages to the file descriptor ``MSG_FD`` ("msg", "result", "bench_error",
"error"). stdout and stderr are the parent's, so a model's prints and warnings show as they would
in-process; stdin is /dev/null.

Why not stdin for the work pipe: a thread blocked reading ``sys.stdin`` holds its lock, and a
DataLoader worker forked meanwhile inherits the held lock and hangs closing ``sys.stdin`` (what
multiprocessing does first in every forked child). The watchdog reads the raw descriptor with
``os.read``, which holds no Python lock.

The child must never outlive its parent (a SIGKILLed sweep would leave it measuring for its whole
point): on Linux the kernel sends it SIGKILL when the parent goes (PR_SET_PDEATHSIG), and on every
platform a watchdog thread exits as soon as the work pipe reaches EOF, which happens when the parent
dies. Processes the work started (DataLoader workers) are killed before the child exits.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import pickle
import queue
import signal
import sys
import threading
from typing import Any, BinaryIO

from bench.hw import host
from bench.results.errors import BenchError, first_line

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGKILL when the parent dies (Linux); then close the race in which the
    parent died before the request was made."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc/prctl: the pipe watchdog still covers it
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _kill_descendants() -> None:
    """SIGKILL every process this child started (DataLoader workers): none may outlive it."""
    try:
        host.kill_all(host.descendants())
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass


def _watch_parent(work_fd: int, requests: queue.Queue | None = None) -> None:
    """Exit as soon as the parent's end of the work pipe closes (the parent finished or died).
    ``os.read`` on the raw descriptor: no Python-level lock is held while it blocks. With
    ``requests`` (a session), each pickle read is handed to the target through that queue."""
    try:
        if requests is None:
            while os.read(work_fd, 65536):
                pass
        else:
            with os.fdopen(os.dup(work_fd), "rb", buffering=0) as raw:
                while True:
                    requests.put(pickle.load(raw))
    except (OSError, EOFError, pickle.UnpicklingError):
        pass
    _kill_descendants()
    os._exit(1)


def _read_work(work_fd: int) -> Any:
    """The one pickle at the head of the work pipe, read without buffering past its end."""
    with os.fdopen(os.dup(work_fd), "rb", buffering=0) as raw:
        return pickle.load(raw)


def _serve(work_fd: int, out: BinaryIO) -> None:
    lock = threading.Lock()  # emit may be called from a telemetry thread

    def send(kind: str, payload: Any) -> None:
        data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
        with lock:
            out.write(data)
            out.flush()

    parent_path, inner, serves = _read_work(work_fd)
    sys.path[:0] = [p for p in parent_path if p not in sys.path]  # the caller's modules resolve here too
    requests: queue.Queue | None = queue.Queue() if serves else None
    threading.Thread(
        target=_watch_parent, args=(work_fd, requests), daemon=True, name="bench-parent-watch"
    ).start()

    try:
        target, args = pickle.loads(inner)
        module_name, _, fn_name = target.partition(":")
        fn = getattr(importlib.import_module(module_name), fn_name)
        extra = {"receive": requests.get} if requests is not None else {}
        value = fn(*args, emit=lambda msg: send("msg", msg), **extra)
        send("result", value)
    except BenchError as exc:
        send("bench_error", str(exc))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, one line
        send("error", first_line(exc))


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    msg_fd, parent_pid, work_fd = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    _die_with_parent(parent_pid)
    with os.fdopen(msg_fd, "wb") as out:
        _serve(work_fd, out)
    _kill_descendants()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown: torch's can take seconds and adds nothing here


if __name__ == "__main__":
    main()
