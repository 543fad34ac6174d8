"""The model bundle: one ``.onnx`` file the bedside trusts, and the checks that earn that trust.

Contract (documented in docs/bundle.md): an ONNX model, input ``[batch, 12, 1000]`` float32 (the
preprocessed window), output ``[batch, K]`` probabilities, with two ``metadata_props`` entries:

- ``cromotex.metadata``: JSON validated against ``bundle_schema.json`` (labels, lead order, rate,
  window, hop, preprocessing recipe, thresholds, calibration, golden input and expected output,
  which labels are validated and so may alarm ...);
- ``cromotex.sha256``: sha256 of the file's bytes with this 64-character value replaced by ``0`` x 64.

:func:`verify_bundle` runs the checks in order: file, checksum, schema, golden. Anything that
fails raises :class:`BundleError` naming the check. This module needs onnxruntime, never torch.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bedside.errors import BundleError
from bedside.leads import CANONICAL_LEADS
from bedside.preprocess import Recipe

log = logging.getLogger(__name__)

METADATA_KEY = "cromotex.metadata"
SHA256_KEY = "cromotex.sha256"
PLACEHOLDER = b"0" * 64
#: Preference order of onnxruntime execution providers at the bedside.
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _digest_span(data: bytes) -> tuple[int, int]:
    """Byte span of the sha256 value: StringStringEntry key, then field 2 (0x12) of length 64 (0x40)."""
    key = SHA256_KEY.encode()
    hits = []
    pos = data.find(key)
    while pos != -1:
        after = pos + len(key)
        if data[after: after + 2] == b"\x12\x40":
            hits.append(after + 2)
        pos = data.find(key, pos + 1)
    if len(hits) != 1:
        raise BundleError("checksum", f"expected one {SHA256_KEY} entry in the file, found {len(hits)}; "
                                      "re-export the bundle with `trainer export`")
    return hits[0], hits[0] + 64


def bundle_digest(data: bytes) -> str:
    """sha256 of bundle bytes with the stored digest replaced by the placeholder."""
    a, b = _digest_span(data)
    return hashlib.sha256(data[:a] + PLACEHOLDER + data[b:]).hexdigest()


def seal_bundle_bytes(data: bytes) -> bytes:
    """Write the checksum into serialized ONNX bytes whose digest entry holds the placeholder."""
    a, b = _digest_span(data)
    if data[a:b] != PLACEHOLDER:
        raise ValueError("the digest entry must hold the placeholder before sealing")
    return data[:a] + bundle_digest(data).encode() + data[b:]


@lru_cache(maxsize=1)
def metadata_schema() -> dict[str, Any]:
    return json.loads(resources.files("bedside").joinpath("bundle_schema.json").read_text())


def encode_array(x: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(x, dtype=np.float32).tobytes()).decode()


def decode_array(text: str, shape: list[int]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float32).reshape(shape)


@dataclass
class Bundle:
    """A verified model bundle with an onnxruntime session; ``predict`` gives calibrated probabilities."""

    path: Path
    sha256: str
    metadata: dict[str, Any]
    session: Any  # onnxruntime.InferenceSession
    provider: str  # the execution provider that runs the model
    recipe: Recipe = field(init=False)

    def __post_init__(self) -> None:
        self.recipe = Recipe.from_dict(self.metadata["recipe"])

    @property
    def labels(self) -> list[str]:
        return list(self.metadata["labels"])

    @property
    def thresholds(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.metadata["thresholds"].items()}

    @property
    def validated_labels(self) -> list[str]:
        """Labels whose validation AUROC is credibly above chance: only these may raise alarms."""
        entries = self.metadata["label_validation"]["labels"]
        return [label for label in self.labels if entries[label]["validated"]]

    @property
    def unvalidated_labels(self) -> list[str]:
        """Labels not validated: their risk is computed, logged and shown, never alarmed."""
        entries = self.metadata["label_validation"]["labels"]
        return [label for label in self.labels if not entries[label]["validated"]]

    @property
    def version(self) -> str:
        return f"{self.metadata['model_name']} {self.metadata['model_version']}"

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Uncalibrated model output [N, K] for preprocessed windows [N, 12, 1000]."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        name = self.session.get_inputs()[0].name
        return np.asarray(self.session.run(None, {name: x})[0], dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities [N, K] (label order of ``labels``) for windows [N, 12, 1000]."""
        return calibrate(self.raw(x), self.labels, self.metadata["calibration"])


def calibrate(p: np.ndarray, labels: list[str], calibration: dict[str, Any]) -> np.ndarray:
    """Map raw probabilities through the bundle's calibration (identity, Platt or isotonic)."""
    method = calibration["method"]
    if method == "identity":
        return p
    params = calibration.get("params", {})
    out = np.empty_like(p)
    for k, label in enumerate(labels):
        q = params[label]
        if method == "platt":  # sigmoid(a * logit(p) + b)
            logit = np.log(np.clip(p[:, k], 1e-7, 1 - 1e-7)) - np.log1p(-np.clip(p[:, k], 1e-7, 1 - 1e-7))
            out[:, k] = 1.0 / (1.0 + np.exp(-(q["a"] * logit + q["b"])))
        else:  # isotonic: piecewise linear through the fitted steps
            out[:, k] = np.interp(p[:, k], q["x"], q["y"])
    return out.astype(np.float32)


