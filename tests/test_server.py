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

from zerosearch.generation import Completion, HFGenerator, SamplingParams, apply_stop
from zerosearch.search import OpenAISimulator, SearchRequest
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
        self.server = make_server(completer, model_name=MODEL, request_timeout=5.0, **kw)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
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
    assert srv.request("GET", "/health") == (200, {"status": "ok"})


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
        ({"prompt": "x", "n": 2}, 400, "n"),
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


def test_connection_cap_503():
    with Running(max_concurrency=1, max_connections=1) as r:
        with socket.create_connection(("127.0.0.1", r.port), timeout=5) as idle:  # holds the only connection
            idle.sendall(b"GET /health HTTP/1.1\r\n")  # the thread is now waiting for the rest of the headers
            assert r.request("GET", "/health")[0] == 503
        deadline = time.monotonic() + 5  # the server thread frees the slot shortly after the idle client left
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
    with caplog.at_level("WARNING", logger="zerosearch.search.server.http"):
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
