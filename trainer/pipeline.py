"""``trainer run``: every stage of every configured method and seed, then ``run.json``.

Per seed: the self-supervised ECG encoder and the CXR classifier once, then for each method and
protocol its alignment (if any) and fine-tuning. Finished stages are reused and interrupted ones
resume, so rerunning the same command after a kill continues the run. The deployable classifier
is the multi-label model of ``[run] deploy_method`` from the seed with the best validation score
(selection on validation only); ``run.json`` names it for ``trainer export``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from trainer import checkpoint as ckpt
from trainer.config import Config, ConfigError, LoadedConfig
from trainer.context import RunContext
from trainer.cxr_train import run_cxr
from trainer.distributed import DistEnv, barrier, init_distributed
from trainer.engine import Runtime
from trainer.finetune import run_method, stage_id as finetune_stage_id
from trainer.pretrain import run_pretrain
from trainer.tracking import Tracker, silent

RUN_FORMAT = 1


class RunDirError(RuntimeError):
    """The run directory belongs to another config or cache."""


def open_cache(root: Path) -> Any:
    from trainer.cache import CohortCache  # the cohort helper's module; imported here so --help stays light

    return CohortCache(root)


def prepare_run_dir(loaded: LoadedConfig, cache: Any, run_dir: Path, env: DistEnv) -> None:
    """Create RUN_DIR with the config as run; refuse one started with another config or cache."""
    config_file, cache_file = run_dir / "config.toml", run_dir / "cache.json"
    cache_info = {"cache": str(Path(cache.root).resolve()), "cohort_manifest_sha256": cache.manifest_sha256}
    if config_file.exists():
        if ckpt.sha256_file(config_file) != loaded.sha256:
            raise RunDirError(f"{run_dir} holds a run of another configuration ({config_file} differs from "
                              f"{loaded.path}); choose a new --out, or delete {run_dir} to start over")
        if cache_file.exists():
            before = ckpt.json_load(cache_file)
            if before.get("cohort_manifest_sha256") != cache.manifest_sha256:
                raise RunDirError(f"{run_dir} was trained on another cache ({before.get('cache')}); "
                                  "choose a new --out for this cache")
    barrier(env)
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not config_file.exists():
            ckpt.atomic_write_bytes(config_file, loaded.text.encode("utf-8"))
        ckpt.atomic_write_json(cache_file, cache_info)
    barrier(env)


def make_context(loaded: LoadedConfig, cache_root: Path, run_dir: Path, *, device: str | None = None,
                 progress: bool = True, seeds: tuple[int, ...] | None = None) -> RunContext:
    """Open the cache, join torchrun's process group if any, and prepare the run directory.

    ``seeds`` overrides ``[run] seeds`` (one process per seed, each in its own run directory, is how
    a comparison uses several CPU cores; ``trainer report`` reads the directories together).
    """
    cfg: Config = loaded.config
    if device is not None:
        cfg = replace(cfg, run=replace(cfg.run, device=device))
    if seeds:
        cfg = replace(cfg, run=replace(cfg.run, seeds=tuple(dict.fromkeys(seeds))))
    env = init_distributed(cfg.run.device)
    cache = open_cache(cache_root)
    if cache.recipe.window_samples != cfg.ecg.samples:
        raise ConfigError(f"[model.ecg] samples={cfg.ecg.samples} but the cache's windows have "
                          f"{cache.recipe.window_samples} samples; set samples = {cache.recipe.window_samples}")
    prepare_run_dir(loaded, cache, run_dir, env)
    rt = Runtime(env=env, precision=cfg.run.precision, workers=cfg.run.workers,
                 checkpoint_every_steps=cfg.run.checkpoint_every_steps, log_every_steps=cfg.run.log_every_steps)
    tracker = Tracker(run_dir, progress=progress) if env.is_main else silent()
    return RunContext(cfg=cfg, config_sha256=loaded.sha256, cache=cache, run_dir=run_dir, rt=rt, tracker=tracker)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """``[run] threads`` intra-op CPU threads while a command trains (0 keeps torch's default); restored after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_seed(ctx: RunContext, seed: int) -> None:
    """All stages of one seed, in dependency order.

    The deployed scaling (the first of ``[preprocess] scalings``) runs every protocol and label
    fraction (the binary protocol at full labels only); further scalings run the multi-label
    protocol at full labels, for the scaling comparison. The feature floor is multi-label only.
    """
    cfg = ctx.cfg
    needed = cfg.stages_needed()
    if needed["cxr"]:
        run_cxr(ctx, seed)
    for scaling in cfg.preprocess.scalings:
        primary = scaling == ctx.primary_scaling
        if needed["pretrain"]:
            run_pretrain(ctx, seed, scaling)
        protocols = cfg.run.protocols if primary else ("multilabel",)
        for method in cfg.run.methods:
            for protocol in protocols:
                if method == "features" and protocol != "multilabel":
                    continue
                fractions = cfg.run.label_fractions if primary and protocol == "multilabel" else (1.0,)
                for fraction in sorted(fractions, reverse=True):
                    run_method(ctx, seed, method, protocol, scaling, fraction)


def deployable(ctx: RunContext) -> dict[str, Any]:
    """The deploy method's multi-label model of the seed with the best validation score."""
    method = ctx.cfg.run.deploy_method
    candidates = [ctx.done(seed, finetune_stage_id(method, "multilabel", None)) for seed in ctx.cfg.run.seeds]
    candidates = [c for c in candidates if c is not None]
    if not candidates:
        raise RuntimeError(f"no finished multi-label {method!r} model to deploy in {ctx.run_dir}")
    best = max(candidates, key=lambda c: c["val_score"] if c["val_score"] is not None else float("-inf"))
    return {"method": method, "seed": best["seed"], "checkpoint": best["checkpoint"], "val_score": best["val_score"],
            "selected_by": "best validation score (mean AUROC) over seeds"}


def check_flags(ctx: RunContext) -> list[str]:
    """Every flag of every finished stage, as ``seed<k>/<stage>: <flag>`` (trainer.checks)."""
    return [f"{tag}: {flag}" for tag, s in sorted(ctx.summaries.items())
            for flag in (s.get("checks") or {}).get("flags", [])]


def write_run_json(ctx: RunContext, seconds: float) -> dict[str, Any]:
    deploy = deployable(ctx)
    models = [s for s in ctx.summaries.values() if "model_id" in s]
    doc = {
        "format": RUN_FORMAT,
        "name": ctx.cfg.run.name,
        "classifier": deploy["checkpoint"],
        "deploy": deploy,
        "config": "config.toml",
        "config_sha256": ctx.config_sha256,
        "cache": str(Path(ctx.cache.root).resolve()),
        "cohort_manifest_sha256": ctx.cache.manifest_sha256,
        "labels": list(ctx.labels),
        "seeds": list(ctx.cfg.run.seeds),
        "methods": list(ctx.cfg.run.methods),
        "protocols": list(ctx.cfg.run.protocols),
        "scalings": list(ctx.cfg.preprocess.scalings),
        "primary_scaling": ctx.primary_scaling,
        "label_fractions": list(ctx.cfg.run.label_fractions),
        "check_flags": check_flags(ctx),
        "device": str(ctx.rt.env.device),
        "world_size": ctx.rt.env.world,
        "seconds": round(seconds, 1),
        "stages": {tag: {k: v for k, v in s.items() if k != "metrics"} for tag, s in sorted(ctx.summaries.items())},
        "models": sorted(({"model_id": s["model_id"], "method": s["method"], "protocol": s["protocol"],
                           "target": s.get("target"), "seed": s["seed"],
                           "scaling": s.get("scaling") or ctx.primary_scaling,
                           "label_fraction": s.get("label_fraction", 1.0),
                           "checkpoint": None if s["method"] == "features" else s["checkpoint"],
                           "predictions": s.get("predictions"), "val": s["metrics"].get("val"),
                           "test": s["metrics"].get("test"), "checks": s.get("checks")} for s in models),
                         key=lambda m: (m["method"], m["protocol"], str(m["target"]), str(m["scaling"]),
                                        -m["label_fraction"], m["seed"])),
    }
    if ctx.rt.env.is_main:
        ckpt.atomic_write_json(ctx.run_dir / "run.json", doc)
    return doc


def run_all(ctx: RunContext) -> dict[str, Any]:
    """``trainer run``: every seed, then run.json; returns its content."""
    started = time.perf_counter()
    for seed in ctx.cfg.run.seeds:
        run_seed(ctx, seed)
    doc = write_run_json(ctx, time.perf_counter() - started)
    barrier(ctx.rt.env)
    return doc

