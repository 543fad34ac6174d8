"""Resume after a kill mid-epoch, past an evaluation, continues where it stopped; seeds make runs repeatable."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.trainer_fixtures import tiny_config, write_tiny_cache
from trainer import checkpoint as ckpt
from trainer.config import load_config
from trainer.pipeline import make_context
from trainer.pretrain import run_pretrain

REPO = Path(__file__).resolve().parents[1]
STAGE = "finetune-supervised-multilabel"
PER_EPOCH = 12  # 96 training pairs in batches of 8
STEPS, EVAL_EVERY = 3 * PER_EPOCH, PER_EPOCH // 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    cache = write_tiny_cache(root / "cache", {"train": 96, "val": 16, "test": 16})
    config = tiny_config(root / "tiny.toml", methods=("supervised",), deploy="supervised", steps=STEPS,
                         eval_every=EVAL_EVERY, ckpt_every=1)
    before = config.read_text()
    finetune = f"[finetune]\nsteps = {STEPS}\neval_every_steps = {EVAL_EVERY}\nwarmup_steps = 1\nbatch_size = "
    text = before.replace(finetune + "16", finetune + "8")
    assert text != before
    config.write_text(text)
    return root, cache, config


def stage_command(config: Path, cache: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "trainer.cli", "stage", "finetune", "--method", "supervised", "--config", str(config),
            "--cache", str(cache), "--out", str(run_dir), "--no-progress"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def val_rows(run_dir: Path) -> dict[int, tuple[float | None, float, float]]:
    """(training loss, validation score, validation loss) per evaluated global step from metrics.jsonl.

    A step evaluated by the killed process and again after the resume (the kill fell between the
    evaluation's log line and its checkpoint) appears twice; the last record wins.
    """
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["global_step"]: (r["train_loss"], r["score"], r["loss"]) for r in rows if r["split"] == "val"}


def final_state(run_dir: Path) -> dict:
    return ckpt.load(run_dir / "seed_0" / "checkpoints" / f"{STAGE}.pt")


@pytest.mark.slow
def test_kill_mid_epoch_then_resume_equals_an_uninterrupted_run(setup):
    root, cache, config = setup
    reference = root / "reference"
    subprocess.run(stage_command(config, cache, reference), check=True, env=env(), cwd=REPO, capture_output=True)

    killed = root / "killed"
    progress = killed / "seed_0" / "checkpoints" / f"{STAGE}_last.json"
    proc = subprocess.Popen(stage_command(config, cache, killed), env=env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    where = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            where = json.loads(progress.read_text())
        except (OSError, ValueError):
            where = None
        # inside the second epoch, past the evaluations at steps 0, 6 and 12
        if where and PER_EPOCH + 1 <= where["global_step"] <= PER_EPOCH + 8:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the stage finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped = json.loads(progress.read_text())
    assert set(stopped) == {"global_step", "best_score", "best_step", "bad_evals"}  # steps only: no epoch, no batch
    assert stopped["global_step"] > PER_EPOCH and stopped["global_step"] % PER_EPOCH  # mid-epoch, past an epoch
    assert stopped["best_step"] in range(0, stopped["global_step"] + 1, EVAL_EVERY)  # an evaluated step
    assert not (killed / "seed_0" / "checkpoints" / f"{STAGE}.pt").exists()
    killed_rows = val_rows(killed)
    assert {0, EVAL_EVERY, 2 * EVAL_EVERY} <= set(killed_rows) and max(killed_rows) < STEPS  # evaluated, unfinished

    resumed = subprocess.run(stage_command(config, cache, killed), env=env(), cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # The kill can land between writing the checkpoint and its JSON mirror, so the checkpoint may be
    # one save newer than `stopped`; the resume must start from the checkpoint, never from an older point.
    said = re.search(r"resuming at step (\d+) of (\d+)", resumed.stderr + resumed.stdout)
    assert said, resumed.stderr + resumed.stdout
    resumed_step, total = map(int, said.groups())
    assert total == STEPS and stopped["global_step"] <= resumed_step <= stopped["global_step"] + 1
    assert resumed_step % PER_EPOCH  # mid-epoch: the sampler must restart inside the epoch's permutation

    a, b = final_state(reference), final_state(killed)
    assert set(a["state_dict"]) == set(b["state_dict"])
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["metrics"]["test"] == b["metrics"]["test"]
    ref_rows = val_rows(reference)
    assert sorted(ref_rows) == list(range(0, STEPS + 1, EVAL_EVERY))  # before the first step, every 6, the last
    assert ref_rows == val_rows(killed)  # every evaluation too (training loss since the last, validation score, loss)
    ref_summary = json.loads((reference / "seed_0" / "checkpoints" / f"{STAGE}.json").read_text())
    summary = json.loads((killed / "seed_0" / "checkpoints" / f"{STAGE}.json").read_text())
    assert summary["resumed_from"] == {"global_step": resumed_step} and ref_summary["resumed_from"] is None
    for key in ("steps", "epochs", "best_step", "val_score", "stopped_early"):
        assert summary[key] == ref_summary[key], key
    assert (summary["steps"], summary["epochs"]) == (STEPS, 3.0)
    # the checks compare the kept evaluation with the one before the first step, which the resume kept
    assert summary["checks"] == ref_summary["checks"] and summary["checks"]["final"]["global_step"] == summary["best_step"]
    assert not progress.exists()  # resume files are removed once the stage is done


def test_checkpoint_carries_its_config(setup):
    root, cache, config = setup
    run_dir = root / "reference"
    if not (run_dir / "run.json").exists() and not (run_dir / "seed_0").exists():
        subprocess.run(stage_command(config, cache, run_dir), check=True, env=env(), cwd=REPO, capture_output=True)
    saved = final_state(run_dir)
    assert saved["config_sha256"] == ckpt.sha256_file(config)
    assert saved["config"] == load_config(config).config.to_dict()
    assert saved["config"]["finetune"]["optim"]["batch_size"] == 8


def pretrain_state(root: Path, cache: Path, config: Path, name: str, seed: int) -> dict[str, torch.Tensor]:
    ctx = make_context(load_config(config), cache, root / name, progress=False)
    try:
        run_pretrain(ctx, seed)
    finally:
        ctx.tracker.close()
    return ckpt.load(ctx.checkpoint_path(seed, "pretrain"))["state_dict"]


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    cache = write_tiny_cache(tmp_path / "cache", {"train": 32, "val": 8, "test": 8})
    config = tiny_config(tmp_path / "tiny.toml", steps=2, eval_every=2)  # 32 pairs in batches of 16: one epoch
    a = pretrain_state(tmp_path, cache, config, "rep-a", 0)
    b = pretrain_state(tmp_path, cache, config, "rep-b", 0)
    c = pretrain_state(tmp_path, cache, config, "rep-c", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
