"""FSDP2 on 2 CPU processes (gloo) against one process: same loss, same gradients, same greedy rollouts.

The workers run this file under ``torchrun`` (the ``__main__`` block); the tests launch it as a subprocess
and compare what rank 0 wrote. A second test runs two steps of the toy RL loop through
``torchrun -m zerosearch.cli train`` with BM25 search.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from zerosearch.runtime import distributed

ROOT = Path(__file__).resolve().parents[1]


def _python(args: list[str], *, timeout: int, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """One thread per process, so that one process and 2 ranks do bit-identical arithmetic."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _torchrun(args: list[str], *, timeout: int, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return _python(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", *args],
                   timeout=timeout, cwd=cwd)


def _tiny_model(seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg).float()


def _global_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 48, (4, 14), generator=g)
    attn = torch.ones_like(ids)
    mask = torch.zeros(4, 13, dtype=torch.bool)
    for row, n in enumerate([12, 9, 3, 1]):  # rank 0 gets rows 0 and 2, rank 1 rows 1 and 3: unequal tokens
        mask[row, 13 - n:] = True
    adv = torch.randn(4, 13, generator=g)
    return ids, attn, mask, adv


def _loss(model, ids, attn, mask, adv, old_lp, ref_lp):
    from zerosearch.ops import masked_pg_loss
    from zerosearch.rl.forward import hidden_and_head

    hidden, head = hidden_and_head(model, ids, attn)
    loss, _ = masked_pg_loss(hidden[:, :-1], head, ids[:, 1:], old_lp, adv, mask, ref_logprobs=ref_lp,
                             kl_coef=0.01, entropy_coef=0.01, agg="token-mean")
    return loss


def _worker(out: Path) -> None:
    """Runs on every rank under torchrun."""
    from zerosearch.generation import EngineGenerator, SamplingParams
    from zerosearch.rl.forward import sequence_logprobs, shard_causal_lm

    with distributed.process_group("cpu") as info:
        ids, attn, mask, adv = _global_batch()
        plain = _tiny_model()
        with torch.no_grad():
            old_lp = sequence_logprobs(plain, ids, attn, mask) + 0.05 * adv
            ref_lp = old_lp - 0.1
        ref_loss = _loss(plain, ids, attn, mask, adv, old_lp, ref_lp)
        ref_loss.backward()
        ref_grads = {n: p.grad.clone() for n, p in plain.named_parameters()}

        model = shard_causal_lm(_tiny_model(), "cpu")
        rows = torch.tensor(distributed.shard_indices(list(range(4))))
        loss = _loss(model, ids[rows], attn[rows], mask[rows], adv[rows], old_lp[rows], ref_lp[rows])
        (loss * distributed.global_mean_scale(mask[rows], "token-mean")).backward()
        grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
        loss_mean = distributed.all_reduce_sum(loss.item() * distributed.global_mean_scale(mask[rows], "token-mean"))
        loss_mean /= info.world_size

        # Rollouts from gathered weights: each rank generates a different number of tokens (no collectives).
        prompts = [[5, 6, 7, 8], [9, 10, 11]]
        n_new = 3 + 4 * info.rank
        greedy = SamplingParams(greedy=True)
        with distributed.gathered_weights(model):
            got = EngineGenerator(model).generate(prompts, max_new_tokens=[n_new] * 2, sampling=greedy)
        want = EngineGenerator(plain).generate(prompts, max_new_tokens=[n_new] * 2, sampling=greedy)
        # ... and the model still trains after the gathered block (params resharded, hooks intact).
        loss2 = _loss(model, ids[rows], attn[rows], mask[rows], adv[rows], old_lp[rows], ref_lp[rows])
        loss2.backward()
        same_rollouts = distributed.all_true(got.token_ids == want.token_ids)
        if distributed.is_main():
            out.write_text(json.dumps({
                "world": info.world_size,
                "ref_loss": ref_loss.item(),
                "loss": loss_mean,
                "max_grad_diff": max((grads[n] - ref_grads[n]).abs().max().item() for n in ref_grads),
                "max_grad": max(g.abs().max().item() for g in ref_grads.values()),
                "same_rollouts": same_rollouts,
                "sharded": all(type(p).__name__ == "DTensor" for p in model.parameters()),
            }))


def test_single_process_helpers_are_noops():
    assert not distributed.enabled() and distributed.is_main() and distributed.world_size() == 1
    assert distributed.init_distributed("cpu").world_size == 1
    with distributed.process_group("cpu") as info:
        assert not info.enabled and info.device == "cpu"
    assert distributed.all_reduce_mean({"a": 1.5, "s": "x"}) == {"a": 1.5, "s": "x"}
    assert distributed.shard_indices([3, 1, 2]) == [3, 1, 2]
    model = _tiny_model()
    assert distributed.shard_model(model) is model
    with distributed.gathered_weights(model) as m:
        assert m is model
    assert distributed.global_mean_scale(torch.ones(2, 3, dtype=torch.bool), "token-mean") == 1.0


