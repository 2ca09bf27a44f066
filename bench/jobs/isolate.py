"""Run one piece of work in a fresh child process and stream its messages back.

Why: on CPU there is no per-point peak-memory counter, and a process's peak RSS only grows, so an
earlier, larger point would mask a later one. A child per point makes the child's own peak RSS the
point's peak. On GPU it gives a clean caching allocator. The parent can also enforce an RSS budget
(kill the child before the kernel's OOM killer gets involved).
"""

from __future__ import annotations

import os
import pickle
import queue as queue_mod
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from bench.hw import host
from bench.results.errors import BenchError, first_line

_EOF = ("eof", None)  # the reader thread's last message: the child closed its end


@dataclass(frozen=True)
class ChildOutcome:
    """``status``: "ok" (``value`` holds the result), "error" (``message``), "killed_rss" (over the
    RSS budget; ``peak_rss_bytes`` says how far it got), or "died" (exit without a result)."""

    status: str
    value: Any = None
    message: str | None = None
    peak_rss_bytes: int | None = None
    exitcode: int | None = None


def over_budget_message(rss_bytes: int, limit_bytes: int) -> str:
    """ "child RSS 1.0001 GiB exceeded the 1.0000 GiB budget": as many decimals as it takes for
    the two numbers to differ (they always do: the child is killed only when RSS > budget)."""
    unit, scale = ("GiB", 2**30) if limit_bytes >= 2**30 else ("MiB", 2**20)
    for decimals in range(2, 10):
        used, budget = f"{rss_bytes / scale:.{decimals}f}", f"{limit_bytes / scale:.{decimals}f}"
        if used != budget:
            break
    else:
        used, budget, unit = str(rss_bytes), str(limit_bytes), "bytes"
    return f"child RSS {used} {unit} exceeded the {budget} {unit} budget"


def died_message(code: int | None) -> str:
    """How a child that sent no result ended: its exit code or signal (SIGKILL: likely the OOM killer)."""
    why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    hint = " (killed: likely out of memory)" if code == -signal.SIGKILL else ""
    return f"child process ended with {why}{hint}"


def _read_messages(stream: BinaryIO, inbox: queue_mod.Queue) -> None:
    """Reader thread: every pickled message from the child onto ``inbox``, then ``_EOF``."""
    try:
        while True:
            inbox.put(pickle.load(stream))
    except (EOFError, OSError, pickle.UnpicklingError, ValueError):
        pass
    except Exception as exc:  # noqa: BLE001 - a message that does not unpickle here
        inbox.put(("error", f"cannot read the child's message: {first_line(exc)}"))
    finally:
        inbox.put(_EOF)


@dataclass(frozen=True)
class Interpreter:
    """Where and how a child starts. The default is this interpreter with this process's
    ``sys.path`` handed to the child; ``bench ab`` gives each side its own: an interpreter, an
    environment (PYTHONPATH with the side's directory first), a working directory, and
    ``inherit_path=False`` so this process's path does not shadow the side's modules."""

    python: str | None = None  # None: sys.executable
    env: dict[str, str] | None = None  # None: this process's environment
    cwd: str | None = None
    inherit_path: bool = True


SAME = Interpreter()


