"""DenseRetrieverSearch with a tiny random BERT and a local WordPiece tokenizer, against a float64 reference.

The reference is computed here independently: each prefixed passage and query encoded on its own (no
padding, no batching) by a float64 copy of the encoder, mean-pooled, normalised, scored by cosine and
sorted. The backend's top-k must pick passages whose reference scores are the reference's top-k scores.
The index cache is checked by counting encoder forwards.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from tokenizers import BertWordPieceTokenizer
from transformers import BertConfig, BertModel, BertTokenizerFast

from zerosearch.search import (
    EMPTY_QUERY_DOCS,
    UNAVAILABLE_DOCS,
    BM25Search,
    DenseRetrieverSearch,
    SearchBackend,
    SearchRequest,
)

WORDS = ("red blue green fox dog cat river mountain city king queen river paris london music film "
         "born died capital author painter war peace old new north south gold silver").split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _corpus(seed: int = 0, n: int = 23) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        docs.append(f"{rng.choice(WORDS)} {rng.choice(WORDS)}\n{body}")
    return docs


QUERIES = ["red fox", "capital of the north", "old king born", "gold silver music film", "paris"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("e5")
    vocab = SPECIALS + [":", "query", "passage", "of", "the"] + sorted(set(WORDS))
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    wp = BertWordPieceTokenizer(str(d / "vocab.txt"), lowercase=True)
    wp.save(str(d / "wp.json"))
    tok = BertTokenizerFast(tokenizer_file=str(d / "wp.json"), unk_token="[UNK]", pad_token="[PAD]",
                            cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=128))
    out = d / "model"
    tok.save_pretrained(out)
    model.save_pretrained(out)
    return out


def _load_pair(path: Path) -> tuple[BertModel, BertTokenizerFast]:
    return BertModel.from_pretrained(str(path)).eval(), BertTokenizerFast.from_pretrained(str(path))


def _reference_scores(path: Path, corpus: list[str], queries: list[str]) -> torch.Tensor:
    """Cosine scores [queries, passages] in float64, every text encoded alone (no padding, no batch)."""
    model, tok = _load_pair(path)
    model = model.double()

    def emb(text: str) -> torch.Tensor:
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0]
        assert enc["input_ids"].shape[1] < 128  # never truncated
        v = h.mean(dim=0)
        return v / v.norm()

    p = torch.stack([emb("passage: " + doc) for doc in corpus])
    q = torch.stack([emb("query: " + query) for query in queries])
    return q @ p.T


def _assert_matches_reference(docs: list[list[str]], corpus: list[str], ref: torch.Tensor, k: int) -> None:
    for qi, got in enumerate(docs):
        assert len(got) == k
        idx = [corpus.index(d) for d in got]
        want = torch.sort(ref[qi], descending=True).values[:k]
        torch.testing.assert_close(ref[qi, idx], want, atol=1e-5, rtol=0)


def _count_forwards(model: torch.nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _reqs(*queries: str) -> list[SearchRequest]:
    return [SearchRequest(row_id=f"r{i}", query=q) for i, q in enumerate(queries)]


def test_top_k_matches_float64_reference(encoder_dir):
    corpus = _corpus()
    ref = _reference_scores(encoder_dir, corpus, QUERIES)
    assert ref.max() < 0.9999  # the passages are told apart: the check below is not vacuous
    s = DenseRetrieverSearch(corpus, encoder_dir, top_k=4, batch_size=5)  # batches with padding
    assert isinstance(s, SearchBackend)
    out = s.search(_reqs(*QUERIES))
    assert [r.row_id for r in out] == [f"r{i}" for i in range(len(QUERIES))]
    assert not any(r.fallback for r in out)
    _assert_matches_reference([r.documents for r in out], corpus, ref, 4)
    # The ranking is not trivially the same for every query.
    assert len({tuple(r.documents) for r in out}) > 1
    st = s.stats()
    assert st["n_queries"] == len(QUERIES) and st["n_passages"] == len(corpus) and st["index"] == "built"


def test_prefixes_are_applied(encoder_dir):
    """Without the E5 prefixes the scores differ, so the backend's prefixes really reach the encoder."""
    corpus = _corpus()
    s = DenseRetrieverSearch(corpus, encoder_dir, query_prefix="", passage_prefix="")
    emb = s.encode(corpus[:3]).double()
    model, tok = _load_pair(encoder_dir)
    with torch.no_grad():
        h = model.double()(**tok(corpus[0], return_tensors="pt")).last_hidden_state[0].mean(0)
    torch.testing.assert_close(emb[0], h / h.norm(), atol=1e-5, rtol=0)
    prefixed = DenseRetrieverSearch(corpus, encoder_dir).passage_embeddings
    assert not torch.allclose(prefixed[0], s.passage_embeddings[0], atol=1e-3)


def test_empty_queries_and_failure_fallback(encoder_dir):
    model, tok = _load_pair(encoder_dir)
    calls = _count_forwards(model)
    s = DenseRetrieverSearch(_corpus(), (model, tok), top_k=2)
    before = calls[0]
    out = s.search(_reqs("", "   "))
    assert calls[0] == before  # empty queries never reach the encoder
    assert all(r.documents == [EMPTY_QUERY_DOCS] and not r.fallback for r in out)

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    s.encode = broken  # type: ignore[method-assign]
    out = s.search(_reqs("red fox", "", "paris"))
    assert [r.row_id for r in out] == ["r0", "r1", "r2"]
    assert out[0].fallback and out[2].fallback and out[0].documents == [UNAVAILABLE_DOCS]
    assert "out of memory" in out[0].error
    assert out[1].documents == [EMPTY_QUERY_DOCS] and not out[1].fallback
    st = s.stats()
    assert st["n_fallback"] == 2 and st["n_empty"] == 3 and st["n_queries"] == 2


