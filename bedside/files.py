"""Writing files so that a reader never sees a half-written one (temporary file, fsync, rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and rename.

    ``mode`` defaults to 0644 (mkstemp's 0600 would hide bundles from the bedside service user).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike[str], data: Any, indent: int = 2) -> None:
    """JSON (with a final newline) written with :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, (json.dumps(data, indent=indent) + "\n").encode("utf-8"))
