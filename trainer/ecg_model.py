"""The ECG encoder of the paper and the classifier deployed at the bedside.

Encoder (CroMoTEX): two 1-D convolutions (12 -> 128 channels, kernel 5 stride 5; 128 -> 256,
kernel 5 stride 1) turn a [12, 1000] window into 196 tokens; a CLS token and learned positional
embeddings are added; a 4-layer transformer (d=256, 4 heads, feed-forward 2048) follows, and the
tokens are mean pooled to one 256-d vector. Sizes are in :class:`EcgEncoderConfig`, which every
checkpoint stores, so a resume or an export rebuilds exactly the same network.

Blocks are pre-norm (LayerNorm before attention and feed-forward) and use
``scaled_dot_product_attention``: more stable to train than the post-norm default of
``nn.TransformerEncoderLayer`` and exported to ONNX without the fused fast path.

``arch = "cnn"`` is a CPU option (the demo's): a 1-D residual CNN (:class:`CnnBody`) with the
same interface, [batch, 12, 1000] to [batch, d_model]. On 2 CPU cores it trains several times
faster per step than even a small transformer and learns rate, interval and morphology features
from a few thousand windows. The paper's transformer stays the default (and the GPU choice).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class EcgEncoderConfig:
    """Sizes of the ECG encoder; the defaults are the paper's (about 5.5 M parameters).

    ``arch = "cnn"`` reads ``stem_channels`` as the first stage's width (doubling per stage),
    ``layers`` as the number of residual stages (each halves the length), ``kernel`` as the
    convolution length in samples, ``stride`` as the stem's stride and ``d_model`` as the output size.
    """

    arch: str = "transformer"  # ARCHS
    leads: int = 12
    samples: int = 1000
    stem_channels: int = 128
    kernel: int = 5
    stride: int = 5
    d_model: int = 256
    layers: int = 4
    heads: int = 4
    ff_dim: int = 2048
    dropout: float = 0.1

    @property
    def tokens(self) -> int:
        """Tokens after the stem (196 for the default sizes), not counting CLS."""
        return (self.samples - self.kernel) // self.stride + 1 - self.kernel + 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class HeadConfig:
    """MLP head of the fine-tuned classifier: ``depth`` x [Linear, LayerNorm, GELU, Dropout] + Linear."""

    width: int = 256
    depth: int = 3
    dropout: float = 0.1
    outputs: int = 3

    def to_dict(self) -> dict:
        return asdict(self)


ARCHS: tuple[str, ...] = ("transformer", "cnn")


class ResBlock1d(nn.Module):
    """conv(k, stride) BN ReLU conv(k) BN, plus a 1x1 strided shortcut; then ReLU."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(),
            nn.Conv1d(c_out, c_out, k, padding=k // 2, bias=False), nn.BatchNorm1d(c_out))
        self.skip = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class CnnBody(nn.Module):
    """Stem conv, ``layers`` residual stages (width doubling, length halving), mean+max pooling, linear."""

    def __init__(self, cfg: "EcgEncoderConfig") -> None:
        super().__init__()
        c, k = cfg.stem_channels, cfg.kernel
        self.stem = nn.Sequential(nn.Conv1d(cfg.leads, c, k, stride=cfg.stride, padding=k // 2, bias=False),
                                  nn.BatchNorm1d(c), nn.ReLU())
        stages, width = [], c
        for i in range(cfg.layers):
            out = c * 2 ** i
            stages.append(ResBlock1d(width, out, k, stride=2 if i else 1))
            width = out
        self.stages = nn.Sequential(*stages)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(2 * width, cfg.d_model)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x))
        pooled = torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1)
        return self.norm(self.out(self.drop(pooled)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)); x + ff(LN(x))."""

    def __init__(self, d: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d))
        self.drop = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.ff(self.norm2(x)))


class EcgEncoder(nn.Module):
    """[batch, 12, 1000] scaled ECG windows to [batch, d_model] embeddings."""

    def __init__(self, cfg: EcgEncoderConfig = EcgEncoderConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.arch == "cnn":
            self.cnn = CnnBody(cfg)
            return
        if cfg.arch != "transformer":
            raise ValueError(f"ECG encoder arch {cfg.arch!r} unknown; choices: {list(ARCHS)}")
        self.stem = nn.Sequential(
            nn.Conv1d(cfg.leads, cfg.stem_channels, cfg.kernel, stride=cfg.stride), nn.GELU(),
            nn.Conv1d(cfg.stem_channels, cfg.d_model, cfg.kernel, stride=1), nn.GELU(),
        )
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.pos = nn.Parameter(torch.randn(1, cfg.tokens + 1, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.heads, cfg.ff_dim, cfg.dropout) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    @property
    def dim(self) -> int:
        return self.cfg.d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.arch == "cnn":
            return self.cnn(x)
        tokens = self.stem(x).transpose(1, 2)  # [b, tokens, d]
        tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens).mean(dim=1)


class MlpHead(nn.Module):
    """The paper's head: ``depth`` x [Linear(width), LayerNorm, GELU, Dropout] then Linear(outputs)."""

    def __init__(self, in_dim: int, cfg: HeadConfig = HeadConfig()) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(cfg.depth):
            layers += [nn.Linear(dim, cfg.width), nn.LayerNorm(cfg.width), nn.GELU(), nn.Dropout(cfg.dropout)]
            dim = cfg.width
        layers.append(nn.Linear(dim, cfg.outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class EcgClassifier(nn.Module):
    """Encoder + head: [batch, 12, 1000] windows to [batch, K] logits (sigmoid gives probabilities)."""

    def __init__(self, encoder_cfg: EcgEncoderConfig, head_cfg: HeadConfig) -> None:
        super().__init__()
        self.encoder = EcgEncoder(encoder_cfg)
        self.head = MlpHead(encoder_cfg.d_model, head_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class ProbabilityModel(nn.Module):
    """What is exported: sigmoid of the classifier's logits, [batch, K] probabilities."""

    def __init__(self, classifier: EcgClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.classifier(ecg))


def classifier_from_checkpoint(ckpt: dict) -> EcgClassifier:
    """Rebuild a fine-tuned classifier from a checkpoint dict (see docs/checkpoints.md)."""
    model = EcgClassifier(EcgEncoderConfig(**ckpt["encoder_config"]), HeadConfig(**ckpt["head_config"]))
    model.load_state_dict(ckpt["state_dict"], strict=True)  # strict: a mismatch is an error, never ignored
    return model
