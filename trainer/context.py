"""What every stage of a run shares: the config, the cache, the run directory, and stage bookkeeping.

Run directory layout (docs/checkpoints.md)::

    RUN_DIR/config.toml, run.json, metrics.jsonl, report/
    RUN_DIR/seed_<k>/checkpoints/<stage>.pt     finished stage (its presence marks it done)
    RUN_DIR/seed_<k>/checkpoints/<stage>.json   its summary (seconds, epochs, validation metrics)
    RUN_DIR/seed_<k>/predictions/<model>.npz    validation and test probabilities of each model

Stage ids: ``pretrain``, ``cxr``, ``align-<method>[-<label>]``,
``finetune-<method>-multilabel`` and ``finetune-<method>-binary-<label>``, each followed by
``@<scaling>`` when trained on another scaling than the deployed one and ``@f<fraction>`` under the
low-label protocol (e.g. ``finetune-cromotex-multilabel@f0.1``, ``pretrain@minmax``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from trainer import checkpoint as ckpt
from bedside.preprocess import Recipe
from trainer.augment import Augment3KG
from trainer.config import Config
from trainer.data import CacheDataset
from trainer.distributed import barrier
from trainer.engine import Runtime, clear_resume_files
from trainer.tracking import Tracker


class StageOrderError(RuntimeError):
    """A stage was asked for before the stage it builds on has finished."""


@dataclass
class RunContext:
    """One run: its parsed config, cohort cache, output folder and runtime."""

    cfg: Config
    config_sha256: str
    cache: Any  # trainer.cache.CohortCache
    run_dir: Path
    rt: Runtime
    tracker: Tracker
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)  # per-run values computed once (subject ids, features)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.cache.labels)

    def seed_dir(self, seed: int) -> Path:
        return self.run_dir / f"seed_{seed}"

    def ckpt_dir(self, seed: int) -> Path:
        return self.seed_dir(seed) / "checkpoints"

    def checkpoint_path(self, seed: int, stage_id: str) -> Path:
        return self.ckpt_dir(seed) / f"{stage_id}.pt"

    def predictions_path(self, seed: int, model_id: str) -> Path:
        return self.seed_dir(seed) / "predictions" / f"{model_id}.npz"

    def label_columns(self, target: str | None) -> list[int] | None:
        """Columns of the cache's label matrix a model learns: all (None) or one label's."""
        if target is None:
            return None
        if target not in self.labels:
            raise ValueError(f"label {target!r} is not in the cache's labels {list(self.labels)}")
        return [self.labels.index(target)]

    def recipe(self, scaling: str) -> Recipe:
        """The cache's preprocessing recipe with the model input scaling ``scaling`` (what a bundle records)."""
        return replace(self.cache.recipe, scaling=scaling, full_scale_mv=self.cfg.preprocess.full_scale_mv)

    @property
    def primary_scaling(self) -> str:
        """The scaling of the deployed model: the first of ``[preprocess] scalings``."""
        return self.cfg.preprocess.scalings[0]

    def groups(self, split: str) -> np.ndarray:
        """Subject id per item of a split (for subject-level statistics)."""
        key = f"groups:{split}"
        if key not in self.memo:
            self.memo[key] = self.cache.split(split).subject_ids()
        return self.memo[key]

    def labelled_subset(self, seed: int, fraction: float) -> np.ndarray | None:
        """Training items whose labels the ECG side may use at a label fraction (None: all).

        Subjects are put in a random order per seed and the first ``ceil(fraction x subjects)`` keep
        their labels, so the subsets are nested (5 % within 10 % within 25 %) and every method of a
        seed sees the same labelled subjects.
        """
        if fraction >= 1.0:
            return None
        groups = self.groups("train")
        subjects = np.unique(groups)
        order = np.random.default_rng([seed, 7_919]).permutation(subjects)
        keep = order[:max(1, math.ceil(fraction * len(subjects)))]
        return np.flatnonzero(np.isin(groups, keep))

    def dataset(self, split: str, *, fields: tuple[str, ...], augment: Augment3KG | None = None, views: int = 1,
                seed: int = 0, target: str | None = None, scaling: str | None = None,
                indices: np.ndarray | None = None) -> CacheDataset:
        """A dataset over one split of the cache (the test split only through trainer.evaluate's callers)."""
        return CacheDataset.from_split(self.cache.split(split), fields=fields, augment=augment, views=views, seed=seed,
                                       label_columns=self.label_columns(target),
                                       recipe=self.recipe(scaling or self.primary_scaling), indices=indices)

    def log_tag(self, seed: int, stage_id: str) -> str:
        return f"seed{seed}/{stage_id}"

    # --- stage bookkeeping ---------------------------------------------------------------------------
    def done(self, seed: int, stage_id: str) -> dict[str, Any] | None:
        """The summary of a finished stage, or None when it has not finished."""
        path = self.checkpoint_path(seed, stage_id)
        summary = path.with_suffix(".json")
        if path.exists() and summary.exists():
            data = json.loads(summary.read_text())
            if data.get("config_sha256") == self.config_sha256:
                self.summaries[self.log_tag(seed, stage_id)] = data
                return data
            raise StageOrderError(f"{path} was written by another configuration (config sha256 "
                                  f"{data.get('config_sha256')}); use a new run directory")
        return None

    def require(self, seed: int, stage_id: str, needed_by: str) -> dict[str, Any]:
        """The finished stage's checkpoint; a clear error naming the command to run when it is missing."""
        if self.done(seed, stage_id) is None:
            raise StageOrderError(f"{needed_by} needs stage {stage_id!r} of seed {seed}, which has not finished in "
                                  f"{self.run_dir}; run `trainer stage {stage_id.split('-')[0]} ...` "
                                  "(or `trainer run`) first")
        return ckpt.load(self.checkpoint_path(seed, stage_id))

    def finish(self, seed: int, stage_id: str, payload: dict[str, Any], summary: dict[str, Any],
               predictions: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Write a finished stage (rank 0): checkpoint, predictions, then the summary that marks it done."""
        summary = {**summary, "stage": stage_id, "seed": seed, "config_sha256": self.config_sha256,
                   "checkpoint": str(self.checkpoint_path(seed, stage_id).relative_to(self.run_dir))}
        if predictions is not None:
            summary["predictions"] = str(self.predictions_path(seed, summary["model_id"]).relative_to(self.run_dir))
        if self.rt.env.is_main:
            ckpt.save({**payload, "config": self.cfg.to_dict(), "config_sha256": self.config_sha256, "seed": seed,
                       "cohort_manifest_sha256": self.cache.manifest_sha256}, self.checkpoint_path(seed, stage_id))
            if predictions is not None:
                path = self.predictions_path(seed, summary["model_id"])
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.stem}.tmp.npz")
                np.savez(tmp, **predictions)
                tmp.replace(path)
            ckpt.atomic_write_json(self.checkpoint_path(seed, stage_id).with_suffix(".json"), summary)
            clear_resume_files(self.ckpt_dir(seed), stage_id)
        barrier(self.rt.env)
        self.summaries[self.log_tag(seed, stage_id)] = ckpt.json_safe(summary)
        return summary


def variant_suffix(scaling: str, primary_scaling: str, fraction: float = 1.0) -> str:
    """``@<scaling>`` off the deployed scaling and ``@f<fraction>`` under the low-label protocol ("" for neither)."""
    out = "" if scaling == primary_scaling else f"@{scaling}"
    return out if fraction >= 1.0 else f"{out}@f{fraction:g}"
