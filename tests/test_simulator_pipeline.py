"""The simulator's half of the method end to end on the toy world, through the commands a user runs:
`collect` (a warm-started policy against BM25) → `label` (cover-EM, mined negatives, balanced) → `sft` → `simulate
--eval` (the untrained and the fine-tuned simulator on pairs of questions the SFT never saw)."""

from __future__ import annotations

import json

import pytest

from zerosearch.cli import main
from zerosearch.config import load_config
from zerosearch.search import BM25Search
from zerosearch.toy.assets import ensure_toy_assets
from zerosearch.toy.pipeline import ToySchedule, warm_start_policy


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_collect_label_sft_evaluate_on_the_toy(tmp_path, capsys):
    assets = ensure_toy_assets(tmp_path / "cache", seed=0, n_entities=24)
    world, tok = assets.load_world(), assets.load_tokenizer()
    bm25 = BM25Search.from_jsonl(assets.corpus_path, top_k=2)
    cfg = load_config(None, [f"out_dir={tmp_path / 'warm'}", "seed=0"])
    warm_start_policy(cfg, assets, world, tok, bm25, ToySchedule(policy_steps=80), tmp_path / "policy", progress=False)
    common = [f"model.tokenizer_path={assets.tokenizer_dir}", f"data.train_path={assets.train_path}",
              f"data.corpus_path={assets.corpus_path}", "search.top_k=2", "search.max_new_tokens=40",
              "rollout.max_turns=3", "rollout.max_new_tokens=24"]

    assert main(["collect", "--quiet", f"out_dir={tmp_path / 'c'}", f"model.policy_path={tmp_path / 'policy'}",
                 "search.backend=bm25", "rollout.temperature=1.0", "--rollouts", "4", *common]) == 0
    rows = _lines(tmp_path / "c" / "collected.jsonl")
    stats = json.loads((tmp_path / "c" / "collected-stats.json").read_text())
    assert stats["questions"] == len(world.train) and stats["rows"] == len(rows) > 0
    for r in rows[:20]:  # what BM25 returns for the query, exactly
        assert r["documents"] == [bm25.corpus[i] for i in bm25.retrieve([r["query"]])[0]]

    # held-out questions: every fifth; their pairs measure the simulators, the others train one
    held_q = {ex.uid for ex in world.train[::5]}
    for name, keep in (("train", lambda r: r["uid"].rsplit("/", 2)[0] not in held_q),
                       ("held", lambda r: r["uid"].rsplit("/", 2)[0] in held_q)):
        (tmp_path / f"{name}-rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if keep(r)))
    assert main(["label", "--quiet", f"out_dir={tmp_path / 'c'}", "--rows", str(tmp_path / "train-rows.jsonl"),
                 "--negatives", "1"]) == 0
    assert main(["label", "--quiet", f"out_dir={tmp_path / 'c'}", "--rows", str(tmp_path / "held-rows.jsonl"),
                 "--out", str(tmp_path / "held.jsonl"), "--no-balance"]) == 0
    assert "after balancing" in capsys.readouterr().out
    pairs = _lines(tmp_path / "c" / "pairs.jsonl")
    assert sum(p["useful"] for p in pairs) * 2 == len(pairs) > 0

    assert main(["sft", "--quiet", f"--pairs={tmp_path / 'c' / 'pairs.jsonl'}", f"out_dir={tmp_path / 's'}",
                 f"model.simulator_path={assets.simulator_dir}", "sft.steps=60", "sft.lr=2e-3", "sft.warmup_steps=5",
                 "sft.lr_schedule=cosine", "sft.global_batch_size=16", "sft.micro_batch_size=16", "sft.eval_every=0",
                 "sft.save_every=0", "sft.eval_fraction=0.05"]) == 0
    losses = [m["loss"] for m in _lines(tmp_path / "s" / "metrics.jsonl")]
    assert losses[-1] < 0.5 * losses[0]

    results = {}
    for name, path in (("untrained", assets.simulator_dir), ("sft", tmp_path / "s" / "final")):
        out = tmp_path / f"{name}.json"
        assert main(["simulate", "--quiet", "--eval", str(tmp_path / "held.jsonl"), "--eval-out", str(out),
                     f"model.simulator_path={path}", f"out_dir={tmp_path}", *common]) == 0
        [results[name]] = json.loads(out.read_text()).values()
    n_held = len(_lines(tmp_path / "held.jsonl"))
    assert results["sft"]["n"] == results["untrained"]["n"] == n_held > 0
    # the fine-tuned simulator writes the `Doc i:` layout it was trained on; the untrained one cannot
    assert results["sft"]["format_validity"] > results["untrained"]["format_validity"]
