"""Multi-turn rollouts: the policy thinks, searches, reads `<information>`, and answers.

Everything is kept as token ids. Policy tokens come straight from the sampler (with their sampling
log-probs); engine text (search results, the invalid-action notice) is tokenised on its own and
concatenated, so the ids trained on are exactly the ids sampled (DESIGN §2.4). `loss_mask` marks
policy-written tokens only (DESIGN §2.5).
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass, field

from zerosearch import prompts
from zerosearch.data.qa import QAExample
from zerosearch.sampler import TokenSampler
from zerosearch.search.base import (
    EMPTY_QUERY_DOCS,
    SearchBackend,
    SearchRequest,
    SearchResult,
    clean_query,
    unavailable_result,
)

log = logging.getLogger(__name__)


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


def query_text(raw: str, max_chars: int) -> str:
    """A decoded query made safe to send: U+FFFD (bytes a byte-level tokenizer could not decode on their
    own) and control characters or lone surrogates (which break UTF-8 encoding of an HTTP body) removed,
    whitespace collapsed, at most `max_chars` characters.

    Garbage-only queries become "" and are then answered with the fixed empty-query text instead of
    being sent to the backend.
    """
    chars = []
    for ch in raw:
        if ch.isspace() or ch == "\ufffd":
            chars.append(" ")
        elif unicodedata.category(ch) not in ("Cc", "Cs"):
            chars.append(ch)
    return clean_query("".join(chars), max_chars)


def cut_segment(ids: list[int], logprobs: list[float], stop_ids: set[int], budget: int) -> tuple[list, list]:
    """Enforce the sampler contract: at most `budget` tokens, ending at the first stop id.

    A sampler that overruns (ignores a stop id or the budget) would otherwise let policy tokens follow
    a stop tag or overflow the context; one that returns log-probs of another length is a bug that
    would silently misalign them with the ids, so it is an error.
    """
    if len(logprobs) != len(ids):
        raise ValueError(f"sampler returned {len(ids)} token ids but {len(logprobs)} log-probs for one row")
    ids, logprobs = list(ids[:budget]), list(logprobs[:budget])
    for i, tok in enumerate(ids):
        if tok in stop_ids:
            return ids[: i + 1], logprobs[: i + 1]
    return ids, logprobs


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
        self._stop_set = set(self.stop_ids)
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
        budgets = [max(1, min(s.max_new_tokens, r)) for r in room]
        out = self.sampler.sample(
            [t.prompt_ids + t.response_ids for t in active], max_new_tokens=budgets, stop_ids=self.stop_ids,
        )
        if len(out.token_ids) != len(active) or len(out.logprobs) != len(active):
            raise ValueError(f"sampler returned {len(out.token_ids)} rows of ids and {len(out.logprobs)} of "
                             f"log-probs for {len(active)} contexts")
        requests, searching, invalid = [], [], []
        for t, seg, lps, budget in zip(active, out.token_ids, out.logprobs, budgets):
            seg, lps = cut_segment(seg, lps, self._stop_set, budget)
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
                query = query_text(self.tokenizer.decode(q_ids, skip_special_tokens=True), s.max_query_chars)
                t.queries.append(query)
                searching.append(t)
                if query:
                    requests.append(SearchRequest(t.row_id, query, t.example.question,
                                                  list(t.example.golden_answers)))
            elif may_search:
                invalid.append(t)
        results = self._search(requests, step)
        for t in searching:
            if not t.queries[-1]:  # empty query: never sent to the backend
                docs_text = EMPTY_QUERY_DOCS
            else:  # a sent query the backend left unanswered is a failure, not an empty query
                res = results.get(t.row_id) or unavailable_result(t.row_id, "backend returned no result")
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

    def _search(self, requests: list[SearchRequest], step: int) -> dict[int | str, SearchResult]:
        """Results by row id. A backend that raises does not end the run: every request of the call
        falls back (counted per trajectory in `fallbacks`), as the simulator client does per request."""
        if not requests:
            return {}
        try:
            found = self.search.search(requests, step=step)
        except Exception as e:  # noqa: BLE001 -- any backend failure becomes a counted fallback
            log.warning("search backend failed for %d queries (%s: %s); using fallback results",
                        len(requests), type(e).__name__, e)
            return {r.row_id: unavailable_result(r.row_id, f"{type(e).__name__}: {e}") for r in requests}
        return {r.row_id: r for r in found}
