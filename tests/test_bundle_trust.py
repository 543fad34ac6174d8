"""Signed bundles (bedside.trust) and the semantic checks every load runs, signed or not.

A bundle edited after signing and re-sealed with the project's own ``seal_bundle_bytes`` must be
refused by its signature; a bundle signed by a key outside the trust directory, or not signed, is
refused unless ``allow_unsigned`` (development), which says so. Semantic edits are refused naming the
field even where no signature is asked for.
"""

from __future__ import annotations

import json
import os
import stat

import onnx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import numpy_helper

from bedside.bundle import METADATA_KEY, PLACEHOLDER, SHA256_KEY, load_bundle, seal_bundle_bytes, verify_bundle
from bedside.cli import main as bedside_main
from bedside.errors import BundleError
from bedside.trust import SIGNATURE_KEY, UNSIGNED_MARK, TrustSettings, key_id
from bedside.verify import EXIT_REFUSED
from bundles import fixture_signing_key, make_bundle
from export.bundle_writer import atomic_write, bundle_bytes
from trainer.cli import main as trainer_main

CPU = ("CPUExecutionProvider",)
TEST_KID = key_id(fixture_signing_key().public_key())
DEV = TrustSettings(None, allow_unsigned=True)


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "model.onnx")


def _meta(model: onnx.ModelProto) -> dict:
    return json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])


def tamper(path, edit_meta=None, edit_model=None):
    """Edit metadata and/or graph in place, keep the signature entry as it is, and re-seal the checksum with
    ``seal_bundle_bytes``: what anyone holding the project's code can do."""
    model = onnx.load(path)
    meta = _meta(model)
    if edit_meta:
        edit_meta(meta)
    if edit_model:
        edit_model(model)
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            p.value = json.dumps(meta, sort_keys=True)
        elif p.key == SHA256_KEY:
            p.value = PLACEHOLDER.decode()
    atomic_write(path, seal_bundle_bytes(model.SerializeToString()))
    return path


def unsigned(path, edit_meta):
    """Rewrite the bundle unsigned with edited metadata (a valid checksum)."""
    model = onnx.load(path)
    meta = _meta(model)
    edit_meta(meta)
    atomic_write(path, bundle_bytes(model, meta))
    return path


def _scale_weights(model):
    w = model.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.5, w.name))


def _verify_cli(*args):
    return CliRunner().invoke(bedside_main, ["verify", *map(str, args), "--provider", "cpu"])


def test_keygen_writes_a_private_key_0600_and_refuses_to_overwrite(tmp_path):
    key = tmp_path / "keys" / "release.key"
    res = CliRunner().invoke(trainer_main, ["keygen", "--out", str(key)])
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes() and b"PUBLIC KEY" in (tmp_path / "keys" / "release.key.pub").read_bytes()
    kid = res.output.split("key id ")[1].split()[0]
    assert len(kid) == 16 and int(kid, 16) >= 0
    again = CliRunner().invoke(trainer_main, ["keygen", "--out", str(key)])
    assert again.exit_code != 0 and "refusing to overwrite" in again.output


def test_a_signed_bundle_verifies_and_names_its_signer(bundle, trusted_test_key):
    b = verify_bundle(bundle, CPU)
    assert b.signer.trusted and b.signer.key_id == TEST_KID and b.signer.key_file == trusted_test_key["pub"].name
    assert UNSIGNED_MARK not in b.version
    res = _verify_cli(bundle, "--trust", trusted_test_key["trust_dir"])
    assert res.exit_code == 0, res.output
    assert f"signed by key {TEST_KID}" in res.output and trusted_test_key["pub"].name in res.output