def test_fsdp_two_ranks_match_one_process(tmp_path):
    out = tmp_path / "result.json"
    proc = _torchrun([__file__, str(out)], timeout=170)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    assert res["world"] == 2 and res["sharded"]
    assert abs(res["loss"] - res["ref_loss"]) < 1e-5, res
    assert res["max_grad_diff"] < 1e-5 * max(1.0, res["max_grad"]), res
    assert res["same_rollouts"], res


def test_torchrun_toy_training_two_steps(tmp_path):
    """`torchrun --nproc_per_node 2 -m zerosearch.cli train` on the toy world with BM25 search (< ~90 s)."""
    from zerosearch.toy.assets import ensure_toy_assets

    assets = ensure_toy_assets(tmp_path / "cache", seed=0, n_entities=24)
    out = tmp_path / "run"
    overrides = [
        f"out_dir={out}", f"model.policy_path={assets.policy_dir}", f"model.tokenizer_path={assets.tokenizer_dir}",
        f"data.train_path={assets.train_path}", f"data.corpus_path={assets.corpus_path}",
        "search.backend=bm25", "search.top_k=2", "rollout.n_samples=2", "rollout.max_turns=2",
        "rollout.max_new_tokens=8", "rollout.max_context=256", "trainer.steps=2", "trainer.batch_questions=4",
        "trainer.checkpoint_every=1", "trainer.mini_batches=2",
    ]
    proc = _torchrun(["-m", "zerosearch.cli", "train", "--quiet", *overrides], timeout=230)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1]  # one line per step: rank 0 writes, others do not
    assert all(r["world_size"] == 2 for r in rows)
    assert (out / "checkpoints" / "step-00000002" / "state.pt").is_file()
    assert (out / "final" / "config.json").is_file()


def _one_process_then_two_ranks(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Runs a row-writing command once as one process (`--out one.jsonl`) and once under torchrun on 2 ranks
    (`--out two.jsonl`); returns the torchrun run."""
    single = _python([*args, "--out", str(tmp_path / "one.jsonl")], timeout=200)
    assert single.returncode == 0, single.stderr[-3000:]
    proc = _torchrun([*args, "--out", str(tmp_path / "two.jsonl")], timeout=200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_torchrun_eval_splits_questions_and_matches_one_process(tmp_path):
    """`torchrun -m zerosearch.cli eval` on 2 ranks writes the same rows, in the same order, as one process.

    One question per batch and one thread per process, so both runs do bit-identical arithmetic per question.
    """
    from zerosearch.toy.assets import ensure_toy_assets

    assets = ensure_toy_assets(tmp_path / "cache", seed=0, n_entities=24)
    args = [
        "-m", "zerosearch.cli", "eval", "--quiet", "--batch-size", "1", f"model.policy_path={assets.policy_dir}",
        f"model.tokenizer_path={assets.tokenizer_dir}", f"data.test_path={assets.test_path}",
        f"data.corpus_path={assets.corpus_path}", "data.max_test_examples=5", "search.backend=bm25",
        "rollout.max_turns=2", "rollout.max_new_tokens=8", f"out_dir={tmp_path}",
    ]  # fmt: skip
    proc = _one_process_then_two_ranks(args, tmp_path)

    one = [json.loads(line) for line in (tmp_path / "one.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert len(one) >= 4 and one == two
    summaries = [json.loads((tmp_path / f"{n}-summary.json").read_text()) for n in ("one", "two")]
    assert summaries[0] == summaries[1]
    assert proc.stdout.count("average") == 1  # rank 0 alone prints the table
    assert sorted(p.name for p in tmp_path.glob("two*")) == ["two-summary.json", "two.jsonl"]  # no part files left


def test_torchrun_collect_splits_questions_and_matches_one_process(tmp_path):
    """`torchrun -m zerosearch.cli collect` on 2 ranks (greedy, one thread each) writes the same per-question records
    and the same rows as one process."""
    from zerosearch.toy.assets import ensure_toy_assets

    assets = ensure_toy_assets(tmp_path / "cache", seed=0, n_entities=24)
    args = [
        "-m", "zerosearch.cli", "collect", "--quiet", "--batch-size", "1", "--questions", "6",
        f"model.policy_path={assets.policy_dir}", f"model.tokenizer_path={assets.tokenizer_dir}",
        f"data.train_path={assets.train_path}", f"data.corpus_path={assets.corpus_path}", "search.backend=bm25",
        "collect.greedy=true", "rollout.max_turns=2", "rollout.max_new_tokens=8", f"out_dir={tmp_path}",
    ]  # fmt: skip
    proc = _one_process_then_two_ranks(args, tmp_path)
    for suffix in (".questions.jsonl", ".jsonl"):
        one, two = ((tmp_path / f"{n}{suffix}").read_text() for n in ("one", "two"))
        assert one == two
    assert len((tmp_path / "two.questions.jsonl").read_text().splitlines()) == 6
    assert proc.stdout.count("collected ") == 1  # rank 0 alone reports
    assert not list(tmp_path.glob("two.questions.part*"))


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
