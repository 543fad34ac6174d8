"""Resume after a kill mid-epoch continues where it stopped; seeds make runs repeatable."""

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


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    cache = write_tiny_cache(root / "cache", {"train": 96, "val": 16, "test": 16})
    config = tiny_config(root / "tiny.toml", methods=("supervised",), deploy="supervised", epochs=3, ckpt_every=1)
    text = config.read_text().replace("[finetune]\nepochs = 3\nbatch_size = 16", "[finetune]\nepochs = 3\nbatch_size = 8")
    config.write_text(text)
    return root, cache, config


def stage_command(config: Path, cache: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "trainer.cli", "stage", "finetune", "--method", "supervised", "--config", str(config),
            "--cache", str(cache), "--out", str(run_dir), "--no-progress"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def val_rows(run_dir: Path) -> dict[int, tuple[float, float]]:
    """(training loss, validation score) per epoch from metrics.jsonl (the last record of an epoch wins)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["epoch"]: (r["train_loss"], r["score"]) for r in rows if r["split"] == "val"}


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
        if where and where["epoch"] >= 1 and 2 <= where["batch"] <= 8:  # inside the second epoch
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the stage finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped = json.loads(progress.read_text())
    assert stopped["global_step"] > 12 and stopped["batch"] > 0  # saved mid-epoch, past the first epoch
    assert not (killed / "seed_0" / "checkpoints" / f"{STAGE}.pt").exists()

    resumed = subprocess.run(stage_command(config, cache, killed), env=env(), cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # The kill can land between writing the checkpoint and its JSON mirror, so the checkpoint may be
    # one save newer than `stopped`; the resume must start from the checkpoint, never from an older point.
    said = re.search(r"resuming at epoch (\d+), batch (\d+) \(step (\d+)\)", resumed.stderr + resumed.stdout)
    assert said, resumed.stderr + resumed.stdout
    resumed_epoch, resumed_batch, resumed_step = map(int, said.groups())
    assert resumed_step >= stopped["global_step"] and resumed_epoch >= stopped["epoch"] + 1
    assert resumed_batch > 0  # mid-epoch

    a, b = final_state(reference), final_state(killed)
    assert set(a["state_dict"]) == set(b["state_dict"])
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["metrics"]["test"] == b["metrics"]["test"]
    assert val_rows(reference) == val_rows(killed)  # the epoch records too (training loss, validation score)
    summary = json.loads((killed / "seed_0" / "checkpoints" / f"{STAGE}.json").read_text())
    assert summary["resumed_from"]["global_step"] == resumed_step
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
    config = tiny_config(tmp_path / "tiny.toml", epochs=2)
    a = pretrain_state(tmp_path, cache, config, "rep-a", 0)
    b = pretrain_state(tmp_path, cache, config, "rep-b", 0)
    c = pretrain_state(tmp_path, cache, config, "rep-c", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