@pytest.mark.parametrize("edit_meta,edit_model", [
    (lambda m: m["thresholds"].update(edema=0.01), None),  # a threshold that alarms almost always
    (lambda m: m.update(labels=[m["labels"][1], m["labels"][0], *m["labels"][2:]]), None),  # labels swapped
    (None, _scale_weights),  # other weights
    (lambda m: m.update(hop_s=7.0), _scale_weights),
], ids=["threshold", "labels-swapped", "weights", "metadata-and-weights"])
def test_an_edit_after_signing_resealed_is_refused_by_the_signature(bundle, edit_meta, edit_model, trusted_test_key):
    tamper(bundle, edit_meta, edit_model)
    with pytest.raises(BundleError) as info:
        verify_bundle(bundle, CPU)
    assert info.value.check == "signature" and TEST_KID in str(info.value) and "changed after signing" in str(info)
    # --allow-unsigned does not accept a broken signature of a trusted key either
    with pytest.raises(BundleError) as info:
        verify_bundle(bundle, CPU, trust=TrustSettings(trusted_test_key["trust_dir"], allow_unsigned=True))
    assert info.value.check == "signature"
    res = _verify_cli(bundle)
    assert res.exit_code == EXIT_REFUSED and "signature FAILED" in res.output and TEST_KID in res.output


def test_a_signature_by_an_untrusted_key_is_refused_naming_it(tmp_path):
    other = Ed25519PrivateKey.generate()
    path = make_bundle(tmp_path / "m.onnx", signing_key=other)
    kid = key_id(other.public_key())
    with pytest.raises(BundleError) as info:
        verify_bundle(path, CPU)
    assert info.value.check == "signature" and kid in str(info.value) and "trust directory" in str(info.value)
    res = _verify_cli(path)
    assert res.exit_code == EXIT_REFUSED and kid in res.output and "--sign" in res.output


def test_replacing_the_signature_entry_with_another_keys_does_not_help(bundle, tmp_path):
    other = make_bundle(tmp_path / "other.onnx", seed=1)  # signed by the trusted key, other weights
    theirs = {p.key: p.value for p in onnx.load(other).metadata_props}[SIGNATURE_KEY]
    model = onnx.load(bundle)
    for p in model.metadata_props:
        if p.key == SIGNATURE_KEY:
            p.value = theirs
        elif p.key == SHA256_KEY:
            p.value = PLACEHOLDER.decode()
    atomic_write(bundle, seal_bundle_bytes(model.SerializeToString()))
    with pytest.raises(BundleError) as info:
        verify_bundle(bundle, CPU)
    assert info.value.check == "signature"


def test_an_unsigned_bundle_is_refused_unless_allowed_and_then_marked(tmp_path, caplog):
    path = make_bundle(tmp_path / "m.onnx", signing_key=None)
    with pytest.raises(BundleError) as info:
        load_bundle(path, CPU)
    assert info.value.check == "signature" and "unsigned" in str(info.value) and "--sign" in str(info.value)
    with caplog.at_level("WARNING", logger="bedside.trust"):
        b = load_bundle(path, CPU, trust=DEV)
    assert "ACCEPTED WITHOUT A TRUSTED SIGNATURE" in caplog.text
    assert not b.signer.trusted and b.version.endswith(UNSIGNED_MARK)
    res = _verify_cli(path)
    assert res.exit_code == EXIT_REFUSED and "signature FAILED" in res.output
    res = _verify_cli(path, "--allow-unsigned")
    assert res.exit_code == 0 and "WARNING" in res.output and UNSIGNED_MARK in res.output


def test_an_unsigned_replay_is_logged_as_unsigned(tmp_path):
    import sqlite_utils

    from engine_helpers import synthetic_ecg, write_record

    path = make_bundle(tmp_path / "m.onnx", signing_key=None)
    record = write_record(tmp_path, "rec", synthetic_ecg(30, 100.0), 100.0)
    db = tmp_path / "a.db"
    refused = CliRunner().invoke(bedside_main, ["replay", str(record), "--model", str(path), "--db", str(db), "-q"])
    assert refused.exit_code != 0 and "signature" in refused.output
    res = CliRunner().invoke(bedside_main, ["replay", str(record), "--model", str(path), "--db", str(db), "-q",
                                            "--allow-unsigned"])
    assert res.exit_code == 0, res.output
    assert "WARNING" in res.output and UNSIGNED_MARK in res.output
    sessions = list(sqlite_utils.Database(db)["sessions"].rows)
    assert sessions and UNSIGNED_MARK in sessions[-1]["bundle_version"]


