"""Who the bedside trusts: Ed25519 bundle signatures and the directory of trusted public keys.

A bundle carries ONE Ed25519 signature (``cromotex.signature`` in its ONNX ``metadata_props``:
``{"key_id", "alg": "ed25519", "sig": base64}``) over :func:`signed_message`: a domain tag, the
sha256 of the ONNX bytes with the ``cromotex.*`` metadata entries left out (graph, weights, opset,
every other field: :func:`graph_digest`), and the canonical metadata JSON (sorted keys, no
whitespace). Editing any metadata field, the graph or the weights invalidates it; re-sealing the
``cromotex.sha256`` checksum (an integrity check against damage, not a trust mechanism) does not help.

The bedside trusts only the public keys in a trust directory (one PEM ``*.pub`` per key, default
``/etc/cromotex/trusted-keys``). A key is named by its id: the first 16 hex digits of the sha256 of
its raw 32 public-key bytes. See docs/bundle.md (trust model, rotation, revocation).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bedside.errors import BundleError

log = logging.getLogger(__name__)

SIGNATURE_KEY = "cromotex.signature"
#: Where ``bedside`` looks for trusted public keys unless told otherwise (``--trust DIR``).
DEFAULT_TRUST_DIR = Path("/etc/cromotex/trusted-keys")
ALG = "ed25519"
_DOMAIN = b"cromotex-bundle-signature-v1\x00"
UNSIGNED_MARK = "UNSIGNED (development)"


@dataclass(frozen=True)
class TrustSettings:
    """Which signers the bedside accepts: the keys in ``trust_dir``; ``allow_unsigned`` (development)
    also accepts unsigned bundles and unknown signers, loudly."""

    trust_dir: Path | None = None
    allow_unsigned: bool = False

    @classmethod
    def default(cls) -> "TrustSettings":
        """The production default: keys in :data:`DEFAULT_TRUST_DIR`, nothing unsigned."""
        return cls(DEFAULT_TRUST_DIR, False)


@dataclass(frozen=True)
class Signer:
    """Who signed a verified bundle: key id and the trusted key file (None when accepted unsigned)."""

    key_id: str | None
    key_file: str | None
    trusted: bool


# -- keys ---------------------------------------------------------------------------------------------------------

def key_id(public_key: Any) -> str:
    """First 16 hex digits of the sha256 of the raw 32 Ed25519 public-key bytes."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key_pair(out: str | Path) -> tuple[Path, Path, str]:
    """Write a new private key to ``out`` (PEM, mode 0600, never overwriting) and its public key to
    ``out.pub`` (PEM); returns (private path, public path, key id)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(out)
    pub = out.with_name(out.name + ".pub")
    for p in (out, pub):
        if p.exists():
            raise FileExistsError(f"{p} exists; refusing to overwrite a key (choose another --out)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # O_EXCL: never overwrite, 0600 from birth
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    fd = os.open(pub, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(public_pem)
    return out, pub, key_id(key.public_key())


def load_private_key(path: str | Path) -> Any:
    """An Ed25519 private key from a PEM file (ValueError with the fix otherwise)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable unencrypted PEM private key ({exc}); "
                         "make one with `trainer keygen --out KEY`") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 key; make one with `trainer keygen --out KEY`")
    return key


