"""Writing a model bundle: metadata, signature and checksum into an ONNX model, written atomically.

The format is the one :mod:`bedside.bundle` verifies (see docs/bundle.md). This module needs the
``onnx`` package (train extra) but not torch, so tests can seal hand-built graphs too.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import onnx

from bedside.files import atomic_write_bytes as atomic_write
from bedside.bundle import METADATA_KEY, PLACEHOLDER, SHA256_KEY, bundle_digest, seal_bundle_bytes
from bedside.trust import SIGNATURE_KEY, signature_entry

_OURS = (METADATA_KEY, SHA256_KEY, SIGNATURE_KEY)


def _with_props(model: onnx.ModelProto, props: dict[str, str]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())  # never mutate the caller's model
    keep = [p for p in model.metadata_props if p.key not in _OURS]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in keep}, **props})
    return model


def bundle_bytes(model: onnx.ModelProto, metadata: dict[str, Any], signing_key: Any = None) -> bytes:
    """Serialized bundle: ``model`` with the metadata JSON, its Ed25519 signature when ``signing_key`` (an
    ``Ed25519PrivateKey``) is given, and the sealed sha256 in metadata_props."""
    props = {METADATA_KEY: json.dumps(metadata, sort_keys=True), SHA256_KEY: PLACEHOLDER.decode()}
    if signing_key is not None:
        # the signature covers the bytes without the cromotex.* entries, so it can be computed first
        unsigned = _with_props(model, props).SerializeToString()
        props[SIGNATURE_KEY] = signature_entry(signing_key, unsigned, json.loads(props[METADATA_KEY]))
    data = seal_bundle_bytes(_with_props(model, props).SerializeToString())
    if signing_key is not None:
        _check_own_signature(data, signing_key)
    return data


def _check_own_signature(data: bytes, signing_key: Any) -> None:
    """The signature verifies on the final bytes (a serializer that reordered fields would break it)."""
    from bedside.trust import signed_message, split_model_bytes

    entries = split_model_bytes(data)[1]
    meta = json.loads(entries[METADATA_KEY][0])
    sig = base64.b64decode(json.loads(entries[SIGNATURE_KEY][0])["sig"])
    signing_key.public_key().verify(sig, signed_message(data, meta))  # raises InvalidSignature


def write_bundle(model: onnx.ModelProto, metadata: dict[str, Any], out: str | Path, signing_key: Any = None) -> str:
    """Write the bundle to ``out`` atomically (:func:`atomic_write`), signed when ``signing_key``; returns its
    sha256."""
    data = bundle_bytes(model, metadata, signing_key)
    atomic_write(out, data)
    return bundle_digest(data)
