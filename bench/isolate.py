"""Run one piece of work in a fresh child process and stream its messages back.

Why: on CPU there is no per-point peak-memory counter, and a process's peak RSS only grows, so an
earlier, larger point would mask a later one. A child per point makes the child's own peak RSS the
point's peak. On GPU it gives a clean caching allocator. The parent can also enforce an RSS budget
(kill the child before the kernel's OOM killer gets involved).
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import queue as queue_mod
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from bench.errors import BenchError, first_line


@dataclass(frozen=True)
class ChildOutcome:
    """``status``: "ok" (``value`` holds the result), "error" (``message``), "killed_rss" (over the
    RSS budget; ``peak_rss_bytes`` says how far it got), or "died" (exit without a result)."""

    status: str
    value: Any = None
    message: str | None = None
    peak_rss_bytes: int | None = None
    exitcode: int | None = None


def _child_entry(target: str, args: tuple[Any, ...], q: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    module_name, _, fn_name = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
        value = fn(*args, emit=lambda msg: q.put(("msg", msg)))
        q.put(("result", value))
    except BenchError as exc:
        q.put(("bench_error", str(exc)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, one line
        q.put(("error", first_line(exc)))


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_isolated(
    target: str,
    args: tuple[Any, ...],
    *,
    on_message: Callable[[Any], None] | None = None,
    rss_limit_bytes: int | None = None,
    poll_seconds: float = 0.02,
) -> ChildOutcome:
    """Call ``target`` ("module:function") as ``fn(*args, emit=...)`` in a spawned child.

    ``emit(msg)`` in the child arrives as ``on_message(msg)`` here. A BenchError in the child is
    re-raised here (it is the user's to fix); any other exception becomes status "error".
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_child_entry, args=(target, args, q), daemon=True)
    proc.start()
    ps = psutil.Process(proc.pid)
    peak = 0
    result: tuple[str, Any] | None = None
    try:
        while True:
            try:
                kind, payload = q.get(timeout=poll_seconds)
            except queue_mod.Empty:
                if not proc.is_alive():
                    # drain anything that raced the exit
                    try:
                        kind, payload = q.get(timeout=0.5)
                    except queue_mod.Empty:
                        break
                else:
                    if rss_limit_bytes is not None:
                        rss = _tree_rss(ps)
                        peak = max(peak, rss)
                        if rss > rss_limit_bytes:
                            proc.kill()
                            proc.join()
                            return ChildOutcome(
                                "killed_rss",
                                message=f"child RSS {rss / 2**30:.2f} GiB exceeded the "
                                f"{rss_limit_bytes / 2**30:.2f} GiB budget",
                                peak_rss_bytes=peak,
                            )
                    continue
            if kind == "msg":
                if on_message is not None:
                    on_message(payload)
            else:
                result = (kind, payload)
                break
    except BaseException:
        proc.kill()
        proc.join()
        raise
    proc.join(timeout=30)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if result is None:
        code = proc.exitcode
        why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        hint = " (killed: likely out of memory)" if code == -signal.SIGKILL else ""
        return ChildOutcome("died", message=f"child process ended with {why}{hint}", exitcode=code)
    kind, payload = result
    if kind == "bench_error":
        raise BenchError(payload)
    if kind == "error":
        return ChildOutcome("error", message=payload, exitcode=proc.exitcode)
    return ChildOutcome("ok", value=payload, peak_rss_bytes=peak or None, exitcode=proc.exitcode)
