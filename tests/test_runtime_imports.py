"""The bedside runtime must run on a device without PyTorch."""

from __future__ import annotations

import subprocess
import sys

RUNTIME_MODULES = [
    "bedside", "bedside.leads", "bedside.records", "bedside.preprocess", "bedside.bundle", "bedside.events",
    "bedside.cli", "bedside.engine", "bedside.alarms", "bedside.store", "bedside.replay", "bedside.monitor",
    "bedside.verify", "bedside.ui.app", "bedside.sources", "bedside.heart_rate", "bedside.quality",
    "bedside.watchdog", "bedside.analysis", "bedside.audio", "devices", "devices.driver", "devices.cli",
    "devices.simulator", "devices.probe",
]


def test_bedside_runtime_does_not_import_torch():
    code = (
        "import importlib, importlib.util, sys\n"
        f"mods = {RUNTIME_MODULES!r}\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k == 'torch' or k.startswith('torch.') or k == 'torchvision')\n"
        "print(len(mods), 'modules imported; torch modules loaded:', bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
