"""`zerosearch toy`: the whole ZeroSearch recipe on the embedded toy world, end to end on a CPU.

real search (BM25) → (query, documents) pairs labelled useful/noisy → SFT the simulator →
warm-start the policy on the format → RL against the simulator with the noise curriculum →
evaluate before/after with real search.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from zerosearch.build import build_curriculum, build_generator, build_runner, build_search, build_trainer
from zerosearch.config import RunConfig, save_config
from zerosearch.data.qa import QAExample
from zerosearch.eval import evaluate
from zerosearch.hf.saving import load_if_complete, save_pretrained_atomic
from zerosearch.rl.sft import SimulatorPair, balance_pairs, sft_train, simulator_samples
from zerosearch.search import BM25Search
from zerosearch.toy.assets import ToyAssets, ensure_toy_assets
from zerosearch.toy.trajectories import direct_answer_trajectory, search_trajectory
from zerosearch.toy.world import ToyWorld, query_for

log = logging.getLogger(__name__)


@dataclass
class ToySchedule:
    """SFT budgets of the toy run (RL budgets live in the config's trainer section)."""

    simulator_steps: int = 600
    policy_steps: int = 1000
    batch_size: int = 16
    simulator_lr: float = 2e-3
    policy_lr: float = 2e-3
    search_fraction: float = 0.5  # warm-start trajectories that search; the rest guess without searching

    @classmethod
    def fast(cls) -> ToySchedule:
        return cls(simulator_steps=40, policy_steps=40)


def _passage_of(world: ToyWorld, name: str) -> str:
    return world.passages[[e.name for e in world.entities].index(name)]


def collect_simulator_pairs(
    world: ToyWorld, bm25: BM25Search, examples: list[QAExample], rng: random.Random
) -> list[SimulatorPair]:
    """Useful pairs: real results for the right query. Noisy: real results for a query about another
    entity, shown under the right query. Labels are checked: useful iff the needed passage is among them."""
    names_by_kind: dict[str, list[str]] = {}
    for e in world.entities:
        names_by_kind.setdefault(e.kind, []).append(e.name)
    kinds = {e.name: e.kind for e in world.entities}
    pairs = []
    for ex in examples:
        for query, relation, name in zip(ex.meta["needed_queries"], ex.meta["relations"], ex.meta["entities"]):
            needed = _passage_of(world, name)
            other = rng.choice([n for n in names_by_kind[kinds[name]] if n != name])
            for q in (query, query_for(relation, other)):
                docs = [bm25.corpus[i] for i in bm25.retrieve([q])[0]]
                pairs.append(SimulatorPair(query, ex.question, list(ex.golden_answers), docs, needed in docs))
    return pairs


def warm_start_samples(
    world: ToyWorld, bm25: BM25Search, examples: list[QAExample], rng: random.Random, search_fraction: float
) -> list:
    """Format-only warm start: some trajectories search (with real results), the others guess an answer
    of the right type without searching, so RL has a better behaviour to discover."""
    values_by_relation: dict[str, list[str]] = {}
    for ex in examples:
        values_by_relation.setdefault(ex.meta["template"], []).extend(ex.golden_answers)
    samples = []
    for ex in examples:
        if rng.random() < search_fraction:
            docs = [[bm25.corpus[i] for i in bm25.retrieve([q])[0]] for q in ex.meta["needed_queries"]]
            samples.append(search_trajectory(ex, docs, rng=rng))
        else:
            guess = rng.choice(values_by_relation[ex.meta["template"]])
            samples.append(direct_answer_trajectory(ex, guess, rng=rng))
    return samples


def _table(before: dict, after: dict) -> str:
    lines = [f"{'':24s}{'EM':>8s}{'cover-EM':>10s}{'F1':>8s}{'searches':>10s}"]
    for name, s in (("warm-start (before RL)", before), ("after RL", after)):
        a = s["average"]
        lines.append(f"{name:24s}{a['em']:8.3f}{a['cover_em']:10.3f}{a['f1']:8.3f}{a['searches']:10.2f}")
    return "\n".join(lines)


STAGES = ("simulator", "warm-start", "eval-before", "rl", "eval-after")


def stage_rng(seed: int, stage: str) -> random.Random:
    """The stage's own generator, and torch's global seed, from (seed, stage) alone.

    Why per stage: on `--resume` a finished stage is loaded instead of rerun, so a generator shared across stages
    would reach the next stage in another state and the resumed run would end with other weights.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown toy stage {stage!r}; stages: {', '.join(STAGES)}")
    digest = hashlib.sha256(f"zerosearch-toy:{seed}:{stage}".encode()).digest()
    value = int.from_bytes(digest[:8], "little")
    torch.manual_seed(value)
    return random.Random(value)


def _load_model(path: Path):
    from transformers import Qwen2ForCausalLM

    return load_if_complete(path, Qwen2ForCausalLM.from_pretrained)


def build_simulator(
    cfg: RunConfig,
    assets: ToyAssets,
    world: ToyWorld,
    tok,
    bm25: BM25Search,
    sched: ToySchedule,
    out_dir: Path,
    *,
    progress: bool = True,
):
    """The SFT'd simulator saved in `out_dir` (an atomic directory write)."""
    rng = stage_rng(cfg.seed, "simulator")
    pairs = balance_pairs(collect_simulator_pairs(world, bm25, world.train, rng), seed=cfg.seed)
    log.info("simulator SFT on %d balanced pairs", len(pairs))
    return _fine_tune(cfg, assets.simulator_dir, tok, simulator_samples(pairs), sched, out_dir,
                      steps=sched.simulator_steps, lr=sched.simulator_lr, append_eos=True, progress=progress,
                      desc="simulator sft")  # fmt: skip


def warm_start_policy(
    cfg: RunConfig,
    assets: ToyAssets,
    world: ToyWorld,
    tok,
    bm25: BM25Search,
    sched: ToySchedule,
    out_dir: Path,
    *,
    progress: bool = True,
):
    """The format-only warm-started policy saved in `out_dir` (an atomic directory write)."""
    rng = stage_rng(cfg.seed, "warm-start")
    samples = warm_start_samples(world, bm25, world.train, rng, sched.search_fraction)
    return _fine_tune(cfg, assets.policy_dir, tok, samples, sched, out_dir, steps=sched.policy_steps,
                      lr=sched.policy_lr, append_eos=False, progress=progress, desc="policy warm-start")  # fmt: skip


def _fine_tune(cfg, base_dir, tok, samples, sched, out_dir, *, steps, lr, append_eos, progress, desc):
    """One toy SFT stage: the base model from `base_dir`, trained on `samples`, saved atomically to `out_dir`."""
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM.from_pretrained(base_dir)
    sft_train(model, tok, samples, steps=steps, batch_size=sched.batch_size, lr=lr, append_eos=append_eos,
              seed=cfg.seed, device=cfg.device, progress=progress, desc=desc)  # fmt: skip
    save_pretrained_atomic(out_dir, model)
    return model


def run_toy(
    cfg: RunConfig,
    *,
    resume: bool = False,
    fast: bool = False,
    progress: bool = True,
    schedule: ToySchedule | None = None,
) -> dict:
    """Run every stage. When resuming, a stage whose saved model loads is reused and one whose model is missing
    or does not load is rebuilt; each stage seeds itself (`stage_rng`), so the end result is the same either way."""
    sched = schedule or (ToySchedule.fast() if fast else ToySchedule())
    if fast:
        cfg.trainer.steps = min(cfg.trainer.steps, 4)
        cfg.data.max_test_examples = min(cfg.data.max_test_examples or 40, 40)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    assets: ToyAssets = ensure_toy_assets(cfg.cache_dir, seed=cfg.seed)
    world, tok = assets.load_world(), assets.load_tokenizer()
    bm25 = BM25Search.from_jsonl(assets.corpus_path, top_k=cfg.search.top_k)

    sim_dir, warm_dir = out / "simulator", out / "policy-warm"
    simulator = _load_model(sim_dir) if resume else None
    if simulator is None:
        simulator = build_simulator(cfg, assets, world, tok, bm25, sched, sim_dir, progress=progress)
    policy = _load_model(warm_dir) if resume else None
    if policy is None:
        policy = warm_start_policy(cfg, assets, world, tok, bm25, sched, warm_dir, progress=progress)

    test = world.test[: cfg.data.max_test_examples or None]
    policy_gen = build_generator(cfg, policy, tok)
    stage_rng(cfg.seed, "eval-before")
    before = evaluate(
        build_runner(cfg, policy_gen, tok, bm25, greedy=True),
        test,
        out_jsonl=out / "eval-before.jsonl",
        progress=progress,
        desc="eval before RL",
    )
    stage_rng(cfg.seed, "rl")
    curriculum = build_curriculum(cfg)
    sim_search = build_search(cfg, curriculum=curriculum, simulator=build_generator(cfg, simulator, tok))
    trainer = build_trainer(cfg, policy, tok, world.train, search=sim_search, curriculum=curriculum)
    if resume:
        trainer.resume()
    trainer.fit(progress=progress)
    save_pretrained_atomic(out / "policy-rl", policy)
    stage_rng(cfg.seed, "eval-after")
    after = evaluate(
        build_runner(cfg, policy_gen, tok, bm25, greedy=True),
        test,
        out_jsonl=out / "eval-after.jsonl",
        progress=progress,
        desc="eval after RL",
    )
    summary = {"before": before, "after": after, "simulator": sim_search.stats()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\nHeld-out toy questions, greedy, real BM25 search:\n" + _table(before, after))
    print(f"\nmetrics: {out / 'metrics.jsonl'}  plot: {out / 'training.png'}")
    return summary
