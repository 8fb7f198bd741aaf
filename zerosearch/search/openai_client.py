"""The simulator served by an OpenAI-compatible server (ours, vLLM, SGLang): `/v1/completions` over HTTP.

Only the transport lives here; prompts, noise decisions, parsing, caching and statistics are
SimulatorSearch's. The transport is defensive: bounded concurrency, a timeout per HTTP request, a bounded
number of retries with exponential backoff, and a fallback result instead of an exception when the server
keeps failing — a flaky simulator must not kill a training run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from zerosearch.generation.base import DEFAULT_SAMPLING, Completion, SamplingParams

from .curriculum import NoiseCurriculum
from .http_json import JsonPoster, RetryableError, ServerError
from .simulator import SimulatorSearch

__all__ = ["OpenAICompletions", "OpenAISimulator", "RetryableError", "ServerError", "completions_url"]


def _completion(raw: bytes) -> Completion:
    body = json.loads(raw)
    choice = body["choices"][0]
    text = choice["text"]
    if not isinstance(text, str):
        raise TypeError("choices[0].text is not a string")
    usage = body.get("usage") or {}
    return Completion(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                      str(choice.get("finish_reason") or "stop"))


def completions_url(base_url: str) -> str:
    """Accept `http://h:p`, `http://h:p/v1` or the full `.../v1/completions` URL."""
    url = base_url.rstrip("/")
    if url.endswith("/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/completions"
    return url + "/v1/completions"


class OpenAICompletions:
    """A :class:`~zerosearch.generation.TextCompleter` over HTTP: one prompt per request, a bounded pool."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3, backoff: float = 0.5, concurrency: int = 8) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.http = JsonPoster(completions_url(base_url), timeout=timeout, max_retries=max_retries,
                               backoff=backoff, headers=headers)
        self.url = self.http.url
        self.model = model
        self.concurrency = concurrency

    def _complete_one(self, prompt: str, max_new_tokens: int, sampling: SamplingParams,
                      stop: Sequence[str]) -> Completion | Exception:
        payload = {"model": self.model, "prompt": prompt, "max_tokens": max_new_tokens, "n": 1,
                   "temperature": 0.0 if sampling.greedy else sampling.temperature}
        if sampling.top_p < 1.0:
            payload["top_p"] = sampling.top_p
        if stop:
            payload["stop"] = list(stop)
        return self.http.post(payload, _completion)

    def complete(self, prompts: list[str], *, max_new_tokens: int, sampling: SamplingParams = DEFAULT_SAMPLING,
                 stop: Sequence[str] = (), seed: int | None = None) -> list[Completion | Exception]:
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda p: self._complete_one(p, max_new_tokens, sampling, stop), prompts))

    def stats(self) -> dict:
        return self.http.stats()


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
        curriculum: NoiseCurriculum | None = None,
        seed: int = 0,
        top_k: int = 5,
        temperature: float = 0.8,
        max_tokens: int = 600,
        answer_in_noisy: bool = False,
        cache_size: int = 10000,
    ):
        self.client = OpenAICompletions(base_url, model, api_key=api_key, timeout=timeout, max_retries=max_retries,
                                        backoff=backoff, concurrency=concurrency)
        super().__init__(self.client, curriculum, top_k=top_k, seed=seed, answer_in_noisy=answer_in_noisy,
                         cache_size=cache_size, max_new_tokens=max_tokens, temperature=temperature)
        self.url = self.client.url
        self.model = model

    def stats(self) -> dict:
        return super().stats() | self.client.stats()