def _iso(m, **q):
    m["calibration"] = {"method": "isotonic", "params": {label: dict(q) for label in m["labels"]}}


@pytest.mark.parametrize("edit,field", [
    (lambda m: m["thresholds"].update(edema=0.0), "thresholds/edema"),
    (lambda m: m["thresholds"].update(cardiomegaly=1.0), "thresholds/cardiomegaly"),
    (lambda m: m.update(hop_s=1e9), "hop_s"),
    (lambda m: m.update(hop_s=1e-6), "hop_s"),
    (lambda m: m.update(calibration={"method": "platt", "params": {k: {"a": 0.0, "b": -50.0} for k in m["labels"]}}),
     "calibration/params/edema/a"),
    (lambda m: _iso(m, x=[0.1, 0.5, 0.9], y=[0.2, 0.8, 0.1]), "calibration/params/edema/y"),
    (lambda m: _iso(m, x=[0.5, 0.1], y=[0.1, 0.2]), "calibration/params/edema/x"),
    (lambda m: _iso(m, x=[], y=[]), "calibration/params/edema/x"),
    (lambda m: m["golden"].update(atol=1e9), "golden/atol"),
    (lambda m: m["golden"].update(input_shape=[1, 12, 1000]), "golden/expected"),
    (lambda m: m["golden"].update(input_shape=[2, 12, 999]), "golden/input_shape"),
    (lambda m: m.update(labels=["edema", "edema", "cardiomegaly"]), "labels"),
    (lambda m: m.update(labels=["edema", "pneumothorax", "cardiomegaly"]), "labels"),
    (lambda m: m["input"].update(name="x"), "input/name"),
    (lambda m: m.update(fs_hz=10), "fs_hz"),
], ids=["threshold-0", "threshold-1", "hop-1e9", "hop-1e-6", "platt-a0", "isotonic-non-monotone",
        "isotonic-x-decreasing", "isotonic-empty", "golden-atol", "golden-expected-shape", "golden-input-shape",
        "labels-duplicate", "labels-unknown", "input-name", "fs"])
def test_semantic_edits_are_refused_naming_the_field(bundle, edit, field):
    unsigned(bundle, edit)
    with pytest.raises(BundleError) as info:
        verify_bundle(bundle, CPU, trust=DEV)  # no signature asked for: the semantic check refuses it
    assert info.value.check == "schema" and field in str(info.value), str(info.value)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_device_a_fifo_or_a_folder_is_refused_without_reading(tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)  # no writer: a blocking read would hang the test
    for path in ("/dev/zero", fifo, tmp_path):
        with pytest.raises(BundleError) as info:
            verify_bundle(path, CPU, trust=DEV)
        assert info.value.check == "file" and "not a regular file" in str(info.value)
    res = _verify_cli("/dev/zero")
    assert res.exit_code == EXIT_REFUSED and "not a regular file" in res.output


def test_an_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    import bedside.bundle

    path = make_bundle(tmp_path / "m.onnx")
    monkeypatch.setattr(bedside.bundle, "MAX_BUNDLE_BYTES", 1000)
    with pytest.raises(BundleError) as info:
        verify_bundle(path, CPU)
    assert info.value.check == "file" and "more than the 1000" in str(info.value)


def test_the_graph_io_must_match_the_metadata(bundle):
    def rename_output(model):
        model.graph.output[0].name = "p"
        model.graph.node[-1].output[0] = "p"

    model = onnx.load(bundle)
    meta = _meta(model)
    rename_output(model)
    atomic_write(bundle, bundle_bytes(model, meta, fixture_signing_key()))
    with pytest.raises(BundleError) as info:
        verify_bundle(bundle, CPU)
    assert info.value.check == "schema" and "output/name" in str(info.value)
