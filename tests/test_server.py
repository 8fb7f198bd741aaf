"""The OpenAI-compatible simulator server: HTTP round trips, limits and errors, the real client, a tiny HF model."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from zerosearch.generation import Completion, EngineGenerator, HFGenerator, SamplingParams, apply_stop
from zerosearch.search import OpenAICompletions, OpenAISimulator, SearchRequest
from zerosearch.search.server import make_server

MODEL = "tiny-sim"


def echo_generate(prompts: list[str], *, max_new_tokens: int, temperature: float, top_p: float) -> list[str]:
    """Deterministic fake simulator: documents that repeat the query found in the simulator prompt."""
    out = []
    for p in prompts:
        query = " ".join(p.split("Query:")[-1].split()[:-2]) if "Query:" in p else p
        out.append(f"Doc 1: about {query}\nDoc 2: more on {query} (t={temperature:g}, n={max_new_tokens})")
    return out


class Completer:
    """A TextCompleter around `fn(prompts, *, max_new_tokens, temperature, top_p) -> texts` that cuts stop strings
    the way a Generator does; token counts are word counts."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def complete(self, prompts, *, max_new_tokens, sampling, stop=(), seed=None):
        temperature = 0.0 if sampling.greedy else sampling.temperature
        texts = self.fn(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=sampling.top_p)
        out = []
        for p, t in zip(prompts, texts):
            text, _ = apply_stop(t, stop)
            out.append(Completion(text, len(p.split()), len(text.split()), "stop"))
        return out


class Running:
    """A server on a free loopback port, served from a daemon thread."""

    def __init__(self, generate_fn=echo_generate, **kw):
        completer = generate_fn if hasattr(generate_fn, "complete") else Completer(generate_fn)
        kw.setdefault("request_timeout", 5.0)
        self.server = make_server(completer, model_name=MODEL, **kw)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def request(self, method: str, path: str, body=None, headers: dict | None = None,
                timeout: float = 10) -> tuple[int, dict]:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            hdrs = {"Content-Type": "application/json"} if body is not None else {}
            hdrs.update(headers or {})
            data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else {})
        finally:
            conn.close()


@pytest.fixture
def srv():
    with Running() as r:
        yield r


# --------------------------------------------------------------------------- round trips


