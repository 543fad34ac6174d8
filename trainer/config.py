"""Training configuration: a TOML file parsed once into frozen dataclasses and validated.

Every module below the CLI receives plain values from these dataclasses, never the file. Unknown
keys, wrong types and values out of range are refused with a message naming ``[table] key`` and
what to write instead. The layout (see ``configs/demo.toml`` for a commented example)::

    [run]         name, seeds, methods, protocols, deploy_method, device, precision, workers, ...
    [model.ecg]   trainer.ecg_model.EcgEncoderConfig fields
    [model.head]  trainer.ecg_model.HeadConfig fields (outputs is set by the protocol)
    [model.cxr]   arch, weights, width
    [augment]     trainer.augment.Augment3KG fields
    [preprocess]  scalings (the first is deployed), full_scale_mv
    [pretrain] [cxr] [align] [finetune]   optimisation (steps, eval_every_steps, patience, batch_size, lr, ...)
    [checks]      trainer.checks.CheckConfig: collapse and base-rate thresholds
    [report]      bootstrap, ci
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from bedside.preprocess import SCALINGS
from trainer.augment import Augment3KG
from trainer.checks import CheckConfig
from trainer.ecg_model import ARCHS, EcgEncoderConfig, HeadConfig
from trainer.losses import WEIGHTINGS

#: ECG models compared in one harness (see docs/training.md): which stages each one runs.
#: "features" is the floor: crude ECG features + logistic regression (trainer.features).
METHODS: tuple[str, ...] = ("features", "supervised", "ssl", "clip", "supcon", "cromotex")
#: Multi-label (one model, all labels; what the bedside deploys) and the paper's one binary model per label.
PROTOCOLS: tuple[str, ...] = ("multilabel", "binary")
CXR_ARCHS: tuple[str, ...] = ("densenet121", "small_cnn")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
PRECISIONS: tuple[str, ...] = ("bf16", "fp32")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation of one stage, budgeted in optimizer steps whatever the cohort size.

    AdamW with linear warm-up then cosine decay over ``steps``; the validation split is evaluated
    every ``eval_every_steps`` steps (and before the first step, and after the last), the best
    evaluation's weights are kept, and the stage stops after ``patience`` evaluations without a
    better score. Epochs are only a derived figure in the logs (steps x batch / training samples).
    """

    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-4  # 0 is allowed as a diagnostic (nothing learns; the checks must say so)
    weight_decay: float = 1e-5
    warmup_steps: int = 100
    eval_every_steps: int = 100
    grad_clip: float = 2.5  # max global gradient norm (0 = no clipping)
    patience: int = 5  # evaluations without a better validation score before stopping (0 = never stop early)


@dataclass(frozen=True)
class PretrainConfig:
    """Self-supervised ECG pretraining: InfoNCE between two 3KG views."""

    optim: OptimConfig = OptimConfig(steps=20000, batch_size=512, lr=1e-4, warmup_steps=1000, eval_every_steps=500)
    temperature: float = 0.01
    proj_dim: int = 256


@dataclass(frozen=True)
class CxrStageConfig:
    """Training the CXR classifier (the reference model and the encoder alignment freezes)."""

    optim: OptimConfig = OptimConfig(steps=20000, batch_size=64, lr=1e-4, warmup_steps=500, eval_every_steps=1000)


