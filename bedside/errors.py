"""Exception types of the bedside runtime; every message names the file or value and the fix."""

from __future__ import annotations


class BedsideError(Exception):
    """Base class of every error the bedside reports to a user."""


class RecordError(BedsideError):
    """A WFDB record cannot be used: missing leads, too short, wrong units, unreadable."""


class GapError(BedsideError):
    """A window holds a gap (a run of NaN samples); it must not be scored or zero-filled."""

    def __init__(self, message: str, gaps: list[tuple[int, int, int]]):
        super().__init__(message)
        #: (lead index, first sample, length in samples) of each NaN run
        self.gaps = gaps


class StoreError(BedsideError):
    """The alarm log cannot be opened, written or read (bedside.store, bedside.log_query)."""


class BundleError(BedsideError):
    """A model bundle is refused: failed file, checksum, signature, schema or golden-output check."""

    def __init__(self, check: str, message: str):
        super().__init__(f"model bundle refused ({check} check failed): {message}")
        #: which check failed: "file", "checksum", "signature", "runtime", "schema", "golden"
        self.check = check


class BedsideWarning(UserWarning):
    """Warnings of the bedside runtime (use with ``warnings.warn``)."""
