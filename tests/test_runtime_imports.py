"""The bedside runtime must run on a device without PyTorch."""

from __future__ import annotations

import subprocess
import sys

RUNTIME_MODULES = [
    "bedside", "bedside.leads", "bedside.records", "bedside.preprocess", "bedside.bundle", "bedside.events",
    "bedside.cli", "bedside.engine", "bedside.alarms", "bedside.store", "bedside.replay", "bedside.monitor",
    "bedside.verify", "bedside.ui.app", "devices", "devices.driver", "devices.cli", "devices.simulator",
]


def test_bedside_runtime_does_not_import_torch():
    code = (
        "import importlib, importlib.util, sys\n"
        f"mods = {RUNTIME_MODULES!r}\n"
        "present = [m for m in mods if importlib.util.find_spec(m.split('.')[0]) and _ok(m)] if False else []\n"
        "loaded = []\n"
        "for m in mods:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "        loaded.append(m)\n"
        "    except ModuleNotFoundError as e:\n"
        "        if e.name != m and not m.startswith(e.name or '@'):\n"
        "            raise\n"
        "bad = sorted(k for k in sys.modules if k == 'torch' or k.startswith('torch.') or k == 'torchvision')\n"
        "print(len(loaded), 'modules;', 'torch modules:', bad)\n"
        "sys.exit(1 if bad or len(loaded) < 5 else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
