"""Train and evaluate every variant of every seed; each (variant, seed) is finished once and then reused.

Per seed the toy pipeline runs first, as the ZeroSearch variant: it builds the world, SFTs the simulator and
warm-starts the policy, which every other variant of the seed then starts from. A (variant, seed) is done when its
`result.json` exists; until then a rerun continues it: training from its newest checkpoint (the trainer refuses
one written with another config), evaluation after the rows already saved.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zerosearch.build import build_generator, build_runner, build_trainer, load_policy
from zerosearch.config import RunConfig, config_to_dict, save_config
from zerosearch.data.qa import QAExample
from zerosearch.eval import evaluate
from zerosearch.reproduce.rag import RAGRunner
from zerosearch.reproduce.variants import ZEROSEARCH, Variant, seed_base, variant_config
from zerosearch.runtime.jsonl import write_json_atomic
from zerosearch.runtime.metrics import read_metrics
from zerosearch.runtime.run_dir import config_changes, writing
from zerosearch.search import BM25Search
from zerosearch.toy.assets import ToyAssets, ensure_toy_assets
from zerosearch.toy.pipeline import ToySchedule, run_toy

log = logging.getLogger(__name__)

RESULT = "result.json"


@dataclass
class SeedContext:
    """What every variant of one seed shares: the world's files, its questions and the real search engine."""

    seed: int
    dir: Path
    assets: ToyAssets
    train: list[QAExample]
    test: list[QAExample]
    bm25: BM25Search
    base: RunConfig


def seed_context(cfg: RunConfig, seed: int, out: Path) -> SeedContext:
    assets = ensure_toy_assets(cfg.cache_dir, seed=seed)
    world = assets.load_world()
    seed_dir = out / f"seed{seed}"
    base = seed_base(cfg, seed, assets, seed_dir)
    test = world.test[: base.data.max_test_examples or None]
    bm25 = BM25Search.from_jsonl(assets.corpus_path, top_k=base.search.top_k)
    return SeedContext(seed, seed_dir, assets, world.train, test, bm25, base)


def check_same_config(path: Path, cfg: RunConfig) -> None:
    """A (variant, seed) left by an earlier run continues only with the config it started with."""
    if not path.is_file():
        return
    changes = config_changes(yaml.safe_load(path.read_text()) or {}, config_to_dict(cfg))
    if changes:
        raise ValueError(
            f"{path} was written with another config ({'; '.join(changes)}): resume with the same "
            "settings, or start afresh with --overwrite"
        )


def training_queries(cfg: RunConfig, out_dir: Path) -> dict[str, int]:
    """Search queries the rollouts sent during training, by kind of engine (from the per-step metrics, which a
    resumed run keeps exactly one row per step of)."""
    per_step = cfg.trainer.batch_questions * cfg.rollout.n_samples
    total = round(sum(r.get("searches", 0.0) for r in read_metrics(out_dir / "metrics.jsonl")) * per_step)
    simulated = cfg.search.backend in ("simulator", "openai")
    return {"simulator": total if simulated else 0, "real": 0 if simulated else total}


def _evaluate(variant: Variant, cfg: RunConfig, ctx: SeedContext, policy, tok, progress: bool) -> dict[str, Any]:
    """Greedy, real BM25 search, the seed's held-out questions; rows saved as they finish and reused on resume."""
    generator = build_generator(cfg, policy, tok)
    if variant.rag:
        runner = RAGRunner(tok, generator, ctx.bm25, cfg.rollout, greedy=True)
    else:
        runner = build_runner(cfg, generator, tok, ctx.bm25, greedy=True)
    summary = evaluate(
        runner,
        ctx.test,
        out_jsonl=Path(cfg.out_dir) / "eval.jsonl",
        progress=progress,
        desc=f"eval {variant.name}",
        resume=True,
    )
    return summary["average"]


def _train_and_evaluate(variant: Variant, cfg: RunConfig, ctx: SeedContext, progress: bool) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    tok, policy = load_policy(cfg, trainable=variant.train)
    if variant.train:
        trainer = build_trainer(cfg, policy, tok, ctx.train)
        if (out / "checkpoints").exists():
            trainer.resume()
        trainer.fit(progress=progress)
    return _evaluate(variant, cfg, ctx, policy, tok, progress)


def run_variant(variant: Variant, ctx: SeedContext, schedule: ToySchedule, *, progress: bool) -> dict[str, Any]:
    """The variant's result on this seed: read back if finished, else trained (or continued) and evaluated."""
    cfg = variant_config(variant, ctx.base, ctx.assets, ctx.dir)
    out = Path(cfg.out_dir)
    done = out / RESULT
    if done.is_file():
        return json.loads(done.read_text())
    check_same_config(out / "config.yaml", cfg)
    started = out.is_dir() and any(out.iterdir())
    out.mkdir(parents=True, exist_ok=True)
    with writing(out / "config.yaml"):
        save_config(cfg, out / "config.yaml")
    t0 = time.perf_counter()
    if variant.name == ZEROSEARCH:  # the toy pipeline itself: world, SFT simulator, warm-start, RL, evaluation
        evaluation = run_toy(cfg, resume=started, progress=progress, schedule=schedule)["after"]["average"]
    else:
        evaluation = _train_and_evaluate(variant, cfg, ctx, progress)
    result = {
        "variant": variant.name,
        "seed": ctx.seed,
        "eval": evaluation,
        "n_test": len(ctx.test),
        "train_steps": cfg.trainer.steps if variant.train else 0,
        "train_queries": training_queries(cfg, out) if variant.train else {"simulator": 0, "real": 0},
        "wall_s": round(time.perf_counter() - t0, 1),
        "resumed": started,
    }
    write_json_atomic(done, result)
    return result


def run_all(
    cfg: RunConfig, variants: list[Variant], seeds: list[int], out: Path, schedule: ToySchedule, *, progress: bool
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Every (variant, seed), yielded as it finishes; ZeroSearch first within a seed (it builds what the others
    start from)."""
    order = sorted(variants, key=lambda v: v.name != ZEROSEARCH)
    total, k = len(order) * len(seeds), 0
    for seed in seeds:
        ctx = seed_context(cfg, seed, out)
        for variant in order:
            k += 1
            what = f"RL {ctx.base.trainer.steps} steps, then eval" if variant.train else "eval"
            print(f"[{k}/{total}] seed {seed} · {variant.name}: {variant.label} ({what})", flush=True)
            r = run_variant(variant, ctx, schedule, progress=progress)
            e = r["eval"]
            print(
                f"[{k}/{total}] seed {seed} · {variant.name}: EM {e['em']:.3f}  F1 {e['f1']:.3f}  "
                f"searches/q {e['searches']:.2f}  ({r['wall_s']:.0f} s)",
                flush=True,
            )
            yield variant.name, seed, r