@dataclass(frozen=True)
class AlignConfig:
    """Cross-modal alignment with the supervised contrastive loss (trainer.losses.cross_modal_supcon)."""

    optim: OptimConfig = OptimConfig(steps=10000, batch_size=256, lr=1e-4, warmup_steps=500, eval_every_steps=500)
    temperature: float = 0.01
    weighting: str = "topk"  # for the full method; "supcon" always uses "none"
    alpha: float = 5.0
    topk_fraction: float = 0.1
    direct_pair_weight: float = 3.0
    proj_dim: int = 256
    augment: bool = False  # 3KG views of the ECG during alignment


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning the ECG encoder and the MLP head with binary cross-entropy."""

    optim: OptimConfig = OptimConfig(steps=5000, batch_size=256, lr=1e-5, warmup_steps=250, eval_every_steps=250)
    augment: bool = False
    encoder_lr_scale: float = 1.0  # a pretrained or aligned encoder learns at lr x this (the head at lr);
                                   # a randomly initialised one (method "supervised") always at lr


@dataclass(frozen=True)
class CxrModelConfig:
    """The CXR encoder: torchxrayvision DenseNet121, or a small CNN for CPU runs."""

    arch: str = "densenet121"
    weights: str = ""  # "" from scratch, "auto" torchxrayvision's cache (densenet121-res224-mimic_nb), or a path
    width: int = 32  # small_cnn only: channels of the first block


@dataclass(frozen=True)
class RunConfig:
    """What one ``trainer run`` does and where it runs."""

    name: str = "run"
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHODS
    protocols: tuple[str, ...] = ("multilabel",)
    label_fractions: tuple[float, ...] = (1.0,)  # low-label protocol: share of training subjects whose labels
                                                 # the ECG side may use (alignment uses every ECG-CXR pair)
    cxr_reference: bool = True  # evaluate the CXR classifier on the test split as the reference row
    deploy_method: str = "cromotex"  # its multi-label classifier (best validation seed) goes in run.json
    device: str = "auto"
    precision: str = "bf16"  # autocast dtype on CUDA; CPU runs in float32
    workers: int = 4  # DataLoader worker processes reading the memory-mapped cache
    threads: int = 0  # torch intra-op CPU threads per process (0: torch's default, one per core)
    checkpoint_every_steps: int = 200  # resumable checkpoint interval (steps)
    log_every_steps: int = 20


@dataclass(frozen=True)
class PreprocessConfig:
    """The model input's scaling (bedside.preprocess.scale): the first of ``scalings`` is deployed.

    Further scalings are trained for comparison (multi-label, full labels). ``fixed_mv`` keeps
    amplitude (low voltage is a clinical sign of effusion); ``minmax`` is the paper's per-lead scaling.
    """

    scalings: tuple[str, ...] = ("minmax",)
    full_scale_mv: float = 4.0


@dataclass(frozen=True)
class ReportConfig:
    bootstrap: int = 1000  # bootstrap replicates for the confidence intervals
    ci: float = 0.95


@dataclass(frozen=True)
class Config:
    """The whole configuration of a run."""

    run: RunConfig = RunConfig()
    ecg: EcgEncoderConfig = EcgEncoderConfig()
    head: HeadConfig = HeadConfig()
    cxr_model: CxrModelConfig = CxrModelConfig()
    augment: Augment3KG = Augment3KG()
    preprocess: PreprocessConfig = PreprocessConfig()
    checks: CheckConfig = CheckConfig()
    pretrain: PretrainConfig = PretrainConfig()
    cxr: CxrStageConfig = CxrStageConfig()
    align: AlignConfig = AlignConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    report: ReportConfig = ReportConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists for tuples): stored in every checkpoint."""
        return _plain(asdict(self))

    def stages_needed(self) -> dict[str, bool]:
        """Which stages the configured methods need."""
        methods = set(self.run.methods)
        return {"pretrain": bool(methods & {"ssl", "clip", "supcon", "cromotex"}),
                "cxr": bool(methods & {"clip", "supcon", "cromotex"}) or self.run.cxr_reference,
                "align": bool(methods & {"clip", "supcon", "cromotex"})}


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


# --- parsing ---------------------------------------------------------------------------------------

_OPTIM_KEYS = {f.name for f in dataclasses.fields(OptimConfig)}


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        inner = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {hint!r} at {where}")  # programming error


