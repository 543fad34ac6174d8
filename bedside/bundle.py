"""The model bundle: one ``.onnx`` file the bedside trusts, and the checks that earn that trust.

Contract (documented in docs/bundle.md): an ONNX model, input ``[batch, 12, 1000]`` float32 (the
preprocessed window), output ``[batch, K]`` probabilities, with two ``metadata_props`` entries:

- ``cromotex.metadata``: JSON validated against ``bundle_schema.json`` (labels, lead order, rate,
  window, hop, preprocessing recipe, thresholds, calibration, golden input and expected output,
  which labels are validated and so may alarm ...);
- ``cromotex.sha256``: sha256 of the file's bytes with this 64-character value replaced by ``0`` x 64
  (an integrity check against damage: anyone can recompute it, so it is not a trust mechanism);
- ``cromotex.signature``: one Ed25519 signature over the graph and the metadata (:mod:`bedside.trust`).

:func:`verify_bundle` runs the checks in order: file, checksum, signature, runtime, schema, golden.
Anything that fails raises :class:`BundleError` naming the check. This module needs onnxruntime,
never torch.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import stat
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
from bedside.trust import UNSIGNED_MARK, Signer, TrustSettings, check_signature, split_model_bytes

log = logging.getLogger(__name__)

METADATA_KEY = "cromotex.metadata"
SHA256_KEY = "cromotex.sha256"
PLACEHOLDER = b"0" * 64
#: Preference order of onnxruntime execution providers at the bedside.
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
#: The pathologies this bedside knows (trainer.labels.LABELS; bedside never imports trainer).
KNOWN_LABELS = ("edema", "pleural_effusion", "cardiomegaly")
#: Largest bundle file read (a real bundle is a few MB; the paper-size model ~ 100 MB).
MAX_BUNDLE_BYTES = 512 * 1024 * 1024
HOP_RANGE_S = (0.5, 60.0)
WINDOW_RANGE_S = (1.0, 60.0)
FS_RANGE_HZ = (25.0, 2000.0)
MAX_GOLDEN_WINDOWS = 64
MAX_GOLDEN_ATOL = 1e-2  # CPU tolerance (the largest the exporter writes is 5e-3, INT8)
MAX_PROVIDER_ATOL = 0.1  # GPU tolerances (the exporter writes max(2e-2, 4 x FP16 deviation))


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
    signer: Signer = Signer(None, None, False)  # who signed it (trusted False: accepted with allow_unsigned)
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
        """Model name and version as logged and shown; marked ``UNSIGNED (development)`` unless a trusted
        key signed it."""
        name = f"{self.metadata['model_name']} {self.metadata['model_version']}"
        return name if self.signer.trusted else f"{name} {UNSIGNED_MARK}"

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


def _bad(field: str, value: Any, why: str) -> BundleError:
    text = repr(value)
    text = text if len(text) <= 120 else text[:117] + "..."
    return BundleError("schema", f"metadata field {field} = {text}: {why}; re-export the bundle with `trainer export`")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _in(field: str, v: Any, lo: float, hi: float, unit: str = "") -> None:
    if not (_finite(v) and lo <= v <= hi):
        raise _bad(field, v, f"must lie in [{lo:g}, {hi:g}]{unit}")


def _check_calibration(calibration: dict[str, Any], labels: list[str]) -> None:
    """Platt ``a > 0`` and ``b`` finite (monotone increasing); isotonic knots usable by np.interp."""
    method = calibration["method"]
    if method == "identity":
        return
    params = calibration.get("params", {})
    if set(params) != set(labels):
        raise BundleError("schema", f"calibration params for {sorted(params)}, labels are {labels}")
    for label in labels:
        q, where = params[label], f"calibration/params/{label}"
        if not isinstance(q, dict):
            raise _bad(where, q, "must be an object")
        if method == "platt":
            a, b = q.get("a"), q.get("b")
            if not (_finite(a) and a > 0):
                raise _bad(f"{where}/a", a, "must be a finite number > 0 (calibration must keep the ranking)")
            if not _finite(b):
                raise _bad(f"{where}/b", b, "must be a finite number")
            continue
        x, y = q.get("x"), q.get("y")
        if not (isinstance(x, list) and isinstance(y, list) and len(x) == len(y) and len(x) >= 2):
            raise _bad(f"{where}/x", x, "x and y must be lists of the same length >= 2")
        if not all(_finite(v) for v in x + y):
            raise _bad(f"{where}/x", x, "knots must be finite numbers")
        if any(x1 <= x0 for x0, x1 in zip(x, x[1:])):
            raise _bad(f"{where}/x", x, "must be strictly increasing")
        if any(y1 < y0 for y0, y1 in zip(y, y[1:])) or min(y) < 0 or max(y) > 1:
            raise _bad(f"{where}/y", y, "must be non-decreasing within [0, 1]")


def _check_golden(golden: dict[str, Any], k: int, window_samples: int) -> None:
    shape = golden["input_shape"]
    if not (len(shape) == 3 and list(shape[1:]) == [len(CANONICAL_LEADS), window_samples]
            and 1 <= shape[0] <= MAX_GOLDEN_WINDOWS):
        raise _bad("golden/input_shape", shape,
                   f"must be [n, {len(CANONICAL_LEADS)}, {window_samples}] with 1 <= n <= {MAX_GOLDEN_WINDOWS}")
    n = shape[0]
    expected = golden["expected"]
    ok = (isinstance(expected, list) and len(expected) == n
          and all(isinstance(row, list) and len(row) == k and all(_finite(v) for v in row) for row in expected))
    if not ok:
        raise _bad("golden/expected", expected, f"must be [{n}, {k}] finite numbers")
    atol = golden["atol"]
    if not (_finite(atol) and 0 < atol <= MAX_GOLDEN_ATOL):
        raise _bad("golden/atol", atol, f"must lie in (0, {MAX_GOLDEN_ATOL:g}]")
    for provider, tol in golden.get("atol_by_provider", {}).items():
        if not (_finite(tol) and 0 < tol <= MAX_PROVIDER_ATOL):
            raise _bad(f"golden/atol_by_provider/{provider}", tol, f"must lie in (0, {MAX_PROVIDER_ATOL:g}]")
    try:
        decode_array(golden["input_b64"], shape)
    except (ValueError, TypeError) as exc:
        raise _bad("golden/input_b64", f"{len(golden['input_b64'])} characters",
                   f"does not decode to float32 {shape} ({exc})") from exc


def _check_semantics(meta: dict[str, Any]) -> None:
    """What the JSON schema cannot say: the values make sense for this bedside (each failure names the field)."""
    labels = meta["labels"]
    unknown = [label for label in labels if label not in KNOWN_LABELS]
    if unknown:
        raise _bad("labels", labels, f"{unknown} unknown here (known: {', '.join(KNOWN_LABELS)})")
    if len(set(labels)) != len(labels):
        raise _bad("labels", labels, "labels must be distinct")
    if list(meta["leads"]) != list(CANONICAL_LEADS):
        raise BundleError("schema", f"lead order {meta['leads']} differs from the canonical {list(CANONICAL_LEADS)}")
    if set(meta["thresholds"]) != set(labels):
        raise BundleError("schema", f"thresholds given for {sorted(meta['thresholds'])}, labels are {labels}")
    for label in labels:
        t = meta["thresholds"][label]
        if not (_finite(t) and 0 < t < 1):
            raise _bad(f"thresholds/{label}", t, "must lie strictly between 0 and 1 (0 alarms always, 1 never)")
    _in("hop_s", meta["hop_s"], *HOP_RANGE_S, " s")
    _in("window_s", meta["window_s"], *WINDOW_RANGE_S, " s")
    _in("fs_hz", meta["fs_hz"], *FS_RANGE_HZ, " Hz")
    try:
        recipe = Recipe.from_dict(meta["recipe"])
    except (TypeError, ValueError) as exc:
        raise BundleError("schema", f"preprocessing recipe not usable here: {exc}") from exc
    if recipe.fs_hz != meta["fs_hz"] or recipe.window_s != meta["window_s"]:
        raise BundleError("schema", "fs_hz/window_s disagree with the preprocessing recipe")
    shape = meta["input"]["shape"]
    if len(shape) != 3 or list(shape[1:]) != [len(CANONICAL_LEADS), recipe.window_samples]:
        raise _bad("input/shape", shape, f"must be [batch, 12, {recipe.window_samples}]")
    _check_calibration(meta["calibration"], labels)
    _check_golden(meta["golden"], len(labels), recipe.window_samples)
    _check_label_validation(meta["label_validation"]["labels"], labels)


#: The semantic checks as a public name: the exporter runs them before writing a bundle.
check_semantics = _check_semantics


def _check_graph_io(session: Any, meta: dict[str, Any]) -> None:
    """The ONNX graph's input and output agree with the metadata: ``[batch, 12, samples]`` -> ``[batch, K]``."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    want = meta["input"]["shape"]
    if len(inputs) != 1 or inputs[0].name != meta["input"]["name"]:
        raise _bad("input/name", meta["input"]["name"], f"the graph's inputs are {[i.name for i in inputs]}")
    got = list(inputs[0].shape)
    if len(got) != 3 or got[1:] != list(want[1:]) or (isinstance(got[0], int) and isinstance(want[0], int)
                                                       and got[0] != want[0]):
        raise _bad("input/shape", want, f"the graph's input {inputs[0].name} has shape {got}")
    if not outputs or outputs[0].name != meta["output"]["name"]:
        raise _bad("output/name", meta["output"]["name"], f"the graph's outputs are {[o.name for o in outputs]}")
    out_shape, k = list(outputs[0].shape), len(meta["labels"])
    if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != k):
        raise _bad("output", meta["output"]["name"], f"the graph's output has shape {out_shape}, not [batch, {k}] "
                                                     f"for labels {meta['labels']}")


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