def _start_child(
    target: str, args: tuple[Any, ...], where: Interpreter = SAME, serves: bool = False
) -> tuple[subprocess.Popen, queue_mod.Queue, BinaryIO]:
    """``python -m bench.jobs.child``: a fresh interpreter that never imports the caller's __main__.
    Returns the process, its message inbox and the work pipe (closing it tells the child to stop)."""
    try:
        inner = pickle.dumps((target, args), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - a lambda or local class among the arguments
        raise BenchError(
            f"cannot send the work to a child process ({first_line(exc)}): pass a factory name "
            "'package.module:function' or define classes at module level"
        ) from None
    path = list(sys.path) if where.inherit_path else []
    payload = pickle.dumps((path, inner, serves), protocol=pickle.HIGHEST_PROTOCOL)
    read_fd, write_fd = os.pipe()
    work_read, work_write = os.pipe()
    try:
        proc = subprocess.Popen(
            [
                where.python or sys.executable,
                "-m",
                "bench.jobs.child",
                str(write_fd),
                str(os.getpid()),
                str(work_read),
            ],
            stdin=subprocess.DEVNULL,  # not a pipe: see bench.jobs.child on forked DataLoader workers
            pass_fds=(write_fd, work_read),
            env=where.env,
            cwd=where.cwd,
        )
    except BaseException:
        os.close(read_fd)
        os.close(work_write)
        raise
    finally:
        os.close(write_fd)  # the child holds the only write end: EOF here when it exits
        os.close(work_read)
    inbox: queue_mod.Queue = queue_mod.Queue()
    reader = os.fdopen(read_fd, "rb")
    threading.Thread(
        target=_read_messages, args=(reader, inbox), daemon=True, name="bench-child-read"
    ).start()
    work = os.fdopen(work_write, "wb")
    try:
        work.write(payload)
        work.flush()  # the pipe stays open: closing it (or dying) tells the child to stop
    except (BrokenPipeError, OSError):
        pass  # the child died at start-up; its exit code says so below
    return proc, inbox, work


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the child and every process it started (DataLoader workers): none is left behind."""
    family = host.descendants(proc.pid)
    proc.kill()
    host.kill_all(family)


def _stop(proc: subprocess.Popen, work: BinaryIO, timeout: float) -> None:
    """Let the child exit by itself within ``timeout`` seconds (0: kill it and its workers now),
    then close the work pipe, the cue a lingering child exits on."""
    if timeout == 0:
        _kill_tree(proc)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        proc.wait()
    try:
        work.close()
    except OSError:
        pass


def run_isolated(
    target: str,
    args: tuple[Any, ...],
    *,
    on_message: Callable[[Any], None] | None = None,
    rss_limit_bytes: int | None = None,
    poll_seconds: float = 0.02,
    where: Interpreter = SAME,
    timeout_seconds: float | None = None,
) -> ChildOutcome:
    """Call ``target`` ("module:function") as ``fn(*args, emit=...)`` in a fresh child process
    (``python -m bench.jobs.child``; the caller's ``__main__`` is never imported there).

    ``emit(msg)`` in the child arrives as ``on_message(msg)`` here. A BenchError in the child is
    re-raised here (it is the user's to fix); any other exception becomes status "error". Ctrl-C
    here kills the child (which ignores SIGINT) and propagates; the child dies with this process.
    ``where``: another interpreter or environment (``Interpreter``); one that cannot start raises OSError.
    ``timeout_seconds``: a child still running then is killed (status "died", saying so).
    """
    deadline = time.monotonic() + timeout_seconds if timeout_seconds is not None else None
    proc, inbox, work = _start_child(target, args, where)
    ps = host.ProcessProbe(proc.pid)
    peak = 0
    result: tuple[str, Any] | None = None
    try:
        while True:
            try:
                kind, payload = inbox.get(timeout=poll_seconds)
            except queue_mod.Empty:
                if proc.poll() is not None:
                    # drain anything that raced the exit
                    try:
                        kind, payload = inbox.get(timeout=0.5)
                    except queue_mod.Empty:
                        break
                else:
                    if deadline is not None and time.monotonic() > deadline:
                        _stop(proc, work, timeout=0)
                        return ChildOutcome(
                            "died", message=f"child process still running after {timeout_seconds:g} s: killed"
                        )
                    if rss_limit_bytes is not None:
                        rss = ps.tree_rss_bytes()
                        peak = max(peak, rss)
                        if rss > rss_limit_bytes:
                            _stop(proc, work, timeout=0)
                            return ChildOutcome(
                                "killed_rss",
                                message=over_budget_message(rss, rss_limit_bytes),
                                peak_rss_bytes=peak,
                            )
                    continue
            if kind == "msg":
                if on_message is not None:
                    on_message(payload)
            elif (kind, payload) == _EOF:
                break
            else:
                result = (kind, payload)
                break
    except BaseException:
        _stop(proc, work, timeout=0)
        raise
    _stop(proc, work, timeout=30)
    code = proc.returncode
    if result is None:
        return ChildOutcome("died", message=died_message(code), exitcode=code)
    kind, payload = result
    if kind == "bench_error":
        raise BenchError(payload)
    if kind == "error":
        return ChildOutcome("error", message=payload, exitcode=code)
    return ChildOutcome("ok", value=payload, peak_rss_bytes=peak or None, exitcode=code)


class ChildFailed(BenchError):
    """A session's child failed: raised an error, died, or outlived its deadline (one line)."""


class ChildSession:
    """A fresh child that answers requests, for work the parent paces (``bench ab`` alternates
    two children window by window). ``target`` ("module:function") is called in the child as
    ``fn(*args, emit=..., receive=...)``: ``receive()`` blocks for the parent's next request
    (None once the parent closes the session) and each ``emit(reply)`` answers one. ``ask`` sends a
    request and returns the reply; ``close`` ends the requests and returns the target's value.
    A child that raises, dies or is still busy at ``deadline`` (``time.monotonic``) is a
    ``ChildFailed`` (a BenchError from the child keeps its line); ``kill`` stops it at once."""

    def __init__(
        self,
        target: str,
        args: tuple[Any, ...],
        *,
        where: Interpreter = SAME,
        deadline: float | None = None,
        poll_seconds: float = 0.01,
    ) -> None:
        self.deadline = deadline
        self.poll_seconds = poll_seconds
        self.proc, self._inbox, self._work = _start_child(target, args, where, serves=True)
        self._closed = False

    def ask(self, request: Any) -> Any:
        self._send(request)
        kind, payload = self._next()
        if kind != "msg":
            self.kill()
            raise ChildFailed(f"child process returned before it answered {request!r}")
        return payload

    def close(self) -> Any:
        """No more requests: the target's return value (the child then exits)."""
        self._send(None)
        kind, payload = self._next()
        if kind != "result":
            self.kill()
            raise ChildFailed("child process answered after its last request")
        self._closed = True
        _stop(self.proc, self._work, timeout=30)
        return payload

    def kill(self) -> None:
        if not self._closed:
            self._closed = True
            _stop(self.proc, self._work, timeout=0)

    def _send(self, request: Any) -> None:
        try:
            pickle.dump(request, self._work, protocol=pickle.HIGHEST_PROTOCOL)
            self._work.flush()
        except (BrokenPipeError, OSError):
            pass  # it died: _next says how

    def _next(self) -> tuple[str, Any]:
        while True:
            try:
                kind, payload = self._inbox.get(timeout=self.poll_seconds)
            except queue_mod.Empty:
                if self.deadline is not None and time.monotonic() > self.deadline:
                    self.kill()
                    raise ChildFailed(
                        "child process still busy at the comparison's deadline: killed"
                    ) from None
                if self.proc.poll() is None:
                    continue
                try:
                    kind, payload = self._inbox.get(timeout=0.5)  # anything that raced the exit
                except queue_mod.Empty:
                    kind, payload = _EOF
            if kind in ("msg", "result"):
                return kind, payload
            self.kill()
            if kind in ("bench_error", "error"):
                raise ChildFailed(payload)
            raise ChildFailed(died_message(self.proc.returncode))
