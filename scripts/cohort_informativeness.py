"""How much label information a prepared cache's ECGs carry, per input and per 3KG setting.

For each label: logistic regression on the crude ECG features of :mod:`trainer.features`, fitted on
the train split and scored on the test split (test AUROC with a subject-level 95 % bootstrap
interval, 500 replicates), on these inputs:

- ``mV``: the conditioned windows as cached (baseline removed, not scaled);
- ``fixed_mv`` and ``minmax``: the two recipe scalings (``bedside.preprocess.scale``);
- ``3KG``: one 3KG view per window (``trainer.augment.augment_view``, train and test windows alike),
  for each (rotation_deg, scale_max) in ``--settings`` and each scaling in ``--scalings`` (the view
  is scaled with the recipe, as pretraining scales it), mask fraction ``--mask-fraction``.

A reference row gives the X-ray side on the same pairs: logistic regression on 32 x 32 thumbnails
of the cached radiographs. A label whose ECG rows come near it has little left for the X-ray to
teach the ECG.

    .venv/bin/python scripts/cohort_informativeness.py --cache demo/cache --out informativeness.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bedside.preprocess import scale  # noqa: E402
from trainer.augment import Augment3KG, augment_view  # noqa: E402
from trainer.bootstrap import bootstrap_metric  # noqa: E402
from trainer.cache import CohortCache  # noqa: E402
from trainer.features import FeatureWarning, crude_features_report, fit_feature_baseline  # noqa: E402

#: (rotation_deg, scale_max) of the 3KG views measured by default: the paper's, then narrower.
DEFAULT_SETTINGS = ((45.0, 1.5), (15.0, 1.15), (10.0, 1.1), (5.0, 1.05), (0.0, 1.0))
SCALINGS = ("fixed_mv", "minmax")
REPLICATES = 500
THUMB = 32  # X-ray thumbnail side (pixels)


def parse_settings(text: str) -> list[tuple[float, float]]:
    """``"45:1.5,10:1.1"`` to [(45.0, 1.5), (10.0, 1.1)]."""
    out = []
    for part in text.split(","):
        try:
            rot, scl = (float(v) for v in part.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"setting {part!r}: expected ROTATION_DEG:SCALE_MAX, "
                                             "e.g. 10:1.1") from None
        Augment3KG(rotation_deg=rot, scale_max=scl).validate()
        out.append((rot, scl))
    return out


def views_3kg(x_mv: np.ndarray, params: Augment3KG, recipe, seed: int) -> np.ndarray:
    """One 3KG view of each window [N, 12, n] (mV), scaled with ``recipe``; deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    return np.stack([augment_view(x, rng, params, recipe) for x in x_mv])


def score(train_f: np.ndarray, train_y: np.ndarray, test_f: np.ndarray, test_y: np.ndarray,
          groups: np.ndarray, labels: list[str]) -> dict[str, dict[str, float | None]]:
    """Per label: test AUROC of the feature regression and its subject-level 95 % interval."""
    (logits,) = fit_feature_baseline(train_f, train_y, [test_f])
    out: dict[str, dict[str, float | None]] = {}
    for k, label in enumerate(labels):
        y = test_y[:, k]
        point = _auroc(logits[:, k], y)
        ci = bootstrap_metric("auroc", logits[None, :, k], y, replicates=REPLICATES, ci=0.95, groups=groups)
        out[label] = {"auroc": point, "low": ci["low"], "high": ci["high"]}
    return out


def _auroc(scores: np.ndarray, y: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores)) if 0 < y.sum() < len(y) else None


