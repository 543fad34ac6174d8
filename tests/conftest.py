"""Shared fixtures: the real recordings in ../shared/data (skipped when absent), the engine tests' polarity
bundle and step record, and the tests' signing key, trusted by every test (tests/bundles.fixture_signing_key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bundles import fixture_signing_key

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RECORDS = SHARED_DATA / "records"


@pytest.fixture
def records_dir() -> Path:
    """Folder of the real WFDB recordings; skips the test when the shared data are absent."""
    if not (RECORDS / "s0010_re.hea").is_file():
        pytest.skip(f"real recordings not found at {RECORDS} (see ../shared/data/README.md)")
    return RECORDS


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signed bundle whose edema 'risk' is lead I inverted (tests/engine_helpers.polarity_bundle)."""
    from tests.engine_helpers import polarity_bundle

    return polarity_bundle(tmp_path_factory.mktemp("bundle") / "polarity.onnx")


@pytest.fixture(scope="module")
def step_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 minutes at 500 Hz; lead I inverted (the edema 'risk') from 60 s to 120 s."""
    from tests.engine_helpers import write_step_record

    return write_step_record(tmp_path_factory.mktemp("rec"))


@pytest.fixture(scope="session", autouse=True)
def trusted_test_key(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tests' key pair on disk, its .pub alone in a trust directory that the bedside uses by default
    (library default and BEDSIDE_TRUST_DIR), and the private key as CROMOTEX_SIGNING_KEY (`trainer export`).

    Returns {"key": private PEM, "pub": public PEM, "trust_dir": folder holding only the .pub}.
    """
    from cryptography.hazmat.primitives import serialization

    import bedside.trust

    root = tmp_path_factory.mktemp("keys")
    key = fixture_signing_key()
    private = root / "test-signing.key"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    trust_dir = root / "trusted"
    trust_dir.mkdir()
    pub = trust_dir / "test-signing.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bedside.trust, "DEFAULT_TRUST_DIR", trust_dir)
        mp.setenv("BEDSIDE_TRUST_DIR", str(trust_dir))
        mp.setenv("CROMOTEX_SIGNING_KEY", str(private))
        yield {"key": private, "pub": pub, "trust_dir": trust_dir}
