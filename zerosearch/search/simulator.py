"""The simulated search engine: an LLM prompted to write useful or noisy documents (DESIGN §1).

The backend is independent of where the LLM runs: it builds prompts, decides noise with the
curriculum and parses documents, and delegates only the text generation to `generate_fn`
(a local HF model via `hf_generate_fn`, or a server via `OpenAISimulator`).
"""

from __future__ import annotations

import random
import re
from collections import OrderedDict
from collections.abc import Callable

from ..prompts import simulator_prompt
from ..reward import normalize_answer
from .base import SearchRequest, SearchResult, clean_query, empty_query_result, unavailable_result
from .curriculum import NoiseCurriculum

# A generate_fn maps prompts to completions, one per prompt, in order. An item may be an Exception
# instead of text: that request alone becomes a fallback result (used by the server client).
GenerateFn = Callable[[list[str]], list]

# "Doc 3:", "doc 3 -", "Document 3.", "Doc:" — the number and the exact separator are optional-ish.
_DOC_MARK = re.compile(r"\bdoc(?:ument)?\s*(?:\d+\s*[:.)\-]|:)", flags=re.IGNORECASE)


def parse_documents(text: str, k: int = 5) -> list[str]:
    """Split a simulator completion at its `Doc i:` markers into at most k non-empty documents.

    Text before the first marker is preamble and dropped. With no marker at all the whole
    (non-empty) text is one document, so a sloppy small simulator still returns something.
    """
    if not text or not text.strip():
        return []
    marks = list(_DOC_MARK.finditer(text))
    if not marks:
        return [" ".join(text.split())]
    docs = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        doc = " ".join(text[m.end() : end].split())
        if doc:
            docs.append(doc)
        if len(docs) == k:
            break
    if not docs:
        return []
    return docs


def _contains_answer(documents: list[str], golds: list[str]) -> bool:
    """Whether some normalised gold answer occurs as whole words in the normalised documents."""
    text = f" {normalize_answer(' '.join(documents))} "
    for g in golds:
        gold = normalize_answer(g)
        if gold and f" {gold} " in text:
            return True
    return False


class SimulatorSearch:
    """SearchBackend over a generator LLM, with the noise curriculum, an LRU cache and leakage stats.

    The cache key is the full prompt, i.e. (query, question, useful) plus the answers the prompt
    shows: two rows share documents only if the simulator was asked exactly the same thing. Set
    `cache_size=0` when every call must be a fresh sample.
    """

    def __init__(
        self,
        generate_fn: GenerateFn,
        curriculum: NoiseCurriculum | None,
        *,
        top_k: int = 5,
        seed: int = 0,
        answer_in_noisy: bool = False,
        cache_size: int = 10000,
        prompt_fn: Callable[..., str] = simulator_prompt,
    ):
        self.generate_fn = generate_fn
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
        """One generate_fn call for all cache misses of the batch; results in request order."""
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
            outputs = list(self.generate_fn(missing))
            if len(outputs) != len(missing):
                raise RuntimeError(f"generate_fn returned {len(outputs)} outputs for {len(missing)} prompts")
            for prompt, out in zip(missing, outputs):
                if isinstance(out, BaseException) or out is None:
                    errors[prompt] = f"{type(out).__name__}: {out}" if out is not None else "no output"
                    continue
                parsed = parse_documents(str(out), self.top_k)
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
                c["n_leaky"] += int(_contains_answer(d, list(req.golden_answers)))
            results.append(SearchResult(row_id=req.row_id, documents=list(d), noisy=noisy))
        return results

    def stats(self) -> dict:
        """Counters plus `leakage`: fraction of noisy results whose documents contain a gold answer."""
        out: dict = dict(self._counts)
        out["leakage"] = self._counts["n_leaky"] / max(1, self._counts["n_noisy_scored"])
        out["noisy_fraction"] = self._counts["n_noisy"] / max(1, self._counts["n_queries"])
        out["cache_size"] = len(self._cache)
        return out


def hf_generate_fn(model, tokenizer, **gen_kwargs) -> Callable[[list[str]], list[str]]:
    """A generate_fn over a local HF model; defaults are the paper's (temperature 0.8, ≤600 tokens)."""
    from ..generation import generate_texts

    gen_kwargs.setdefault("max_new_tokens", 600)
    gen_kwargs.setdefault("temperature", 0.8)

    def generate(prompts: list[str]) -> list[str]:
        return generate_texts(model, tokenizer, prompts, **gen_kwargs)

    return generate
