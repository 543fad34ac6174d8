"""Writing a model bundle: metadata and checksum into an ONNX model, written atomically.

The format is the one :mod:`bedside.bundle` verifies (see docs/bundle.md). This module needs the
``onnx`` package (train extra) but not torch, so tests can seal hand-built graphs too.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import onnx

from bedside.bundle import METADATA_KEY, PLACEHOLDER, SHA256_KEY, bundle_digest, seal_bundle_bytes


def bundle_bytes(model: onnx.ModelProto, metadata: dict[str, Any]) -> bytes:
    """Serialized bundle: ``model`` with the metadata JSON and its sealed sha256 in metadata_props."""
    model = onnx.ModelProto.FromString(model.SerializeToString())  # never mutate the caller's model
    keep = [p for p in model.metadata_props if p.key not in (METADATA_KEY, SHA256_KEY)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in keep},
                                        METADATA_KEY: json.dumps(metadata, sort_keys=True),
                                        SHA256_KEY: PLACEHOLDER.decode()})
    return seal_bundle_bytes(model.SerializeToString())


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` through a temporary file in the same folder and a rename; mode 0644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; the bedside service user must read bundles
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bundle(model: onnx.ModelProto, metadata: dict[str, Any], out: str | Path) -> str:
    """Write the bundle to ``out`` atomically (:func:`atomic_write`); returns its sha256."""
    data = bundle_bytes(model, metadata)
    atomic_write(out, data)
    return bundle_digest(data)
