"""Search backends: document parsing, the simulator's per-row prompts and cache, BM25, the HTTP
client's failure handling, and HF generation."""

import json
import random
import time

import pytest
import torch
from fake_http import FakeJsonServer
from scripted import FnCompleter

from zerosearch.search import (
    EMPTY_QUERY_DOCS,
    UNAVAILABLE_DOCS,
    BM25Search,
    NoiseCurriculum,
    OpenAISimulator,
    SearchBackend,
    SearchRequest,
    SimulatorSearch,
    clean_query,
    parse_documents,
)
from zerosearch.search.documents import format_documents

# --------------------------------------------------------------------------- parse / clean


def test_parse_documents():
    assert parse_documents(format_documents(["alpha one", "beta two", "gamma"])) == ["alpha one", "beta two", "gamma"]
    text = "Sure! Here are documents.\nDoc 1: first doc\n\nDoc 2:   second\n  spans lines\nDoc 3:\nDoc 4: fourth"
    assert parse_documents(text) == ["first doc", "second spans lines", "fourth"]
    assert parse_documents("Doc 1: a Doc 2: b Doc 3: c", k=2) == ["a", "b"]
    assert parse_documents("doc: x\nDocument 7. y\nDOC 2 - z") == ["x", "y", "z"]
    assert parse_documents("just some prose without markers ") == ["just some prose without markers"]
    assert parse_documents("   \n ") == []
    assert parse_documents("") == []
    assert parse_documents("Doc 1:   Doc 2: ") == []


def test_clean_query():
    assert clean_query("  who   wrote\n hamlet ") == "who wrote hamlet"
    assert clean_query("   ") == ""
    assert clean_query(None) == ""
    assert clean_query("x" * 1000, max_chars=10) == "x" * 10


# --------------------------------------------------------------------------- simulator


class EchoGenerate(FnCompleter):
    """Fake LLM: the 'document' is the prompt itself, so tests can see what each row was asked."""

    def __init__(self):
        super().__init__(self.echo)
        self.calls: list[list[str]] = []

    def echo(self, prompts):
        self.calls.append(list(prompts))
        return [f"Doc 1: {p}" for p in prompts]


def _requests(n, seed=0):
    reqs = [
        SearchRequest(
            row_id=f"row{i}",
            query=f"query about topic{i}",
            question=f"Question{i}?",
            golden_answers=[f"Answer{i}x", f"Alias{i}y"],
        )
        for i in range(n)
    ]
    random.Random(seed).shuffle(reqs)
    return reqs


def test_simulator_uses_each_rows_own_context():
    gen = EchoGenerate()
    sim = SimulatorSearch(gen, NoiseCurriculum(10, 0.5, 0.5), seed=1)
    assert isinstance(sim, SearchBackend)
    reqs = _requests(40)
    results = sim.search(reqs, step=3)
    assert len(gen.calls) == 1 and len(gen.calls[0]) == 40  # one batched call
    assert [r.row_id for r in results] == [q.row_id for q in reqs]
    kinds = set()
    for req, res in zip(reqs, results):
        i = req.row_id[3:]
        doc = res.documents[0]
        assert f"Question{i}?" in doc and f"topic{i} " in doc
        others = [j for j in range(40) if str(j) != i]
        assert not any(f"Question{j}?" in doc for j in others)
        kinds.add(res.noisy)
        if res.noisy:
            assert "Noisy Output" in doc and f"Answer{i}x" not in doc
        else:
            assert "Useful Output" in doc and f"Answer{i}x, Alias{i}y" in doc
        assert not res.fallback
    assert kinds == {True, False}
    st = sim.stats()
    assert st["n_queries"] == 40 and st["n_noisy"] == sum(r.noisy for r in results)
    assert st["leakage"] == 0.0


def test_simulator_answer_in_noisy_switch_measures_leakage():
    gen = EchoGenerate()
    sim = SimulatorSearch(gen, NoiseCurriculum(10, 1.0, 1.0), answer_in_noisy=True)
    results = sim.search(_requests(5))
    assert all(r.noisy for r in results)
    assert all(any(f"Answer{r.row_id[3:]}x" in d for d in r.documents) for r in results)
    assert sim.stats()["leakage"] == 1.0


