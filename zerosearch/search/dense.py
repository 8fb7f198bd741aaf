"""A real (dense) search engine: an E5-style bi-encoder over a local corpus, searched in process.

Search-R1 and ZeroSearch evaluate with an E5 retriever over Wikipedia. For corpora whose passage
embeddings fit on one device this backend gives the same kind of retrieval without running a separate
retrieval server (use RetrievalServerSearch with a FAISS server for the full 21M-passage index).

E5 recipe: texts are prefixed (`"query: "` / `"passage: "`), encoded, mean-pooled over the attention
mask and L2-normalised, so the dot product is the cosine similarity. Passage embeddings are computed
once, in batches, and can be cached in a `.pt` file (written atomically, checked against a fingerprint
of corpus, encoder and settings, rebuilt when stale or unreadable). Models are read from local paths
only (`local_files_only=True`): a run never downloads.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .base import SearchRequest, SearchResult, clean_query, empty_query_result, unavailable_result
from .corpus import load_corpus_jsonl

_CACHE_FORMAT = 1


def load_encoder(path: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) of a local encoder checkpoint (e.g. intfloat/e5-base-v2 on disk); never downloads."""
    from transformers import AutoModel, AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"dense encoder: {p} is not a directory (encoders are read from local paths only)")
    tokenizer = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    model = AutoModel.from_pretrained(str(p), local_files_only=True)
    return model, tokenizer


def _model_fingerprint(model: torch.nn.Module) -> str:
    """Cheap identity of an encoder: its config plus a strided sample of every parameter.

    Hashing every weight of a large encoder would take seconds; a sample of each tensor still tells two
    checkpoints of the same architecture apart.
    """
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    h.update(type(model).__name__.encode())
    if config is not None and hasattr(config, "to_json_string"):
        h.update(config.to_json_string(use_diff=False).encode())
    for name, p in model.named_parameters():
        flat = p.detach().flatten()
        sample = flat[:: max(1, flat.numel() // 64)][:64].to("cpu", torch.float64)
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


class DenseRetrieverSearch:
    """Batched top-k dense retrieval (E5 recipe, exact matmul search); implements the SearchBackend protocol."""

    def __init__(
        self,
        corpus: list[str],
        encoder: str | Path | tuple[Any, Any],
        *,
        top_k: int = 5,
        ids: list[str] | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        max_length: int = 256,
        query_prefix: str = "query: ",
        passage_prefix: str = "passage: ",
        index_cache: str | Path | None = None,
    ) -> None:
        if not corpus:
            raise ValueError("DenseRetrieverSearch needs a non-empty corpus")
        if ids is not None and len(ids) != len(corpus):
            raise ValueError("ids and corpus differ in length")
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if isinstance(encoder, (str, Path)):
            model, tokenizer = load_encoder(encoder)
        else:
            model, tokenizer = encoder
        self.corpus = list(corpus)
        self.ids = list(ids) if ids is not None else [str(i) for i in range(len(corpus))]
        self.top_k = top_k
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        # One encoder, several possible rollout threads: forwards are serialised, counters kept exact.
        self._encode_lock = threading.Lock()
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {"n_queries": 0, "n_empty": 0, "n_fallback": 0, "n_passages": len(corpus)}
        self.index_cache = Path(index_cache) if index_cache else None
        self.passage_embeddings = self._load_or_build_index().to(self.device)

    @classmethod
    def from_jsonl(cls, path: str | Path, encoder: str | Path | tuple[Any, Any], top_k: int = 5,
                   **kwargs: Any) -> DenseRetrieverSearch:
        """Index a Search-R1 style corpus jsonl (the layout BM25Search.from_jsonl reads)."""
        ids, docs = load_corpus_jsonl(path)
        return cls(docs, encoder, top_k=top_k, ids=ids, **kwargs)

    @torch.inference_mode()
    def encode(self, texts: list[str], prefix: str = "") -> torch.Tensor:
        """L2-normalised mean-pooled float32 embeddings `[len(texts), hidden]` (on self.device)."""
        out = []
        with self._encode_lock:
            for start in range(0, len(texts), self.batch_size):
                batch = [prefix + t for t in texts[start : start + self.batch_size]]
                enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="pt")
                enc = {k: v.to(self.device) for k, v in enc.items()}
                hidden = self.model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
                out.append(F.normalize(pooled, dim=-1))
        return torch.cat(out, dim=0)

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        settings = {"format": _CACHE_FORMAT, "passage_prefix": self.passage_prefix, "max_length": self.max_length}
        h.update(json.dumps(settings, sort_keys=True).encode())
        h.update(_model_fingerprint(self.model).encode())
        for doc in self.corpus:
            h.update(doc.encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()

    def _load_or_build_index(self) -> torch.Tensor:
        """Passage embeddings from the cache when it matches this corpus/encoder, else encoded (and cached)."""
        fingerprint = self._fingerprint() if self.index_cache else ""
        if self.index_cache is not None and self.index_cache.exists():
            try:
                saved = torch.load(self.index_cache, map_location="cpu", weights_only=True)
                emb = saved["embeddings"]
                if (saved.get("fingerprint") == fingerprint and isinstance(emb, torch.Tensor) and emb.ndim == 2
                        and emb.shape[0] == len(self.corpus) and torch.isfinite(emb).all()):
                    self._stats["index"] = "cache"
                    return emb.float()
                self._stats["index_cache_rebuilt"] = "stale"
            except Exception as e:  # unreadable or truncated file: rebuild it, a cache must not stop a run
                self._stats["index_cache_rebuilt"] = f"unreadable ({type(e).__name__})"
        emb = self.encode(self.corpus, self.passage_prefix).cpu()
        self._stats["index"] = "built"
        if self.index_cache is not None:
            self._save_cache(emb, fingerprint)
        return emb

    def _save_cache(self, emb: torch.Tensor, fingerprint: str) -> None:
        """Temp file in the same directory + os.replace: a crash mid-write never leaves a half cache."""
        path = self.index_cache
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"embeddings": emb.contiguous(), "fingerprint": fingerprint}, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def retrieve(self, queries: list[str], k: int | None = None) -> list[list[int]]:
        """Indices into `corpus` of the top-k passages of each query, best first."""
        if not queries:
            return []
        k = min(k or self.top_k, len(self.corpus))
        q = self.encode(queries, self.query_prefix)
        scores = q @ self.passage_embeddings.T
        return scores.topk(k, dim=1).indices.cpu().tolist()

    def search(self, requests: list[SearchRequest], *, step: int = 0) -> list[SearchResult]:
        """Results in request order, each with its request's row_id; `step` is unused (no curriculum)."""
        queries = [clean_query(r.query) for r in requests]
        todo = [i for i, q in enumerate(queries) if q]
        results: list[SearchResult] = [empty_query_result(r.row_id) for r in requests]
        try:
            hits = self.retrieve([queries[i] for i in todo])
        except Exception as e:  # e.g. device out of memory: a few rows lose context, the run goes on
            error = f"dense retriever failed: {type(e).__name__}: {e}"
            for i in todo:
                results[i] = unavailable_result(requests[i].row_id, error)
            self._bump("n_fallback", len(todo))
        else:
            for i, row in zip(todo, hits):
                results[i] = SearchResult(row_id=requests[i].row_id, documents=[self.corpus[j] for j in row])
        self._bump("n_queries", len(todo))
        self._bump("n_empty", len(requests) - len(todo))
        return results

    def _bump(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def stats(self) -> dict:
        with self._lock:
            return dict(self._stats)
