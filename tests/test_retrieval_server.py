"""RetrievalServerSearch against a local stand-in for Search-R1's retrieval server, and the attention choice.

The stand-in speaks the server's wire format (POST /retrieve, {"queries", "topk", "return_scores"} ->
{"result": [[{"document": {...}, "score": s}, ...], ...]}) and can be told to fail, so the retry and
fallback paths are exercised over real sockets without the real (multi-GB) index.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from fake_http import FakeJsonServer

from zerosearch.search import (
    EMPTY_QUERY_DOCS,
    UNAVAILABLE_DOCS,
    RetrievalServerSearch,
    SearchBackend,
    SearchRequest,
)


class _FakeRetriever(FakeJsonServer):
    """Search-R1's retrieval server; extra mode "plain" answers bare {"contents"} items instead of scored ones."""

    route = "/retrieve"

    def respond(self, body: dict, mode: str, headers: dict[str, str]) -> bytes:
        return json.dumps(self.answer(body, mode)).encode()

    @staticmethod
    def answer(body: dict, mode: str) -> dict:
        rows = []
        for q in body["queries"]:
            docs = [{"id": f"{q}-{j}", "contents": f"Title {q} {j}\ntext about {q} number {j}"} for j in range(8)]
            if mode == "plain":
                rows.append(docs[: body["topk"]])
            else:
                rows.append([{"document": d, "score": 10.0 - j} for j, d in enumerate(docs[: body["topk"]])])
        return {"result": rows}



@pytest.fixture
def fake() -> Iterator[_FakeRetriever]:
    f = _FakeRetriever()
    yield f
    f.close()


def _reqs(*queries: str) -> list[SearchRequest]:
    return [SearchRequest(row_id=f"r{i}", query=q) for i, q in enumerate(queries)]


def test_batch_request_shape_order_and_top_k(fake):
    s = RetrievalServerSearch(fake.url, top_k=3)
    assert isinstance(s, SearchBackend)
    out = s.search(_reqs("alpha", "  beta   gamma ", "delta"))
    assert len(fake.requests) == 1
    sent = fake.requests[0]
    assert sent["path"] == "/retrieve"
    assert sent["body"] == {"queries": ["alpha", "beta gamma", "delta"], "topk": 3, "return_scores": True}
    assert [r.row_id for r in out] == ["r0", "r1", "r2"]
    for r, q in zip(out, ["alpha", "beta gamma", "delta"]):
        assert not r.fallback and r.error is None and r.noisy is None
        assert r.documents == [f"Title {q} {j}\ntext about {q} number {j}" for j in range(3)]
    st = s.stats()
    assert st["n_queries"] == 3 and st["http_attempts"] == 1 and st["http_failures"] == 0


def test_plain_items_without_scores_and_base_url(fake):
    fake.modes = ["plain"]
    base = fake.url.removesuffix("/retrieve")
    s = RetrievalServerSearch(base, top_k=2)  # the default route is filled in
    out = s.search(_reqs("q"))
    assert fake.requests[0]["path"] == "/retrieve"
    assert out[0].documents == ["Title q 0\ntext about q number 0", "Title q 1\ntext about q number 1"]


def test_batches_are_split(fake):
    s = RetrievalServerSearch(fake.url, top_k=1, batch_size=2)
    out = s.search(_reqs("a", "b", "c", "d", "e"))
    assert [len(r["body"]["queries"]) for r in fake.requests] == [2, 2, 1]
    assert [r.documents[0].split("\n")[0] for r in out] == [f"Title {q} 0" for q in "abcde"]


def test_500_then_success_is_retried(fake):
    fake.modes = ["500", "500", "ok"]
    s = RetrievalServerSearch(fake.url, top_k=2, max_retries=3, backoff=0.01)
    out = s.search(_reqs("x", "y"))
    assert len(fake.requests) == 3
    assert not any(r.fallback for r in out)
    assert out[1].documents[0].startswith("Title y 0")
    st = s.stats()
    assert st["http_attempts"] == 3 and st["http_retries"] == 2 and st["http_failures"] == 0


def test_garbage_falls_back_without_raising(fake):
    fake.modes = ["garbage"]
    s = RetrievalServerSearch(fake.url, max_retries=2, backoff=0.0)
    out = s.search(_reqs("x", "", "y"))
    assert len(fake.requests) == 3  # 1 + max_retries, then give up
    assert [r.row_id for r in out] == ["r0", "r1", "r2"]
    assert out[0].fallback and out[2].fallback and out[0].documents == [UNAVAILABLE_DOCS]
    assert "unparseable" in out[0].error
    assert not out[1].fallback and out[1].documents == [EMPTY_QUERY_DOCS]
    st = s.stats()
    assert st["n_fallback"] == 2 and st["http_failures"] == 1 and st["n_empty"] == 1


def test_hanging_server_times_out_to_fallback(fake):
    fake.modes = ["hang"]
    s = RetrievalServerSearch(fake.url, timeout=0.2, max_retries=1, backoff=0.0)
    t0 = time.monotonic()
    out = s.search(_reqs("slow"))
    assert time.monotonic() - t0 < fake.hang_s * 2
    assert out[0].fallback and out[0].documents == [UNAVAILABLE_DOCS]
    assert s.stats()["http_attempts"] == 2


def test_unreachable_server_falls_back():
    s = RetrievalServerSearch("http://127.0.0.1:9/retrieve", timeout=0.5, max_retries=0)
    out = s.search(_reqs("q"))
    assert out[0].fallback


def test_empty_queries_are_never_sent(fake):
    s = RetrievalServerSearch(fake.url)
    out = s.search(_reqs("", "   "))
    assert fake.requests == []
    assert all(r.documents == [EMPTY_QUERY_DOCS] and not r.fallback for r in out)
    assert s.stats()["n_empty"] == 2 and s.stats()["http_attempts"] == 0


def test_build_search_retriever_backend(fake):
    from zerosearch.build import build_search
    from zerosearch.config import RunConfig

    cfg = RunConfig()
    cfg.search.backend = "retriever"
    with pytest.raises(ValueError, match="retriever_url"):
        build_search(cfg, curriculum=None)
    cfg.search.retriever_url = fake.url
    cfg.search.top_k = 2
    s = build_search(cfg, curriculum=None)
    assert isinstance(s, RetrievalServerSearch) and s.top_k == 2
    assert len(s.search(_reqs("q"))[0].documents) == 2
