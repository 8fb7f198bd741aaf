"""`simulate --eval`: the simulator's useful recall, noisy leak rate, format validity, length and agreement.

A scripted simulator whose behaviour per prompt is known gives the expected numbers by counting, independently of
the code under test; the CLI then runs on the toy world's untrained simulator end to end.
"""

from __future__ import annotations

import dataclasses
import json
import random

from scripted import FnCompleter
from toy_pairs import oracle_pairs

from zerosearch.cli import main
from zerosearch.eval.simulator_quality import simulator_quality
from zerosearch.rl.sft import SimulatorPair
from zerosearch.search import NoiseCurriculum, SimulatorSearch


def _pairs(n, rng):
    out = []
    for i in range(n):
        gold = f"answer{i}"
        real_useful = rng.random() < 0.5
        docs = [f"a doc that says {gold} here" if real_useful else "nothing here", "another doc"]
        out.append(SimulatorPair(f"query {i}", f"question {i} ?", [gold], docs, real_useful))
    return out


def test_scripted_simulator_scores_are_counted_right():
    rng = random.Random(7)
    pairs = _pairs(40, rng)
    leaky = {p.query for p in pairs if rng.random() < 0.3}  # noisy prompts about these queries leak the answer
    broken = {p.query for p in pairs if rng.random() < 0.2}  # useful answers about these have one document only
    gold_of = {p.query: p.golden_answers[0] for p in pairs}

    def write(prompts):
        texts = []
        for prompt in prompts:
            query = prompt.split("Query: ")[1].split(" Useful")[0].split(" Noisy")[0].strip()
            useful = "five useful documents" in prompt
            gold = gold_of[query]
            if useful and query in broken:
                texts.append(f"Doc 1: it is {gold} .")
            elif useful or query in leaky:
                texts.append(f"Doc 1: it is {gold} .\nDoc 2: more words .")
            else:
                texts.append("Doc 1: no idea .\nDoc 2: still none .")
        return texts

    def search(p):
        return SimulatorSearch(FnCompleter(write), NoiseCurriculum(1, p, p), top_k=2, cache_size=0)

    got = simulator_quality(search(0.0), search(1.0), pairs, top_k=2, batch_size=7)
    n = len(pairs)
    assert got["n"] == n
    assert got["useful_recall"] == 1.0
    assert abs(got["noisy_leak_rate"] - len(leaky) / n) < 1e-12
    assert abs(got["format_validity"] - (2 * n - len(broken)) / (2 * n)) < 1e-12
    agree = sum(1 for p in pairs if p.useful or p.query not in leaky)
    assert abs(got["agreement"] - agree / n) < 1e-12
    assert abs(got["real_useful_share"] - sum(p.useful for p in pairs) / n) < 1e-12


def test_simulate_eval_cli_on_the_toy_simulator(tmp_path, capsys):
    from zerosearch.search import BM25Search
    from zerosearch.toy.assets import ensure_toy_assets

    assets = ensure_toy_assets(tmp_path / "cache", seed=0, n_entities=24)
    world = assets.load_world()
    bm25 = BM25Search.from_jsonl(assets.corpus_path, top_k=2)
    pairs = oracle_pairs(world, bm25, world.test[:3], random.Random(0))
    path = tmp_path / "held.jsonl"
    path.write_text("".join(json.dumps(dataclasses.asdict(p)) + "\n" for p in pairs))
    out = tmp_path / "q.json"
    assert main(["simulate", "--quiet", "--eval", str(path), "--eval-out", str(out),
                 f"model.simulator_path={assets.simulator_dir}", "search.top_k=2", "search.max_new_tokens=8",
                 f"out_dir={tmp_path}"]) == 0
    [result] = json.loads(out.read_text()).values()
    assert result["n"] == len(pairs)
    assert abs(result["real_useful_share"] - sum(p.useful for p in pairs) / len(pairs)) < 1e-12
    for key in ("useful_recall", "noisy_leak_rate", "format_validity", "agreement"):
        assert 0.0 <= result[key] <= 1.0
    assert "useful_recall" in capsys.readouterr().out
