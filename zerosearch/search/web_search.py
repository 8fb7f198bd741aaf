"""Real web search through a Google-search JSON API (the Serper.dev request/response shape).

The paper's real-search baseline trains against Google through a paid API; at about $587 per 64k queries
that bill is exactly what the simulator saves, so this backend exists to reproduce the baseline and to
evaluate against live web results, not for routine training. Serper's wire format: `POST /search` with
`{"q": query, "num": k}` and an `X-API-KEY` header, answered by `{"organic": [{"title", "snippet",
"link", ...}, ...]}`; each hit becomes one `"title\\nsnippet"` document, like a corpus passage.

The key is read from an environment variable (whose name is configurable) and never appears in errors,
stats or reprs. Transport goes through JsonPoster: a timeout per request, bounded retries
with backoff (4xx is not retried: a bad key will not get better), and fallback results instead of
exceptions. The API takes one query per request, so a batch runs on a bounded thread pool.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from .base import SearchRequest, SearchResult, clean_query, empty_query_result, unavailable_result
from .http_json import JsonPoster

DEFAULT_WEB_URL = "https://google.serper.dev/search"
DEFAULT_API_KEY_ENV = "SERPER_API_KEY"
_REDACTED = "<redacted>"


def _hit_text(item: object) -> str | None:
    """`title\\nsnippet` of one organic hit; None for a hit without a snippet (nothing to read)."""
    if not isinstance(item, dict):
        raise TypeError(f"organic hit is a {type(item).__name__}, not an object")
    snippet, title = item.get("snippet"), item.get("title")
    if not isinstance(snippet, str) or not snippet.strip():
        return None
    snippet = snippet.strip()
    if isinstance(title, str) and title.strip():
        return f"{title.strip()}\n{snippet}"
    return snippet


def parse_organic(raw: bytes, top_k: int) -> list[str]:
    """At most top_k documents from a Serper-shaped response body; raises on a body of the wrong shape."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise TypeError("response is not a JSON object")
    organic = data["organic"]
    if not isinstance(organic, list):
        raise TypeError("'organic' is not a list")
    docs: list[str] = []
    for item in organic:
        text = _hit_text(item)
        if text is not None:
            docs.append(text)
            if len(docs) == top_k:
                break
    return docs


class WebSearch:
    """Google search via a Serper-compatible JSON API, one request per query; implements SearchBackend."""

    def __init__(
        self,
        url: str = DEFAULT_WEB_URL,
        *,
        api_key_env: str = DEFAULT_API_KEY_ENV,
        top_k: int = 5,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        concurrency: int = 8,
    ) -> None:
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        url = url.strip()
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"web search url must be http(s)://host[:port]/path, not {url!r}")
        if not api_key_env:
            raise ValueError("api_key_env must name an environment variable")
        key = os.environ.get(api_key_env, "").strip()
        if not key:
            raise ValueError(f"WebSearch needs an API key in the environment variable {api_key_env}, "
                             "which is unset or empty")
        self.api_key_env = api_key_env
        self.http = JsonPoster(url, timeout=timeout, max_retries=max_retries, backoff=backoff,
                               headers={"X-API-KEY": key})
        self.url = url
        self.top_k = top_k
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._stats = {"n_queries": 0, "n_empty": 0, "n_fallback": 0, "n_no_results": 0}

    def __repr__(self) -> str:
        return f"WebSearch(url={self.url!r}, api_key_env={self.api_key_env!r}, top_k={self.top_k})"

    def _bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _redact(self, text: str) -> str:
        """Errors may quote a response body; a proxy that echoes the request must not leak the key."""
        key = self.http.headers.get("X-API-KEY", "")
        return text.replace(key, _REDACTED) if key else text

    def _search_one(self, query: str) -> list[str] | Exception:
        return self.http.post({"q": query, "num": self.top_k}, lambda raw: parse_organic(raw, self.top_k))

    def search(self, requests: list[SearchRequest], *, step: int = 0) -> list[SearchResult]:
        """Results in request order, each with its request's row_id; `step` is unused (no curriculum)."""
        queries = [clean_query(r.query) for r in requests]
        todo = [i for i, q in enumerate(queries) if q]
        results: list[SearchResult] = [empty_query_result(r.row_id) for r in requests]
        if todo:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo))) as pool:
                answers = list(pool.map(self._search_one, [queries[i] for i in todo]))
            for i, got in zip(todo, answers):
                if isinstance(got, Exception):
                    results[i] = unavailable_result(requests[i].row_id, self._redact(f"web search failed: {got}"))
                    self._bump("n_fallback")
                    continue
                if not got:
                    self._bump("n_no_results")
                results[i] = SearchResult(row_id=requests[i].row_id, documents=got)
        self._bump("n_queries", len(todo))
        self._bump("n_empty", len(requests) - len(todo))
        return results

    def stats(self) -> dict:
        with self._lock:
            return {**self._stats, **self.http.stats()}
