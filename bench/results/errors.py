"""The project's own exceptions and the one place that decides what a failure was: out of memory,
a sticky CUDA error, or another error.

``classify`` reads one table of message fragments seen from torch, CUDA, cuDNN and cuBLAS (tests
cover every row). It never imports torch: it checks torch's exception types only when torch is
already loaded (it must be, for a torch exception to exist), so the results layer stays light.
"""

from __future__ import annotations

import sys


class BenchError(Exception):
    """A problem the user can fix (bad input, missing device, unwritable path).

    The CLI prints ``error: <message>`` on one line and exits with code 2.
    """


class StickyCudaError(BenchError):
    """A sticky CUDA error (an illegal memory access, a device-side assert, ...) ended a sweep or a
    max-batch search run in this process: the CUDA context cannot run anything after it, so every
    later point or probe would fail (and ``empty_cache`` raises). The message names the batch and
    suggests ``--isolate``; ``partial_result`` carries what finished before it (kept and stored)."""

    partial_result: object = None


# Failure classes.
OOM = "oom"  # the device (or host) ran out of memory: a smaller batch may fit
STICKY = "sticky"  # the CUDA context is dead: nothing more can run in this process
ERROR = "error"  # anything else: this batch failed, others may not

# What a RuntimeError's message means, first match wins (matched lower-cased). Each fragment is
# taken from the message that library raises; the comment says where it comes from.
MESSAGES: tuple[tuple[str, str], ...] = (
    # cuDNN's internal error is a bug or a bad input far more often than memory: not OOM
    ("cudnn_status_internal_error", ERROR),  # "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"
    ("cudnn_status_execution_failed", ERROR),  # "cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"
    (
        "cublas_status_execution_failed",
        ERROR,
    ),  # "CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx(...)`"
    # sticky: after these the CUDA context is unusable (cudaErrorIllegalAddress, cudaErrorAssert,
    # cudaErrorLaunchFailure, ...); torch raises them as "CUDA error: <cudaGetErrorString>"
    ("an illegal memory access was encountered", STICKY),  # cudaErrorIllegalAddress
    ("device-side assert triggered", STICKY),  # cudaErrorAssert (an index out of range in a kernel)
    ("unspecified launch failure", STICKY),  # cudaErrorLaunchFailure
    ("misaligned address", STICKY),  # cudaErrorMisalignedAddress
    ("an illegal instruction was encountered", STICKY),  # cudaErrorIllegalInstruction
    ("the launch timed out and was terminated", STICKY),  # cudaErrorLaunchTimeout
    ("uncorrectable ecc error encountered", STICKY),  # cudaErrorECCUncorrectable
    ("hardware stack error", STICKY),  # cudaErrorHardwareStackError
    # allocation failures that do not arrive as torch.cuda.OutOfMemoryError
    ("out of memory", OOM),  # "CUDA out of memory. Tried to allocate ...", "CUDA error: out of memory", HIP
    ("cublas_status_alloc_failed", OOM),  # "CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
    ("cublas_status_not_initialized", OOM),  # cublasCreate could not allocate its handle's resources
    ("cudnn_status_alloc_failed", OOM),  # "cuDNN error: CUDNN_STATUS_ALLOC_FAILED" (older cuDNN)
    ("cudnn_status_not_enough_workspace", OOM),
    # cuDNN v8/v9 API: every plan's workspace allocation failed ("GET was unable to find an engine
    # to execute this computation"; "FIND ..." with autotuning)
    ("unable to find an engine to execute this computation", OOM),
    ("failed to allocate memory", OOM),
    ("defaultcpuallocator: can't allocate memory", OOM),  # CPU allocator
    ("defaultcpuallocator: not enough memory", OOM),
)


def classify_message(text: str) -> str:
    """OOM, STICKY or ERROR for a failure's message (the table above; ERROR when no row matches).
    Also reads a stored one-line failure (``first_line``: "AcceleratorError: CUDA error: ...")."""
    low = text.lower()
    return next((kind for fragment, kind in MESSAGES if fragment in low), ERROR)


def classify(exc: BaseException) -> str:
    """What ``exc`` means: OOM (torch.cuda.OutOfMemoryError, MemoryError, or a library's allocation
    failure), STICKY (the CUDA context is lost: torch raises ``torch.AcceleratorError``, a
    RuntimeError, or a plain RuntimeError in older versions) or ERROR."""
    torch = sys.modules.get("torch")  # a torch exception means torch is loaded; never import it here
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if (oom_type is not None and isinstance(exc, oom_type)) or isinstance(exc, MemoryError):
        return OOM
    if not isinstance(exc, RuntimeError):  # library failures arrive as RuntimeErrors (or subclasses)
        return ERROR
    return classify_message(str(exc))


def sticky_stop(batch_size: int, error: str, what: str, kept: str) -> StickyCudaError:
    """The one line a sticky CUDA error ends an in-process ``what`` ("sweep", "search") with: the
    batch, the error, what was kept, and ``--isolate`` (a fresh process per point or probe)."""
    return StickyCudaError(
        f"batch {batch_size}: {error}: the CUDA context cannot run anything after this error, so the "
        f"{what} stopped ({kept}); run with --isolate to give each batch size a fresh process"
    )


def is_oom(exc: BaseException) -> bool:
    """True when ``exc`` means the device ran out of memory, whatever library raised it."""
    return classify(exc) == OOM


def is_sticky(exc: BaseException) -> bool:
    """True when ``exc`` left the CUDA context unusable (nothing more can run in this process)."""
    return classify(exc) == STICKY


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
