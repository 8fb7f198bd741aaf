"""The simulator served by an OpenAI-compatible server (ours, vLLM, SGLang): `/v1/completions` over HTTP.

Only the transport lives here; prompts, noise decisions, parsing, caching and statistics are
SimulatorSearch's. The transport is defensive: bounded concurrency, a timeout per HTTP request, a bounded
number of retries with exponential backoff, and a fallback result instead of an exception when the server
keeps failing — a flaky simulator must not kill a training run. Prompts travel up to ``batch_prompts`` per
request: with one prompt per request, a step's hundreds of queries reach the server at most ``concurrency``
at a time, and a batching server (ours, vLLM, SGLang) can batch no more than it receives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from zerosearch.generation.base import DEFAULT_SAMPLING, Completion, SamplingParams

from .curriculum import NoiseCurriculum
from .http_json import JsonPoster, RetryableError, ServerError
from .simulator import SimulatorSearch

__all__ = ["OpenAICompletions", "OpenAISimulator", "RetryableError", "ServerError", "completions_url", "v1_url"]

log = logging.getLogger(__name__)


# Statuses with which a server may refuse a list of prompts (not a list of strings, too many prompts, body
# too large): the prompts are then sent one per request. Other 4xx (unknown model, auth) would fail alike.
_LIST_REFUSED = (400, 413, 422)


def _share(total: int, k: int, i: int) -> int:
    """Item ``i``'s share of ``total`` split over ``k`` items (the shares sum to ``total``)."""
    return total // k + (1 if i < total % k else 0)


def _completions(raw: bytes, k: int) -> list[Completion]:
    """The ``k`` choices of a response, by their ``index`` (list order when a server omits it)."""
    body = json.loads(raw)
    choices = body["choices"]
    if not isinstance(choices, list) or len(choices) != k:
        raise ValueError(f"expected {k} choices, got {len(choices) if isinstance(choices, list) else choices!r}")
    by_index: dict[int, dict] = {}
    for pos, choice in enumerate(choices):
        idx = choice.get("index", pos)
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < k or idx in by_index:
            raise ValueError(f"bad choice index {idx!r}")
        if not isinstance(choice["text"], str):
            raise TypeError(f"choices[{pos}].text is not a string")
        by_index[idx] = choice
    usage = body.get("usage") or {}
    prompt_tokens, completion_tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return [Completion(by_index[i]["text"], _share(prompt_tokens, k, i), _share(completion_tokens, k, i),
                       str(by_index[i].get("finish_reason") or "stop")) for i in range(k)]


def completions_url(base_url: str) -> str:
    """Accept `http://h:p`, `http://h:p/v1` or the full `.../v1/completions` URL."""
    return v1_url(base_url, "completions")


def v1_url(base_url: str, endpoint: str) -> str:
    """`endpoint` (`completions`, `chat/completions`) of an OpenAI-compatible server given as `http://h:p`,
    `http://h:p/v1` or the endpoint's full URL."""
    url = base_url.rstrip("/")
    if url.endswith("/" + endpoint):
        return url
    if url.endswith("/v1"):
        return f"{url}/{endpoint}"
    return f"{url}/v1/{endpoint}"


class OpenAICompletions:
    """A :class:`~zerosearch.generation.TextCompleter` over HTTP: a bounded pool of requests, each carrying up to
    ``batch_prompts`` prompts (the list form of ``prompt``; one choice per prompt, matched by ``index``).

    Every request has its own timeout and bounded retries; a request that keeps failing turns into one error
    per prompt it carried (SimulatorSearch's fallback). A server that refuses a list (400/413/422) gets those
    prompts again one per request, and once one of them succeeds, every later call sends one prompt per request.
    Token counts of a list response are split evenly over its prompts (the API reports only totals).
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3, backoff: float = 0.5, concurrency: int = 8, batch_prompts: int = 1) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if batch_prompts < 1:
            raise ValueError("batch_prompts must be >= 1")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.http = JsonPoster(completions_url(base_url), timeout=timeout, max_retries=max_retries,
                               backoff=backoff, headers=headers)
        self.url = self.http.url
        self.model = model
        self.concurrency = concurrency
        self.batch_prompts = batch_prompts
        self.lists_accepted = batch_prompts > 1  # False once the server has refused a list
        self._list_fallbacks = 0

    def _post(self, prompts: list[str], as_list: bool, max_new_tokens: int, sampling: SamplingParams,
              stop: Sequence[str], seed: int | None) -> list[Completion] | Exception:  # fmt: skip
        payload = {"model": self.model, "prompt": list(prompts) if as_list else prompts[0], "n": 1,
                   "max_tokens": max_new_tokens, "temperature": 0.0 if sampling.greedy else sampling.temperature}
        if sampling.top_p < 1.0:
            payload["top_p"] = sampling.top_p
        if stop:
            payload["stop"] = list(stop)
        if seed is not None:
            payload["seed"] = seed
        return self.http.post(payload, lambda raw: _completions(raw, len(prompts)))

    def complete(self, prompts: list[str], *, max_new_tokens: int, sampling: SamplingParams = DEFAULT_SAMPLING,
                 stop: Sequence[str] = (), seed: int | None = None) -> list[Completion | Exception]:
        """One result per prompt, in order; an item is an Exception when its request kept failing."""
        if not prompts:
            return []
        size = self.batch_prompts if self.lists_accepted else 1
        chunks = [list(range(i, min(i + size, len(prompts)))) for i in range(0, len(prompts), size)]
        out: list[Completion | Exception | None] = [None] * len(prompts)

        def post(idx: list[int], as_list: bool) -> list[Completion] | Exception:
            return self._post([prompts[i] for i in idx], as_list, max_new_tokens, sampling, stop,
                              None if seed is None else seed + idx[0])

        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            results = list(pool.map(lambda idx: post(idx, size > 1), chunks))
            singles: list[int] = []
            for idx, res in zip(chunks, results):
                if isinstance(res, ServerError) and size > 1 and res.status in _LIST_REFUSED:
                    singles += idx
                else:
                    for j, i in enumerate(idx):
                        out[i] = res if isinstance(res, Exception) else res[j]
            if singles:
                retried = list(pool.map(lambda i: post([i], False), singles))
                for i, res in zip(singles, retried):
                    out[i] = res if isinstance(res, Exception) else res[0]
                if any(not isinstance(r, Exception) for r in retried):
                    self.lists_accepted = False
                    self._list_fallbacks += 1
                    log.warning("%s refused a list of prompts; sending one prompt per request from now on", self.url)
        return out  # type: ignore[return-value]

    def stats(self) -> dict:
        return self.http.stats() | {"list_fallbacks": self._list_fallbacks}


class OpenAISimulator(SimulatorSearch):
    """SimulatorSearch whose completions come from a served model (:class:`OpenAICompletions`)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        concurrency: int = 8,
        batch_prompts: int = 1,
        curriculum: NoiseCurriculum | None = None,
        seed: int = 0,
        top_k: int = 5,
        temperature: float = 0.8,
        max_tokens: int = 600,
        answer_in_noisy: bool = False,
        cache_size: int = 10000,
    ):
        self.client = OpenAICompletions(base_url, model, api_key=api_key, timeout=timeout, max_retries=max_retries,
                                        backoff=backoff, concurrency=concurrency, batch_prompts=batch_prompts)
        super().__init__(self.client, curriculum, top_k=top_k, seed=seed, answer_in_noisy=answer_in_noisy,
                         cache_size=cache_size, max_new_tokens=max_tokens, temperature=temperature)
        self.url = self.client.url
        self.model = model

    def stats(self) -> dict:
        return super().stats() | self.client.stats()