def test_completion_string_prompt(srv):
    status, out = srv.request("POST", "/v1/completions",
                              {"model": MODEL, "prompt": "hello world", "max_tokens": 7, "temperature": 0.5})
    assert status == 200
    assert out["object"] == "text_completion" and out["model"] == MODEL and out["id"].startswith("cmpl-")
    assert isinstance(out["created"], int) and set(out["usage"]) == {"prompt_tokens", "completion_tokens",
                                                                      "total_tokens"}
    [choice] = out["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["text"] == "Doc 1: about hello world\nDoc 2: more on hello world (t=0.5, n=7)"


def test_completion_list_prompt_order_and_stop(srv):
    prompts = [f"Query: q{i} Useful Output:" for i in range(5)]
    status, out = srv.request("POST", "/v1/completions", {"prompt": prompts, "max_tokens": 3, "stop": ["\nDoc 2"]})
    assert status == 200
    assert [c["index"] for c in out["choices"]] == list(range(5))
    assert [c["text"] for c in out["choices"]] == [f"Doc 1: about q{i}" for i in range(5)]


def test_models_and_health(srv):
    status, out = srv.request("GET", "/v1/models")
    assert status == 200 and out["object"] == "list" and [m["id"] for m in out["data"]] == [MODEL]
    status, health = srv.request("GET", "/health")
    assert status == 200 and health["status"] == "ok"
    assert health["queued_requests"] == 0 and health["running_prompts"] == 0 and health["admitted"] == 0


def test_apply_stop_earliest():
    assert apply_stop("a b c d", ["c", "b"]) == ("a ", True)
    assert apply_stop("abc", ["x"]) == ("abc", False)


# --------------------------------------------------------------------------- errors and limits


@pytest.mark.parametrize(
    "body, status, param",
    [
        (b"{not json", 400, None),
        (b"\xff\xfe", 400, None),
        ([1, 2], 400, None),
        ({"max_tokens": 5}, 400, "prompt"),
        ({"prompt": 3}, 400, "prompt"),
        ({"prompt": []}, 400, "prompt"),
        ({"prompt": ["ok", 1]}, 400, "prompt"),
        ({"prompt": [1, 2, 3]}, 400, "prompt"),  # token ids are not supported
        ({"prompt": "x", "max_tokens": "5"}, 400, "max_tokens"),
        ({"prompt": "x", "max_tokens": True}, 400, "max_tokens"),
        ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ({"prompt": "x", "max_tokens": 100_000}, 400, "max_tokens"),
        ({"prompt": "x", "temperature": "hot"}, 400, "temperature"),
        ({"prompt": "x", "temperature": -1}, 400, "temperature"),
        ({"prompt": "x", "top_p": 0}, 400, "top_p"),
        ({"prompt": "x", "n": 0}, 400, "n"),
        ({"prompt": "x", "n": 17}, 400, "n"),
        ({"prompt": "x", "n": 1.5}, 400, "n"),
        ({"prompt": "x", "n": 2, "best_of": 3}, 400, "best_of"),
        ({"prompt": "x", "seed": -1}, 400, "seed"),
        ({"prompt": "x", "seed": "7"}, 400, "seed"),
        ({"prompt": ""}, 400, "prompt"),
        ({"prompt": " \n\t "}, 400, "prompt"),
        ({"prompt": ["ok", "  "]}, 400, "prompt"),
        ({"prompt": "x", "stream": True}, 400, "stream"),
        ({"prompt": "x", "stop": 5}, 400, "stop"),
        ({"prompt": "x", "model": 5}, 400, "model"),
        ({"prompt": "x", "model": "other"}, 404, "model"),
    ],
)
def test_bad_requests(srv, body, status, param):
    got, out = srv.request("POST", "/v1/completions", body)
    assert got == status
    assert out["error"]["message"] and out["error"]["param"] == param


def test_too_many_prompts():
    with Running(max_prompts_per_request=3) as r:
        status, out = r.request("POST", "/v1/completions", {"prompt": ["a"] * 4})
        assert status == 400 and "at most 3 prompts" in out["error"]["message"]
        assert r.request("POST", "/v1/completions", {"prompt": ["a"] * 3})[0] == 200


def test_unknown_path_wrong_method_and_content_type(srv):
    assert srv.request("GET", "/etc/passwd")[0] == 404
    assert srv.request("POST", "/v1/chat/completions", {"prompt": "x"})[0] == 404
    assert srv.request("GET", "/v1/completions")[0] == 405
    assert srv.request("DELETE", "/v1/models")[0] == 501
    assert srv.request("POST", "/v1/completions", b'{"prompt": "x"}', {"Content-Type": "text/plain"})[0] == 415
    assert srv.request("GET", "/health", headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    assert srv.request("GET", "/health", headers={"Host": "localhost:1234"})[0] == 200


def test_no_cors_headers(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", "/v1/models", headers={"Origin": "http://evil.example"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert not [h for h in resp.headers if h.lower().startswith("access-control")]
    assert "Python" not in (resp.headers.get("Server") or "")


def test_oversized_body_413():
    with Running(max_body_bytes=1000) as r:
        status, out = r.request("POST", "/v1/completions", {"prompt": "x" * 5000})
        assert status == 413 and "exceeds" in out["error"]["message"]
        # A huge declared length is refused from the headers alone, without waiting for the body.
        with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000000000\r\n\r\n{")
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.0 413")


def test_slow_body_is_cut_off():
    server = make_server(Completer(echo_generate), model_name=MODEL, request_timeout=0.3)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{")
            reply = s.recv(4096)  # the server gives up on the missing 99 bytes
        assert reply.startswith(b"HTTP/1.0 408")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_connection_cap_evicts_slow_readers_and_refuses_only_when_all_are_busy():
    entered, release = threading.Event(), threading.Event()

    def slow(prompts, **kw):
        entered.set()
        assert release.wait(10)
        return ["Doc 1: slow"] * len(prompts)

    with Running(slow, max_concurrency=1, max_connections=1) as r, ThreadPoolExecutor(1) as pool:
        with socket.create_connection(("127.0.0.1", r.port), timeout=5) as idle:  # holds the only connection
            idle.sendall(b"GET /health HTTP/1.1\r\n")  # the thread is now waiting for the rest of the headers
            assert r.request("GET", "/health")[0] == 200  # the slow reader made room for it
            assert idle.recv(100) == b""  # ... by being closed
        first = pool.submit(r.request, "POST", "/v1/completions", {"prompt": "a"})
        assert entered.wait(10)  # the only connection now waits for generation: it is never evicted
        assert r.request("GET", "/health")[0] == 503
        release.set()
        assert first.result(10)[0] == 200
        deadline = time.monotonic() + 5  # the server thread frees the slot shortly after the reply
        while r.request("GET", "/health")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_generate_failure_is_500():
    def broken(prompts, **kw):
        raise RuntimeError("boom")

    with Running(broken) as r:
        status, out = r.request("POST", "/v1/completions", {"prompt": "x"})
        assert status == 500 and "boom" not in out["error"]["message"]


def test_concurrency_limit_503():
    entered, release = threading.Event(), threading.Event()

    def slow(prompts, **kw):
        entered.set()
        assert release.wait(10)
        return ["Doc 1: slow"] * len(prompts)

    with Running(slow, max_concurrency=1) as r, ThreadPoolExecutor(1) as pool:
        first = pool.submit(r.request, "POST", "/v1/completions", {"prompt": "a"})
        assert entered.wait(10)
        status, out = r.request("POST", "/v1/completions", {"prompt": "b"})  # answered at once, not queued
        assert status == 503 and out["error"]["type"] == "server_busy"
        assert r.request("GET", "/health")[0] == 200  # cheap endpoints stay available
        release.set()
        assert first.result(10)[0] == 200
        assert r.request("POST", "/v1/completions", {"prompt": "c"})[0] == 200  # the slot was released


def test_non_loopback_bind_warns(caplog):
    with caplog.at_level("WARNING", logger="zerosearch.search.server"):
        server = make_server(Completer(echo_generate), model_name=MODEL, host="0.0.0.0", port=0)
        server.server_close()
    assert any("reachable from other machines" in m for m in caplog.messages)


# --------------------------------------------------------------------------- the real client


def test_openai_simulator_round_trip(srv):
    sim = OpenAISimulator(f"http://127.0.0.1:{srv.port}/v1", MODEL, timeout=10, max_retries=0, concurrency=4,
                          cache_size=0)
    reqs = [SearchRequest(row_id=f"row-{i}", query=f"topic {i}", question=f"q{i}?", golden_answers=[f"a{i}"])
            for i in range(6)]
    res = sim.search(reqs)
    assert [r.row_id for r in res] == [f"row-{i}" for i in range(6)]
    for i, r in enumerate(res):
        assert not r.fallback
        assert r.documents[0] == f"about topic {i}"
        assert r.documents[1].startswith(f"more on topic {i} ")
    assert sim.stats()["http_failures"] == 0


def test_openai_simulator_wrong_model_is_fallback(srv):
    sim = OpenAISimulator(f"http://127.0.0.1:{srv.port}", "not-this-one", timeout=10, max_retries=2, backoff=0.01)
    [r] = sim.search([SearchRequest(row_id=7, query="x")])
    assert r.row_id == 7 and r.fallback and "404" in r.error
    assert sim.stats()["http_attempts"] == 1  # a 4xx is not retried


# --------------------------------------------------------------------------- a tiny real HF model


@pytest.fixture(scope="module")
def tiny_lm():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    words = ["[PAD]", "[EOS]", "[UNK]"] + "the a cat dog sat on mat paris is capital of france doc 1 2 : query".split()
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    config = Qwen2Config(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=None, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).eval(), tok


@pytest.mark.parametrize("generator", [HFGenerator, "engine"])
def test_served_generator_greedy_matches_direct_completion(tiny_lm, generator):
    from zerosearch.generation import EngineGenerator

    model, tok = tiny_lm
    prompts = ["the cat sat on", "paris is the capital of", "dog"]
    gen = HFGenerator(model, tok) if generator is HFGenerator else EngineGenerator(model, tok)
    expected = [c.text for c in gen.complete(prompts, max_new_tokens=5, sampling=SamplingParams(greedy=True))]
    with Running(gen) as r:
        status, out = r.request("POST", "/v1/completions", {"prompt": prompts, "max_tokens": 5, "temperature": 0})
    assert status == 200 and [c["text"] for c in out["choices"]] == expected
    assert out["usage"]["prompt_tokens"] == 4 + 5 + 1
    n_new = 0
    for p, c in zip(prompts, out["choices"]):  # checked against HF generate run directly, row by row
        ids = tok(p, return_tensors="pt")["input_ids"]
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                             pad_token_id=0, eos_token_id=[1])[0, ids.shape[1]:].tolist()
        assert c["finish_reason"] == ("stop" if 1 in ref else "length")
        n_new += ref.index(1) + 1 if 1 in ref else len(ref)
    assert out["usage"]["completion_tokens"] == n_new


# --------------------------------------------------------------------------- batching on the engine

GREEDY = SamplingParams(greedy=True)
PROMPTS = ["query : the cat sat on the mat doc 1 :", "query : paris is the capital of france doc 1 :",
           "query : dog", "query : the dog sat on a mat doc 2 :", "query : france is", "query : a cat on the mat",
           "query : capital of france is paris doc", "query : the a cat dog sat on mat"]


class Counting:
    """A completer that records the size of every `complete` call of the generator it wraps."""

    def __init__(self, inner) -> None:
        self.inner, self.tokenizer, self.sizes = inner, inner.tokenizer, []

    def complete(self, prompts, **kw):
        self.sizes.append(len(prompts))
        return self.inner.complete(prompts, **kw)


def _post(r: Running, prompt, **fields):
    return r.request("POST", "/v1/completions", {"prompt": prompt, "max_tokens": 6, "temperature": 0, **fields})


def test_batched_server_greedy_equals_each_prompt_generated_alone(tiny_lm):
    model, tok = tiny_lm
    gen = EngineGenerator(model, tok)
    alone = [gen.complete([p], max_new_tokens=6, sampling=GREEDY)[0].text for p in PROMPTS]
    counting = Counting(gen)
    with Running(counting, max_batch=8, batch_window_ms=500) as r, ThreadPoolExecutor(len(PROMPTS)) as pool:
        replies = list(pool.map(lambda p: _post(r, p), PROMPTS))
        listed = _post(r, PROMPTS)
    assert [status for status, _ in replies] == [200] * len(PROMPTS)
    assert [out["choices"][0]["text"] for _, out in replies] == alone
    assert sum(counting.sizes[:-1]) == len(PROMPTS) and max(counting.sizes[:-1]) > 1  # batched together
    assert listed[0] == 200 and [c["index"] for c in listed[1]["choices"]] == list(range(len(PROMPTS)))
    assert [c["text"] for c in listed[1]["choices"]] == alone and counting.sizes[-1] == len(PROMPTS)


def test_seeded_request_runs_alone_and_repeats(tiny_lm):
    model, tok = tiny_lm
    gen = EngineGenerator(model, tok)
    hot = SamplingParams(temperature=1.5)
    want = [c.text for c in gen.complete(PROMPTS[:2], max_new_tokens=8, sampling=hot, seed=11)]
    with Running(gen, max_batch=8, batch_window_ms=200) as r, ThreadPoolExecutor(4) as pool:
        noise = [pool.submit(_post, r, p, temperature=1.5) for p in PROMPTS[2:5]]
        seeded = [pool.submit(_post, r, PROMPTS[:2], temperature=1.5, max_tokens=8, seed=11) for _ in range(2)]
        outs = [f.result(20) for f in seeded]
        assert all(f.result(20)[0] == 200 for f in noise)
    for status, out in outs:
        assert status == 200 and [c["text"] for c in out["choices"]] == want


def test_n_samples_are_ordered_prompt_by_prompt():
    with Running() as r:
        status, out = r.request("POST", "/v1/completions", {"prompt": ["Query: a x y", "Query: b x y"], "n": 3,
                                                            "max_tokens": 4, "best_of": 3})
    assert status == 200 and [c["index"] for c in out["choices"]] == list(range(6))
    assert [c["text"].split()[3] for c in out["choices"]] == ["a"] * 3 + ["b"] * 3
    assert out["usage"]["prompt_tokens"] == 8  # each prompt counted once, not once per sample


# --------------------------------------------------------------------------- the client against the server


def test_client_round_trips_in_list_and_single_mode(tiny_lm):
    model, tok = tiny_lm
    gen = EngineGenerator(model, tok)
    prompts = PROMPTS + PROMPTS[:2]
    alone = [gen.complete([p], max_new_tokens=5, sampling=GREEDY)[0].text for p in prompts]
    with Running(gen, max_batch=16, batch_window_ms=20) as r:
        url = f"http://127.0.0.1:{r.port}/v1"
        for batch_prompts, n_requests in ((4, 3), (1, len(prompts))):
            client = OpenAICompletions(url, MODEL, timeout=10, max_retries=0, concurrency=4,
                                       batch_prompts=batch_prompts)
            out = client.complete(prompts, max_new_tokens=5, sampling=GREEDY)
            assert [c.text for c in out] == alone
            assert client.stats()["http_attempts"] == n_requests and client.lists_accepted == (batch_prompts > 1)
            assert sum(c.prompt_tokens for c in out) == sum(len(tok(p)["input_ids"]) for p in prompts)


def test_client_falls_back_to_single_prompts_when_lists_are_refused():
    with Running(max_prompts_per_request=1) as r:  # every list of two or more prompts gets a 400
        client = OpenAICompletions(f"http://127.0.0.1:{r.port}", MODEL, timeout=10, max_retries=2, backoff=0.01,
                                   batch_prompts=4)
        prompts = [f"Query: q{i} Useful Output:" for i in range(6)]
        out = client.complete(prompts, max_new_tokens=3, sampling=GREEDY)
        assert [c.text.split("\n")[0] for c in out] == [f"Doc 1: about q{i}" for i in range(6)]
        assert client.stats()["http_attempts"] == 2 + 6 and client.stats()["list_fallbacks"] == 1
        assert not client.lists_accepted
        client.complete(prompts[:3], max_new_tokens=3, sampling=GREEDY)
        assert client.stats()["http_attempts"] == 8 + 3  # from now on one prompt per request


# --------------------------------------------------------------------------- denials and deadlines


def test_prompt_over_the_token_cap_is_refused_at_once_while_others_succeed(tiny_lm):
    model, tok = tiny_lm
    huge = "the cat " * 125_000  # ~1 MB, 250k tokens
    with Running(EngineGenerator(model, tok), max_prompt_tokens=64, max_body_bytes=2_000_000) as r, \
            ThreadPoolExecutor(2) as pool:  # fmt: skip
        t0 = time.monotonic()
        big = pool.submit(_post, r, huge)
        normal = pool.submit(_post, r, "query : the cat sat")
        status, out = big.result(30)
        assert status == 400 and out["error"]["param"] == "prompt"
        assert "250000 tokens, more than max_prompt_tokens=64" in out["error"]["message"]
        assert normal.result(30)[0] == 200 and time.monotonic() - t0 < 20
        assert _post(r, "the " * 64)[0] == 200 and _post(r, "the " * 65)[0] == 400  # the cap is exact
        assert r.request("GET", "/health")[1]["batched_prompts"] == 2  # the refused prompts never queued


def test_slow_connections_do_not_stop_a_normal_request():
    """Slowloris: 32 connections each trickling a header byte; the cap is 16 connections."""
    with Running(max_connections=16, max_concurrency=8, request_timeout=1.0) as r:
        stop = threading.Event()

        def slow_client() -> None:
            while not stop.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
                        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                        while not stop.wait(0.3):  # a byte every 0.3 s: no single read ever times out
                            s.sendall(b"X")
                except OSError:  # cut off by the server: come back, as a slowloris client does
                    stop.wait(0.2)

        threads = [threading.Thread(target=slow_client, daemon=True) for _ in range(32)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.5)
            for _ in range(3):
                t0 = time.monotonic()
                status, out = r.request("POST", "/v1/completions", {"prompt": "Query: hi Useful Output:"}, timeout=5)
                assert status == 200 and out["choices"][0]["text"].startswith("Doc 1: about hi")
                assert time.monotonic() - t0 < 5
            assert r.request("GET", "/health", timeout=5)[1]["evictions"] > 0
        finally:
            stop.set()
            for t in threads:
                t.join(5)


def test_whole_request_deadline_cuts_a_trickling_client():
    with Running(request_timeout=1.0) as r, socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /health HTTP/1.1\r\n")
        with pytest.raises(OSError):
            while time.monotonic() - t0 < 4:
                time.sleep(0.2)  # each byte well within any per-read timeout
                s.sendall(b"X")
                if s.recv(100, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b"":
                    raise ConnectionResetError("closed by the server")
        assert 0.9 < time.monotonic() - t0 < 3


def test_deeply_nested_json_is_400(srv):
    for body in (b"[" * 100_000, b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        status, out = srv.request("POST", "/v1/completions", body)
        assert status == 400 and "invalid JSON" in out["error"]["message"]


def test_generation_deadline_frees_the_slot_and_health_reports_stuck():
    release, calls = threading.Event(), []

    def stuck(prompts, **kw):
        calls.append(list(prompts))
        assert release.wait(10)
        return [f"Doc 1: {p}" for p in prompts]

    with Running(stuck, generation_timeout=0.5, max_concurrency=1, batch_window_ms=0) as r:
        t0 = time.monotonic()
        status, out = r.request("POST", "/v1/completions", {"prompt": "first"})
        assert status == 504 and out["error"]["type"] == "timeout" and 0.4 < time.monotonic() - t0 < 3
        assert r.request("POST", "/v1/completions", {"prompt": "queued"})[0] == 504  # the slot was free again
        status, health = r.request("GET", "/health")
        assert status == 503 and health["status"] == "stuck"
        release.set()
        deadline = time.monotonic() + 5
        while r.request("GET", "/health")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status, out = r.request("POST", "/v1/completions", {"prompt": "after"})
        assert status == 200 and out["choices"][0]["text"] == "Doc 1: after"
    assert calls == [["first"], ["after"]]  # the request that timed out in the queue was never generated


def test_client_that_hangs_up_is_dropped_from_the_queue():
    release, calls = threading.Event(), []

    def held(prompts, **kw):
        calls.append(list(prompts))
        assert release.wait(10)
        return ["Doc 1: x"] * len(prompts)

    with Running(held, batch_window_ms=0) as r, ThreadPoolExecutor(1) as pool:
        first = pool.submit(r.request, "POST", "/v1/completions", {"prompt": "first"})
        while not calls:
            time.sleep(0.01)
        body = json.dumps({"prompt": "abandoned"}).encode()
        with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
            s.sendall(b"POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: "
                      + str(len(body)).encode() + b"\r\n\r\n" + body)
            deadline = time.monotonic() + 5
            while r.request("GET", "/health")[1]["queued_requests"] != 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        deadline = time.monotonic() + 5
        while r.request("GET", "/health")[1]["queued_requests"] != 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        release.set()
        assert first.result(10)[0] == 200
    assert calls == [["first"]]


# --------------------------------------------------------------------------- CLI


def test_cli_documents_serve(capsys):
    from zerosearch.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--serve", "--host", "--port", "--query"):
        assert flag in help_text


def test_cli_simulate_needs_query_without_serve(capsys):
    from zerosearch.cli import main

    assert main(["simulate"]) == 2
    assert "--query is required" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--port", "70000"], "port must be in [0, 65535]"),
    (["--port", "http"], "not a port number"),
    (["serve.max_batch=0"], "max_batch must be >= 1"),
    (["--host", "256.1.1.1"], "cannot listen on 256.1.1.1"),
])
def test_cli_serve_rejects_bad_settings_before_loading_the_model(monkeypatch, capsys, argv, message):
    from zerosearch import build
    from zerosearch.cli import main

    monkeypatch.setattr(build, "load_simulator", lambda cfg: pytest.fail("the model was loaded"))
    try:
        code = main(["simulate", "--serve", "model.simulator_path=/nonexistent", *argv])
    except SystemExit as exc:  # argparse's usage error
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err


def test_cli_serve_rejects_a_busy_port_before_loading_the_model(monkeypatch, capsys):
    from zerosearch import build
    from zerosearch.cli import main

    monkeypatch.setattr(build, "load_simulator", lambda cfg: pytest.fail("the model was loaded"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["simulate", "--serve", "--port", str(port), "model.simulator_path=/nonexistent"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
