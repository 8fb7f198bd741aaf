"""Shortened RL loops on the toy world: the loss mask, learning on an easy setting, exact resume.

Search is real BM25 over the toy passages here (fast and deterministic); the simulator path has its own
smoke test. Models are the toy world's tiny Qwen2 policy, warm-started for a few dozen SFT steps.
"""

from __future__ import annotations

import random

import pytest
import torch
from transformers import Qwen2ForCausalLM

from zerosearch.build import build_generator, build_search, build_trainer
from zerosearch.config import RunConfig, apply_overrides
from zerosearch.ops.info_span_mask import info_span_mask
from zerosearch.runtime.metrics import read_metrics
from zerosearch.search import BM25Search, NoiseCurriculum
from zerosearch.toy.assets import ensure_toy_assets
from zerosearch.toy.pipeline import ToySchedule, fine_tune
from zerosearch.toy.trajectories import direct_answer_trajectory

TIMING_KEYS = {"rollout_s", "step_s"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    assets = ensure_toy_assets(tmp_path_factory.mktemp("cache"), seed=0)
    world, tok = assets.load_world(), assets.load_tokenizer()
    bm25 = BM25Search.from_jsonl(assets.corpus_path, top_k=2)
    return assets, world, tok, bm25


def _cfg(out, **overrides) -> RunConfig:
    cfg = RunConfig(out_dir=str(out))
    apply_overrides(cfg, {"rollout.max_turns": 1, "rollout.max_new_tokens": 16, "rollout.n_samples": 4,
                          "trainer.batch_questions": 4, "trainer.steps": 4, "trainer.checkpoint_every": 2,
                          "trainer.lr": 1e-3, "trainer.warmup_steps": 1, **overrides})
    return cfg


def _two_answer_policy(assets, tok, questions, right: str, wrong: str, out, steps=40):
    """A policy warm-started to answer every question with `right` or `wrong`, about half and half."""
    rng = random.Random(0)
    samples = [direct_answer_trajectory(q, a, rng=rng) for q in questions for a in (right, wrong)]
    sft = ToySchedule().sft(steps=steps, lr=3e-3, append_eos=False)
    return fine_tune(RunConfig(out_dir=str(out)), "warm-start", assets.policy_dir, tok, samples, sft, out / "warm",
                     progress=False)


def _trainer(cfg, policy, tok, search, train):
    return build_trainer(cfg, policy, tok, train, search=search)


@pytest.mark.parametrize("algo", ["grpo", "reinforce_pp"])
def test_reward_rises_on_easy_setting(toy, tmp_path, algo):
    """Questions sharing one gold answer; the warm-start says it or a wrong word (the rewarded one in about a
    quarter of its samples, seed 0). RL (temperature 1, no search needed) must shift the policy towards the
    rewarded answer: a rise of at least 0.3 in mean reward within 12 steps (measured: about +0.5)."""
    assets, world, tok, bm25 = toy
    by_gold: dict[str, list] = {}
    for q in world.train:
        if q.meta["hops"] == 1:
            by_gold.setdefault(q.golden_answers[0], []).append(q)
    right, train = max(by_gold.items(), key=lambda kv: len(kv[1]))
    wrong = next(g for g in by_gold if g != right)
    policy = _two_answer_policy(assets, tok, train[:4], right, wrong, tmp_path / "sft")
    cfg = _cfg(tmp_path, **{"trainer.algo": algo, "trainer.steps": 12, "trainer.checkpoint_every": 0,
                            "rollout.max_turns": 0, "rollout.n_samples": 8, "trainer.mini_batches": 1,
                            "trainer.lr": 3e-4, "trainer.kl_coef": 0.0, "trainer.entropy_coef": 0.0})
    rows = _trainer(cfg, policy, tok, bm25, train[:4]).fit(progress=False)
    first = sum(r["reward"] for r in rows[:3]) / 3
    last = sum(r["reward"] for r in rows[-3:]) / 3
    assert last > first + 0.3 and last > 0.6, [round(r["reward"], 3) for r in rows]


def test_loss_mask_excludes_every_information_token(toy, tmp_path):
    assets, world, tok, bm25 = toy
    policy = Qwen2ForCausalLM.from_pretrained(assets.policy_dir)
    cfg = _cfg(tmp_path)
    trainer = _trainer(cfg, policy, tok, bm25, world.train[:8])
    seen = {}
    real_update = trainer._update

    def spy(batch, *args):
        seen["batch"] = batch
        return real_update(batch, *args)

    trainer._update = spy
    # Force searches: the rollout must contain <information> spans for the check to mean something.
    real_run = trainer.runner.run
    trainer.runner.run = lambda ex, n, step=0: _with_search(real_run(ex, n, step=step), trainer, tok)
    trainer.train_step()
    batch = seen["batch"]
    open_id, close_id = tok.convert_tokens_to_ids("<information>"), tok.convert_tokens_to_ids("</information>")
    info = info_span_mask(batch.ids, [open_id], [close_id])[:, 1:]
    assert info.any(), "no <information> span in the batch"
    assert not (info & batch.mask).any()
    assert batch.mask.any()


def _with_search(trajs, trainer, tok):
    """Append a real search observation to each trajectory (engine tokens, mask False)."""
    from zerosearch.rollout import protocol as prompts

    obs = tok.encode(prompts.observation_text("Doc 1: a b"), add_special_tokens=False)
    for t in trajs:
        t.extend(obs, policy=False)
        t.extend(tok.encode("<answer> a </answer>", add_special_tokens=False), policy=True, logprobs=None)
    return trajs


@pytest.mark.parametrize("algo", ["ppo", "reinforce_pp"])
def test_other_algorithms_run_and_log(toy, tmp_path, algo):
    assets, world, tok, bm25 = toy
    policy = Qwen2ForCausalLM.from_pretrained(assets.policy_dir)
    cfg = _cfg(tmp_path, **{"trainer.algo": algo, "trainer.steps": 2, "trainer.checkpoint_every": 0})
    rows = _trainer(cfg, policy, tok, bm25, world.train[:8]).fit(progress=False)
    assert len(rows) == 2 and all(r["skipped_updates"] == 0 for r in rows)
    if algo == "ppo":
        assert all("value_loss" in r for r in rows)
    assert (tmp_path / "training.png").stat().st_size > 0


class Crash(RuntimeError):
    pass


def test_killed_run_resumes_with_identical_metrics(toy, tmp_path):
    assets, world, tok, bm25 = toy
    train = world.train[:16]

    def run(out, crash_after=None, resume=False):
        policy = Qwen2ForCausalLM.from_pretrained(assets.policy_dir)
        trainer = _trainer(_cfg(out, **{"trainer.lr_schedule": "cosine"}), policy, tok, bm25, train)
        if resume:
            assert trainer.resume()
        if crash_after is not None:
            real = trainer.train_step

            def step():
                if trainer.step == crash_after:
                    raise Crash()
                return real()

            trainer.train_step = step
        trainer.fit(progress=False)
        return trainer

    full = run(tmp_path / "full")
    with pytest.raises(Crash):
        run(tmp_path / "crashed", crash_after=3)  # checkpoint at step 2, step 3's metrics logged, then killed
    resumed = run(tmp_path / "crashed", resume=True)

    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]
    rows = strip(read_metrics(tmp_path / "full" / "metrics.jsonl"))
    assert rows == strip(read_metrics(tmp_path / "crashed" / "metrics.jsonl"))
    lrs = [r["lr"] for r in rows]  # the cosine schedule picks up where it stopped
    assert lrs[0] == pytest.approx(1e-3) and all(a > b for a, b in zip(lrs, lrs[1:]))
    for a, b in zip(full.policy.state_dict().values(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_falls_back_past_a_truncated_newest_checkpoint(toy, tmp_path):
    """A newest `state.pt` cut short (a bad copy, a full disk) must not stop `--resume`: it continues from the
    checkpoint before it and ends with exactly the uninterrupted run's metrics."""
    assets, world, tok, bm25 = toy
    train = world.train[:16]

    def trainer(out):
        policy = Qwen2ForCausalLM.from_pretrained(assets.policy_dir)
        return _trainer(_cfg(out, **{"trainer.steps": 4, "trainer.checkpoint_every": 1,
                                     "trainer.keep_checkpoints": 3}), policy, tok, bm25, train)

    full = trainer(tmp_path / "full")
    full.fit(progress=False)
    t = trainer(tmp_path / "cut")
    t.tc.steps = 3  # stop after the checkpoint of step 3, as a killed run would
    t.fit(progress=False)
    newest = tmp_path / "cut" / "checkpoints" / "step-00000003" / "state.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    resumed = trainer(tmp_path / "cut")
    assert resumed.resume() and resumed.step == 2  # the truncated step-3 checkpoint was skipped
    resumed.fit(progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS and k != "lr"} for r in rows]
    assert strip(read_metrics(tmp_path / "full" / "metrics.jsonl")) == \
        strip(read_metrics(tmp_path / "cut" / "metrics.jsonl"))
    for a, b in zip(full.policy.state_dict().values(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b)


def test_simulator_backend_step(toy, tmp_path):
    """One GRPO step against the (untrained) simulator LLM: the whole simulated-search path runs."""
    assets, world, tok, _ = toy
    policy = Qwen2ForCausalLM.from_pretrained(assets.policy_dir)
    simulator = Qwen2ForCausalLM.from_pretrained(assets.simulator_dir)
    cfg = _cfg(tmp_path, **{"trainer.steps": 1, "search.max_new_tokens": 8, "trainer.checkpoint_every": 0})
    curriculum = NoiseCurriculum(1, 0.0, 0.5)
    search = build_search(cfg, curriculum=curriculum, simulator=build_generator(cfg, simulator, tok))
    trainer = _trainer(cfg, policy, tok, search, world.train[:4])
    trainer.runner.run = lambda ex, n, step=0: _force_search(trainer, ex, n, step)
    [row] = trainer.fit(progress=False)
    assert row["searches"] > 0 and search.stats()["n_queries"] > 0


def _force_search(trainer, examples, n, step):
    from scripted import ScriptedGenerator, output

    runner = trainer.runner
    tok = runner.tokenizer
    real = runner.generator
    script = iter([tok.encode("<search> capital of a </search>", add_special_tokens=False)])

    class OnceSearch(ScriptedGenerator):
        def generate(self, contexts, *, max_new_tokens, stop_ids=(), **kw):
            ids = next(script, None)
            if ids is None:
                return real.generate(contexts, max_new_tokens=max_new_tokens, stop_ids=stop_ids, **kw)
            return output([list(ids) for _ in contexts], [[0.0] * len(ids) for _ in contexts], stop_ids)

    runner.generator = OnceSearch()
    try:
        return type(runner).run(runner, examples, n, step=step)
    finally:
        runner.generator = real
