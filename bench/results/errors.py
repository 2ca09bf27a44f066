"""The project's own exceptions and the one place that decides what counts as out-of-memory."""

from __future__ import annotations


class BenchError(Exception):
    """A problem the user can fix (bad input, missing device, unwritable path).

    The CLI prints ``error: <message>`` on one line and exits with code 2.
    """


# Allocation failures that do not arrive as torch.cuda.OutOfMemoryError. Each string is a
# fragment of a message seen from that library when it could not get memory; tests cover each.
_OOM_MESSAGES = (
    "out of memory",  # "CUDA out of memory", "CUDA error: out of memory", HIP
    "cublas_status_alloc_failed",  # cuBLAS handle/workspace allocation
    "cudnn_status_alloc_failed",  # cuDNN workspace allocation (older cuDNN)
    "cudnn_status_not_enough_workspace",
    "cudnn_status_internal_error",  # cuDNN surfaces failed allocations like this in practice
    "failed to allocate memory",
    "defaultcpuallocator: can't allocate memory",  # CPU allocator (also "not enough memory")
    "defaultcpuallocator: not enough memory",
)


def is_oom(exc: BaseException) -> bool:
    """True when ``exc`` means the device ran out of memory, whatever library raised it."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if isinstance(exc, MemoryError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    return any(fragment in text for fragment in _OOM_MESSAGES)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception message, for one-line reports."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return f"{type(exc).__name__}: {line}"


def failure_text(exc: BaseException) -> str:
    """One line for a failure: a BenchError's own words (they are written for the user), else the
    exception's type and first line."""
    return str(exc) if isinstance(exc, BenchError) else first_line(exc)