def trusted_keys(trust_dir: Path) -> dict[str, tuple[str, Any]]:
    """key id -> (file name, public key) for every ``*.pub`` in ``trust_dir``; unreadable files are skipped
    with a warning."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: dict[str, tuple[str, Any]] = {}
    for path in sorted(trust_dir.glob("*.pub")):
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            log.warning("trusted key %s skipped: %s", path, exc)
            continue
        if not isinstance(key, Ed25519PublicKey):
            log.warning("trusted key %s skipped: not an Ed25519 public key", path)
            continue
        keys[key_id(key)] = (path.name, key)
    return keys


# -- what is signed -----------------------------------------------------------------------------------------------

def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _entry_key_value(entry: bytes) -> tuple[str, bytes]:
    """key and value of a StringStringEntryProto (fields 1 and 2)."""
    key, value, pos = b"", b"", 0
    while pos < len(entry):
        tag, pos = _varint(entry, pos)
        if tag & 7 != 2:
            raise ValueError("unexpected wire type in a metadata entry")
        n, pos = _varint(entry, pos)
        if pos + n > len(entry):
            raise ValueError("truncated metadata entry")
        if tag >> 3 == 1:
            key = entry[pos:pos + n]
        elif tag >> 3 == 2:
            value = entry[pos:pos + n]
        pos += n
    return key.decode("utf-8", "replace"), value


def split_model_bytes(data: bytes) -> tuple[bytes, dict[str, list[bytes]]]:
    """Walk the top-level fields of a serialized ONNX ModelProto: (every byte except the ``cromotex.*``
    metadata_props entries, {key: [values]} of those entries). ValueError when not a protobuf."""
    kept = bytearray()
    ours: dict[str, list[bytes]] = {}
    pos = 0
    while pos < len(data):
        start = pos
        tag, pos = _varint(data, pos)
        wire = tag & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            n, pos = _varint(data, pos)
            if tag >> 3 == 14:  # ModelProto.metadata_props
                key, value = _entry_key_value(data[pos:pos + n])
                if key.startswith("cromotex."):
                    ours.setdefault(key, []).append(value)
                    pos += n
                    continue
            pos += n
        else:
            raise ValueError(f"unexpected wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        kept += data[start:pos]
    return bytes(kept), ours


def graph_digest(data: bytes) -> bytes:
    """sha256 of the ONNX bytes without the ``cromotex.*`` entries: the graph, weights, opsets and the rest."""
    return hashlib.sha256(split_model_bytes(data)[0]).digest()


def canonical_metadata(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signed_message(data: bytes, meta: dict[str, Any]) -> bytes:
    """What the one signature covers: domain tag + graph digest + canonical metadata JSON."""
    return _DOMAIN + graph_digest(data) + canonical_metadata(meta)


def signature_entry(private_key: Any, data: bytes, meta: dict[str, Any]) -> str:
    """The ``cromotex.signature`` value for bundle bytes ``data`` holding metadata ``meta``."""
    sig = private_key.sign(signed_message(data, meta))
    return json.dumps({"key_id": key_id(private_key.public_key()), "alg": ALG,
                       "sig": base64.b64encode(sig).decode()}, sort_keys=True)


# -- checking -----------------------------------------------------------------------------------------------------

_FIX = ("copy the signer's .pub into the trust directory ({where}) if you trust it, or re-export the "
        "bundle with `trainer export ... --sign KEY`")


def _refuse_or_allow(trust: TrustSettings, key: str | None, message: str) -> Signer:
    if not trust.allow_unsigned:
        raise BundleError("signature", message)
    log.warning("ACCEPTED WITHOUT A TRUSTED SIGNATURE (--allow-unsigned, development only): %s", message)
    return Signer(key, None, False)


def check_signature(data: bytes, meta: dict[str, Any], entries: dict[str, list[bytes]],
                    trust: TrustSettings) -> Signer:
    """The bundle's signer, if its signature verifies with a trusted key; BundleError("signature") otherwise,
    unless ``trust.allow_unsigned`` (then a warning and an untrusted Signer)."""
    from cryptography.exceptions import InvalidSignature

    where = trust.trust_dir or "--trust DIR"
    fix = _FIX.format(where=where)
    values = entries.get(SIGNATURE_KEY, [])
    if not values:
        return _refuse_or_allow(trust, None, f"the bundle is unsigned; {fix}")
    if len(values) > 1:
        raise BundleError("signature", f"{len(values)} {SIGNATURE_KEY} entries; re-export the bundle")
    try:
        entry = json.loads(values[0])
        kid, alg, sig = str(entry["key_id"]), entry["alg"], base64.b64decode(entry["sig"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError("signature", f"{SIGNATURE_KEY} is unreadable ({exc}); re-export the bundle") from exc
    if alg != ALG:
        raise BundleError("signature", f"signature algorithm {alg!r} unknown (only {ALG}); re-export the bundle")
    if trust.trust_dir is None:
        return _refuse_or_allow(trust, kid, f"signed by key {kid}, but no trust directory was given; "
                                            f"pass --trust DIR holding the signer's .pub")
    if not trust.trust_dir.is_dir():
        return _refuse_or_allow(trust, kid, f"signed by key {kid}, but the trust directory {trust.trust_dir} "
                                            f"does not exist; create it and {fix}")
    keys = trusted_keys(trust.trust_dir)
    if kid not in keys:
        return _refuse_or_allow(trust, kid, f"signed by key {kid}, which is not trusted here (no matching .pub "
                                            f"in {trust.trust_dir}); {fix}")
    name, public = keys[kid]
    try:
        public.verify(sig, signed_message(data, meta))
    except InvalidSignature:
        # a trusted key whose signature does not match: the bundle was altered after signing
        raise BundleError("signature", f"the signature of key {kid} ({name}) does not match the bundle: its "
                                       "metadata, graph or weights were changed after signing; copy the bundle "
                                       "again from the release") from None
    return Signer(kid, name, True)