@dataclass(frozen=True)
class SessionSettings:
    """onnxruntime session options of the bedside, set explicitly (onnxruntime's defaults spin one thread per
    core between runs); chosen by measurement on the 2-core VM, BENCHMARKS.md "Bedside engine"."""

    #: intra-op threads, capped at the CPUs this process may run on (one window at a time is small work)
    intra_op_threads: int = 2
    #: busy-waiting worker threads: at real time they would burn CPU between windows for nothing. With other
    #: processes on the cores, onnxruntime's defaults (spinning, arena, one thread per core) took 1.4x as long
    #: per batch-1 window of the paper-size FP32 model as these settings (97 vs 70 ms, side by side)
    spinning: bool = False
    #: onnxruntime's CPU arena keeps the peak of every run reserved; off, activations are freed after a run.
    #: Same RSS at batch 1; at batch 16 (a replay, or a live backlog) the arena is 1.2-1.5x faster and keeps
    #: 110-150 MB: on for replay (REPLAY_SESSION), off for the live monitor
    memory_arena: bool = False
    #: prepacked weight copies: faster GEMMs; turning it off saved no memory measurably on the paper-size model
    prepacking: bool = True

    def options(self) -> Any:
        """The ``onnxruntime.SessionOptions`` for these settings."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = max(1, min(self.intra_op_threads, len(os.sched_getaffinity(0))))
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.enable_cpu_mem_arena = self.memory_arena
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if not self.prepacking:
            so.add_session_config_entry("session.disable_prepacking", "1")
        return so


#: A replay scores batches as fast as it can, two calls at once from two worker threads with one onnxruntime
#: thread each (bedside.replay.ReplayOptions): the arena pays there (1.2-1.5x at batches of 16).
REPLAY_SESSION = SessionSettings(intra_op_threads=1, memory_arena=True)


def _make_session(model: bytes | str, providers: tuple[str, ...], trt_cache_dir: str | None,
                  settings: SessionSettings = SessionSettings()):
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
            session = ort.InferenceSession(model, sess_options=settings.options(), providers=chain)
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


def read_bundle_file(path: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (default :data:`MAX_BUNDLE_BYTES`); a FIFO,
    device or directory is refused before anything is read (opened non-blocking, checked with fstat)."""
    max_bytes = MAX_BUNDLE_BYTES if max_bytes is None else max_bytes
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise BundleError("file", f"{path}: cannot read: {exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError("file", f"{path}: not a regular file; give the path of the .onnx bundle")
        if st.st_size > max_bytes:
            raise BundleError("file", f"{path}: {st.st_size} bytes, more than the {max_bytes} a bundle may have")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise BundleError("file", f"{path}: grew beyond {max_bytes} bytes while being read")
    return data


def verify_bundle(path: str | Path, providers: tuple[str, ...] = PROVIDER_ORDER,
                  trt_cache_dir: str | None = None,
                  on_check: Callable[[str, str], None] | None = None,
                  trust: TrustSettings | None = None,
                  session_settings: SessionSettings = SessionSettings()) -> Bundle:
    """Verify a bundle (file, checksum, signature, runtime, schema, golden output) and open it for inference.

    ``trust`` says which signers are accepted (default :meth:`TrustSettings.default`: the keys in
    /etc/cromotex/trusted-keys). ``on_check(check, detail)`` is called after each check that passes
    (``bedside verify`` prints them). ``session_settings``: the onnxruntime options (:class:`SessionSettings`).
    """
    import jsonschema

    trust = trust or TrustSettings.default()
    passed = on_check or (lambda check, detail: None)
    path = Path(path)
    data = read_bundle_file(path)
    passed("file", f"{path} ({len(data)} bytes)")
    a, b = _digest_span(data)
    stored = data[a:b].decode("ascii", "replace")
    actual = bundle_digest(data)
    if stored != actual:
        raise BundleError("checksum", f"{path}: sha256 is {actual}, the bundle says {stored}: the file was "
                                      "altered or damaged; copy it again from the release")
    passed("checksum", f"sha256 {actual} (integrity only, not trust)")
    try:
        _, entries = split_model_bytes(data)
    except ValueError as exc:
        raise BundleError("file", f"{path}: not an ONNX model ({exc})") from exc
    values = entries.get(METADATA_KEY, [])
    if len(values) != 1:
        raise BundleError("schema", f"{path}: expected one {METADATA_KEY} entry, found {len(values)}")
    try:
        meta = json.loads(values[0])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError("schema", f"{path}: {METADATA_KEY} is not readable JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise BundleError("schema", f"{path}: {METADATA_KEY} is not a JSON object")
    signer = check_signature(data, meta, entries, trust)
    passed("signature", f"signed by key {signer.key_id} (trusted: {trust.trust_dir}/{signer.key_file})"
           if signer.trusted else f"{UNSIGNED_MARK}: accepted without a trusted signature "
                                  f"(key {signer.key_id or 'none'}; --allow-unsigned)")
    session, provider = _make_session(data, providers, trt_cache_dir, session_settings)
    passed("runtime", f"onnxruntime {provider}")
    try:
        jsonschema.validate(meta, metadata_schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise BundleError("schema", f"{path}: metadata field {where}: {exc.message}") from exc
    _check_semantics(meta)
    _check_graph_io(session, meta)
    passed("schema", f"{meta['model_name']} {meta['model_version']} ({meta.get('variant', 'fp32')}), "
                     f"labels {', '.join(meta['labels'])}")
    bundle = Bundle(path=path, sha256=actual, metadata=meta, session=session, provider=provider, signer=signer)
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
                trt_cache_dir: str | None = None, trust: TrustSettings | None = None,
                session_settings: SessionSettings = SessionSettings()) -> Bundle:
    """What the bedside calls: every load is a full verification."""
    return verify_bundle(path, providers, trt_cache_dir, trust=trust, session_settings=session_settings)
