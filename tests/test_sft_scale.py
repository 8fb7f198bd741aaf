"""`zerosearch sft` at scale: the ZeroSearch-format loader, 2 gloo ranks against one process (loss, gradient
norm, held-out loss, weights), and a crashed SFT that resumes bit-identically.

The simulator is the toy world's tiny one; the rows are the toy world's real BM25 pairs, written as JSONL.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from toy_pairs import oracle_pairs

from zerosearch.cli import main
from zerosearch.rl.sft import SimulatorPair, simulator_samples
from zerosearch.rl.sft_data import load_sft_rows, split_rows
from zerosearch.rl.sft_trainer import SFTTrainer
from zerosearch.search import BM25Search
from zerosearch.search.prompts import simulator_prompt
from zerosearch.toy.assets import ensure_toy_assets

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    assets = ensure_toy_assets(root / "cache", seed=0, n_entities=24)
    world = assets.load_world()
    bm25 = BM25Search.from_jsonl(assets.corpus_path, top_k=2)
    pairs = oracle_pairs(world, bm25, world.train[:12], random.Random(0))
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(dataclasses.asdict(p)) + "\n" for p in pairs))
    return assets, path, pairs


def _args(assets, pairs_path, out, *extra):
    return ["sft", "--quiet", f"--pairs={pairs_path}", f"out_dir={out}", f"model.simulator_path={assets.simulator_dir}",
            "sft.steps=3", "sft.lr=1e-3", "sft.warmup_steps=1", "sft.global_batch_size=4", "sft.micro_batch_size=2",
            "sft.max_len=256", "sft.eval_every=1", "sft.save_every=1", "sft.eval_fraction=0.2", *extra]


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_zerosearch_format_loader(tmp_path):
    rows = [
        {"instruction": "You are the Google search engine. Given a query, you need to generate five useful "
         "documents for the query.", "input": "Query: who wrote hamlet", "output": "Doc 1: Shakespeare wrote it."},
        {"instruction": "You are the Google search engine. Given a query, you need to generate five noisy "
         "documents for the query.", "input": "", "output": "Doc 1: Hamlet is a village."},
        {"instruction": "Write documents for the query.", "input": "Query: x", "output": "Doc 1: y"},
    ]  # fmt: skip
    as_json, as_jsonl = tmp_path / "a.json", tmp_path / "a.jsonl"
    as_json.write_text(json.dumps(rows))
    as_jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for path in (as_json, as_jsonl):
        got = load_sft_rows(path)
        assert [r.useful for r in got] == [True, False, None]
        assert got[0].segments == [(rows[0]["instruction"] + "\nQuery: who wrote hamlet", False),
                                   (" Doc 1: Shakespeare wrote it.", True)]
        assert got[1].segments[0] == (rows[1]["instruction"], False)  # an empty input adds nothing
    pair = SimulatorPair("capital of x", "what is the capital of x ?", ["y"], ["d one", "d two"], False)
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(json.dumps(dataclasses.asdict(pair)) + "\n")
    [row] = load_sft_rows(pairs)
    assert row.useful is False and row.segments == simulator_samples([pair])[0]
    assert row.segments[0][0] == simulator_prompt("capital of x", "what is the capital of x ?", ["y"], False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "input": "y"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_sft_rows(bad)
    train, held = split_rows(load_sft_rows(as_jsonl) * 4, eval_rows=None, eval_fraction=0.25, balance=True, seed=0)
    assert len(held) == 3 and sum(r.useful is True for r in train) == sum(r.useful is False for r in train)


def test_two_gloo_ranks_match_one_process(toy, tmp_path):
    assets, pairs_path, _ = toy
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run([sys.executable, "-m", "zerosearch.cli", *_args(assets, pairs_path, one)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=200)
    assert single.returncode == 0, single.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "-m",
           "zerosearch.cli", *_args(assets, pairs_path, two)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    a, b = _metrics(one), _metrics(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [0, 1, 2]
    for ra, rb in zip(a, b):
        assert ra["tokens"] == rb["tokens"]
        for key in ("loss", "grad_norm", "eval_loss"):
            assert abs(ra[key] - rb[key]) <= 1e-5 * max(1.0, abs(ra[key])), (key, ra, rb)
    wa, wb = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4
    assert (two / "sft_loss.png").is_file() and (two / "final" / "tokenizer.json").is_file()


class Crash(RuntimeError):
    pass


def test_crashed_sft_resumes_bit_identically(toy, tmp_path, monkeypatch):
    assets, pairs_path, _ = toy
    want = tmp_path / "uninterrupted"
    assert main(_args(assets, pairs_path, want)) == 0
    out = tmp_path / "crashed"
    real = SFTTrainer.train_step

    def crash_at_two(self):
        if self.step == 2:
            raise Crash("killed")
        return real(self)

    with monkeypatch.context() as m:
        m.setattr(SFTTrainer, "train_step", crash_at_two)
        with pytest.raises(Crash):
            main(_args(assets, pairs_path, out))
    assert main(_args(assets, pairs_path, out)) == 2  # a fresh run refuses the used out_dir
    torch.manual_seed(99)
    assert main([*_args(assets, pairs_path, out), "--resume"]) == 0
    assert _metrics(out) == _metrics(want)
    wa, wb = load_file(want / "final" / "model.safetensors"), load_file(out / "final" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_paper_simulator_recipe_config():
    from zerosearch.config import load_config
    from zerosearch.validate import validate_config

    path = ROOT / "configs" / "simulator-sft-qwen2.5-7b.yaml"
    cfg = load_config(path)
    s = cfg.sft
    assert (s.lr, s.steps, s.balance, s.lr_schedule) == (1e-6, 1000, True, "constant")
    assert s.global_batch_size % (s.micro_batch_size * 8) == 0  # 8 GPUs
    assert not validate_config(cfg, world_size=8, command="sft").errors


@pytest.mark.parametrize("override,key", [("sft.global_batch_size=5", "sft.global_batch_size"),
                                          ("sft.lr=nan", "sft.lr"), ("sft.lr_schedule=linear", "sft.lr_schedule"),
                                          ("sft.micro_batch_size=0", "sft.micro_batch_size")])
def test_bad_sft_config_is_one_line_and_writes_nothing(toy, tmp_path, capsys, override, key):
    assets, pairs_path, _ = toy
    out = tmp_path / "run"
    assert main([*_args(assets, pairs_path, out), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0], err
    assert not out.exists()
