"""Multi-turn rollouts: the policy thinks, searches, reads `<information>`, and answers.

Everything is kept as token ids. Policy tokens come straight from the generator (with their sampling
log-probs); engine text (search results, the invalid-action notice) is tokenised on its own and
concatenated, so the ids trained on are exactly the ids sampled — decoding and re-tokenising what the
policy wrote could change them. `loss_mask` marks policy-written tokens only.
"""

from __future__ import annotations

import logging
import unicodedata

from zerosearch.config import RolloutConfig
from zerosearch.data.qa import QAExample
from zerosearch.generation.base import Generator, SamplingParams
from zerosearch.rollout import protocol
from zerosearch.rollout.protocol import TagIds
from zerosearch.rollout.trajectory import Trajectory
from zerosearch.search.base import (
    EMPTY_QUERY_DOCS,
    SearchBackend,
    SearchRequest,
    SearchResult,
    clean_query,
    unavailable_result,
)

log = logging.getLogger(__name__)


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
    """Enforce the generator contract: at most `budget` tokens, ending at the first stop id.

    A generator that overruns (ignores a stop id or the budget) would otherwise let policy tokens follow
    a stop tag or overflow the context; one that returns log-probs of another length is a bug that
    would silently misalign them with the ids, so it is an error.
    """
    if len(logprobs) != len(ids):
        raise ValueError(f"generator returned {len(ids)} token ids but {len(logprobs)} log-probs for one row")
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
    """Runs batched multi-turn rollouts of a policy (through a :class:`Generator`) against a search backend.

    Sampling follows ``settings.temperature`` / ``top_p``, or is greedy (evaluation) with ``greedy=True``.
    """

    def __init__(self, tokenizer, generator: Generator, search: SearchBackend,
                 settings: RolloutConfig | None = None, *, greedy: bool = False) -> None:
        self.tokenizer = tokenizer
        self.generator = generator
        self.search = search
        self.settings = settings or RolloutConfig()
        self.sampling = (SamplingParams(greedy=True) if greedy else
                         SamplingParams(temperature=self.settings.temperature, top_p=self.settings.top_p))
        self.tags = TagIds(tokenizer)
        eos = tokenizer.eos_token_id
        self.stop_ids = [self.tags.search_close, self.tags.answer_close, self.tags.info_open]
        self.stop_ids += [eos] if eos is not None else []
        self._stop_set = set(self.stop_ids)
        self._invalid_ids = self._encode(protocol.INVALID_ACTION)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt_ids(self, question: str) -> list[int]:
        return self._encode(protocol.policy_prompt(question))

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
        out = self.generator.generate([t.prompt_ids + t.response_ids for t in active], max_new_tokens=budgets,
                                      sampling=self.sampling, stop_ids=self.stop_ids)
        if len(out.token_ids) != len(active) or len(out.logprobs) != len(active):
            raise ValueError(f"generator returned {len(out.token_ids)} rows of ids and {len(out.logprobs)} of "
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
                docs_text = protocol.format_documents(res.documents)
                t.noisy.append(bool(res.noisy))
                t.fallbacks += int(res.fallback)
            t.extend(self._encode(protocol.observation_text(docs_text)), policy=False)
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
