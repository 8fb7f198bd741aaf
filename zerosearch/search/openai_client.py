"""The simulator served by an OpenAI-compatible server (vLLM, SGLang): `/v1/completions` over HTTP.

Only the transport lives here; prompts, noise decisions, parsing, caching and statistics are
SimulatorSearch's. The transport is defensive (DESIGN §2.8): bounded concurrency, a timeout per HTTP
request, a bounded number of retries with exponential backoff, and a fallback result instead of an
exception when the server keeps failing — a flaky simulator must not kill a training run.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from .curriculum import NoiseCurriculum
from .simulator import SimulatorSearch


class RetryableError(RuntimeError):
    """A failure worth another attempt (timeout, connection error, 5xx/429, unparseable body)."""


class ServerError(RuntimeError):
    """A failure that another attempt will not fix (e.g. 4xx: bad model name, bad request)."""


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
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        super().__init__(
            self._generate_batch,
            curriculum,
            top_k=top_k,
            seed=seed,
            answer_in_noisy=answer_in_noisy,
            cache_size=cache_size,
        )
        self.url = completions_url(base_url)
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        self._http = {"http_attempts": 0, "http_retries": 0, "http_failures": 0}

    def _bump(self, key: str) -> None:
        with self._lock:
            self._http[key] += 1

    def _post_once(self, prompt: str) -> str:
        body = json.dumps(
            {
                "model": self.model,
                "prompt": prompt,
                "max_tokens": self.max_tokens,
                "temperature": self.temperature,
                "n": 1,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self._bump("http_attempts")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            e.close()
            if e.code >= 500 or e.code == 429:
                raise RetryableError(f"HTTP {e.code}") from e
            raise ServerError(f"HTTP {e.code}: {e.reason}") from e
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets are OSErrors
            raise RetryableError(f"{type(e).__name__}: {e}") from e
        try:
            text = json.loads(raw)["choices"][0]["text"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise RetryableError(f"unparseable response: {raw[:200]!r}") from e
        if not isinstance(text, str):
            raise RetryableError(f"unparseable response: {raw[:200]!r}")
        return text

    def _complete(self, prompt: str) -> str | Exception:
        """At most 1 + max_retries attempts; the last error is returned (not raised) on failure."""
        for attempt in range(self.max_retries + 1):
            try:
                return self._post_once(prompt)
            except RetryableError as e:
                error: Exception = e
            except ServerError as e:
                error = e
                break
            if attempt < self.max_retries:
                self._bump("http_retries")
                time.sleep(self.backoff * (2**attempt))
        self._bump("http_failures")
        return error

    def _generate_batch(self, prompts: list[str]) -> list[str | Exception]:
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(prompts)))) as pool:
            return list(pool.map(self._complete, prompts))

    def stats(self) -> dict:
        out = super().stats()
        with self._lock:
            out.update(self._http)
        return out
