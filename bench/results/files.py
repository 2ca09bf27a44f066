"""Files bench writes: one atomic writer and one slug, used by every result, manifest and report file.

A reader (or a resume after a crash) never sees half a file: the text goes to a temp file in the
same folder, is flushed and fsynced, given the mode ``open()`` would give a new file (0644 under
the usual umask, not mkstemp's 0600), and renamed over the target. A failure leaves no temp file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(text: str) -> str:
    """``text`` safe in a file name: every run of other characters than letters, digits, ``_.-``
    becomes one ``_`` (``"timm:vit/b 16"`` -> ``"timm_vit_b_16"``)."""
    return _UNSAFE.sub("_", text)


def file_mode() -> int:
    """0644 under the usual umask: what ``open()`` would give a new file (mkstemp gives 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_file(path: Path | str, *, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary file handle whose contents replace ``path`` atomically when the block ends: temp
    file in the same folder, flush, fsync, chmod to ``mode`` (default: :func:`file_mode`),
    ``os.replace``. An exception in the block (or a failed write) leaves ``path`` as it was and no
    temp file behind. For writers that stream (a gzipped trace); others call :func:`write_atomic`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_atomic(path: Path | str, data: str | bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` with :func:`atomic_file`. Returns the path.
    Raises OSError (a full disk, a read-only folder)."""
    with atomic_file(path, mode=mode) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_json_atomic(path: Path | str, text: str) -> None:
    """Write JSON ``text`` (already serialised) to ``path`` with :func:`write_atomic`. Every results
    file (sweep, max-batch, profile cell, noise, A/B) goes through here: fault tests patch this name
    (``bench.results.files.write_json_atomic``) to fill the disk."""
    write_atomic(path, text)


def dump_json_atomic(path: Path | str, data: Any, *, indent: int | None = 2) -> None:
    """``data`` as strict JSON (no NaN/Infinity) written with :func:`write_json_atomic`."""
    write_json_atomic(path, json.dumps(data, indent=indent, allow_nan=False))
