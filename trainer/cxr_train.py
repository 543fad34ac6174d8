"""Stage 2: the CXR classifier, the teacher that alignment freezes and the CXR-only reference row.

The encoder (torchxrayvision DenseNet121 with the paper's weights when found, else from scratch;
or the small CNN for CPU runs) and a linear head are trained with BCE on all labels, selected on
validation AUROC, and evaluated once on the test split. The paper fine-tuned one CXR model per
pathology; one multi-label model serves here as the teacher of every protocol (docs/training.md).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from torch import nn

from trainer.checkpoint import seed_everything
from trainer.checks import fit_summary
from trainer.classify import ClassificationTask, final_evaluation
from trainer.config import CxrModelConfig
from trainer.context import RunContext
from trainer.cxr_model import CxrClassifier, SmallCxrCnn, XrvDenseNetEncoder, build_cxr_encoder, freeze
from trainer.engine import fit, unwrap

STAGE = "cxr"
CXR_KIND = "cromotex-cxr-classifier"
MODEL_ID = "cxr-multilabel"


def cxr_classifier_from_checkpoint(saved: dict[str, Any]) -> CxrClassifier:
    """Rebuild the trained CXR classifier (architecture from the stored config; weights strictly)."""
    cfg = CxrModelConfig(**saved["cxr_config"])
    state = saved["state_dict"]
    if cfg.arch == "small_cnn":
        encoder: nn.Module = SmallCxrCnn(cfg.width)
    else:
        encoder = XrvDenseNetEncoder(num_classes=state["encoder.net.classifier.weight"].shape[0])
    model = CxrClassifier(encoder, len(saved["labels"]))
    model.load_state_dict(state, strict=True)
    return model


def run_cxr(ctx: RunContext, seed: int) -> dict[str, Any]:
    """Train (or resume, or reuse) the CXR classifier of one seed; returns its summary."""
    summary = ctx.done(seed, STAGE)
    if summary is not None:
        return summary
    seed_everything(seed)
    encoder, source = build_cxr_encoder(ctx.cfg.cxr_model)
    model = CxrClassifier(encoder, len(ctx.labels))
    optim = ctx.cfg.cxr.optim
    task = ClassificationTask(ctx, STAGE, model, modality="cxr", seed=seed, target=None, augment=None,
                              batch_size=optim.batch_size)
    result = fit(task, optim, seed=seed, ckpt_dir=ctx.ckpt_dir(seed), rt=ctx.rt, tracker=ctx.tracker,
                 config_sha256=ctx.config_sha256, log_tag=ctx.log_tag(seed, STAGE))
    trained = unwrap(task.model)
    metrics, arrays = final_evaluation(task, trained) if ctx.rt.env.is_main else ({}, None)
    payload = {"kind": CXR_KIND, "stage": STAGE, "cxr_config": asdict(ctx.cfg.cxr_model), "weights_source": source,
               "feature_dim": int(encoder.feature_dim), "labels": list(ctx.labels),
               "state_dict": {k: v.detach().cpu() for k, v in trained.state_dict().items()}, "metrics": metrics}
    return ctx.finish(seed, STAGE, payload, {
        "model_id": MODEL_ID, "method": "cxr", "protocol": "multilabel", "modality": "cxr", "weights_source": source,
        "scaling": None, "label_fraction": 1.0, **fit_summary(result, "classifier", ctx.cfg.checks),
        "metrics": metrics}, predictions=arrays)


def frozen_cxr_encoder(saved: dict[str, Any]) -> tuple[nn.Module, int]:
    """The trained CXR encoder from the cxr stage's checkpoint, frozen (eval mode, no gradients)."""
    encoder = cxr_classifier_from_checkpoint(saved).encoder
    return freeze(encoder), int(saved["feature_dim"])
