"""The bedside runtime must run on a device without PyTorch."""

from __future__ import annotations

import json
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


#: Libraries that cost start-up time and memory; the commands below must not load them.
HEAVY = ("numpy", "scipy", "pandas", "sqlite_utils", "onnxruntime", "neurokit2", "wfdb", "matplotlib", "sklearn",
         "torch", "textual", "jsonschema")


def _loaded_after(code: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """Run ``code`` in a fresh interpreter; the ``heavy`` top-level modules it left in sys.modules."""
    probe = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: print('LOADED', json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & "
        f"set({list(heavy)!r})))))\n" + code
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr  # a probe that fails proves nothing
    line = next((x for x in result.stdout.splitlines() if x.startswith("LOADED ")), None)
    assert line is not None, result.stdout + result.stderr
    return json.loads(line.removeprefix("LOADED "))


def test_bedside_help_imports_nothing_heavy():
    assert _loaded_after("from bedside.cli import main\nmain(['--help'])") == []


def test_verify_is_listed_with_its_own_short_help_and_still_runs():
    from click.testing import CliRunner

    from bedside.cli import VERIFY_SHORT_HELP, main
    from bedside.verify import verify_command

    assert VERIFY_SHORT_HELP == verify_command.get_short_help_str(limit=200)
    listing = CliRunner().invoke(main, ["--help"])
    assert listing.exit_code == 0 and "verify" in listing.output
    res = CliRunner().invoke(main, ["verify", "/nonexistent/model.onnx", "--provider", "cpu"])
    assert res.exit_code == 2 and "file" in res.output  # the real command ran its first check


def test_bedside_alerts_imports_nothing_heavy(tmp_path):
    from bedside.store import Store

    db = tmp_path / "log.db"
    Store(db).close()  # an empty, valid alarm log
    for fmt in ("csv", "json", "table"):
        loaded = _loaded_after(f"from bedside.cli import main\nmain(['alerts', '--db', {str(db)!r}, '--format', '{fmt}'])")
        assert loaded == [], (fmt, loaded)


def test_engine_import_leaves_out_record_reading_and_the_qrs_library():
    # wfdb (and its pandas) only for replaying records; NeuroKit2 is imported when an analyser is built
    # (bedside.heart_rate.warm_up_detector), not at import. sqlite-utils imports pandas whenever it is
    # installed, so pandas itself is not asserted here.
    loaded = _loaded_after("import bedside.engine, bedside.monitor", ("wfdb", "neurokit2", "torch", "matplotlib",
                                                                      "sklearn", "textual"))
    assert loaded == []


def _analyser_code(detector: str) -> str:
    return (
        "import sys\n"
        "from dataclasses import replace\n"
        "from bedside.alarm_config import load_alarm_config\n"
        "from bedside.analysis import WindowAnalyser\n"
        "from bedside.preprocess import DEFAULT_RECIPE\n"
        "assert 'neurokit2' not in sys.modules\n"
        "config = load_alarm_config()\n"
        f"config = replace(config, heart_rate=replace(config.heart_rate, detector={detector!r}))\n"
        "WindowAnalyser(500.0, DEFAULT_RECIPE, config, None, 'no model')\n"
    )


def test_default_detector_builds_an_analyser_without_neurokit2_or_its_imports():
    # the live monitor's memory budget: NeuroKit2 brings matplotlib, scikit-learn and pywt (about 74 MB)
    assert _loaded_after(_analyser_code("gradient"), ("neurokit2", "matplotlib", "sklearn", "pywt")) == []


def test_analyser_pays_the_qrs_import_at_construction():
    assert "neurokit2" in _loaded_after(_analyser_code("neurokit"), ("neurokit2",))