def _check_semantics(meta: dict[str, Any]) -> None:
    labels = meta["labels"]
    if list(meta["leads"]) != list(CANONICAL_LEADS):
        raise BundleError("schema", f"lead order {meta['leads']} differs from the canonical {list(CANONICAL_LEADS)}")
    if set(meta["thresholds"]) != set(labels):
        raise BundleError("schema", f"thresholds given for {sorted(meta['thresholds'])}, labels are {labels}")
    try:
        recipe = Recipe.from_dict(meta["recipe"])
    except (TypeError, ValueError) as exc:
        raise BundleError("schema", f"preprocessing recipe not usable here: {exc}") from exc
    if recipe.fs_hz != meta["fs_hz"] or recipe.window_s != meta["window_s"]:
        raise BundleError("schema", "fs_hz/window_s disagree with the preprocessing recipe")
    shape = meta["input"]["shape"]
    if list(shape[1:]) != [len(CANONICAL_LEADS), recipe.window_samples]:
        raise BundleError("schema", f"input shape {shape} is not [batch, 12, {recipe.window_samples}]")
    if meta["calibration"]["method"] != "identity":
        params = meta["calibration"].get("params", {})
        if set(params) != set(labels):
            raise BundleError("schema", f"calibration params for {sorted(params)}, labels are {labels}")
    _check_label_validation(meta["label_validation"]["labels"], labels)


def _check_label_validation(entries: dict[str, Any], labels: list[str]) -> None:
    """label_validation covers exactly the labels, and a label marked validated meets the rule (low > 0.5)."""
    if set(entries) != set(labels):
        raise BundleError("schema", f"metadata field label_validation/labels covers {sorted(entries)}, labels are "
                                    f"{labels}; re-export the bundle with `trainer export`")
    for label in labels:
        e = entries[label]
        if e["validated"] and (e["low"] is None or not e["low"] > 0.5):
            raise BundleError("schema", f"metadata field label_validation/labels/{label}: validated is true but "
                                        f"low={e['low']} (the rule needs a lower bound > 0.5); re-export the "
                                        "bundle with `trainer export`")


def _make_session(model: bytes | str, providers: tuple[str, ...], trt_cache_dir: str | None):
    """An onnxruntime session on the first provider of ``providers`` that starts; logs the choice."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    errors: list[str] = []
    for name in providers:
        if name not in available:
            errors.append(f"{name}: not available in this onnxruntime build")
            continue
        options: dict[str, Any] = {}
        if name == "TensorrtExecutionProvider":
            options = {"trt_fp16_enable": True, "trt_engine_cache_enable": bool(trt_cache_dir)}
            if trt_cache_dir:
                options["trt_engine_cache_path"] = trt_cache_dir
        chain = [(name, options)] if name == "CPUExecutionProvider" else [(name, options), "CPUExecutionProvider"]
        try:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            session = ort.InferenceSession(model, sess_options=so, providers=chain)
        except Exception as exc:  # a provider that fails to start falls back to the next
            errors.append(f"{name}: failed to start ({exc})")
            continue
        if session.get_providers()[0] != name:
            errors.append(f"{name}: onnxruntime fell back to {session.get_providers()[0]}")
            continue
        for line in errors:  # absent from this build: expected on CPU-only devices; failed: worth a warning
            (log.info if "not available" in line else log.warning)("execution provider skipped: %s", line)
        log.info("model runs on %s", name)
        return session, name
    raise BundleError("runtime", "no execution provider could start: " + "; ".join(errors))


def verify_bundle(path: str | Path, providers: tuple[str, ...] = PROVIDER_ORDER,
                  trt_cache_dir: str | None = None,
                  on_check: Callable[[str, str], None] | None = None) -> Bundle:
    """Verify a bundle (file, checksum, schema, golden output) and open it for inference.

    ``on_check(check, detail)`` is called after each check that passes (``bedside verify`` prints them).
    """
    import jsonschema

    passed = on_check or (lambda check, detail: None)
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError("file", f"{path}: cannot read: {exc}") from exc
    passed("file", f"{path} ({len(data)} bytes)")
    a, b = _digest_span(data)
    stored = data[a:b].decode("ascii", "replace")
    actual = bundle_digest(data)
    if stored != actual:
        raise BundleError("checksum", f"{path}: sha256 is {actual}, the bundle says {stored}: the file was "
                                      "altered or damaged; copy it again from the release")
    passed("checksum", f"sha256 {actual}")
    session, provider = _make_session(data, providers, trt_cache_dir)
    passed("runtime", f"onnxruntime {provider}")
    try:
        meta = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise BundleError("schema", f"{path}: no readable {METADATA_KEY} entry: {exc}") from exc
    try:
        jsonschema.validate(meta, metadata_schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise BundleError("schema", f"{path}: metadata field {where}: {exc.message}") from exc
    _check_semantics(meta)
    passed("schema", f"{meta['model_name']} {meta['model_version']} ({meta.get('variant', 'fp32')}), "
                     f"labels {', '.join(meta['labels'])}")
    bundle = Bundle(path=path, sha256=actual, metadata=meta, session=session, provider=provider)
    golden = meta["golden"]
    x = decode_array(golden["input_b64"], golden["input_shape"])
    expected = np.asarray(golden["expected"], dtype=np.float32)
    try:
        got = bundle.raw(x)
    except Exception as exc:
        raise BundleError("golden", f"{path}: the golden input does not run: {exc}") from exc
    err = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
    atol = float(golden.get("atol_by_provider", {}).get(provider, golden["atol"]))  # GPUs differ more
    if not err <= atol:
        raise BundleError("golden", f"{path}: golden output differs by {err:.3g} (allowed {atol:g}) "
                                    f"on {provider}; the model or runtime does not compute what was exported")
    passed("golden", f"{len(x)} windows, max |diff| {err:.3g} <= {atol:g} on {provider}")
    return bundle


def load_bundle(path: str | Path, providers: tuple[str, ...] = PROVIDER_ORDER,
                trt_cache_dir: str | None = None) -> Bundle:
    """What the bedside calls: every load is a full verification."""
    return verify_bundle(path, providers, trt_cache_dir)