def _build(cls: type, table: dict[str, Any], section: str, *, exclude: frozenset[str] = frozenset(),
           base: Any = None) -> Any:
    """Dataclass ``cls`` from a TOML table; unknown keys and bad types name ``[section] key``."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)} - exclude
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in [{section}]; known keys: {sorted(known)}")
    values = {name: _check_type(v, hints[name], f"[{section}] {name}") for name, v in table.items()}
    return dataclasses.replace(base if base is not None else cls(), **values)


_EPOCH_KEYS = {"epochs": "steps", "warmup_epochs": "warmup_steps"}


def _build_stage(cls: type, table: dict[str, Any], section: str) -> Any:
    """A stage config: its optimisation keys go to ``optim``, the rest to the stage's own fields."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table, got {table!r}")
    old = sorted(set(table) & set(_EPOCH_KEYS))
    if old:
        raise ConfigError(f"[{section}] {old}: budgets are in optimizer steps, whatever the cohort size; write "
                          + ", ".join(f"{_EPOCH_KEYS[k]} = N" for k in old)
                          + " (and eval_every_steps, patience in evaluations)")
    default = cls()
    optim = _build(OptimConfig, {k: v for k, v in table.items() if k in _OPTIM_KEYS}, section, base=default.optim)
    rest = {k: v for k, v in table.items() if k not in _OPTIM_KEYS}
    try:
        stage = _build(cls, rest, section, exclude=frozenset({"optim"}), base=default)
    except ConfigError as err:
        raise ConfigError(f"{err}; optimisation keys: {sorted(_OPTIM_KEYS)}") from None
    return dataclasses.replace(stage, optim=optim)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _validate_optim(o: OptimConfig, section: str) -> None:
    _require(o.steps >= 1, f"[{section}] steps={o.steps} must be >= 1 (optimizer steps)")
    _require(o.batch_size >= 2, f"[{section}] batch_size={o.batch_size} must be >= 2")
    _require(o.lr >= 0, f"[{section}] lr={o.lr} must be >= 0 (0 freezes the stage: a diagnostic only)")
    _require(o.weight_decay >= 0, f"[{section}] weight_decay={o.weight_decay} must be >= 0")
    _require(0 <= o.warmup_steps <= o.steps, f"[{section}] warmup_steps={o.warmup_steps} must be in [0, steps]")
    _require(1 <= o.eval_every_steps <= o.steps,
             f"[{section}] eval_every_steps={o.eval_every_steps} must be in [1, steps={o.steps}]")
    _require(o.grad_clip >= 0, f"[{section}] grad_clip={o.grad_clip} must be >= 0 (0 disables clipping)")
    _require(o.patience >= 0, f"[{section}] patience={o.patience} must be >= 0 (0 disables early stopping)")


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the key of the first value that cannot be used."""
    r = cfg.run
    _require(len(r.seeds) >= 1 and len(set(r.seeds)) == len(r.seeds),
             f"[run] seeds={list(r.seeds)} must be distinct, at least one")
    for name, values, choices in (("methods", r.methods, METHODS), ("protocols", r.protocols, PROTOCOLS)):
        bad = [v for v in values if v not in choices]
        _require(not bad and len(values) > 0, f"[run] {name}={list(values)}: unknown {bad}; choices: {list(choices)}")
        _require(len(set(values)) == len(values), f"[run] {name}={list(values)} has duplicates")
    _require(r.deploy_method in r.methods and r.deploy_method != "features",
             f"[run] deploy_method={r.deploy_method!r} must be one of [run] methods {list(r.methods)} "
             "and a neural network (not 'features')")
    _require("multilabel" in r.protocols,
             "[run] protocols must include 'multilabel': the bedside deploys the multi-label model")
    _require(r.device in DEVICES, f"[run] device={r.device!r} unknown; choices: {list(DEVICES)}")
    _require(r.precision in PRECISIONS, f"[run] precision={r.precision!r} unknown; choices: {list(PRECISIONS)}")
    _require(r.workers >= 0, f"[run] workers={r.workers} must be >= 0")
    _require(r.threads >= 0, f"[run] threads={r.threads} must be >= 0 (0 keeps torch's default)")
    _require(r.checkpoint_every_steps >= 1, f"[run] checkpoint_every_steps={r.checkpoint_every_steps} must be >= 1")
    _require(r.log_every_steps >= 1, f"[run] log_every_steps={r.log_every_steps} must be >= 1")
    e = cfg.ecg
    _require(e.arch in ARCHS, f"[model.ecg] arch={e.arch!r} unknown; choices: {list(ARCHS)}")
    if e.arch == "transformer":
        _require(e.d_model % e.heads == 0, f"[model.ecg] d_model={e.d_model} must be a multiple of heads={e.heads}")
        _require(e.tokens >= 1, f"[model.ecg] kernel={e.kernel}, stride={e.stride} leave no tokens of "
                                f"samples={e.samples}")
    else:
        _require(e.layers >= 1 and e.stem_channels >= 4 and e.kernel >= 1 and e.stride >= 1,
                 "[model.ecg] the cnn needs layers >= 1, stem_channels >= 4, kernel >= 1, stride >= 1")
    _require(0 <= e.dropout < 1 and 0 <= cfg.head.dropout < 1, "[model.ecg]/[model.head] dropout must be in [0, 1)")
    _require(cfg.head.depth >= 0 and cfg.head.width >= 1, "[model.head] depth must be >= 0 and width >= 1")
    c = cfg.cxr_model
    _require(c.arch in CXR_ARCHS, f"[model.cxr] arch={c.arch!r} unknown; choices: {list(CXR_ARCHS)}")
    _require(not (c.arch == "small_cnn" and c.weights), "[model.cxr] weights apply to arch='densenet121' only")
    _require(c.width >= 4, f"[model.cxr] width={c.width} must be >= 4")
    try:
        cfg.augment.validate()
    except ValueError as err:
        raise ConfigError(f"[augment] {err}") from None
    stages = (("pretrain", cfg.pretrain), ("cxr", cfg.cxr), ("align", cfg.align), ("finetune", cfg.finetune))
    for section, stage in stages:
        _validate_optim(stage.optim, section)
    for section, t in (("pretrain", cfg.pretrain.temperature), ("align", cfg.align.temperature)):
        _require(t > 0, f"[{section}] temperature={t} must be > 0")
    a = cfg.align
    _require(a.weighting in WEIGHTINGS, f"[align] weighting={a.weighting!r} unknown; choices: {list(WEIGHTINGS)}")
    _require(a.alpha > 0, f"[align] alpha={a.alpha} must be > 0")
    _require(0 < a.topk_fraction <= 1, f"[align] topk_fraction={a.topk_fraction} must be in (0, 1]")
    _require(a.direct_pair_weight > 0, f"[align] direct_pair_weight={a.direct_pair_weight} must be > 0")
    _require(a.proj_dim >= 1 and cfg.pretrain.proj_dim >= 1, "[align]/[pretrain] proj_dim must be >= 1")
    fr = r.label_fractions
    _require(len(fr) >= 1 and len(set(fr)) == len(fr) and all(0 < f <= 1 for f in fr) and 1.0 in fr,
             f"[run] label_fractions={list(fr)} must be distinct values in (0, 1] including 1.0")
    p = cfg.preprocess
    _require(len(p.scalings) >= 1 and len(set(p.scalings)) == len(p.scalings) and set(p.scalings) <= set(SCALINGS),
             f"[preprocess] scalings={list(p.scalings)} must be distinct, at least one, of {list(SCALINGS)}")
    _require(0.1 <= p.full_scale_mv <= 50, f"[preprocess] full_scale_mv={p.full_scale_mv} must be in [0.1, 50] mV")
    try:
        cfg.checks.validate()
    except ValueError as err:
        raise ConfigError(f"[checks] {err}") from None
    _require(0 <= cfg.finetune.encoder_lr_scale <= 1,
             f"[finetune] encoder_lr_scale={cfg.finetune.encoder_lr_scale} must be in [0, 1]")
    _require(cfg.report.bootstrap >= 100, f"[report] bootstrap={cfg.report.bootstrap} must be >= 100")
    _require(0 < cfg.report.ci < 1, f"[report] ci={cfg.report.ci} must be in (0, 1)")


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse and validate TOML text (``source`` names it in errors)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from None
    known = {"run", "model", "augment", "preprocess", "checks", "pretrain", "cxr", "align", "finetune", "report"}
    unknown = sorted(set(doc) - known)
    try:
        _require(not unknown, f"unknown table(s) {unknown}; known: {sorted(known)}")
        model = doc.get("model", {})
        _require(isinstance(model, dict) and not (set(model) - {"ecg", "head", "cxr"}),
                 f"[model] holds only [model.ecg], [model.head], [model.cxr]; got {sorted(model)}")
        cfg = Config(
            run=_build(RunConfig, doc.get("run", {}), "run"),
            ecg=_build(EcgEncoderConfig, model.get("ecg", {}), "model.ecg"),
            head=_build(HeadConfig, model.get("head", {}), "model.head", exclude=frozenset({"outputs"})),
            cxr_model=_build(CxrModelConfig, model.get("cxr", {}), "model.cxr"),
            augment=_build(Augment3KG, doc.get("augment", {}), "augment"),
            preprocess=_build(PreprocessConfig, doc.get("preprocess", {}), "preprocess"),
            checks=_build(CheckConfig, doc.get("checks", {}), "checks"),
            pretrain=_build_stage(PretrainConfig, doc.get("pretrain", {}), "pretrain"),
            cxr=_build_stage(CxrStageConfig, doc.get("cxr", {}), "cxr"),
            align=_build_stage(AlignConfig, doc.get("align", {}), "align"),
            finetune=_build_stage(FinetuneConfig, doc.get("finetune", {}), "finetune"),
            report=_build(ReportConfig, doc.get("report", {}), "report"),
        )
        validate(cfg)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return cfg


@dataclass(frozen=True)
class LoadedConfig:
    """A parsed config with the bytes it came from (copied into the run directory, hashed)."""

    config: Config
    text: str
    sha256: str
    path: Path | None = field(default=None)


def load_config(path: str | Path) -> LoadedConfig:
    """Read, parse and validate a TOML config file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}; "
                          "give an existing file such as configs/demo.toml") from None
    text = data.decode("utf-8")
    return LoadedConfig(parse_config(text, str(path)), text, hashlib.sha256(data).hexdigest(), path)
