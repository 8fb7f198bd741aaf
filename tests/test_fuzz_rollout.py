"""Property test of the rollout loop against random policy output and random search results.

The sampler plays back random token streams rich in protocol tags (stray, nested, unclosed, policy-written
`<information>`), sometimes ignoring its budget and stop ids; the backend returns documents full of tags,
raises, or drops rows. Whatever happens the rollout must not crash and its output must stay consistent:
aligned ids / mask / log-probs, the context limit, no policy token inside an `<information>` span, and
queries only from well-formed `<search> … </search>` spans of the policy's own tokens.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scripted import ScriptedGenerator

from zerosearch.config import RolloutConfig
from zerosearch.data.qa import QAExample
from zerosearch.ops.info_span_mask import info_span_mask
from zerosearch.reward import score_response
from zerosearch.rollout import RolloutRunner, policy_text, query_text
from zerosearch.rollout import protocol as prompts
from zerosearch.search.base import SearchResult
from zerosearch.toy.tokenizer import build_tokenizer

WORDS = "alpha beta gamma delta melbrook zorvia capital of"
QUESTIONS = ["capital of zorvia", "alpha of beta"]

TOK = build_tokenizer([WORDS])
TAG_IDS = [TOK.convert_tokens_to_ids(t) for t in prompts.TAGS]
WORD_IDS = [TOK.convert_tokens_to_ids(w) for w in WORDS.split()]
EOS, UNK = TOK.eos_token_id, TOK.unk_token_id
S_OPEN, S_CLOSE = TOK.convert_tokens_to_ids(prompts.SEARCH_OPEN), TOK.convert_tokens_to_ids(prompts.SEARCH_CLOSE)
A_CLOSE = TOK.convert_tokens_to_ids(prompts.ANSWER_CLOSE)
I_OPEN, I_CLOSE = TOK.convert_tokens_to_ids(prompts.INFO_OPEN), TOK.convert_tokens_to_ids(prompts.INFO_CLOSE)
PROMPT_LEN = max(len(TOK.encode(prompts.policy_prompt(q), add_special_tokens=False)) for q in QUESTIONS)


def logprob_of(token: int) -> float:
    """A log-prob that identifies its token, so misaligned ids / log-probs are detectable."""
    return -(token + 1) / 1000.0


class FuzzSampler(ScriptedGenerator):
    def __init__(self, segments: list[list[int]], honour: bool):
        self.segments, self.honour = segments, honour

    def script(self, contexts, max_new_tokens, stop_ids):
        out = []
        for budget in max_new_tokens:
            seg = list(self.segments.pop(0)) if self.segments else []
            if self.honour:
                seg = seg[:budget]
                cut = next((i for i, t in enumerate(seg) if t in stop_ids), None)
                seg = seg if cut is None else seg[: cut + 1]
            out.append(seg)
        return out, [[logprob_of(t) for t in s] for s in out]


class FuzzBackend:
    def __init__(self, mode: str, docs: list[str]):
        self.mode, self.docs, self.requests = mode, docs, []

    def search(self, requests, *, step=0):
        self.requests.extend(requests)
        if self.mode == "raise":
            raise RuntimeError("backend exploded")
        if self.mode == "drop_half":
            requests = requests[::2]
        return [SearchResult(r.row_id, list(self.docs), noisy=bool(len(r.query) % 2)) for r in requests]

    def stats(self):
        return {}


token = st.one_of(st.sampled_from(TAG_IDS), st.sampled_from(WORD_IDS), st.sampled_from([EOS, UNK]))
# Search tags and short word runs as pieces, so nested / stray / empty search spans are frequent.
piece = st.one_of(st.just([S_OPEN]), st.just([S_CLOSE]), st.lists(st.sampled_from(WORD_IDS), max_size=3),
                  st.lists(token, min_size=1, max_size=2))
segment = st.one_of(st.lists(token, max_size=14), st.lists(piece, max_size=8).map(lambda ps: sum(ps, [])))
doc_text = st.lists(st.sampled_from(list(prompts.TAGS) + WORDS.split()), max_size=8).map(" ".join)


@st.composite
def scenarios(draw):
    return {
        "segments": draw(st.lists(segment, max_size=24)),
        "honour": draw(st.booleans()),
        "mode": draw(st.sampled_from(["ok", "ok", "raise", "drop_half"])),
        "docs": draw(st.lists(doc_text, max_size=3)),
        "max_turns": draw(st.integers(0, 3)),
        "max_new_tokens": draw(st.integers(1, 12)),
        "max_context": PROMPT_LEN + draw(st.integers(-2, 60)),
        "max_query_chars": draw(st.integers(1, 30)),
        "n_questions": draw(st.integers(1, 2)),
        "n_samples": draw(st.integers(1, 3)),
    }


def well_formed_queries(policy: list[int], max_chars: int) -> list[str]:
    """Texts of `<search> x </search>` spans with no other search tag inside, in order."""
    found, start = [], None
    for i, t in enumerate(policy):
        if t == S_OPEN:
            start = i
        elif t == S_CLOSE:
            if start is not None:
                found.append(query_text(TOK.decode(policy[start + 1 : i], skip_special_tokens=True), max_chars))
            start = None
    return found


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_rollout_survives_random_policy_output(sc):
    sampler = FuzzSampler(sc["segments"], sc["honour"])
    backend = FuzzBackend(sc["mode"], sc["docs"])
    cfg = RolloutConfig(max_turns=sc["max_turns"], max_new_tokens=sc["max_new_tokens"],
                          max_context=sc["max_context"], max_query_chars=sc["max_query_chars"])
    runner = RolloutRunner(TOK, sampler, backend, cfg)
    examples = [QAExample(uid=f"q{i}", question=q, golden_answers=["melbrook"])
                for i, q in enumerate(QUESTIONS[: sc["n_questions"]])]
    trajs = runner.run(examples, sc["n_samples"])

    assert len(trajs) == sc["n_questions"] * sc["n_samples"]
    sent = {}
    for r in backend.requests:
        sent.setdefault(r.row_id, []).append(r.query)
    for t in trajs:
        n = len(t.response_ids)
        assert len(t.loss_mask) == n == len(t.sample_logprobs)
        total = len(t.prompt_ids) + n
        assert total <= max(cfg.max_context, len(t.prompt_ids))
        if len(t.prompt_ids) >= cfg.max_context:
            assert n == 0 and t.truncated
        # log-probs travel with their ids: policy positions carry the sampler's value, engine positions 0
        for tok_id, m, lp in zip(t.response_ids, t.loss_mask, t.sample_logprobs):
            assert lp == (logprob_of(tok_id) if m else 0.0)
        policy = [i for i, m in zip(t.response_ids, t.loss_mask) if m]
        # the policy never writes an <information> tag into its own turns
        assert I_OPEN not in policy
        # no policy token inside an <information> span (the mask the trainer uses)
        full = torch.tensor(t.prompt_ids + t.response_ids, dtype=torch.long)
        info = info_span_mask(full, [I_OPEN], [I_CLOSE])[len(t.prompt_ids):]
        assert not (info & torch.tensor(t.loss_mask, dtype=torch.bool)).any()
        # queries come only from well-formed spans of the policy's own tokens, in order, and are clean
        spans = well_formed_queries(policy, cfg.max_query_chars)
        assert len(t.queries) <= len(spans)
        it = iter(spans)
        assert all(any(q == s for s in it) for q in t.queries), (t.queries, spans)
        for q in t.queries:
            assert len(q) <= cfg.max_query_chars and q == q.strip() and "\ufffd" not in q
        assert sent.get(t.row_id, []) == [q for q in t.queries if q]
        assert t.n_searches <= cfg.max_turns
        # failures are counted, never raised
        assert 0 <= t.fallbacks <= len([q for q in t.queries if q])
        if sc["mode"] == "raise":
            assert t.fallbacks == len([q for q in t.queries if q])
        if t.finished:
            assert policy and policy[-1] == A_CLOSE
        scores = score_response(policy_text(t, TOK), ["melbrook"])
        assert all(0.0 <= v <= 1.0 for v in scores.values())

