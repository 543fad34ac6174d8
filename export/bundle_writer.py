"""Writing a model bundle: metadata and checksum into an ONNX model, written atomically.

The format is the one :mod:`bedside.bundle` verifies (see docs/bundle.md). This module needs the
``onnx`` package (train extra) but not torch, so tests can seal hand-built graphs too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from bedside.files import atomic_write_bytes as atomic_write
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


def write_bundle(model: onnx.ModelProto, metadata: dict[str, Any], out: str | Path) -> str:
    """Write the bundle to ``out`` atomically (:func:`atomic_write`); returns its sha256."""
    data = bundle_bytes(model, metadata)
    atomic_write(out, data)
    return bundle_digest(data)
