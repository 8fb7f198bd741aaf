"""A real search engine served over HTTP by a Search-R1-compatible retrieval server (E5 dense or BM25).

Search-R1's `retrieval_server.py` answers `POST /retrieve` with `{"queries": [...], "topk": k,
"return_scores": bool}` and returns one list of passages per query. Pointing training or evaluation at
such a server lets a run use the same Wikipedia index as the published baselines without loading a
multi-gigabyte index (or FAISS) into the training process.

The transport follows the same defensive rules as the served simulator: a timeout per
HTTP request, a bounded number of retries with exponential backoff, and fallback results instead of
exceptions when the server keeps failing — a flaky retriever must cost a few rows' context, never a run.
Only the standard library is used, so the backend adds no dependency.
"""

from __future__ import annotations

import json
import threading
import urllib.parse

from .base import SearchRequest, SearchResult, clean_query, empty_query_result, unavailable_result
from .http_json import JsonPoster


def retrieve_url(url: str) -> str:
    """Accept `http://h:p` (the server's default route `/retrieve` is added) or the full endpoint URL."""
    url = url.strip()
    if not url:
        raise ValueError("RetrievalServerSearch needs a url, e.g. http://127.0.0.1:8000/retrieve")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"retriever url must be http(s)://host:port[/retrieve], not {url!r}")
    if parts.path in ("", "/"):
        return url.rstrip("/") + "/retrieve"
    return url


def _passage_text(item: object) -> str:
    """The text of one returned passage, in either of the server's two shapes.

    With `return_scores` the server wraps each passage as `{"document": {...}, "score": s}`; without it
    the passage dict comes bare. A passage carries `contents` ("title\\ntext", the corpus layout); some
    indexes store `title`/`text` separately instead, which are joined into the same layout.
    """
    if not isinstance(item, dict):
        raise TypeError(f"passage is a {type(item).__name__}, not an object")
    doc = item["document"] if "document" in item else item
    if not isinstance(doc, dict):
        raise TypeError("passage 'document' is not an object")
    contents = doc.get("contents")
    if isinstance(contents, str):
        return contents
    title, text = doc.get("title"), doc.get("text")
    if isinstance(text, str):
        return f"{title}\n{text}" if isinstance(title, str) and title else text
    raise KeyError("passage has neither 'contents' nor 'text'")


class RetrievalServerSearch:
    """Batched top-k retrieval from a Search-R1 retrieval server; implements the SearchBackend protocol."""

    def __init__(
        self,
        url: str,
        *,
        top_k: int = 5,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        batch_size: int = 64,
    ):
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.http = JsonPoster(retrieve_url(url), timeout=timeout, max_retries=max_retries, backoff=backoff)
        self.url = self.http.url
        self.top_k = top_k
        self.batch_size = batch_size
        # search() may be called from several rollout threads; the counters must stay exact.
        self._lock = threading.Lock()
        self._stats = {
            "n_queries": 0,
            "n_empty": 0,
            "n_fallback": 0,
        }

    def _bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _retrieve(self, queries: list[str]) -> list[list[str]] | Exception:
        def parse(raw: bytes) -> list[list[str]]:
            rows = json.loads(raw)["result"]
            if not isinstance(rows, list) or len(rows) != len(queries):
                raise ValueError(f"expected {len(queries)} result rows")
            # A server may return more than asked (or ignore topk): keep the contract of at most top_k.
            return [[_passage_text(item) for item in row][: self.top_k] for row in rows]

        return self.http.post({"queries": queries, "topk": self.top_k, "return_scores": True}, parse)

    def search(self, requests: list[SearchRequest], *, step: int = 0) -> list[SearchResult]:
        """Results in request order, each with its request's row_id; `step` is unused (no curriculum)."""
        queries = [clean_query(r.query) for r in requests]
        results: list[SearchResult | None] = [None] * len(requests)
        todo = [i for i, q in enumerate(queries) if q]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            got = self._retrieve([queries[i] for i in chunk])
            if isinstance(got, Exception):
                error = f"retriever failed: {got}"
                for i in chunk:
                    results[i] = unavailable_result(requests[i].row_id, error)
                self._bump("n_fallback", len(chunk))
                continue
            for i, docs in zip(chunk, got):
                results[i] = SearchResult(row_id=requests[i].row_id, documents=docs)
        for i, r in enumerate(requests):
            if results[i] is None:
                results[i] = empty_query_result(r.row_id)
        self._bump("n_queries", len(todo))
        self._bump("n_empty", len(requests) - len(todo))
        return results  # type: ignore[return-value]

    def stats(self) -> dict:
        with self._lock:
            return {**self._stats, **self.http.stats()}
