"""Multi-turn rollouts: the policy thinks, searches, reads `<information>`, and answers.

Everything is kept as token ids. Policy tokens come straight from the sampler (with their sampling
log-probs); engine text (search results, the invalid-action notice) is tokenised on its own and
concatenated, so the ids trained on are exactly the ids sampled (DESIGN §2.4). `loss_mask` marks
policy-written tokens only (DESIGN §2.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zerosearch import prompts
from zerosearch.data.qa import QAExample
from zerosearch.sampler import TokenSampler
from zerosearch.search.base import EMPTY_QUERY_DOCS, SearchBackend, SearchRequest, clean_query


@dataclass
class RolloutSettings:
    max_turns: int = 3  # turns that may search; one more turn follows in which a search is not run
    max_new_tokens: int = 48
    max_context: int = 1024
    max_query_chars: int = 256


@dataclass
class Trajectory:
    """One rollout. `response_ids` holds policy and engine tokens after the prompt, in order."""

    row_id: int
    example: QAExample
    group_id: str
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[bool] = field(default_factory=list)
    sample_logprobs: list[float] = field(default_factory=list)  # 0.0 at engine tokens
    queries: list[str] = field(default_factory=list)
    noisy: list[bool] = field(default_factory=list)
    fallbacks: int = 0
    invalid_actions: int = 0
    finished: bool = False  # wrote a complete <answer>
    truncated: bool = False  # hit the context limit
    response_text: str = ""

    @property
    def n_searches(self) -> int:
        return len(self.queries)

    def extend(self, ids: list[int], *, policy: bool, logprobs: list[float] | None = None) -> None:
        self.response_ids.extend(ids)
        self.loss_mask.extend([policy] * len(ids))
        self.sample_logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))


class TagIds:
    """Single token ids of the protocol tags in a tokenizer (checked: each tag must be one token)."""

    def __init__(self, tokenizer) -> None:
        ids = {}
        for tag in prompts.TAGS:
            enc = tokenizer.encode(tag, add_special_tokens=False)
            if len(enc) != 1:
                raise ValueError(
                    f"tag {tag!r} is {len(enc)} tokens in this tokenizer; add the tags as single tokens "
                    "(tokenizer.add_tokens) before training"
                )
            ids[tag] = enc[0]
        self.search_open = ids[prompts.SEARCH_OPEN]
        self.search_close = ids[prompts.SEARCH_CLOSE]
        self.answer_close = ids[prompts.ANSWER_CLOSE]
        self.info_open = ids[prompts.INFO_OPEN]
        self.info_close = ids[prompts.INFO_CLOSE]


def _query_tokens(segment: list[int], tags: TagIds) -> list[int] | None:
    """Ids between the last `<search>` and the closing `</search>` of a segment; None if unopened."""
    body = segment[:-1]
    for i in range(len(body) - 1, -1, -1):
        if body[i] == tags.search_open:
            return body[i + 1:]
    return None


class RolloutRunner:
    """Runs batched multi-turn rollouts of a policy against a search backend."""

    def __init__(self, tokenizer, sampler: TokenSampler, search: SearchBackend,
                 settings: RolloutSettings | None = None) -> None:
        self.tokenizer = tokenizer
        self.sampler = sampler
        self.search = search
        self.settings = settings or RolloutSettings()
        self.tags = TagIds(tokenizer)
        eos = tokenizer.eos_token_id
        self.stop_ids = [self.tags.search_close, self.tags.answer_close, self.tags.info_open]
        self.stop_ids += [eos] if eos is not None else []
        self._invalid_ids = self._encode(prompts.INVALID_ACTION)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt_ids(self, question: str) -> list[int]:
        return self._encode(prompts.policy_prompt(question))

    def run(self, examples: list[QAExample], n_samples: int = 1, *, step: int = 0) -> list[Trajectory]:
        """Roll out every example `n_samples` times; trajectories of one example share a group id."""
        trajs = []
        for ex in examples:
            p_ids = self.prompt_ids(ex.question)
            for _ in range(n_samples):
                trajs.append(Trajectory(len(trajs), ex, ex.uid, list(p_ids)))
        s = self.settings
        active = [t for t in trajs if len(t.prompt_ids) < s.max_context]
        for t in trajs:
            t.truncated = len(t.prompt_ids) >= s.max_context
        for turn in range(s.max_turns + 1):
            if not active:
                break
            active = self._turn(active, may_search=turn < s.max_turns, step=step)
        for t in trajs:
            t.response_text = self.tokenizer.decode(t.response_ids, skip_special_tokens=False)
        return trajs

    def _turn(self, active: list[Trajectory], *, may_search: bool, step: int) -> list[Trajectory]:
        s = self.settings
        room = [s.max_context - len(t.prompt_ids) - len(t.response_ids) for t in active]
        out = self.sampler.sample(
            [t.prompt_ids + t.response_ids for t in active],
            max_new_tokens=[max(1, min(s.max_new_tokens, r)) for r in room],
            stop_ids=self.stop_ids,
        )
        requests, searching, invalid = [], [], []
        for t, seg, lps in zip(active, out.token_ids, out.logprobs):
            last = seg[-1] if seg else None
            if last == self.tags.info_open:  # the policy may not write results itself
                seg, lps, last = seg[:-1], lps[:-1], None
            t.extend(seg, policy=True, logprobs=lps)
            if last == self.tags.answer_close:
                t.finished = True
            elif last == self.tags.search_close and may_search:
                q_ids = _query_tokens(seg, self.tags)
                if q_ids is None:
                    invalid.append(t)
                    continue
                query = clean_query(self.tokenizer.decode(q_ids, skip_special_tokens=True), s.max_query_chars)
                t.queries.append(query)
                searching.append(t)
                if query:
                    requests.append(SearchRequest(t.row_id, query, t.example.question,
                                                  list(t.example.golden_answers)))
            elif may_search:
                invalid.append(t)
        results = {r.row_id: r for r in self.search.search(requests, step=step)} if requests else {}
        for t in searching:
            res = results.get(t.row_id)
            if res is None:  # empty query: never sent to the backend
                docs_text = EMPTY_QUERY_DOCS
            else:
                docs_text = prompts.format_documents(res.documents)
                t.noisy.append(bool(res.noisy))
                t.fallbacks += int(res.fallback)
            t.extend(self._encode(prompts.observation_text(docs_text)), policy=False)
        for t in invalid:
            t.invalid_actions += 1
            t.extend(self._invalid_ids, policy=False)
        still = []
        for t in searching + invalid:
            if len(t.prompt_ids) + len(t.response_ids) >= s.max_context:
                overflow = len(t.prompt_ids) + len(t.response_ids) - s.max_context
                if overflow > 0:
                    del t.response_ids[-overflow:], t.loss_mask[-overflow:], t.sample_logprobs[-overflow:]
                t.truncated = True
            else:
                still.append(t)
        return still
