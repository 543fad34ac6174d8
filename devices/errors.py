"""Exception types of the device layer; every message names the port or value and the fix."""

from __future__ import annotations

from bedside.errors import BedsideError


class DeviceError(BedsideError):
    """A port cannot be opened, a protocol or setting is unknown, a fault spec is malformed."""
