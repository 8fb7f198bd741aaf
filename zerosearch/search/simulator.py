"""The simulated search engine: an LLM prompted to write five useful or noisy documents per query.

The backend is independent of where the LLM runs: it builds prompts, decides noise with the curriculum,
caches and parses documents, and delegates only the text completion to a
:class:`~zerosearch.generation.TextCompleter` — a local :class:`~zerosearch.generation.Generator`, or a
completions server through :class:`~zerosearch.search.openai_client.OpenAICompletions`.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable

from zerosearch.generation.base import SamplingParams, TextCompleter

from .base import SearchRequest, SearchResult, clean_query, empty_query_result, unavailable_result
from .curriculum import NoiseCurriculum
from .documents import contains_answer, parse_documents
from .prompts import simulator_prompt


class SimulatorSearch:
    """SearchBackend over a simulator LLM, with the noise curriculum, an LRU cache and leakage stats.

    The cache key is the full prompt, i.e. (query, question, useful) plus the answers the prompt
    shows: two rows share documents only if the simulator was asked exactly the same thing. Set
    `cache_size=0` when every call must be a fresh sample.
    """

    def __init__(
        self,
        completer: TextCompleter,
        curriculum: NoiseCurriculum | None,
        *,
        top_k: int = 5,
        seed: int = 0,
        answer_in_noisy: bool = False,
        cache_size: int = 10000,
        prompt_fn: Callable[..., str] = simulator_prompt,
        max_new_tokens: int = 600,
        temperature: float = 0.8,
    ):
        """Defaults are the paper's: temperature 0.8, at most 600 new tokens."""
        self.completer = completer
        self.max_new_tokens = max_new_tokens
        self.sampling = SamplingParams(temperature=temperature) if temperature > 0 else SamplingParams(greedy=True)
        self.curriculum = curriculum
        self.top_k = top_k
        self.answer_in_noisy = answer_in_noisy
        self.cache_size = cache_size
        self.prompt_fn = prompt_fn
        self._rng = random.Random(seed)
        self._cache: OrderedDict[str, list[str]] = OrderedDict()
        self._counts = dict.fromkeys(
            (
                "n_requests",
                "n_queries",
                "n_empty",
                "n_noisy",
                "n_noisy_scored",
                "n_leaky",
                "fallbacks",
                "cache_hits",
                "cache_misses",
            ),
            0,
        )

    def reseed(self, seed: int) -> None:
        """Restart the noise draws from `seed`; the trainer calls it every step so a resumed run
        draws the same useful/noisy decisions as the uninterrupted one."""
        self._rng = random.Random(seed)

    # -- pieces ---------------------------------------------------------------------------------
    def decide_noisy(self, n: int, step: int) -> list[bool]:
        if self.curriculum is None:
            return [False] * n
        return self.curriculum.sample_noisy(step, n, self._rng)

    def build_prompt(self, request: SearchRequest, query: str, useful: bool) -> str:
        return self.prompt_fn(
            query, request.question, list(request.golden_answers), useful, answer_in_noisy=self.answer_in_noisy
        )

    def _cache_get(self, key: str) -> list[str] | None:
        if self.cache_size <= 0 or key not in self._cache:
            return None
        self._cache.move_to_end(key)
        return self._cache[key]

    def _cache_put(self, key: str, docs: list[str]) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = docs
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # -- protocol -------------------------------------------------------------------------------
    def search(self, requests: list[SearchRequest], *, step: int = 0) -> list[SearchResult]:
        """One completion call for all cache misses of the batch; results in request order."""
        c = self._counts
        c["n_requests"] += len(requests)
        queries = [clean_query(r.query) for r in requests]
        todo = [i for i, q in enumerate(queries) if q]
        noisy_flags = dict(zip(todo, self.decide_noisy(len(todo), step)))
        prompts = {i: self.build_prompt(requests[i], queries[i], not noisy_flags[i]) for i in todo}

        docs: dict[int, list[str]] = {}
        missing: list[str] = []  # distinct prompts to generate, in first-seen order
        seen: set[str] = set()
        for i in todo:
            cached = self._cache_get(prompts[i])
            if cached is not None or prompts[i] in seen:
                c["cache_hits"] += 1
                if cached is not None:
                    docs[i] = cached
            else:
                c["cache_misses"] += 1
                missing.append(prompts[i])
                seen.add(prompts[i])

        errors: dict[str, str] = {}
        generated: dict[str, list[str]] = {}
        if missing:
            outputs = list(self.completer.complete(missing, max_new_tokens=self.max_new_tokens,
                                                   sampling=self.sampling))
            if len(outputs) != len(missing):
                raise RuntimeError(f"the simulator returned {len(outputs)} completions for {len(missing)} prompts")
            for prompt, out in zip(missing, outputs):
                if isinstance(out, BaseException) or out is None:
                    errors[prompt] = f"{type(out).__name__}: {out}" if out is not None else "no output"
                    continue
                parsed = parse_documents(out.text, self.top_k)
                if not parsed:
                    errors[prompt] = "simulator returned no documents"
                    continue
                generated[prompt] = parsed
                self._cache_put(prompt, parsed)

        results: list[SearchResult] = []
        for i, req in enumerate(requests):
            if i not in noisy_flags:
                results.append(empty_query_result(req.row_id))
                c["n_empty"] += 1
                continue
            noisy = noisy_flags[i]
            c["n_queries"] += 1
            c["n_noisy"] += int(noisy)
            d = docs.get(i) or generated.get(prompts[i])
            if d is None:
                c["fallbacks"] += 1
                results.append(unavailable_result(req.row_id, errors.get(prompts[i], "no output"), noisy))
                continue
            if noisy:
                c["n_noisy_scored"] += 1
                c["n_leaky"] += int(contains_answer(d, list(req.golden_answers)))
            results.append(SearchResult(row_id=req.row_id, documents=list(d), noisy=noisy))
        return results

    def stats(self) -> dict:
        """Counters plus `leakage`: fraction of noisy results whose documents contain a gold answer."""
        out: dict = dict(self._counts)
        out["leakage"] = self._counts["n_leaky"] / max(1, self._counts["n_noisy_scored"])
        out["noisy_fraction"] = self._counts["n_noisy"] / max(1, self._counts["n_queries"])
        out["cache_size"] = len(self._cache)
        return out
