"""`zerosearch toy`: the whole ZeroSearch recipe on the embedded toy world, end to end on a CPU.

warm-start the policy on the format → collect its sub-queries against real search (BM25) → label them useful/noisy
(cover-EM) and balance → SFT the simulator → measure the simulator → RL against it with the noise curriculum →
evaluate before/after with real search. Collection, labelling, SFT and the simulator's measurement are the code of
`zerosearch collect`, `label`, `sft` and `simulate --eval`; only the budgets are the toy's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from zerosearch.build import (
    build_curriculum,
    build_generator,
    build_runner,
    build_search,
    build_trainer,
    simulator_quality_searches,
)
from zerosearch.collect import (
    balance,
    collect,
    flatten,
    format_label_stats,
    label_rows,
    label_stats,
    mined_negatives,
    sample_questions,
)
from zerosearch.config import RunConfig, SFTConfig, save_config
from zerosearch.data.qa import QAExample
from zerosearch.eval import evaluate
from zerosearch.eval.simulator_quality import format_quality_table, simulator_quality
from zerosearch.hf.saving import load_if_complete, save_pretrained_atomic
from zerosearch.rl.sft_data import load_pairs, load_sft_rows
from zerosearch.rl.sft_trainer import SFTTrainer
from zerosearch.runtime.jsonl import write_json_atomic, write_jsonl_atomic
from zerosearch.search import BM25Search
from zerosearch.search.recording import RecordingSearch
from zerosearch.toy.assets import ToyAssets, ensure_toy_assets
from zerosearch.toy.trajectories import direct_answer_trajectory, search_trajectory
from zerosearch.toy.world import ToyWorld

log = logging.getLogger(__name__)


@dataclass
class ToySchedule:
    """Budgets of the toy's SFT and collection stages (RL budgets live in the config's trainer section)."""

    simulator_steps: int = 600
    policy_steps: int = 1000
    batch_size: int = 16
    simulator_lr: float = 2e-3
    policy_lr: float = 2e-3
    search_fraction: float = 0.5  # warm-start trajectories that search; the rest guess without searching
    collect_questions: int = 0  # training questions whose searches are collected; 0: all
    collect_rollouts: int = 4  # sampled rollouts of the warm-started policy per training question
    collect_temperature: float = 1.0  # diverse queries: right ones (useful documents) and wrong ones (noisy)
    negatives: int = 1  # mined noisy pairs per useful pair (zerosearch/collect/labels.py)
    held_out_questions: float = 0.1  # share of training questions whose pairs measure the simulator, not train it
    max_eval_pairs: int = 200

    @classmethod
    def fast(cls) -> ToySchedule:
        return cls(simulator_steps=40, policy_steps=40, collect_questions=200, max_eval_pairs=40)

    def sft(self, *, steps: int, lr: float, append_eos: bool) -> SFTConfig:
        """The `sft.*` section of one toy SFT stage: one micro-batch per step, cosine decay to 0, no held-out loss."""
        return SFTConfig(steps=steps, lr=lr, warmup_steps=10, lr_schedule="cosine", min_lr_ratio=0.0,
                         global_batch_size=self.batch_size, micro_batch_size=self.batch_size, length_grouping=False,
                         eval_fraction=0.0, balance=False, eval_every=0, save_every=0, keep_checkpoints=1,
                         append_eos=append_eos)


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


STAGES = ("warm-start", "collect", "simulator", "simulator-eval", "eval-before", "rl", "eval-after")


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


def fine_tune(cfg: RunConfig, stage: str, base_dir: Path, tok, samples: list, sft: SFTConfig, out_dir: Path, *,
              progress: bool = True):
    """One toy SFT stage through `zerosearch sft`'s trainer: the base model from `base_dir`, trained on `samples`
    with the `sft` budget (its metrics and loss plot in out_dir/../sft-<stage>/), saved atomically to `out_dir`."""
    from transformers import Qwen2ForCausalLM

    work = Path(cfg.out_dir) / f"sft-{stage}"
    shutil.rmtree(work, ignore_errors=True)  # a stage that did not finish is rebuilt from its start
    model = Qwen2ForCausalLM.from_pretrained(base_dir)
    trainer = SFTTrainer(dataclasses.replace(cfg, out_dir=str(work), sft=sft), model, tok, samples, [])
    trainer.fit(progress=progress, desc=f"{stage} sft")
    model.eval()
    save_pretrained_atomic(out_dir, model)
    return model


def warm_start_policy(cfg: RunConfig, assets: ToyAssets, world: ToyWorld, tok, bm25: BM25Search, sched: ToySchedule,
                      out_dir: Path, *, progress: bool = True):
    """The format-only warm-started policy saved in `out_dir` (an atomic directory write)."""
    rng = stage_rng(cfg.seed, "warm-start")
    samples = warm_start_samples(world, bm25, world.train, rng, sched.search_fraction)
    return fine_tune(cfg, "warm-start", assets.policy_dir, tok, samples,
                     sched.sft(steps=sched.policy_steps, lr=sched.policy_lr, append_eos=False), out_dir,
                     progress=progress)


def collect_pairs(cfg: RunConfig, world: ToyWorld, policy, tok, bm25: BM25Search, sched: ToySchedule, out: Path, *,
                  progress: bool = True) -> tuple[Path, Path]:
    """`zerosearch collect` and `label` on the toy: the warm-started policy's sampled sub-queries against BM25,
    labelled by cover-EM. The pairs of a held-out share of the questions measure the simulator; the others,
    balanced, train it. Returns (training pairs, held-out pairs), both JSONL in `out`."""
    rng = stage_rng(cfg.seed, "collect")
    run_cfg = dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, temperature=sched.collect_temperature))
    runner = build_runner(run_cfg, build_generator(cfg, policy, tok), tok, RecordingSearch(bm25))
    questions = sample_questions(world.train, sched.collect_questions, cfg.seed)
    records = collect(runner, questions, rollouts=sched.collect_rollouts, progress=progress)
    rows = flatten(records, "bm25")
    write_jsonl_atomic(out / "collected.jsonl", rows)
    pairs, dropped = label_rows(rows, "cover_em")
    held_q = set(rng.sample(sorted(e.uid for e in questions), round(len(questions) * sched.held_out_questions)))
    held = [p for p in pairs if p["uid"].rsplit("/", 2)[0] in held_q]
    train = [p for p in pairs if p["uid"].rsplit("/", 2)[0] not in held_q]
    train += mined_negatives(train, sched.negatives, cfg.seed)
    balanced = balance(train, cfg.seed)
    stats = label_stats(train, dropped, balanced)
    if progress:
        print(f"simulator pairs, the warm-started policy's searches (cover-EM):\n{format_label_stats(stats)}")
    if not balanced:
        log.warning("the warm-started policy's searches gave %d useful and %d noisy pairs: training the simulator on "
                    "all %d unbalanced (a longer warm-start searches better)", stats["useful"], stats["noisy"],
                    len(train))
        balanced = train
    paths = (out / "pairs.jsonl", out / "pairs-held-out.jsonl")
    write_jsonl_atomic(paths[1], held[: sched.max_eval_pairs])
    write_jsonl_atomic(paths[0], balanced)  # last: its presence marks the stage done
    return paths


def build_simulator(cfg: RunConfig, assets: ToyAssets, tok, pairs_path: Path, sched: ToySchedule, out_dir: Path, *,
                    progress: bool = True):
    """The simulator SFT'd on the pairs file (read by `zerosearch sft`'s loader), saved in `out_dir`."""
    stage_rng(cfg.seed, "simulator")
    pairs = [r.segments for r in load_sft_rows(pairs_path)] if pairs_path.stat().st_size else []
    if not pairs:
        log.warning("no simulator pairs: the simulator is the untrained model")
        from transformers import Qwen2ForCausalLM

        model = Qwen2ForCausalLM.from_pretrained(assets.simulator_dir).eval()
        save_pretrained_atomic(out_dir, model)
        return model
    log.info("simulator SFT on %d pairs", len(pairs))
    return fine_tune(cfg, "simulator", assets.simulator_dir, tok, pairs,
                     sched.sft(steps=sched.simulator_steps, lr=sched.simulator_lr, append_eos=True), out_dir,
                     progress=progress)


def measure_simulators(cfg: RunConfig, assets: ToyAssets, tok, simulator, held_out: Path) -> dict:
    """`simulate --eval` on the held-out pairs, for the untrained simulator and the SFT'd one."""
    from transformers import Qwen2ForCausalLM

    stage_rng(cfg.seed, "simulator-eval")
    pairs = load_pairs(held_out) if held_out.stat().st_size else []
    if not pairs:
        return {}
    untrained = Qwen2ForCausalLM.from_pretrained(assets.simulator_dir).eval()
    return {name: simulator_quality(*simulator_quality_searches(cfg, build_generator(cfg, model, tok)), pairs,
                                    top_k=cfg.search.top_k)
            for name, model in (("untrained", untrained), ("sft", simulator))}


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

    warm_dir, sim_dir = out / "policy-warm", out / "simulator"
    policy = _load_model(warm_dir) if resume else None
    if policy is None:
        policy = warm_start_policy(cfg, assets, world, tok, bm25, sched, warm_dir, progress=progress)
    pairs_path, held_path = out / "pairs.jsonl", out / "pairs-held-out.jsonl"
    if not (resume and pairs_path.is_file() and held_path.is_file()):
        pairs_path, held_path = collect_pairs(cfg, world, policy, tok, bm25, sched, out, progress=progress)
    simulator = _load_model(sim_dir) if resume else None
    if simulator is None:
        simulator = build_simulator(cfg, assets, tok, pairs_path, sched, sim_dir, progress=progress)
    quality_path = out / "simulator-eval.json"
    if resume and quality_path.is_file():
        quality = json.loads(quality_path.read_text())
    else:
        quality = measure_simulators(cfg, assets, tok, simulator, held_path)
        write_json_atomic(quality_path, quality)
    if quality and progress:
        print("\nThe simulator on held-out pairs (simulate --eval):\n" + format_quality_table(quality))

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
    summary = {"before": before, "after": after, "simulator": sim_search.stats(), "simulator_quality": quality}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\nHeld-out toy questions, greedy, real BM25 search:\n" + _table(before, after))
    print(f"\nmetrics: {out / 'metrics.jsonl'}  plot: {out / 'training.png'}")
    return summary
