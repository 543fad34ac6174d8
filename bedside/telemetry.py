"""No phoning home: the bedside runtime turns off onnxruntime's telemetry before it creates a session.

Called once by the commands that load a model (``bedside replay`` and ``bedside monitor``), before
the bundle is loaded; a library user building an engine calls :func:`disable_telemetry` itself.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def disable_telemetry() -> bool:
    """Turn off onnxruntime telemetry events; False when onnxruntime is absent or has no such switch."""
    try:
        import onnxruntime
    except ImportError:
        return False
    switch = getattr(onnxruntime, "disable_telemetry_events", None)
    if switch is None:
        log.debug("onnxruntime %s has no disable_telemetry_events()", getattr(onnxruntime, "__version__", "?"))
        return False
    switch()
    return True
