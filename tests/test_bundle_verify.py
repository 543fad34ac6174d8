"""``bedside verify``: tampered bundles are refused naming the failed check; providers fall back to CPU."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from bedside.bundle import METADATA_KEY, verify_bundle
from bedside.errors import BundleError
from bedside.verify import EXIT_REFUSED, verify_command, verify_lines
from bundles import fixture_signing_key, make_bundle
from export.bundle_writer import atomic_write, bundle_bytes

CPU = ("CPUExecutionProvider",)


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "model.onnx")


def reseal(path, edit_meta=None, edit_model=None):
    """Rewrite a bundle with edited metadata and/or graph, re-signed by the (trusted) test key and with a freshly
    computed checksum: what a trusted signer could ship by mistake (tests/test_bundle_trust.py: by anyone else)."""
    model = onnx.load(path)
    meta = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    if edit_meta:
        edit_meta(meta)
    if edit_model:
        edit_model(model)
    atomic_write(path, bundle_bytes(model, meta, fixture_signing_key()))
    return path


def refused(path, providers=CPU) -> BundleError:
    with pytest.raises(BundleError) as info:
        verify_bundle(path, providers)
    return info.value


def test_an_intact_bundle_passes_every_check(bundle):
    lines, error = verify_lines(bundle, CPU)
    assert error is None
    assert [(c, ok) for c, ok, _ in lines] == [(c, True) for c in ("file", "checksum", "signature", "runtime",
                                                                           "schema", "golden")]


def test_a_flipped_byte_fails_the_checksum(bundle):
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the weights
    bundle.write_bytes(bytes(data))
    err = refused(bundle)
    assert err.check == "checksum" and "altered or damaged" in str(err)


def test_a_truncated_or_missing_file_is_refused(bundle, tmp_path):
    bundle.write_bytes(bundle.read_bytes()[:-1000])
    assert refused(bundle).check == "checksum"
    assert refused(tmp_path / "absent.onnx").check == "file"


@pytest.mark.parametrize("edit,where", [
    (lambda m: m.pop("labels"), "labels"),
    (lambda m: m.update(thresholds={**m["thresholds"], "edema": 1.5}), "thresholds/edema"),
    (lambda m: m.update(variant="int4"), "variant"),
    (lambda m: m.update(leads=[*m["leads"][:4], "aVL", "aVF", *m["leads"][6:]]), "lead order"),
    (lambda m: m.update(calibration={"method": "platt", "params": {"edema": {"a": 1, "b": 0}}}), "calibration"),
    (lambda m: m.pop("cohort_manifest_sha256"), "cohort_manifest_sha256"),
])
def test_edited_metadata_with_a_resealed_checksum_fails_the_schema(bundle, edit, where):
    reseal(bundle, edit_meta=edit)
    err = refused(bundle)
    assert err.check == "schema" and where in str(err)


def test_a_wrong_golden_output_fails_the_golden_check(bundle):
    reseal(bundle, edit_meta=lambda m: m["golden"].update(
        expected=(np.asarray(m["golden"]["expected"]) + 0.01).tolist()))
    err = refused(bundle)
    assert err.check == "golden" and "differs by 0.01" in str(err) and "CPUExecutionProvider" in str(err)


def test_a_changed_graph_with_a_resealed_checksum_fails_the_golden_check(bundle):
    def scale_weights(model):
        w = model.graph.initializer[0]
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.01, w.name))

    reseal(bundle, edit_model=scale_weights)
    assert refused(bundle).check == "golden"


def test_golden_tolerance_is_per_provider(bundle):
    # 2e-3 off: beyond the CPU tolerance, within a GPU-sized one given for the CPU provider
    def off(m, per_provider):
        m["golden"]["expected"] = (np.asarray(m["golden"]["expected"]) + 2e-3).tolist()
        m["golden"]["atol_by_provider"] = per_provider

    reseal(bundle, edit_meta=lambda m: off(m, {"CUDAExecutionProvider": 1e-2}))
    assert refused(bundle).check == "golden"
    reseal(bundle, edit_meta=lambda m: off(m, {"CPUExecutionProvider": 1e-2}))
    assert verify_bundle(bundle, CPU).provider == "CPUExecutionProvider"


def test_cuda_first_on_a_cpu_only_build_falls_back_to_cpu(bundle, caplog):
    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    with caplog.at_level(logging.INFO, logger="bedside.bundle"):
        b = verify_bundle(bundle)  # the default order: TensorRT, CUDA, CPU
    assert b.provider == "CPUExecutionProvider"
    assert "CUDAExecutionProvider: not available in this onnxruntime build" in caplog.text
    assert "model runs on CPUExecutionProvider" in caplog.text
    with pytest.raises(BundleError) as info:
        verify_bundle(bundle, ("CUDAExecutionProvider",))
    assert info.value.check == "runtime"


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available")
def test_a_provider_that_fails_to_start_falls_back(bundle, monkeypatch, caplog):
    # as on a GPU build of onnxruntime whose CUDA runtime or GPU is missing: listed, but fails at start
    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    real_session = ort.InferenceSession

    def session(model, sess_options=None, providers=None, **kw):
        first = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if first == "TensorrtExecutionProvider":
            raise RuntimeError("TensorRT EP failed to create engine: no CUDA-capable device is detected")
        return real_session(model, sess_options=sess_options, providers=providers, **kw)

    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    monkeypatch.setattr(ort, "InferenceSession", session)
    with caplog.at_level(logging.INFO, logger="bedside.bundle"):
        b = verify_bundle(bundle)
    assert b.provider == "CPUExecutionProvider"
    assert "TensorrtExecutionProvider: failed to start (TensorRT EP failed" in caplog.text
    assert "CUDAExecutionProvider: onnxruntime fell back to CPUExecutionProvider" in caplog.text


def test_verify_command_prints_each_check_and_names_the_failure(bundle):
    ok = CliRunner().invoke(verify_command, [str(bundle), "--provider", "cpu"])
    assert ok.exit_code == 0 and ok.output.count(" ok ") == 6 and "verified" in ok.output
    reseal(bundle, edit_meta=lambda m: m["golden"].update(atol=1e-12,
                                                          expected=[[v + 1e-3 for v in r] for r in m["golden"]["expected"]]))
    bad = CliRunner().invoke(verify_command, [str(bundle), "--provider", "cpu"])
    assert bad.exit_code == EXIT_REFUSED
    assert "golden    FAILED" in bad.output and "golden check failed" in bad.output
    data = bytearray(bundle.read_bytes())
    data[-10] ^= 0xFF
    bundle.write_bytes(bytes(data))
    bad = CliRunner().invoke(verify_command, [str(bundle)])
    assert bad.exit_code == EXIT_REFUSED and "checksum  FAILED" in bad.output
    assert "not run: signature, runtime, schema, golden" in bad.output
