"""Failure classes from one table of real messages (torch, CUDA, cuDNN, cuBLAS): a test per row."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bench.results.errors import ERROR, MESSAGES, OOM, STICKY, classify, classify_message, first_line, is_oom

ASYNC = (
    "\nCUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace "
    "below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
    "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n"
)
H100_OOM = (  # bench's first H100 run (fixtures/h100-80gb-hbm3), batch 3183
    "CUDA out of memory. Tried to allocate 2.68 GiB. GPU 0 has a total capacity of 79.18 GiB of which "
    "2.13 GiB is free. Including non-PyTorch memory, this process has 77.04 GiB memory in use. Of the "
    "allocated memory 76.25 GiB is allocated by PyTorch, and 31.33 MiB is reserved by PyTorch but unallocated."
)

CASES = [
    # out of memory, by type and by message
    (torch.cuda.OutOfMemoryError(H100_OOM), OOM),
    (MemoryError(), OOM),
    (RuntimeError("CUDA error: out of memory" + ASYNC), OOM),
    (torch.AcceleratorError("CUDA error: out of memory" + ASYNC), OOM),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), OOM),
    (RuntimeError("CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"), OOM),
    (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), OOM),
    (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_ENOUGH_WORKSPACE"), OOM),
    (RuntimeError("GET was unable to find an engine to execute this computation"), OOM),
    (RuntimeError("FIND was unable to find an engine to execute this computation"), OOM),
    (RuntimeError("HIP out of memory. Tried to allocate 2.00 GiB"), OOM),
    (RuntimeError("CUDA driver error: failed to allocate memory"), OOM),
    (
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)"
        ),
        OOM,
    ),
    (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1099511627776 bytes."), OOM),
    # sticky: the CUDA context is lost (AcceleratorError in torch >= 2.8, RuntimeError before)
    (torch.AcceleratorError("CUDA error: an illegal memory access was encountered" + ASYNC), STICKY),
    (RuntimeError("CUDA error: an illegal memory access was encountered" + ASYNC), STICKY),
    (torch.AcceleratorError("CUDA error: device-side assert triggered" + ASYNC), STICKY),
    (RuntimeError("CUDA error: device-side assert triggered" + ASYNC), STICKY),
    (torch.AcceleratorError("CUDA error: unspecified launch failure" + ASYNC), STICKY),
    (RuntimeError("CUDA error: unspecified launch failure" + ASYNC), STICKY),
    (RuntimeError("CUDA error: misaligned address" + ASYNC), STICKY),
    (RuntimeError("CUDA error: an illegal instruction was encountered" + ASYNC), STICKY),
    (RuntimeError("CUDA error: the launch timed out and was terminated" + ASYNC), STICKY),
    (RuntimeError("CUDA error: uncorrectable ECC error encountered" + ASYNC), STICKY),
    (RuntimeError("CUDA error: hardware stack error" + ASYNC), STICKY),
    # errors: not memory, and the context lives on
    (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"), ERROR),
    (RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"), ERROR),
    (
        RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx(handle, ...)`"),
        ERROR,
    ),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"), ERROR),
    (ValueError("out of memory"), ERROR),  # only RuntimeErrors carry library failures
    (ValueError("an illegal memory access was encountered"), ERROR),
]


@pytest.mark.parametrize("exc, expected", CASES, ids=[f"{i}-{c[1]}" for i, c in enumerate(CASES)])
def test_classify_each_real_message(exc, expected):
    assert classify(exc) == expected
    assert is_oom(exc) is (expected == OOM)


def test_every_row_of_the_table_has_a_case():
    """A row without a real message in CASES is a guess: each fragment is matched by one case."""
    texts = [str(exc).lower() for exc, _ in CASES]
    for fragment, kind in MESSAGES:
        assert any(fragment in t and classify_message(t) == kind for t in texts), fragment


def test_a_stored_first_line_classifies_like_the_exception():
    """Points and probes keep ``first_line(exc)``; the orchestration reads the class back from it."""
    for exc, expected in CASES:
        if isinstance(exc, RuntimeError) or isinstance(exc, MemoryError):
            want = expected if not isinstance(exc, MemoryError) else ERROR  # "MemoryError: MemoryError"
            assert classify_message(first_line(exc)) == want


def test_errors_module_never_imports_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # importing torch now raises ImportError
        "from bench.results.errors import classify, OOM, STICKY, ERROR\n"
        "assert classify(MemoryError()) == OOM\n"
        "assert classify(RuntimeError('CUDA error: device-side assert triggered')) == STICKY\n"
        "assert classify(RuntimeError('x')) == ERROR\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