def test_simulator_cache_and_empty_queries():
    gen = EchoGenerate()
    sim = SimulatorSearch(gen, None)
    reqs = _requests(3) + [SearchRequest(row_id="empty", query="   \n", question="Q?", golden_answers=["a"])]
    first = sim.search(reqs)
    assert first[-1].documents == [EMPTY_QUERY_DOCS] and not first[-1].fallback
    # the empty query never reached the LLM
    assert all(p.split("Query: ")[1].split(" Useful Output")[0].strip() for p in gen.calls[0])
    assert not any('"Q?"' in p for p in gen.calls[0])
    assert len(gen.calls[0]) == 3
    second = sim.search(list(reversed(reqs[:3])))
    assert len(gen.calls) == 1  # all hits
    assert [r.documents for r in second] == [r.documents for r in reversed(first[:3])]
    # a duplicate inside one batch is generated once
    dup = SearchRequest(row_id="d", query="new query", question="Qd", golden_answers=["z"])
    dup2 = SearchRequest(row_id="d2", query="new   query", question="Qd", golden_answers=["z"])
    out = sim.search([dup, dup2])
    assert len(gen.calls[-1]) == 1 and out[0].documents == out[1].documents
    assert [r.row_id for r in out] == ["d", "d2"]
    st = sim.stats()
    assert (st["cache_misses"], st["cache_hits"], st["n_empty"]) == (4, 4, 1)
    # cache off: every call generates
    sim0 = SimulatorSearch(gen, None, cache_size=0)
    sim0.search(reqs[:2])
    sim0.search(reqs[:2])
    assert sim0.stats()["cache_hits"] == 0 and sim0.stats()["cache_misses"] == 4


def test_simulator_failed_items_fall_back_and_are_not_cached():
    calls = []

    def gen(prompts):
        calls.append(len(prompts))
        return [RuntimeError("boom") if "topic1 " in p else ("" if "topic2 " in p else "Doc 1: ok") for p in prompts]

    sim = SimulatorSearch(FnCompleter(gen), None)
    reqs = [SearchRequest(row_id=i, query=f"topic{i} q", question="q", golden_answers=["a"]) for i in range(3)]
    res = sim.search(reqs)
    assert [r.fallback for r in res] == [False, True, True]
    assert res[1].documents == [UNAVAILABLE_DOCS] and "boom" in res[1].error
    sim.search(reqs)
    assert calls == [3, 2]  # the failures are retried next time, the success is cached
    assert sim.stats()["fallbacks"] == 4


# --------------------------------------------------------------------------- BM25


def test_bm25_finds_passage(tmp_path):
    corpus = [
        "Paris is the capital and largest city of France.",
        "The Nile is a major river flowing north through Africa.",
        "Mount Everest is the highest mountain above sea level.",
        "Python is a programming language created by Guido van Rossum.",
        "The Great Wall of China stretches across northern China.",
    ]
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"d{i}", "contents": c}) for i, c in enumerate(corpus)) + "\n")
    bm = BM25Search.from_jsonl(path, top_k=2)
    assert bm.ids[3] == "d3"
    reqs = [
        SearchRequest(row_id=7, query="highest mountain"),
        SearchRequest(row_id=8, query=""),
        SearchRequest(row_id=9, query="who created the Python language"),
        SearchRequest(row_id=10, query="capital of France"),
    ]
    res = bm.search(reqs)
    assert [r.row_id for r in res] == [7, 8, 9, 10]
    assert res[0].documents[0] == corpus[2] and len(res[0].documents) == 2
    assert res[1].documents == [EMPTY_QUERY_DOCS]
    assert res[2].documents[0] == corpus[3]
    assert res[3].documents[0] == corpus[0]
    assert len(BM25Search(corpus[:1], top_k=5).search([SearchRequest(0, "paris")])[0].documents) == 1


# --------------------------------------------------------------------------- OpenAI-compatible client