def thumbnails(cxr: np.ndarray, side: int = THUMB) -> np.ndarray:
    """uint8 [N, H, W] radiographs to [N, side * side] float area averages (H, W multiples of side)."""
    n, h, w = cxr.shape
    img = np.asarray(cxr, dtype=np.float32)
    return img.reshape(n, side, h // side, side, w // side).mean(axis=(2, 4)).reshape(n, -1)


def measure(cache_dir: Path, settings: list[tuple[float, float]], scalings: tuple[str, ...], mask_fraction: float,
            seed: int, progress=print) -> dict[str, Any]:
    """The informativeness report of one cache (see the module docstring)."""
    t0 = time.perf_counter()
    cache = CohortCache(cache_dir)
    labels = list(cache.labels)
    fs = cache.recipe.fs_hz
    train, test = cache.split("train"), cache.split("test")
    x_tr, y_tr = np.asarray(train.ecg, dtype=np.float32), np.asarray(train.labels)
    x_te, y_te = np.asarray(test.ecg, dtype=np.float32), np.asarray(test.labels)
    groups = test.subject_ids()
    rows: list[dict[str, Any]] = []
    failures: dict[str, dict[str, int]] = {}

    def add(name: str, a_tr: np.ndarray, a_te: np.ndarray, **meta: Any) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FeatureWarning)
            f_tr, fail_tr = crude_features_report(a_tr, fs)
            f_te, fail_te = crude_features_report(a_te, fs)
        fails = {k: fail_tr.get(k, 0) + fail_te.get(k, 0) for k in {*fail_tr, *fail_te}}
        if fails:
            failures[name] = fails
        rows.append({"input": name, **meta, "labels": score(f_tr, y_tr, f_te, y_te, groups, labels)})
        progress(f"  {name}: {time.perf_counter() - t0:.0f} s")

    add("mV", x_tr, x_te, kind="conditioned")
    for scaling in scalings:
        recipe = replace(cache.recipe, scaling=scaling)
        add(scaling, scale(x_tr, recipe), scale(x_te, recipe), kind="scaling", scaling=scaling)
    for scaling in scalings:
        recipe = replace(cache.recipe, scaling=scaling)
        for rot, scl in settings:
            params = Augment3KG(rotation_deg=rot, scale_max=scl, mask_fraction=mask_fraction)
            add(f"3KG {rot:g} deg, x{scl:g}, {scaling}", views_3kg(x_tr, params, recipe, seed),
                views_3kg(x_te, params, recipe, seed + 1), kind="3kg", scaling=scaling, rotation_deg=rot,
                scale_max=scl, mask_fraction=mask_fraction)
    cxr_tr, cxr_te = thumbnails(np.asarray(train.cxr)), thumbnails(np.asarray(test.cxr))
    rows.append({"input": f"X-ray {THUMB}x{THUMB} thumbnails", "kind": "cxr_reference",
                 "labels": score(cxr_tr, y_tr, cxr_te, y_te, groups, labels)})
    return {
        "cache": str(cache_dir), "labels": labels, "recipe_fs_hz": fs,
        "train_pairs": int(len(x_tr)), "test_pairs": int(len(x_te)),
        "test_subjects": int(len(np.unique(groups))),
        "test_positive_rate": {lab: float(y_te[:, k].mean()) for k, lab in enumerate(labels)},
        "method": "trainer.features crude features, standardised, LogisticRegression(C=1) per label, fit on "
                  "train, AUROC on test; 95% subject-level bootstrap interval, 500 replicates",
        "feature_fallbacks": failures, "seed": seed, "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def print_table(report: dict[str, Any]) -> None:
    """The report as a rich table: one row per input, AUROC [95 % interval] per label."""
    from rich.console import Console
    from rich.table import Table

    labels = report["labels"]
    table = Table(title=f"Crude-feature logistic regression, test AUROC [95% subject-level CI] "
                        f"({report['test_pairs']} test pairs, {report['test_subjects']} subjects)")
    table.add_column("input")
    for label in labels:
        table.add_column(label, justify="right")
    for row in report["rows"]:
        cells = []
        for label in labels:
            r = row["labels"][label]
            if r["auroc"] is None:
                cells.append("n/a")
            elif r["low"] is None:
                cells.append(f"{r['auroc']:.3f}")
            else:
                cells.append(f"{r['auroc']:.3f} [{r['low']:.2f}, {r['high']:.2f}]")
        table.add_row(row["input"], *cells)
    Console(width=max(100, 24 + 26 * len(labels))).print(table)
    if report["feature_fallbacks"]:
        Console().print(f"feature fallbacks (windows, per input): {report['feature_fallbacks']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True, help="a cache written by `trainer prepare`")
    ap.add_argument("--out", type=Path, default=None, help="write the report here as JSON")
    ap.add_argument("--settings", type=parse_settings, default=list(DEFAULT_SETTINGS),
                    help="3KG ROTATION_DEG:SCALE_MAX pairs, comma-separated "
                         "(default: 45:1.5,15:1.15,10:1.1,5:1.05,0:1)")
    ap.add_argument("--scalings", default=",".join(SCALINGS),
                    help=f"recipe scalings of the inputs and 3KG views, comma-separated "
                         f"(default: {','.join(SCALINGS)})")
    ap.add_argument("--mask-fraction", type=float, default=Augment3KG.mask_fraction,
                    help="3KG masked fraction of each lead (default: the paper's 0.25)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the 3KG views")
    args = ap.parse_args(argv)
    scalings = tuple(s for s in args.scalings.split(",") if s)
    unknown = [s for s in scalings if s not in SCALINGS]
    if unknown:
        ap.error(f"--scalings {unknown}: choices are {list(SCALINGS)}")
    report = measure(args.cache, args.settings, scalings, args.mask_fraction, args.seed)
    print_table(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
