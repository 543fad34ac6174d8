"""The chest X-ray encoder: torchxrayvision DenseNet121, or a small CNN for CPU runs.

Inputs are [batch, 1, H, W] in torchxrayvision's range [-1024, 1024] (``trainer.data`` maps the
cache's uint8 images with ``xrv.utils.normalize``). Encoders return [batch, feature_dim] features;
:class:`CxrClassifier` adds a linear head for the labels.

Pretrained weights (the paper's ``densenet121-res224-mimic_nb``) are never downloaded here. They
come from a local file or torchxrayvision's cache (``weights = "auto"``); loading is strict, with a
wrapper prefix (``module.``, ``model.``, ...) removed first, so a mismatch is an error rather than a
silently untrained encoder (the public code's ``strict=False`` defect). When no file is found the
encoder is trained from scratch and :class:`TrainerWarning` says so.

During alignment the encoder is frozen *including* its BatchNorm statistics: :func:`freeze` puts it
in eval mode and turns off gradients, and :class:`trainer.align` keeps it in eval mode when the
rest of the model trains.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torchxrayvision as xrv
from torch import nn

from trainer.config import CxrModelConfig

#: torchxrayvision's name of the paper's weights.
PAPER_WEIGHTS = "densenet121-res224-mimic_nb"
_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "cxr_encoder.", "img_encoder.")


class TrainerWarning(UserWarning):
    """Warnings of the trainer (use with ``warnings.warn``)."""


class SmallCxrCnn(nn.Module):
    """A CPU-sized CXR encoder: 2x2 average pooling (224 -> 112 pixels), four conv-BN-ReLU blocks
    (stride 4, 2, 2, 2) and global average pooling: 8 x width features."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            k, s = (7, 4) if i == 0 else (3, 2)
            layers += [nn.Conv2d(cin, cout, k, stride=s, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
        self.features = nn.Sequential(nn.AvgPool2d(2), *layers)
        self.feature_dim = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x / 1024.0).mean(dim=(2, 3))


class XrvDenseNetEncoder(nn.Module):
    """torchxrayvision's DenseNet121 as a feature extractor (1024 features after ReLU and pooling)."""

    def __init__(self, num_classes: int = 18) -> None:
        super().__init__()
        self.net = xrv.models.DenseNet(weights=None, num_classes=num_classes)
        self.feature_dim = self.net.classifier.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features2(x)


def xrv_cache_file(name: str = PAPER_WEIGHTS) -> Path:
    """Where torchxrayvision keeps the weights file ``name`` once downloaded."""
    url = xrv.models.model_urls[name]["weights_url"]
    return Path(xrv.utils.get_cache_dir()) / os.path.basename(url)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a file holding one, a training checkpoint dict, or a pickled module."""
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torchxrayvision's releases are pickled modules: trusted files only
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: no state dict found (expected a torchxrayvision DenseNet weights file)")
    return dict(obj)


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes shared by every key (``module.``, ``model.``, ...), repeatedly."""
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if state and all(k.startswith(p) for k in state):
                state = {k[len(p):]: v for k, v in state.items()}
                changed = True
    return state


def load_densenet_weights(path: str | Path) -> XrvDenseNetEncoder:
    """A DenseNet121 encoder with the weights of ``path``, loaded strictly (every key must match)."""
    path = Path(path)
    state = strip_prefix(_read_state_dict(path))
    state.pop("op_threshs", None)  # a calibration buffer, not a weight; torchxrayvision sets it itself
    if "classifier.weight" not in state:
        raise ValueError(f"{path}: not a torchxrayvision DenseNet state dict (no classifier.weight); "
                         f"first keys: {list(state)[:5]}")
    encoder = XrvDenseNetEncoder(num_classes=state["classifier.weight"].shape[0])
    expected = encoder.net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        raise ValueError(f"{path}: weights do not match torchxrayvision's DenseNet121: {len(missing)} missing "
                         f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(reshaped)} of another "
                         f"shape {reshaped[:3]}; give a densenet121 weights file of torchxrayvision")
    encoder.net.load_state_dict(state, strict=True)
    return encoder


def resolve_weights(spec: str) -> Path | None:
    """The weights file a ``[model.cxr] weights`` value names, or None to train from scratch (warned)."""
    if not spec:
        return None
    path = xrv_cache_file() if spec == "auto" else Path(spec).expanduser()
    if path.is_file():
        return path
    url = xrv.models.model_urls[PAPER_WEIGHTS]["weights_url"]
    if spec != "auto":
        raise FileNotFoundError(f"[model.cxr] weights={spec!r}: no such file; give the path of a torchxrayvision "
                                f"DenseNet121 weights file, \"auto\" for its cache, or \"\" to train from scratch")
    warnings.warn(f"no pretrained CXR weights at {path}: the DenseNet121 CXR encoder is trained from scratch. "
                  f"For the paper's weights run `wget {url} -O {path}` (or set [model.cxr] weights to a local file)",
                  TrainerWarning, stacklevel=2)
    return None


def build_cxr_encoder(cfg: CxrModelConfig) -> tuple[nn.Module, str]:
    """The configured encoder (with ``.feature_dim``) and where its weights came from."""
    if cfg.arch == "small_cnn":
        return SmallCxrCnn(cfg.width), "scratch"
    path = resolve_weights(cfg.weights)
    if path is None:
        return XrvDenseNetEncoder(), "scratch"
    return load_densenet_weights(path), str(path)


class CxrClassifier(nn.Module):
    """CXR encoder + linear head: [batch, 1, H, W] images to [batch, K] logits."""

    def __init__(self, encoder: nn.Module, outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def freeze(module: nn.Module) -> nn.Module:
    """Freeze a module in place: no gradients, eval mode (BatchNorm uses and keeps its running statistics)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
