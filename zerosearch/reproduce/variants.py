"""The variants of the results table, each one base config plus named overrides.

Why override dicts on one base: "the variants differ only where named" is then true by construction, and the
saved configs prove it (tests/test_reproduce.py compares them key by key). The base of one seed is the toy config
with every path pointing at that seed's world, SFT simulator and warm-start, so every variant of a seed shares
the world, the warm-start, the training steps, the rollout settings and the evaluation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerosearch.build import build_curriculum
from zerosearch.config import RunConfig, apply_overrides
from zerosearch.toy.assets import ToyAssets
from zerosearch.toy.pipeline import ToySchedule

# The ZeroSearch variant is the toy pipeline itself, which leaves its SFT simulator and warm-start here.
ZEROSEARCH = "zerosearch"
SIMULATOR_DIR, WARM_DIR = "simulator", "policy-warm"


@dataclass(frozen=True)
class Variant:
    """One row of the table: `overrides` on the seed's base config; `train` says whether RL runs; `rag` puts the
    BM25 top-k for the question in front of the first turn."""

    name: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)
    train: bool = True
    rag: bool = False

    @property
    def group(self) -> str:
        return "RL" if self.train else "no RL"


NOISE_MEAN = "<curriculum mean>"  # filled per base config: the mean of the curriculum's p over the training steps
UNTRAINED_SIMULATOR = "<simulator before SFT>"  # filled per seed: the toy asset's untrained simulator

VARIANTS: tuple[Variant, ...] = (
    Variant("direct", "direct answer, no search", {"rollout.max_turns": 0}, train=False),
    Variant("rag", "RAG: BM25 top-k prepended, no search", {"rollout.max_turns": 0}, train=False, rag=True),
    Variant("warm-start", "warm-start policy with search", {}, train=False),
    Variant(ZEROSEARCH, "ZeroSearch: RL vs SFT simulator, curriculum", {}),
    Variant("search-r1", "Search-R1: RL with real BM25 search", {"search.backend": "bm25"}),
    Variant(
        "constant-noise",
        "constant noise p = curriculum mean",
        {"curriculum.p_start": NOISE_MEAN, "curriculum.p_end": NOISE_MEAN},
    ),
    Variant("prompt-only-sim", "simulator before SFT (prompt only)", {"model.simulator_path": UNTRAINED_SIMULATOR}),
    Variant("no-search", "RL without search", {"rollout.max_turns": 0}),
    Variant("ppo", "ZeroSearch with PPO", {"trainer.algo": "ppo"}),
    Variant("reinforce-pp", "ZeroSearch with REINFORCE++", {"trainer.algo": "reinforce_pp"}),
)
VARIANT_NAMES = tuple(v.name for v in VARIANTS)

# --smoke: every variant trains a couple of steps on a few questions (CI checks the machinery, not the numbers).
SMOKE_OVERRIDES: dict[str, Any] = {
    "trainer.steps": 2,
    "trainer.batch_questions": 2,
    "rollout.n_samples": 2,
    "rollout.max_turns": 1,
    "rollout.max_new_tokens": 10,
    "search.max_new_tokens": 12,
    "data.max_test_examples": 4,
    "trainer.checkpoint_every": 1,
}
SMOKE_SCHEDULE = ToySchedule(simulator_steps=4, policy_steps=4, batch_size=8, collect_questions=16, collect_rollouts=2,
                              max_eval_pairs=8)


def select(names: list[str] | None) -> list[Variant]:
    """The variants named (all when None), in table order; ZeroSearch always runs since it builds what the others
    share. An unknown name is a ValueError listing the known ones."""
    if not names:
        return list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANT_NAMES))
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANT_NAMES)}")
    wanted = set(names) | {ZEROSEARCH}
    return [v for v in VARIANTS if v.name in wanted]


def mean_noise(cfg: RunConfig) -> float:
    """The curriculum's noise probability averaged over the training steps (what a constant schedule replaces)."""
    curriculum = build_curriculum(cfg)
    steps = cfg.trainer.steps
    return round(sum(curriculum.probability(i) for i in range(steps)) / steps, 6)


def seed_base(cfg: RunConfig, seed: int, assets: ToyAssets, seed_dir: Path) -> RunConfig:
    """The seed's base config: `cfg` with the seed and every path of the seed's world and shared models."""
    base = copy.deepcopy(cfg)
    shared = seed_dir / ZEROSEARCH
    apply_overrides(
        base,
        {
            "seed": seed,
            "out_dir": str(shared),
            "model.policy_path": str(shared / WARM_DIR),
            "model.simulator_path": str(shared / SIMULATOR_DIR),
            "model.tokenizer_path": str(assets.tokenizer_dir),
            "data.train_path": str(assets.train_path),
            "data.test_path": str(assets.test_path),
            "data.corpus_path": str(assets.corpus_path),
        },
    )
    return base


def resolved_overrides(variant: Variant, base: RunConfig, assets: ToyAssets) -> dict[str, Any]:
    """The variant's overrides with the per-seed placeholders filled in."""
    fill = {NOISE_MEAN: mean_noise(base), UNTRAINED_SIMULATOR: str(assets.simulator_dir)}
    return {k: fill.get(v, v) if isinstance(v, str) else v for k, v in variant.overrides.items()}


def variant_config(variant: Variant, base: RunConfig, assets: ToyAssets, seed_dir: Path) -> RunConfig:
    """The base config with the variant's overrides and its own out_dir."""
    cfg = copy.deepcopy(base)
    apply_overrides(cfg, {**resolved_overrides(variant, base, assets), "out_dir": str(seed_dir / variant.name)})
    return cfg
