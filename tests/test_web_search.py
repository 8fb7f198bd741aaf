"""WebSearch against a local stand-in for a Serper-shaped Google search API.

The stand-in speaks the wire format (POST {"q", "num"} with an X-API-KEY header -> {"organic": [{"title",
"snippet", "link"}, ...]}), delays each answer by an amount chosen per query (so concurrent answers come
back out of order) and can be told to fail, so the concurrency, retry, fallback and key-hygiene paths run
over real sockets without a paid key.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from fake_http import FakeJsonServer

from zerosearch.search import (
    EMPTY_QUERY_DOCS,
    UNAVAILABLE_DOCS,
    SearchBackend,
    SearchRequest,
    WebSearch,
)

KEY_ENV = "ZS_TEST_WEB_KEY"
KEY = "sk-test-0123456789abcdef"


class _FakeSerper(FakeJsonServer):
    """A Serper-shaped API. Extra modes: "echo" (200 with a non-JSON body quoting the received key, as a
    misbehaving proxy might) and "noresults" (an empty organic list)."""

    route = "/search"

    def respond(self, body: dict, mode: str, headers: dict[str, str]) -> bytes:
        if mode == "echo":
            return f"<html>bad gateway for key {headers['x-api-key']}</html>".encode()
        if mode == "noresults":
            return json.dumps({"searchParameters": body, "organic": []}).encode()
        return json.dumps(self.answer(body["q"])).encode()

    @staticmethod
    def answer(q: str) -> dict:
        """Eight hits: #1 has no snippet, #2 no title, #3 a blank snippet (a real API returns such items)."""
        organic = []
        for j in range(8):
            item = {"title": f"T {q} {j}", "link": f"https://example.org/{j}", "snippet": f"snippet {j} about {q}",
                    "position": j + 1}
            if j == 1:
                del item["snippet"]
            if j == 2:
                del item["title"]
            if j == 3:
                item["snippet"] = "   "
            organic.append(item)
        return {"searchParameters": {"q": q}, "organic": organic, "peopleAlsoAsk": []}



@pytest.fixture
def fake() -> Iterator[_FakeSerper]:
    f = _FakeSerper()
    yield f
    f.close()


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY_ENV


def _reqs(*queries: str) -> list[SearchRequest]:
    return [SearchRequest(row_id=f"r{i}", query=q) for i, q in enumerate(queries)]


def _expected(q: str, k: int) -> list[str]:
    """Written out by hand from the fake's answer: hits 1 and 3 are skipped, hit 2 has no title."""
    docs = [f"T {q} 0\nsnippet 0 about {q}", f"snippet 2 about {q}"] + [f"T {q} {j}\nsnippet {j} about {q}"
                                                                        for j in range(4, 8)]
    return docs[:k]


def test_request_shape_key_and_documents(fake, key_env):
    s = WebSearch(fake.url, api_key_env=key_env, top_k=3)
    assert isinstance(s, SearchBackend)
    out = s.search(_reqs("  alpha \n beta  "))
    assert len(fake.requests) == 1
    sent = fake.requests[0]
    assert sent["path"] == "/search"
    assert sent["body"] == {"q": "alpha beta", "num": 3}
    assert sent["headers"]["x-api-key"] == KEY
    assert sent["headers"]["content-type"] == "application/json"
    assert out[0].row_id == "r0" and not out[0].fallback and out[0].error is None and out[0].noisy is None
    assert out[0].documents == ["T alpha beta 0\nsnippet 0 about alpha beta", "snippet 2 about alpha beta",
                                "T alpha beta 4\nsnippet 4 about alpha beta"]
    st = s.stats()
    assert st["n_queries"] == 1 and st["n_fallback"] == 0 and st["http_attempts"] == 1


@pytest.mark.parametrize("k", [1, 2, 6, 10])
def test_top_k_cut(fake, key_env, k):
    out = WebSearch(fake.url, api_key_env=key_env, top_k=k).search(_reqs("q"))
    assert out[0].documents == _expected("q", k)
    assert len(out[0].documents) == min(k, 6)  # 8 hits, 2 without a usable snippet


def test_order_and_row_ids_under_concurrency(fake, key_env):
    queries = [f"query {i}" for i in range(12)]
    # Earlier queries answer later, so completion order is roughly the reverse of request order.
    fake.delays = {q: 0.02 * (len(queries) - i) for i, q in enumerate(queries)}
    s = WebSearch(fake.url, api_key_env=key_env, top_k=2, concurrency=4)
    mixed = queries[:5] + ["   "] + queries[5:]
    reqs = [SearchRequest(row_id=1000 + i, query=q) for i, q in enumerate(mixed)]
    out = s.search(reqs)
    assert [r.row_id for r in out] == [1000 + i for i in range(len(mixed))]
    for r, q in zip(out, mixed):
        if q.strip():
            assert r.documents == _expected(q, 2), r.row_id
        else:
            assert r.documents == [EMPTY_QUERY_DOCS]
    assert sorted(req["body"]["q"] for req in fake.requests) == sorted(queries)
    assert 2 <= fake.max_inflight <= 4  # really concurrent, and bounded
    st = s.stats()
    assert st["n_queries"] == 12 and st["n_empty"] == 1 and st["http_attempts"] == 12


