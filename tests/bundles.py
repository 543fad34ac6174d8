"""Test helper: a real, small model bundle built from a hand-made ONNX graph (no torch needed)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bedside.bundle import encode_array
from bedside.leads import CANONICAL_LEADS
from bedside.preprocess import DEFAULT_RECIPE

LABELS = ["edema", "pleural_effusion", "cardiomegaly"]


def fixture_signing_key() -> Any:
    """The tests' release key (Ed25519, fixed seed); tests/conftest.py trusts its public key for every test."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))



def linear_model(weights: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """sigmoid(flatten(x) @ W + b): input [batch, 12, 1000], output [batch, K] probabilities."""
    k = weights.shape[1]
    x = helper.make_tensor_value_info("ecg", TensorProto.FLOAT, ["batch", 12, 1000])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", k])
    nodes = [
        helper.make_node("Flatten", ["ecg"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["probs"]),
    ]
    inits = [numpy_helper.from_array(weights.astype(np.float32), "W"),
             numpy_helper.from_array(bias.astype(np.float32), "b")]
    graph = helper.make_graph(nodes, "linear", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def label_validation(labels: list[str] = LABELS, not_validated: Iterable[str] = ()) -> dict[str, Any]:
    """A ``label_validation`` block: every label validated (AUROC 0.80 [0.70, 0.88]) except ``not_validated``
    (AUROC 0.52 [0.44, 0.60])."""
    off = set(not_validated)
    entries = {}
    for label in labels:
        ok = label not in off
        auroc, low, high = (0.80, 0.70, 0.88) if ok else (0.52, 0.44, 0.60)
        entries[label] = {"validated": ok, "auroc": auroc, "low": low, "high": high, "n": 200, "positives": 60,
                          "subjects": 80, "reason": "test fixture: interval above 0.5" if ok
                          else "test fixture: interval reaches 0.5"}
    return {"split": "validation", "unit": "subject", "ci": 0.95, "replicates": 200,
            "rule": "validated when the lower bound of the subject-level 95% bootstrap interval of validation "
                    "AUROC is > 0.5", "labels": entries}


def make_bundle(out: Path, seed: int = 0, thresholds: dict[str, float] | None = None,
                scale: float = 1e-3, weights: np.ndarray | None = None, bias: np.ndarray | None = None,
                not_validated: Iterable[str] = (), signing_key: Any = "test") -> Path:
    """Write a verified-format bundle of a linear model to ``out`` (random weights unless given);
    every label validated except ``not_validated``; signed with the tests' key unless ``signing_key``
    is another key or None (unsigned)."""
    from export.bundle_writer import write_bundle
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    if weights is None:
        weights = rng.normal(0, scale, (12 * 1000, len(LABELS)))
    model = linear_model(weights, np.zeros(len(LABELS)) if bias is None else bias)
    golden = rng.uniform(-1, 1, (2, 12, 1000)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {"ecg": golden})[0]
    meta = {
        "format": "cromotex-bundle", "format_version": 1, "model_name": "test-linear", "model_version": "0",
        "created_utc": datetime.now(timezone.utc).isoformat(), "labels": LABELS,
        "leads": list(CANONICAL_LEADS), "fs_hz": DEFAULT_RECIPE.fs_hz, "window_s": DEFAULT_RECIPE.window_s,
        "hop_s": 5.0, "recipe": DEFAULT_RECIPE.to_dict(),
        "input": {"name": "ecg", "shape": ["batch", 12, 1000], "dtype": "float32"},
        "output": {"name": "probs", "kind": "probability"},
        "thresholds": thresholds or {label: 0.5 for label in LABELS},
        "calibration": {"method": "identity"},
        "golden": {"input_b64": encode_array(golden), "input_shape": list(golden.shape),
                   "expected": expected.tolist(), "atol": 1e-5},
        "variant": "fp32", "cohort_manifest_sha256": None, "config_sha256": None, "test_metrics": {},
        "label_validation": label_validation(LABELS, not_validated), "exporter_version": "test",
    }
    write_bundle(model, meta, out, fixture_signing_key() if signing_key == "test" else signing_key)
    return out
