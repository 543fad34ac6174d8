"""Shared fixtures: the real recordings in ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RECORDS = SHARED_DATA / "records"


@pytest.fixture
def records_dir() -> Path:
    """Folder of the real WFDB recordings; skips the test when the shared data are absent."""
    if not (RECORDS / "s0010_re.hea").is_file():
        pytest.skip(f"real recordings not found at {RECORDS} (see ../shared/data/README.md)")
    return RECORDS
