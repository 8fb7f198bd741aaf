"""A real (lexical) search engine: BM25 over a passage list, via the `bm25s` library.

In the toy world this plays the role of Google: it serves trajectory collection for the simulator's
SFT data and the final evaluation with real search.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import bm25s
from bm25s.tokenization import Tokenizer

from .base import SearchRequest, SearchResult, clean_query, empty_query_result
from .corpus import load_corpus_jsonl

# \w+ keeps one-character tokens (digits, initials) that bm25s' default pattern would drop.
_TOKEN_PATTERN = r"(?u)\b\w+\b"


class BM25Search:
    """Batched BM25 top-k retrieval; implements the SearchBackend protocol."""

    def __init__(
        self,
        corpus: list[str],
        top_k: int = 5,
        *,
        ids: list[str] | None = None,
        stopwords: str | list[str] | None = "en",
    ):
        if not corpus:
            raise ValueError("BM25Search needs a non-empty corpus")
        if ids is not None and len(ids) != len(corpus):
            raise ValueError("ids and corpus differ in length")
        self.corpus = list(corpus)
        self.ids = list(ids) if ids is not None else [str(i) for i in range(len(corpus))]
        self.top_k = top_k
        self._tokenizer = Tokenizer(lower=True, splitter=_TOKEN_PATTERN, stopwords=stopwords, stemmer=None)
        corpus_ids = self._tokenizer.tokenize(self.corpus, update_vocab=True, return_as="ids", show_progress=False)
        self._index = bm25s.BM25()
        self._index.index(corpus_ids, show_progress=False)
        self._n_queries = 0
        self._n_empty = 0

    @classmethod
    def from_jsonl(cls, path: str | Path, top_k: int = 5, **kwargs) -> BM25Search:
        """Load a Search-R1 style corpus: one `{"id": ..., "contents": ...}` object per line."""
        ids, docs = load_corpus_jsonl(path)
        return cls(docs, top_k=top_k, ids=ids, **kwargs)

    def retrieve(self, queries: Iterable[str], k: int | None = None) -> list[list[int]]:
        """Indices into `corpus` of the top-k passages of each query, best first."""
        queries = list(queries)
        if not queries:
            return []
        k = min(k or self.top_k, len(self.corpus))
        q_ids = self._tokenizer.tokenize(queries, update_vocab=False, return_as="ids", show_progress=False)
        indices, _ = self._index.retrieve(q_ids, k=k, show_progress=False, n_threads=1)
        return [[int(i) for i in row] for row in indices]

    def search(self, requests: list[SearchRequest], *, step: int = 0) -> list[SearchResult]:
        queries = [clean_query(r.query) for r in requests]
        todo = [i for i, q in enumerate(queries) if q]
        results: list[SearchResult | None] = [None] * len(requests)
        for i, hits in zip(todo, self.retrieve([queries[i] for i in todo])):
            results[i] = SearchResult(row_id=requests[i].row_id, documents=[self.corpus[j] for j in hits])
        for i, r in enumerate(requests):
            if results[i] is None:
                results[i] = empty_query_result(r.row_id)
        self._n_queries += len(todo)
        self._n_empty += len(requests) - len(todo)
        return results  # type: ignore[return-value]

    def stats(self) -> dict:
        return {"n_queries": self._n_queries, "n_empty": self._n_empty}
