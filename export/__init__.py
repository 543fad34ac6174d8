"""Exporter: fine-tuned checkpoints to verified model bundles (ONNX + metadata). Needs the train extra."""

__version__ = "0.1.0"
