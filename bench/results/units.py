"""Bytes and seconds as people read them: one set of formatters for the terminal and the report.

Pure functions (and ``parse_bytes``, which reads a size the way people write it), importing only
bench's errors: the CLI, the live display and the HTML/Markdown report all
format through here. They differ only in the parameters (the report marks a missing value with an
en dash and shows whole-run durations coarser), so each output stays as it was.
"""

from __future__ import annotations

import re

from bench.results.errors import BenchError

_BYTE_UNITS = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def fmt_bytes(n: float | None, *, missing: str = "-", digits: int = 2, smallest: str = "B") -> str:
    """``n`` bytes in binary units: '1.50 GiB', '512.00 MiB', '3.00 KiB', '12 B'.

    GiB always with two decimals; smaller units with ``digits``. ``smallest`` is the last unit used
    ('MiB': '0 MiB' rather than KiB or bytes, as the report shows memory).
    """
    if n is None:
        return missing
    for unit, scale in _BYTE_UNITS:
        if n >= scale or unit == smallest:
            return f"{n / scale:.{2 if unit == 'GiB' else digits}f} {unit}"
    return f"{n} B"


def fmt_seconds(seconds: float | None, *, missing: str = "-", coarse: bool = False) -> str:
    """A duration: '12.34 ms', '3.21 s', '4.5 min', '1.2 h' (step times and estimates in the terminal).

    ``coarse`` (whole runs and epochs in the report): seconds up to two minutes, minutes up to two
    hours, never milliseconds: '95.0 s', '4.5 min', '2.50 h'.
    """
    if seconds is None:
        return missing
    if coarse:
        if seconds < 120:
            return f"{seconds:.1f} s"
        if seconds < 2 * 3600:
            return f"{seconds / 60:.1f} min"
        return f"{seconds / 3600:.2f} h"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.2f} ms"


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
          "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}  # fmt: skip


def parse_bytes(text: str | int) -> int:
    """'4GiB' -> 4294967296, '3000MB' -> 3000000000, '512m' -> 536870912 (bare letters are binary)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise BenchError(f"memory size must be positive, got {text}")
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise BenchError(f"memory size {text!r} not understood: use e.g. 8GiB, 3000MB, 512MiB")
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise BenchError(f"memory size must be positive, got {text!r}")
    return value


def fmt_percent(fraction: float) -> str:
    """A threshold as the user wrote it: 0.1 -> "10%", 0.005 -> "0.5%" (never rounded to "0%")."""
    return f"{fraction * 100:.4g}%"
