"""Every shipped config under configs/ passes the dry-run validation, and the validator catches mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from zerosearch.cli import main
from zerosearch.config import load_config
from zerosearch.validate import validate_config

ALL = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
SFT = [p for p in ALL if p.name.startswith("simulator-sft")]  # `zerosearch sft` recipes (tests/test_sft_scale.py)
CONFIGS = [p for p in ALL if p not in SFT]
PAPER = [p for p in CONFIGS if not p.name.startswith("toy")]


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    for want in ("qwen2.5-3b-grpo.yaml", "qwen2.5-3b-ppo.yaml", "qwen2.5-3b-reinforce-pp.yaml",
                 "qwen2.5-7b-grpo.yaml", "llama3.2-3b-grpo.yaml", "toy-distributed.yaml"):
        assert want in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("command", ["train", "eval"])
def test_config_validates(path, command):
    cfg = load_config(path)
    world = 8 if path in PAPER else 2
    report = validate_config(cfg, world_size=world, command=command)
    assert not report.errors, report.errors
    assert report.ok(allow_missing_paths=True)
    assert main(["validate", "--config", str(path), "--allow-missing-paths", "--world-size", str(world),
                 "--for", command]) == 0


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.name)
def test_paper_settings(path):
    """DESIGN §1: 203 steps, 64 questions x 5 rollouts, p 0 -> 0.5 with b = 4, lr 1e-6, KL / entropy 0.001."""
    cfg = load_config(path)
    t, c = cfg.trainer, cfg.curriculum
    assert (t.steps, t.batch_questions, cfg.rollout.n_samples) == (203, 64, 5)
    assert (c.p_start, c.p_end, c.base) == (0.0, 0.5, 4.0)
    assert (t.lr, t.clip_low, t.clip_high, t.kl_coef, t.entropy_coef) == (1e-6, 0.2, 0.2, 0.001, 0.001)
    assert (cfg.rollout.max_context, cfg.rollout.max_new_tokens, cfg.search.temperature) == (4096, 500, 0.8)
    assert cfg.model.policy_path.startswith("/path/to/")
    text = path.read_text()
    assert "GPU memory" in text and "KV cache" in text and "torchrun" in text
    report = validate_config(cfg, world_size=8)
    assert report.missing_paths and not report.ok()  # placeholders: fails unless missing paths are allowed
    assert main(["validate", "--config", str(path), "--world-size", "8"]) == 1


@pytest.mark.parametrize("override, needle", [
    ("trainer.algo=dpo", "trainer.algo"),
    ("trainer.agg=sum", "trainer.agg"),
    ("trainer.kl_type=k4", "trainer.kl_type"),
    ("trainer.grpo_singleton=mean", "trainer.grpo_singleton"),
    ("curriculum.p_end=1.5", "curriculum.p_end"),
    ("curriculum.base=1", "curriculum.base"),
    ("trainer.lr=0", "trainer.lr"),
    ("rollout.n_samples=1", "n_samples"),
    ("trainer.batch_questions=63", "multiple of the world size"),
    ("rollout.max_context=400", "max_context"),
    ("search.base_url=", "base_url"),
    ("model.packed_sequences=yes", "model.packed_sequences"),
    ("model.attn_implementation=flash", "model.attn_implementation"),
])
def test_validator_catches_mistakes(override, needle):
    cfg = load_config(PAPER[0], [override])
    report = validate_config(cfg, world_size=8)
    assert any(needle in e for e in report.errors), report.errors
    assert not report.ok(allow_missing_paths=True)


@pytest.mark.parametrize("overrides", [
    ["trainer.kl_type=low_var_kl"], ["trainer.kl_type=abs"], ["trainer.kl_type=mse"], ["trainer.kl_type=kl"],
    ["rollout.n_samples=1", "trainer.grpo_singleton=reward"], ["trainer.grpo_norm_by_std=false"],
])
def test_validator_accepts_verl_conventions(overrides):
    """veRL's KL names, a size-1 group trained on its raw reward, and Dr. GRPO are valid settings."""
    report = validate_config(load_config(PAPER[0], overrides), world_size=8)
    assert report.ok(allow_missing_paths=True), report.errors


def test_wrong_type_is_a_config_error(capsys):
    assert main(["validate", "--config", str(PAPER[0]), "trainer.steps=many"]) == 2
    assert "config error" in capsys.readouterr().err