def test_index_cache_is_reused_and_rebuilt_when_stale(encoder_dir, tmp_path):
    corpus = _corpus()
    cache = tmp_path / "idx" / "passages.pt"
    model, tok = _load_pair(encoder_dir)
    calls = _count_forwards(model)

    s1 = DenseRetrieverSearch(corpus, (model, tok), top_k=3, batch_size=4, index_cache=cache)
    assert calls[0] == 6  # ceil(23 / 4) passage batches
    assert cache.exists() and s1.stats()["index"] == "built"
    assert [p.name for p in cache.parent.iterdir()] == ["passages.pt"]  # no temp file left behind

    s2 = DenseRetrieverSearch(corpus, (model, tok), top_k=3, batch_size=4, index_cache=cache)
    assert calls[0] == 6  # loaded, not encoded
    assert s2.stats()["index"] == "cache"
    torch.testing.assert_close(s2.passage_embeddings, s1.passage_embeddings, atol=0, rtol=0)
    out = s2.search(_reqs(*QUERIES))
    assert calls[0] == 8  # ceil(5 / 4) query batches
    _assert_matches_reference([r.documents for r in out], corpus, _reference_scores(encoder_dir, corpus, QUERIES), 3)

    # A different corpus with the same cache path: the cache is stale, rebuilt and overwritten.
    corpus2 = _corpus(seed=1)
    s3 = DenseRetrieverSearch(corpus2, (model, tok), top_k=3, batch_size=4, index_cache=cache)
    assert calls[0] == 14 and s3.stats()["index"] == "built" and s3.stats()["index_cache_rebuilt"] == "stale"
    ref2 = _reference_scores(encoder_dir, corpus2, QUERIES)
    _assert_matches_reference([r.documents for r in s3.search(_reqs(*QUERIES))], corpus2, ref2, 3)
    assert DenseRetrieverSearch(corpus2, (model, tok), index_cache=cache).stats()["index"] == "cache"

    # Other encoder weights (same architecture, same corpus): stale too.
    other, _ = _load_pair(encoder_dir)
    with torch.no_grad():
        other.encoder.layer[0].attention.self.query.weight.mul_(1.5)
    other_calls = _count_forwards(other)
    s4 = DenseRetrieverSearch(corpus2, (other, tok), batch_size=4, index_cache=cache)
    assert other_calls[0] == 6 and s4.stats()["index_cache_rebuilt"] == "stale"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_rows"])
def test_corrupted_cache_is_rebuilt(encoder_dir, tmp_path, damage):
    corpus = _corpus()
    cache = tmp_path / "passages.pt"
    model, tok = _load_pair(encoder_dir)
    calls = _count_forwards(model)
    good = DenseRetrieverSearch(corpus, (model, tok), batch_size=8, index_cache=cache).passage_embeddings
    built = calls[0]
    if damage == "garbage":
        cache.write_bytes(b"this is not a torch file")
    elif damage == "truncated":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    else:  # right fingerprint, wrong number of rows (e.g. written by a buggy tool)
        saved = torch.load(cache, weights_only=True)
        torch.save({"embeddings": saved["embeddings"][:-1], "fingerprint": saved["fingerprint"]}, cache)
    s = DenseRetrieverSearch(corpus, (model, tok), batch_size=8, index_cache=cache)
    assert calls[0] == 2 * built
    assert s.stats()["index"] == "built" and "index_cache_rebuilt" in s.stats()
    torch.testing.assert_close(s.passage_embeddings, good)
    again = DenseRetrieverSearch(corpus, (model, tok), batch_size=8, index_cache=cache)
    assert calls[0] == 2 * built and again.stats()["index"] == "cache"  # the rebuilt cache was rewritten


def test_from_jsonl_reads_the_bm25_layout(encoder_dir, tmp_path):
    path = tmp_path / "corpus.jsonl"
    rows = [{"id": "a", "contents": "red fox\nthe red fox"}, {"contents": "blue dog\nold blue dog"},
            {"id": 7, "contents": "paris\ncapital north"}]
    path.write_text(json.dumps(rows[0]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[1:]) + "\n")
    s = DenseRetrieverSearch.from_jsonl(path, encoder_dir, top_k=2)
    bm = BM25Search.from_jsonl(path, top_k=2)
    assert s.corpus == bm.corpus == [r["contents"] for r in rows]
    assert s.ids == bm.ids
    assert s.top_k == 2


def test_missing_encoder_dir_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="local paths only"):
        DenseRetrieverSearch(["x"], tmp_path / "nope")


def test_build_search_dense_backend(encoder_dir, tmp_path):
    from zerosearch.build import build_search
    from zerosearch.config import RunConfig

    corpus = _corpus()
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "contents": c}) + "\n" for i, c in enumerate(corpus)))
    cfg = RunConfig()
    cfg.search.backend = "dense"
    cfg.data.corpus_path = str(path)
    cfg.search.top_k = 3
    with pytest.raises(ValueError, match="dense_encoder_path"):
        build_search(cfg, curriculum=None)
    cfg.search.dense_encoder_path = str(encoder_dir)
    cfg.search.dense_index_cache = str(tmp_path / "dense.pt")
    s = build_search(cfg, curriculum=None)
    assert isinstance(s, DenseRetrieverSearch) and s.top_k == 3 and s.ids[0] == "d0"
    assert (tmp_path / "dense.pt").exists()
    out = s.search(_reqs(*QUERIES))
    _assert_matches_reference([r.documents for r in out], corpus, _reference_scores(encoder_dir, corpus, QUERIES), 3)
    assert build_search(cfg, curriculum=None).stats()["index"] == "cache"
