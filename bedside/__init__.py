"""Bedside runtime: the ECG signal core, model bundles, alarms, the SQLite log and the monitor.

Nothing under ``bedside`` imports PyTorch: it runs on the bedside device with numpy, scipy, wfdb
and onnxruntime only.
"""

__version__ = "0.1.0"
