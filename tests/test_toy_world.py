"""Toy world: determinism, sizes, answerability, tokenizer round trip, asset cache."""

import hashlib
import random

import pytest
import torch
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

from zerosearch.rollout.protocol import (
    FINAL_TURN_HINT,
    INVALID_ACTION,
    TAGS,
    format_documents,
    observation_text,
    policy_prompt,
)
from zerosearch.search.prompts import simulator_prompt
from zerosearch.toy.assets import ensure_toy_assets
from zerosearch.toy.models import init_model, tiny_qwen2_config
from zerosearch.toy.tokenizer import EOS_ID, PAD_ID, build_tokenizer, normalize_text
from zerosearch.toy.trajectories import (
    direct_answer_trajectory,
    search_trajectory,
    trajectory_text,
    vocabulary_texts,
)
from zerosearch.toy.world import ToyWorld, build_world


@pytest.fixture(scope="module")
def world():
    return build_world(seed=0)


@pytest.fixture(scope="module")
def tok(world):
    return build_tokenizer([*world.texts(), *vocabulary_texts()])


def _passage_of(world, name):
    """Plain scan: the passage that introduces `name` ("<name> is a ...")."""
    hits = [p for p in world.passages if p.split()[:3] == [name, "is", "a"]]
    assert len(hits) == 1, name
    return hits[0]


def test_deterministic_and_seed_dependent(world, tok):
    again = build_world(seed=0)
    assert again.to_json() == world.to_json()
    other = build_world(seed=1)
    assert other.passages != world.passages
    tok2 = build_tokenizer([*again.texts(), *vocabulary_texts()])
    assert tok2.get_vocab() == tok.get_vocab()
    assert ToyWorld.from_json(world.to_json()).to_json() == world.to_json()


def test_sizes_and_splits(world):
    names = [e.name for e in world.entities]
    assert len(names) >= 200 and len(set(names)) == len(names)
    assert all(n.isalpha() and n.islower() for n in names)
    assert len({e.kind for e in world.entities}) >= 4
    assert len(world.test) >= 100 and len(world.train) >= len(world.test)
    assert not {e.question for e in world.train} & {e.question for e in world.test}
    uids = [e.uid for e in world.train + world.test]
    assert len(set(uids)) == len(uids)
    for split in (world.train, world.test):
        assert {e.meta["hops"] for e in split} == {1, 2}
    for p in world.passages:
        assert 10 <= len(p.split()) <= 30 and p == p.lower()
    vocab = {w for t in world.texts() for w in t.split()}
    assert 200 <= len(vocab) <= 2000


def test_answers_are_in_the_passages_the_queries_point_to(world):
    for ex in world.train + world.test:
        entities, queries = ex.meta["entities"], ex.meta["needed_queries"]
        assert len(entities) == len(queries) == ex.meta["hops"]
        for i, (name, query) in enumerate(zip(entities, queries)):
            assert name in query.split()
            words = _passage_of(world, name).split()
            target = entities[i + 1] if i + 1 < len(entities) else ex.golden_answers[0]
            assert target in words, (ex.question, name, target)
        assert entities[0] in ex.question.split()


def test_tokenizer_round_trip_and_tags(world, tok):
    assert tok.pad_token_id == PAD_ID and tok.eos_token_id == EOS_ID
    for tag in TAGS:
        assert len(tok(tag)["input_ids"]) == 1
        assert len(tok(f"x{tag}y")["input_ids"]) == 3
    ex = world.test[0]
    docs = [[_passage_of(world, n)] for n in ex.meta["entities"]]
    texts = [
        *world.passages[:50],
        policy_prompt(ex.question),
        INVALID_ACTION,
        FINAL_TURN_HINT,
        observation_text(format_documents(world.passages[:5])),
        simulator_prompt(ex.meta["needed_queries"][0], ex.question, ex.golden_answers, True),
        simulator_prompt(ex.meta["needed_queries"][0], ex.question, ex.golden_answers, False),
        trajectory_text(search_trajectory(ex, docs, rng=random.Random(0))),
        trajectory_text(direct_answer_trajectory(ex, "1900", rng=random.Random(1))),
    ]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids) == normalize_text(text)
        assert tok.decode(ids + [EOS_ID, PAD_ID], skip_special_tokens=True) == normalize_text(text)
    assert normalize_text("Doc 1: A b.\n\n<answer>X</answer>") == "doc 1 : a b . <answer> x </answer>"


def test_trajectories_segments(world):
    ex = next(e for e in world.train if e.meta["hops"] == 2)
    docs = [["d one ."], ["d two ."]]
    segs = search_trajectory(ex, docs, rng=random.Random(3))
    assert segs == search_trajectory(ex, docs, rng=random.Random(3))
    assert [t for _, t in segs] == [False, True, False, True, False, True]
    assert segs[0][0] == policy_prompt(ex.question)
    assert f"<search> {ex.meta['needed_queries'][1]} </search>" in segs[3][0]
    assert segs[-1][0].endswith(f"<answer> {ex.golden_answers[0]} </answer>")
    direct = direct_answer_trajectory(ex, "wrong")
    assert [t for _, t in direct] == [False, True] and "<search>" not in direct[1][0]


def test_tiny_model_config():
    cfg = tiny_qwen2_config(500)
    assert cfg.num_key_value_heads < cfg.num_attention_heads and cfg.tie_word_embeddings
    m1, m2 = init_model(cfg, seed=5), init_model(cfg, seed=5)
    # tied: the LM head is the input embedding itself, so copying a token is an identity map
    assert m1.get_output_embeddings().weight.data_ptr() == m1.get_input_embeddings().weight.data_ptr()
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ensure_toy_assets_creates_then_reuses(tmp_path):
    assets = ensure_toy_assets(tmp_path / "a", seed=0)
    files = assets.required_files()
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    again = ensure_toy_assets(tmp_path / "a", seed=0)
    assert again == assets
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["toy-seed0"]  # no temp dirs left

    tok = PreTrainedTokenizerFast.from_pretrained(assets.tokenizer_dir)
    world = assets.load_world()
    assert len(world.test) >= 100
    ids = torch.tensor([tok(policy_prompt(world.test[0].question))["input_ids"]])
    for model_dir in (assets.policy_dir, assets.simulator_dir):
        model = Qwen2ForCausalLM.from_pretrained(model_dir)
        assert model.config.vocab_size == len(tok)
        assert model(ids).logits.shape == (1, ids.shape[1], len(tok))

    # a damaged directory is rebuilt, identically (deterministic for the seed)
    weights = assets.policy_dir / "model.safetensors"
    digest = _digest(weights)
    weights.unlink()
    ensure_toy_assets(tmp_path / "a", seed=0)
    assert _digest(weights) == digest