def test_concurrent_search_calls_keep_counters_exact(fake, key_env):
    s = WebSearch(fake.url, api_key_env=key_env, top_k=1, concurrency=2)
    outs: dict[int, list] = {}

    def worker(t: int) -> None:
        outs[t] = s.search([SearchRequest(row_id=(t, i), query=f"t{t} q{i}") for i in range(5)])

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t in range(4):
        assert [r.row_id for r in outs[t]] == [(t, i) for i in range(5)]
        assert [r.documents for r in outs[t]] == [_expected(f"t{t} q{i}", 1) for i in range(5)]
    st = s.stats()
    assert st["n_queries"] == 20 and st["http_attempts"] == 20


def test_500_then_success_is_retried(fake, key_env):
    fake.modes = ["500", "500", "ok"]
    s = WebSearch(fake.url, api_key_env=key_env, top_k=2, max_retries=3, backoff=0.01)
    out = s.search(_reqs("x"))
    assert len(fake.requests) == 3
    assert not out[0].fallback and out[0].documents == _expected("x", 2)
    st = s.stats()
    assert st["http_attempts"] == 3 and st["http_retries"] == 2 and st["http_failures"] == 0


def test_401_is_not_retried_and_falls_back(fake, key_env):
    fake.modes = ["401"]
    s = WebSearch(fake.url, api_key_env=key_env, max_retries=3, backoff=0.01)
    out = s.search(_reqs("x", "", "y"))
    assert len(fake.requests) == 2  # one attempt per query, no retries
    assert [r.row_id for r in out] == ["r0", "r1", "r2"]
    for r in (out[0], out[2]):
        assert r.fallback and r.documents == [UNAVAILABLE_DOCS] and "401" in r.error
    assert not out[1].fallback and out[1].documents == [EMPTY_QUERY_DOCS]
    st = s.stats()
    assert st["n_fallback"] == 2 and st["http_retries"] == 0 and st["http_failures"] == 2 and st["n_empty"] == 1


def test_hanging_server_times_out_to_fallback(fake, key_env):
    fake.modes = ["hang"]
    s = WebSearch(fake.url, api_key_env=key_env, timeout=0.2, max_retries=1, backoff=0.0)
    t0 = time.monotonic()
    out = s.search(_reqs("slow"))
    assert time.monotonic() - t0 < fake.hang_s * 2
    assert out[0].fallback and out[0].documents == [UNAVAILABLE_DOCS]
    assert s.stats()["http_attempts"] == 2 and s.stats()["n_fallback"] == 1


def test_wrong_shape_falls_back_and_no_results_is_empty(fake, key_env):
    fake.modes = ["garbage", "noresults"]
    s = WebSearch(fake.url, api_key_env=key_env, max_retries=0)
    bad = s.search(_reqs("x"))[0]
    assert bad.fallback and "unparseable" in bad.error
    none = s.search(_reqs("x"))[0]
    assert not none.fallback and none.documents == []
    st = s.stats()
    assert st["n_fallback"] == 1 and st["n_no_results"] == 1


def test_empty_queries_are_never_sent(fake, key_env):
    s = WebSearch(fake.url, api_key_env=key_env)
    out = s.search(_reqs("", "   ", "\n\t"))
    assert fake.requests == []
    assert all(r.documents == [EMPTY_QUERY_DOCS] and not r.fallback for r in out)
    assert [r.row_id for r in out] == ["r0", "r1", "r2"]
    assert s.stats()["n_empty"] == 3 and s.stats()["http_attempts"] == 0


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_key_raises_naming_the_variable(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("ZS_SOME_OTHER_KEY", raising=False)
    else:
        monkeypatch.setenv("ZS_SOME_OTHER_KEY", value)
    with pytest.raises(ValueError, match="ZS_SOME_OTHER_KEY"):
        WebSearch("http://127.0.0.1:9/search", api_key_env="ZS_SOME_OTHER_KEY")


def test_bad_url_is_rejected(key_env):
    with pytest.raises(ValueError, match="url"):
        WebSearch("google.serper.dev/search", api_key_env=key_env)


def test_key_never_in_errors_stats_or_repr(fake, key_env):
    fake.modes = ["echo"]  # the body quotes the key back; the error message quotes the body
    s = WebSearch(fake.url, api_key_env=key_env, max_retries=0)
    out = s.search(_reqs("x"))
    assert fake.requests[0]["headers"]["x-api-key"] == KEY
    assert out[0].fallback and "<redacted>" in out[0].error
    assert KEY not in out[0].error
    assert KEY not in repr(s) and KEY not in str(s) and KEY_ENV in repr(s)
    assert KEY not in json.dumps(s.stats())
    fake.modes = ["401"]
    assert KEY not in s.search(_reqs("y"))[0].error


def test_build_search_web_backend(fake, monkeypatch):
    from zerosearch.build import build_search
    from zerosearch.config import RunConfig

    cfg = RunConfig()
    assert cfg.search.web_url == "https://google.serper.dev/search"
    assert cfg.search.web_api_key_env == "SERPER_API_KEY"
    cfg.search.backend = "web"
    cfg.search.web_url = fake.url
    cfg.search.web_api_key_env = "ZS_BUILD_WEB_KEY"
    cfg.search.top_k = 2
    cfg.search.concurrency = 3
    monkeypatch.delenv("ZS_BUILD_WEB_KEY", raising=False)
    with pytest.raises(ValueError, match="ZS_BUILD_WEB_KEY"):
        build_search(cfg, curriculum=None)
    monkeypatch.setenv("ZS_BUILD_WEB_KEY", "k-build")
    s = build_search(cfg, curriculum=None)
    assert isinstance(s, WebSearch) and s.top_k == 2 and s.concurrency == 3
    assert s.search(_reqs("q"))[0].documents == _expected("q", 2)
    assert fake.requests[0]["headers"]["x-api-key"] == "k-build"
