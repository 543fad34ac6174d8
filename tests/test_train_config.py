"""Training configs: the shipped files parse; every bad value is refused with its key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.config import Config, ConfigError, load_config, parse_config
from trainer.ecg_model import EcgEncoderConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["demo.toml", "demo-compare.toml", "paper.toml"])
def test_shipped_configs_parse(name):
    loaded = load_config(CONFIGS / name)
    cfg = loaded.config
    assert len(loaded.sha256) == 64 and loaded.text == (CONFIGS / name).read_text()
    assert "multilabel" in cfg.run.protocols and cfg.run.deploy_method in cfg.run.methods
    assert len(cfg.run.seeds) >= 3  # the report's intervals are over seeds


def test_paper_config_has_the_paper_sizes():
    cfg = load_config(CONFIGS / "paper.toml").config
    assert cfg.ecg == EcgEncoderConfig()  # the lead's defaults are the paper's
    assert cfg.ecg.tokens == 196
    assert (cfg.align.temperature, cfg.align.alpha, cfg.align.topk_fraction, cfg.align.direct_pair_weight) == (0.01, 5.0, 0.1, 3.0)
    assert cfg.align.optim.batch_size == 256 and cfg.cxr_model.arch == "densenet121"
    assert set(cfg.run.methods) == {"supervised", "ssl", "clip", "supcon", "cromotex"}


def test_demo_compare_runs_every_baseline_on_both_protocols():
    cfg = load_config(CONFIGS / "demo-compare.toml").config
    demo = load_config(CONFIGS / "demo.toml").config
    assert set(cfg.run.methods) == {"supervised", "ssl", "clip", "supcon", "cromotex"}
    assert set(cfg.run.protocols) == {"multilabel", "binary"}
    assert cfg.ecg == demo.ecg and cfg.finetune == demo.finetune  # the same models and budgets as the demo


def test_defaults_and_round_trip():
    cfg = parse_config("")
    assert cfg == Config()
    d = cfg.to_dict()
    assert d["run"]["seeds"] == [0, 1, 2] and d["pretrain"]["optim"]["batch_size"] == 512


@pytest.mark.parametrize("text, match", [
    ("[align]\nepoch = 3\n", r"unknown key\(s\) \['epoch'\] in \[align\]"),
    ("[align]\nweighting = 'hard'\n", r"\[align\] weighting='hard' unknown; choices: \['none', 'topk'"),
    ("[align]\nalpha = 'five'\n", r"\[align\] alpha must be a number"),
    ("[finetune]\nepochs = 0\n", r"\[finetune\] epochs=0 must be >= 1"),
    ("[finetune]\nlr = -1\n", r"\[finetune\] lr=-1.0 must be > 0"),
    ("[pretrain]\nbatch_size = 2.5\n", r"\[pretrain\] batch_size must be an integer"),
    ("[run]\nmethods = ['cromotex', 'magic']\n", r"\[run\] methods=.*unknown \['magic'\]"),
    ("[run]\nmethods = ['ssl']\n", r"\[run\] deploy_method='cromotex' must be one of"),
    ("[run]\nprotocols = ['binary']\n", r"protocols must include 'multilabel'"),
    ("[run]\nseeds = [1, 1]\n", r"\[run\] seeds=\[1, 1\] must be distinct"),
    ("[run]\ndevice = 'tpu'\n", r"\[run\] device='tpu' unknown"),
    ("[run]\nprecision = 'fp16'\n", r"\[run\] precision='fp16' unknown"),
    ("[model.ecg]\nd_model = 30\nheads = 4\n", r"\[model.ecg\] d_model=30 must be a multiple of heads=4"),
    ("[model.head]\noutputs = 3\n", r"unknown key\(s\) \['outputs'\] in \[model.head\]"),
    ("[model.cxr]\narch = 'vit'\n", r"\[model.cxr\] arch='vit' unknown"),
    ("[model.cxr]\narch = 'small_cnn'\nweights = 'auto'\n", r"weights apply to arch='densenet121' only"),
    ("[augment]\nprojection = 'dower'\n", r"\[augment\] projection 'dower' unknown"),
    ("[model.gpu]\nx = 1\n", r"\[model\] holds only"),
    ("[trainer]\nx = 1\n", r"unknown table\(s\) \['trainer'\]"),
    ("[run\nx = 1\n", r"not valid TOML"),
    ("run = 3\n", r"\[run\] must be a table"),
])
def test_bad_values_name_the_key(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(text, "bad.toml")


def test_missing_file_says_what_to_give(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config .*configs/demo.toml"):
        load_config(tmp_path / "nope.toml")


def test_stages_needed_follow_the_methods():
    assert parse_config("[run]\nmethods = ['supervised']\ndeploy_method = 'supervised'\ncxr_reference = false\n"
                        ).stages_needed() == {"pretrain": False, "cxr": False, "align": False}
    assert parse_config("[run]\nmethods = ['ssl']\ndeploy_method = 'ssl'\n").stages_needed() == {
        "pretrain": True, "cxr": True, "align": False}
    assert all(parse_config("").stages_needed().values())