class _FakeCompletions(FakeJsonServer):
    """An OpenAI-compatible /v1/completions server that writes two documents about the prompt's query."""

    route = "/v1"

    def respond(self, body: dict, mode: str, headers: dict[str, str]) -> bytes:
        def docs(prompt: str) -> str:
            query = prompt.split("Query: ")[1].split(" Useful Output")[0]
            return f" Doc 1: about {query}\nDoc 2: more on {query}"

        if isinstance(body["prompt"], str):
            return json.dumps({"choices": [{"text": docs(body["prompt"])}]}).encode()
        # A list: one choice per prompt, matched by "index" (sent in reverse to show order is not assumed).
        choices = [{"index": i, "text": docs(p), "finish_reason": "stop"} for i, p in enumerate(body["prompt"])]
        k = len(choices)
        return json.dumps({"choices": choices[::-1], "usage": {"prompt_tokens": 10 * k, "completion_tokens": 7 * k,
                                                               "total_tokens": 17 * k}}).encode()


@pytest.fixture
def server():
    s = _FakeCompletions()
    yield s
    s.close()


def _client(server, **kw):
    kw.setdefault("timeout", 2.0)
    kw.setdefault("backoff", 0.01)
    kw.setdefault("max_retries", 2)
    return OpenAISimulator(server.url, "sim", cache_size=0, **kw)


def _qs(n):
    return [SearchRequest(row_id=i, query=f"q{i}", question=f"Q{i}", golden_answers=[f"A{i}"]) for i in range(n)]


def test_openai_normal(server):
    sim = _client(server)
    res = sim.search(_qs(4))
    assert [r.row_id for r in res] == [0, 1, 2, 3]
    assert [r.documents for r in res] == [[f"about q{i}", f"more on q{i}"] for i in range(4)]
    assert not any(r.fallback for r in res)
    assert len(server.requests) == 4 and sim.stats()["http_attempts"] == 4


def test_openai_retries_then_succeeds(server):
    server.modes = ["500", "ok"]
    res = _client(server).search(_qs(1))
    assert not res[0].fallback and len(server.requests) == 2


@pytest.mark.parametrize("mode, attempts_per_query", [("500", 3), ("garbage", 3), ("400", 1)])
def test_openai_faults_fall_back_with_bounded_attempts(server, mode, attempts_per_query):
    server.modes = [mode]
    sim = _client(server, max_retries=2)
    res = sim.search(_qs(2))
    assert all(r.fallback and r.documents == [UNAVAILABLE_DOCS] and r.error for r in res)
    assert [r.row_id for r in res] == [0, 1]
    assert len(server.requests) == 2 * attempts_per_query
    assert sim.stats()["fallbacks"] == 2 and sim.stats()["http_failures"] == 2


def test_openai_hanging_server_times_out(server):
    server.modes = ["hang"]
    sim = _client(server, timeout=0.2, max_retries=1)
    t0 = time.monotonic()
    res = sim.search(_qs(2))
    assert time.monotonic() - t0 < 1.5
    assert all(r.fallback for r in res)
    assert len(server.requests) == 4


def test_openai_concurrency_bound(server):
    server.delay = 0.15
    sim = _client(server, concurrency=3)
    res = sim.search(_qs(9))
    assert not any(r.fallback for r in res)
    assert len(server.requests) == 9
    assert 2 <= server.max_inflight <= 3


def test_openai_list_mode_sends_batch_prompts_per_request(server):
    sim = _client(server, batch_prompts=3, concurrency=2)
    res = sim.search(_qs(7))
    assert [r.documents for r in res] == [[f"about q{i}", f"more on q{i}"] for i in range(7)]
    assert [len(r["body"]["prompt"]) for r in server.requests] in ([3, 3, 1], [3, 1, 3], [1, 3, 3])
    assert sim.stats()["http_attempts"] == 3 and sim.client.lists_accepted


def test_openai_list_mode_failures_are_bounded_per_request(server):
    server.modes = ["500"]
    sim = _client(server, batch_prompts=4, max_retries=1)
    res = sim.search(_qs(6))
    assert all(r.fallback and r.documents == [UNAVAILABLE_DOCS] for r in res)
    assert len(server.requests) == 2 * 2  # two lists, two attempts each
    assert sim.stats()["fallbacks"] == 6


