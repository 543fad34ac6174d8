"""DistributedDataParallel under torchrun: 2 CPU processes (gloo) equal one process with the global batch.

The self-supervised stage is the one that needs care: its InfoNCE loss must see the whole global
batch as negatives (trainer.distributed.gather_with_grad). Two ranks of batch 8 must then train the
same weights as one process of batch 16, up to float summation order. Dropout is off, since each
rank draws its own masks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.trainer_fixtures import tiny_config, write_tiny_cache
from trainer import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def config_with_batch(path: Path, batch: int) -> Path:
    tiny_config(path, methods=("supervised",), deploy="supervised", steps=4, eval_every=2, dropout=0.0)
    path.write_text(path.read_text().replace("batch_size = 16", f"batch_size = {batch}"))
    return path


def test_two_gloo_ranks_equal_one_process_with_the_global_batch(tmp_path):
    cache = write_tiny_cache(tmp_path / "cache", {"train": 32, "val": 8, "test": 8})
    stage = ["stage", "pretrain", "--cache", str(cache), "--no-progress"]
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "trainer.cli",
         *stage, "--config", str(config_with_batch(tmp_path / "ddp.toml", 8)), "--out", str(tmp_path / "ddp")])
    run([sys.executable, "-m", "trainer.cli", *stage, "--config", str(config_with_batch(tmp_path / "one.toml", 16)),
         "--out", str(tmp_path / "one")])

    ddp = ckpt.load(tmp_path / "ddp" / "seed_0" / "checkpoints" / "pretrain.pt")["state_dict"]
    one = ckpt.load(tmp_path / "one" / "seed_0" / "checkpoints" / "pretrain.pt")["state_dict"]
    assert set(ddp) == set(one)
    for key in one:
        a, b = ddp[key], one[key]
        if key.endswith("qkv.bias"):
            # the key bias has an exactly zero gradient (softmax ignores a constant shift of the scores), so
            # AdamW turns float summation noise there into lr-sized steps: compare the query and value parts
            d = a.shape[0] // 3
            a, b = torch.cat([a[:d], a[2 * d:]]), torch.cat([b[:d], b[2 * d:]])
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), key

    # rank 0 alone writes: one summary, one line per logged step and per evaluation in metrics.jsonl
    summary = json.loads((tmp_path / "ddp" / "seed_0" / "checkpoints" / "pretrain.json").read_text())
    assert summary["steps"] == 4 and summary["epochs"] == 2.0  # 4 steps x 16 (8 x 2 ranks) / 32 pairs
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["global_step"] for r in rows if r["split"] == "train"]
    assert steps == [1, 2, 3, 4]  # no duplicates from rank 1
    evaluated = [r["global_step"] for r in rows if r["split"] == "val"]
    assert evaluated == [0, 2, 4]  # before the first step, every 2 steps (the last included), once each
    loss_ddp = [r["loss"] for r in rows if r["split"] in ("train", "val")]
    rows_one = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    loss_one = [r["loss"] for r in rows_one if r["split"] in ("train", "val")]
    assert loss_ddp == pytest.approx(loss_one, rel=1e-4)
