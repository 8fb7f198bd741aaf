"""The simulator served by an OpenAI-compatible server (vLLM, SGLang): `/v1/completions` over HTTP.

Only the transport lives here; prompts, noise decisions, parsing, caching and statistics are
SimulatorSearch's. The transport is defensive (DESIGN §2.8): bounded concurrency, a timeout per HTTP
request, a bounded number of retries with exponential backoff, and a fallback result instead of an
exception when the server keeps failing — a flaky simulator must not kill a training run.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from .curriculum import NoiseCurriculum
from .http_json import JsonPoster, RetryableError, ServerError
from .simulator import SimulatorSearch

__all__ = ["OpenAISimulator", "RetryableError", "ServerError", "completions_url"]


def _completion_text(raw: bytes) -> str:
    text = json.loads(raw)["choices"][0]["text"]
    if not isinstance(text, str):
        raise TypeError("choices[0].text is not a string")
    return text


def completions_url(base_url: str) -> str:
    """Accept `http://h:p`, `http://h:p/v1` or the full `.../v1/completions` URL."""
    url = base_url.rstrip("/")
    if url.endswith("/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/completions"
    return url + "/v1/completions"


class OpenAISimulator(SimulatorSearch):
    """SimulatorSearch whose generate_fn is a pool of HTTP calls to a completions endpoint."""

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
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        super().__init__(
            self._generate_batch,
            curriculum,
            top_k=top_k,
            seed=seed,
            answer_in_noisy=answer_in_noisy,
            cache_size=cache_size,
        )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.http = JsonPoster(completions_url(base_url), timeout=timeout, max_retries=max_retries,
                               backoff=backoff, headers=headers)
        self.url = self.http.url
        self.model = model
        self.concurrency = concurrency
        self.temperature = temperature
        self.max_tokens = max_tokens

    def _complete(self, prompt: str) -> str | Exception:
        payload = {"model": self.model, "prompt": prompt, "max_tokens": self.max_tokens,
                   "temperature": self.temperature, "n": 1}
        return self.http.post(payload, _completion_text)

    def _generate_batch(self, prompts: list[str]) -> list[str | Exception]:
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(prompts)))) as pool:
            return list(pool.map(self._complete, prompts))

    def stats(self) -> dict:
        out = super().stats()
        out.update(self.http.stats())
        return out