@pytest.mark.parametrize("body", [
    {"choices": [{"index": 0, "text": "a"}]},  # one choice for two prompts
    {"choices": [{"index": 0, "text": "a"}, {"index": 0, "text": "b"}]},  # an index twice
    {"choices": [{"index": 0, "text": "a"}, {"index": 2, "text": "b"}]},  # an index out of range
])
def test_openai_list_response_must_answer_every_prompt_once(body):
    from zerosearch.search.openai_client import _completions

    with pytest.raises((ValueError, TypeError)):
        _completions(json.dumps(body).encode(), 2)


def test_openai_list_usage_is_split_over_prompts():
    from zerosearch.search.openai_client import _completions

    body = {"choices": [{"index": 1, "text": "b"}, {"index": 0, "text": "a"}, {"index": 2, "text": "c"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}}
    out = _completions(json.dumps(body).encode(), 3)
    assert [c.text for c in out] == ["a", "b", "c"]
    assert [c.prompt_tokens for c in out] == [4, 3, 3] and [c.completion_tokens for c in out] == [2, 2, 1]


def test_openai_dead_server():
    sim = OpenAISimulator("http://127.0.0.1:9", "sim", timeout=0.5, max_retries=1, backoff=0.01)
    res = sim.search(_qs(1))
    assert res[0].fallback and res[0].error


# --------------------------------------------------------------------------- HF generation


@pytest.fixture(scope="module")
def tiny_lm():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    words = ["[PAD]", "[EOS]", "[UNK]"] + (
        "the a cat dog sat ran on under mat house big red blue small paris france capital city river "
        "who what is of in doc 1 2 3 : query useful noisy output"
    ).split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    config = Qwen2Config(
        vocab_size=len(words),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=None,
        eos_token_id=1,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    return model, tokenizer


def test_hf_generator_complete_greedy_matches_unbatched(tiny_lm):
    from zerosearch.generation import HFGenerator, SamplingParams

    model, tok = tiny_lm
    prompts = ["the cat sat on", "paris is the capital of france and", "dog", "who is the big red"]
    gen = HFGenerator(model, tok)
    gen.max_batch = 3
    out = [c.text for c in gen.complete(prompts, max_new_tokens=6, sampling=SamplingParams(greedy=True))]
    assert len(out) == 4
    assert tok.padding_side == "right"  # untouched
    for p, o in zip(prompts, out):
        ids = tok(p, return_tensors="pt")["input_ids"]
        ref = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=[1],
        )
        assert o == tok.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)
    assert any(out)  # something was generated


def test_hf_generator_complete_sampling_seeded(tiny_lm):
    from zerosearch.generation import HFGenerator, SamplingParams

    model, tok = tiny_lm
    gen = HFGenerator(model, tok)
    kw = dict(max_new_tokens=8, sampling=SamplingParams(temperature=1.5), seed=123)
    a = [c.text for c in gen.complete(["the cat", "a dog ran"], **kw)]
    b = [c.text for c in gen.complete(["the cat", "a dog ran"], **kw)]
    assert a == b and len(a) == 2


def test_local_generator_drives_simulator(tiny_lm):
    from zerosearch.generation import HFGenerator, SamplingParams

    model, tok = tiny_lm
    gen = HFGenerator(model, tok)
    sim = SimulatorSearch(gen, NoiseCurriculum(4, 0.5, 0.5), seed=0, max_new_tokens=5, temperature=0.0)
    reqs = [
        SearchRequest(row_id=5, query="paris", question="what is the capital of france", golden_answers=["paris"]),
        SearchRequest(row_id=2, query="cat", question="who sat", golden_answers=["cat"]),
    ]
    noisy = sim.decide_noisy(2, 0)
    sim.reseed(0)
    res = sim.search(reqs)
    want = gen.complete([sim.build_prompt(r, r.query, not n) for r, n in zip(reqs, noisy)], max_new_tokens=5,
                        sampling=SamplingParams(greedy=True))
    assert [r.documents for r in res] == [parse_documents(c.text) for c in want]
    assert [r.row_id for r in res] == [5, 2]
    assert all(r.documents for r in res)
