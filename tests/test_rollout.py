"""Rollout on token ids with a scripted sampler: masks, queries, observations, limits.

The sampler plays back fixed token sequences, so every expectation below is computed independently
from the script (which tokens the policy wrote, which queries it asked), not from the rollout code.
"""

from __future__ import annotations

import pytest
import torch
from scripted import ScriptedGenerator

from zerosearch.config import RolloutConfig
from zerosearch.data.qa import QAExample
from zerosearch.ops.info_span_mask import info_span_mask
from zerosearch.rollout import RolloutRunner
from zerosearch.rollout import protocol as prompts
from zerosearch.search.base import EMPTY_QUERY_DOCS, SearchResult
from zerosearch.toy.tokenizer import build_tokenizer

WORDS = "i need the capital of zorvia melbrook is answer think guess doc a b c sorry nothing"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer([WORDS])


class ScriptedSampler(ScriptedGenerator):
    """Returns, for each call, the next scripted text of each row (matched by the row's question)."""

    def __init__(self, tok, scripts: dict[str, list[str]]):
        self.tok = tok
        self.scripts = {q: list(s) for q, s in scripts.items()}
        self.calls: list[int] = []

    def script(self, contexts, max_new_tokens, stop_ids):
        self.calls.append(len(contexts))
        out = []
        for ctx, budget in zip(contexts, max_new_tokens):
            text = self.tok.decode(ctx)
            question = next(q for q in self.scripts if f"question : {q}" in text)
            ids = self.tok.encode(self.scripts[question].pop(0), add_special_tokens=False)[:budget]
            out.append(ids)
        return out, [[-0.5] * len(ids) for ids in out]


class RecordingSearch:
    def __init__(self):
        self.requests = []

    def search(self, requests, *, step=0):
        self.requests.extend(requests)
        return [SearchResult(r.row_id, [f"{r.query} is melbrook", "nothing"], noisy=False) for r in requests]

    def stats(self):
        return {}


def _example(q: str, uid: str) -> QAExample:
    return QAExample(uid=uid, question=q, golden_answers=["melbrook"])


def test_search_then_answer_masks_exactly_policy_tokens(tok):
    q = "capital of zorvia"
    turn1 = "<think> i need the capital </think> <search> capital of zorvia </search>"
    turn2 = "<think> melbrook </think> <answer> melbrook </answer>"
    sampler, search = ScriptedSampler(tok, {q: [turn1, turn2]}), RecordingSearch()
    runner = RolloutRunner(tok, sampler, search, RolloutConfig(max_turns=3))
    [t] = runner.run([_example(q, "u1")])

    assert t.finished and t.queries == ["capital of zorvia"]
    assert [(r.row_id, r.query, r.question) for r in search.requests] == [(0, "capital of zorvia", q)]
    policy_ids = tok.encode(turn1, add_special_tokens=False) + tok.encode(turn2, add_special_tokens=False)
    written = [i for i, m in zip(t.response_ids, t.loss_mask) if m]
    assert written == policy_ids
    obs = tok.encode(prompts.observation_text("Doc 1: capital of zorvia is melbrook\nDoc 2: nothing"),
                     add_special_tokens=False)
    assert [i for i, m in zip(t.response_ids, t.loss_mask) if not m] == obs
    # Independent check with the span-mask op: no policy token lies inside <information>…</information>.
    ids = torch.tensor([t.prompt_ids + t.response_ids])
    info = info_span_mask(ids, tok.encode("<information>", add_special_tokens=False),
                          tok.encode("</information>", add_special_tokens=False))[0, len(t.prompt_ids):]
    assert info.any() and not (info & torch.tensor(t.loss_mask)).any()
    assert t.sample_logprobs == [-0.5 if m else 0.0 for m in t.loss_mask]


def test_invalid_action_then_final_turn_does_not_search(tok):
    q = "capital of zorvia"
    script = ["<think> i guess </think> sorry", "<search> a </search>", "<search> b </search>"]
    sampler, search = ScriptedSampler(tok, {q: script}), RecordingSearch()
    runner = RolloutRunner(tok, sampler, search, RolloutConfig(max_turns=2))
    [t] = runner.run([_example(q, "u1")])
    assert t.invalid_actions == 1
    assert t.queries == ["a"]  # turn 2 searched; turn 3 is the final turn: its search is not run
    assert [r.query for r in search.requests] == ["a"]
    assert not t.finished
    assert tok.decode(t.response_ids).endswith("<search> b </search>")
    assert sampler.calls == [1, 1, 1]


def test_empty_query_is_not_sent_and_gets_fixed_text(tok):
    q = "capital of zorvia"
    sampler = ScriptedSampler(tok, {q: ["<search> </search>", "<answer> melbrook </answer>"]})
    search = RecordingSearch()
    [t] = RolloutRunner(tok, sampler, search).run([_example(q, "u1")])
    assert search.requests == [] and t.queries == [""]
    expected = tok.decode(tok.encode(prompts.observation_text(EMPTY_QUERY_DOCS), add_special_tokens=False))
    assert expected in tok.decode(t.response_ids)
    assert t.finished


def test_policy_written_information_tag_is_dropped_and_invalid(tok):
    q = "capital of zorvia"
    sampler = ScriptedSampler(tok, {q: ["<think> a </think> <information>", "<answer> melbrook </answer>"]})
    [t] = RolloutRunner(tok, sampler, RecordingSearch()).run([_example(q, "u1")])
    info_open = tok.convert_tokens_to_ids("<information>")
    assert info_open not in [i for i, m in zip(t.response_ids, t.loss_mask) if m]
    assert t.invalid_actions == 1 and t.finished


def test_rows_keep_their_own_questions_and_groups(tok):
    qa, qb = "capital of zorvia", "answer of melbrook"
    # both rows of question A search in turn 1 and answer in turn 2 (the script is shared by the group)
    scripts = {qa: ["<search> a </search>"] * 2 + ["<answer> a </answer>"] * 2,
               qb: ["<answer> b </answer>"] * 2}
    search = RecordingSearch()
    trajs = RolloutRunner(tok, ScriptedSampler(tok, scripts), search).run(
        [_example(qa, "A"), _example(qb, "B")], n_samples=2)
    assert [t.group_id for t in trajs] == ["A", "A", "B", "B"]
    assert sorted(r.row_id for r in search.requests) == [0, 1]
    assert all(r.question == qa for r in search.requests)


def test_context_limit_truncates_and_stops(tok):
    q = "capital of zorvia"
    sampler = ScriptedSampler(tok, {q: ["<search> capital of zorvia </search>"] * 5})
    runner = RolloutRunner(tok, sampler, RecordingSearch(), RolloutConfig(max_turns=4, max_context=0))
    prompt_len = len(runner.prompt_ids(q))
    limit = prompt_len + 20
    runner.settings.max_context = limit
    [t] = runner.run([_example(q, "u1")])
    assert t.truncated
    assert len(t.prompt_ids) + len(t.response_ids) <= limit
    assert len(t.loss_mask) == len(t.response_ids) == len(t.sample_logprobs)


def test_tags_must_be_single_tokens():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<unk>": 0, "<": 1, "search": 2, ">": 3}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    with pytest.raises(ValueError, match="single tokens"):
        RolloutRunner(tok, ScriptedSampler(tok, {}), RecordingSearch())
