"""Checkpoint to ONNX: load a fine-tuned classifier and export its probabilities.

The exported graph takes ``ecg`` [batch, 12, 1000] float32 (preprocessed windows, batch axis
dynamic) and returns ``probs`` [batch, K] float32 (sigmoid of the logits, before calibration).
Opset 17 (the default) goes through the TorchScript exporter: it is the highest opset the ONNX
parser of TensorRT 8.6 (JetPack 6.0) reads. Opset 18 and newer go through the torch.export-based
exporter (``dynamo=True``), which cannot write opset 17 for this model.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import onnx
import torch

from trainer.checkpoint import CLASSIFIER_KIND, load
from trainer.ecg_model import ProbabilityModel, classifier_from_checkpoint

INPUT_NAME = "ecg"
OUTPUT_NAME = "probs"
DEFAULT_OPSET = 17
MIN_OPSET = 17
REQUIRED_KEYS = ("encoder_config", "head_config", "state_dict", "labels", "recipe")


class ExportError(Exception):
    """The export cannot go on; the message names the file or value and what to do."""


@dataclass
class Checkpoint:
    """A classifier checkpoint (see docs/checkpoints.md) and where it came from."""

    path: Path
    data: dict[str, Any]
    run_dir: Path | None

    @property
    def labels(self) -> list[str]:
        return [str(v) for v in self.data["labels"]]

    @cached_property
    def sha256(self) -> str:
        """sha256 of the checkpoint file (identifies the weights; the default model_version)."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def config_sha256(self) -> str | None:
        """sha256 of the run's config.toml: stored in the checkpoint, else hashed from RUN_DIR."""
        if self.data.get("config_sha256"):
            return str(self.data["config_sha256"])
        cfg = self.run_dir / "config.toml" if self.run_dir else None
        return hashlib.sha256(cfg.read_bytes()).hexdigest() if cfg and cfg.is_file() else None


def resolve_checkpoint(source: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint file, run dir or None) for a RUN_DIR (via run.json) or a checkpoint file."""
    source = Path(source)
    if source.is_file():
        return source, None
    if not source.is_dir():
        raise ExportError(f"{source}: no such run directory or checkpoint file; give RUN_DIR of "
                          "`trainer run` or the path of its classifier .pt")
    run_json = source / "run.json"
    if not run_json.is_file():
        raise ExportError(f"{source}: not a run directory (no run.json); give the checkpoint file instead")
    try:
        rel = json.loads(run_json.read_text())["classifier"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ExportError(f"{run_json}: has no \"classifier\" entry ({exc}); was the run finished?") from exc
    path = source / rel
    if not path.is_file():
        raise ExportError(f"{run_json}: classifier checkpoint {path} does not exist; re-run the fine-tuning stage")
    return path, source


def load_checkpoint(source: str | Path) -> Checkpoint:
    """Load and check a classifier checkpoint from a RUN_DIR or a ``.pt`` file (tensors only, no code)."""
    path, run_dir = resolve_checkpoint(source)
    try:
        data = load(path)
    except (FileNotFoundError, ValueError) as exc:
        raise ExportError(str(exc)) from exc
    if not isinstance(data, dict):
        raise ExportError(f"{path}: holds a {type(data).__name__}, expected the classifier dict of docs/checkpoints.md")
    if data.get("kind", CLASSIFIER_KIND) != CLASSIFIER_KIND:
        raise ExportError(f"{path}: checkpoint kind is {data['kind']!r}, expected {CLASSIFIER_KIND!r} "
                          "(export the fine-tuned classifier, not a pretraining stage)")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ExportError(f"{path}: checkpoint lacks {missing} (see docs/checkpoints.md)")
    if len(data["labels"]) != int(data["head_config"].get("outputs", -1)):
        raise ExportError(f"{path}: {len(data['labels'])} labels but the head has "
                          f"{data['head_config'].get('outputs')} outputs")
    return Checkpoint(path=path, data=data, run_dir=run_dir)


def probability_model(ckpt: Checkpoint) -> ProbabilityModel:
    """The network to export, in eval mode (dropout off)."""
    try:
        model = ProbabilityModel(classifier_from_checkpoint(ckpt.data))
    except (RuntimeError, TypeError) as exc:
        raise ExportError(f"{ckpt.path}: weights do not fit the stored configuration: {exc}") from exc
    return model.eval()


def export_onnx(model: torch.nn.Module, leads: int, samples: int, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Export ``model`` ([batch, leads, samples] -> [batch, K]) to ONNX with a dynamic batch axis."""
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is below {MIN_OPSET}; the bundle contract needs opset >= {MIN_OPSET}")
    model = model.eval()
    example = (torch.zeros(2, leads, samples),)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", category=DeprecationWarning)  # TorchScript exporter notice
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        if opset == 17:
            import io

            buf = io.BytesIO()
            torch.onnx.export(model, example, buf, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
            proto = onnx.load_from_string(buf.getvalue())
        else:
            batch = torch.export.Dim("batch", min=1, max=65536)
            program = torch.onnx.export(model, example, dynamo=True, opset_version=opset, verbose=False,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes={"ecg": {0: batch}})
            proto = program.model_proto
    check_io(proto, leads, samples, opset)
    return proto


def model_opset(model: onnx.ModelProto) -> int:
    """Version of the default ONNX operator set the model imports."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def check_io(model: onnx.ModelProto, leads: int, samples: int, opset: int) -> None:
    """Check names, shapes (dynamic batch) and opset of an exported graph; ExportError if wrong."""
    onnx.checker.check_model(model)
    got = model_opset(model)
    if got != opset:
        raise ExportError(f"exporter wrote opset {got}, asked for {opset}")
    inputs, outputs = list(model.graph.input), list(model.graph.output)
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        raise ExportError(f"graph has inputs {[i.name for i in inputs]} and outputs {[o.name for o in outputs]}, "
                          f"expected [{INPUT_NAME!r}] and [{OUTPUT_NAME!r}]")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 3 or not dims[0].dim_param or [d.dim_value for d in dims[1:]] != [leads, samples]:
        raise ExportError(f"input shape {[d.dim_param or d.dim_value for d in dims]} is not [batch, {leads}, {samples}]")
