"""Served simulator throughput: batched engine serving vs HF `generate` one prompt per request, in one run.

Each side is a real server process (`zerosearch.search.server.make_server`) on loopback; ``N`` client threads
(the trainer's `OpenAICompletions`, one prompt per request, like concurrent rollouts searching) each send
``--rounds`` simulator prompts (the ZeroSearch template over the toy world's multi-hop queries, useful and
noisy alternating) in a closed loop, at each concurrency of ``--concurrency``. Reported per side and
concurrency: queries/s, document tokens/s (generated tokens), p50/p99 latency, the server's mean batch size,
and the cost of 64k simulated queries = 64000 / (queries/s) / 3600 x ``--gpu-dollars-per-hour`` x ``--gpus``,
next to the paper's $70.80 and Google's $586.70 for the same number of queries.

* candidate: ``EngineGenerator`` behind the batching scheduler (``max_batch`` = the largest concurrency);
* reference: ``HFGenerator`` with ``max_batch=1``: one `generate` per request, one request at a time.

Before timing, greedy completions of both servers are compared (float32: they must agree).

For continuous batching (admitting requests into a running batch) two measured bounds are printed for the
engine: the share of latency requests spent queued behind a running batch, and the share of decode row-steps
left idle by rows that finished before their batch did.

CPU default: the toy simulator (`zerosearch.toy.assets.ensure_toy_assets`, Qwen2 hidden 128, 2 layers), float32.
CUDA: ``--model qwen2.5-3b`` or ``qwen2.5-7b`` builds a randomly initialised Qwen2 of that size (bfloat16) in
each server process; the toy tokenizer and prompts are used (ids it cannot decode are dropped from the text,
token counts are unaffected). ``--model-path DIR`` serves a real checkpoint instead (its own tokenizer; output
lengths then vary as a trained simulator's do). ``--out FILE`` writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from _harness import REPO_ROOT, write_json

DEFAULT_PRICE = 2.49
PRICE_SOURCE = ("H100 SXM 80GB on-demand, low end of the $2.49-$3.99 per GPU-hour range listed in "
                "https://pricegpu.pages.dev/blog/h100-vs-a100-cloud-price (early 2026)")  # fmt: skip
PAPER_COST, GOOGLE_COST = 70.80, 586.70  # $ per 64k simulated queries: the ZeroSearch paper, Google's API
MODEL_NAME = "simulator"
QWEN_SIZES = {  # Qwen2.5 shapes (their config.json), random weights
    "qwen2.5-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}
MIN_GREEDY_AGREEMENT = 0.75  # float32 near-ties may flip an argmax and change the rest of a completion


def simulator_prompts(assets, n: int) -> list[str]:
    """Simulator prompts over the toy world's test questions: each needed query, useful and noisy alternating."""
    from zerosearch.search.prompts import simulator_prompt

    out: list[str] = []
    for ex in assets.load_world().test:
        for q in ex.meta.get("needed_queries") or [ex.question]:
            out.append(simulator_prompt(q, ex.question, list(ex.golden_answers), useful=len(out) % 2 == 0))
            if len(out) == n:
                return out
    return out


# ------------------------------------------------------------------------------------------- server process


def child(args: argparse.Namespace) -> None:
    """Build the model and serve it; the first stdout line is `PORT <n>`."""
    import torch
    from transformers.utils import logging as hf_logging

    from zerosearch.generation import EngineGenerator, HFGenerator
    from zerosearch.hf.loading import load_causal_lm
    from zerosearch.search.server import make_server
    from zerosearch.toy.assets import ensure_toy_assets

    hf_logging.disable_progress_bar()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    assets = ensure_toy_assets(args.cache, seed=0)
    tok = assets.load_tokenizer()
    if args.model_path:
        from zerosearch.hf.loading import load_tokenizer

        tok = load_tokenizer(args.model_path)
        model = load_causal_lm(args.model_path, args.dtype, args.device)
    elif args.model == "toy":
        model = load_causal_lm(str(assets.simulator_dir), args.dtype, args.device, attn_implementation="sdpa")
    else:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        cfg = Qwen2Config(**QWEN_SIZES[args.model], max_position_embeddings=4096, rope_theta=1e6, pad_token_id=0,
                          eos_token_id=tok.eos_token_id, bos_token_id=None)
        torch.manual_seed(0)
        with torch.device(args.device):
            model = Qwen2ForCausalLM._from_config(cfg, dtype=getattr(torch, args.dtype))
    model.eval()
    if args.child == "engine":
        gen, max_batch = EngineGenerator(model, tok), max(args.concurrency)
    else:
        gen, max_batch = HFGenerator(model, tok), 1
    server = make_server(gen, model_name=MODEL_NAME, port=0, max_batch=max_batch, batch_window_ms=args.window_ms,
                         max_concurrency=max(args.concurrency) + 8, generation_timeout=3600.0,
                         max_tokens_cap=max(2048, args.max_tokens))
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.05)


class Server:
    """One side's server process (started at once; :meth:`wait_ready` reads its port), stopped on exit."""

    def __init__(self, side: str, argv: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
        self.side = side
        self.proc = subprocess.Popen([sys.executable, __file__, "--child", side, *argv], stdout=subprocess.PIPE,
                                     text=True, env=env)  # fmt: skip
        self.url = ""

    def wait_ready(self) -> Server:
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the {self.side} server did not start (exit code {self.proc.poll()})")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}/v1"
        return self

    def health(self) -> dict:
        with urllib.request.urlopen(self.url[: -len("/v1")] + "/health", timeout=30) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------------------------------- clients


def _client(url: str):
    from zerosearch.search import OpenAICompletions

    return OpenAICompletions(url, MODEL_NAME, timeout=3600, max_retries=0, concurrency=1, batch_prompts=1)


def greedy_texts(url: str, prompts: list[str], max_tokens: int) -> list[str]:
    from zerosearch.generation import SamplingParams

    out = _client(url).complete(prompts, max_new_tokens=max_tokens, sampling=SamplingParams(greedy=True))
    if any(isinstance(o, Exception) for o in out):
        raise RuntimeError(f"greedy check failed: {out}")
    return [o.text for o in out]


def run_level(server: Server, prompts: list[str], conc: int, args: argparse.Namespace) -> dict:
    """``conc`` closed-loop clients, ``args.rounds`` requests each (no new request after ``args.level_seconds``)."""
    from zerosearch.generation import SamplingParams

    sampling = SamplingParams(temperature=args.temperature)
    before = server.health()
    lock, records, errors = threading.Lock(), [], []
    start = threading.Barrier(conc + 1)

    def worker(w: int) -> None:
        client = _client(server.url)
        start.wait()
        for r in range(args.rounds):
            if time.perf_counter() - t0 > args.level_seconds:
                break
            p = prompts[(w * args.rounds + r) % len(prompts)]
            t = time.perf_counter()
            [out] = client.complete([p], max_new_tokens=args.max_tokens, sampling=sampling)
            with lock:
                (errors if isinstance(out, Exception) else records).append((time.perf_counter() - t, out))

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(conc)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    after = server.health()
    lat = sorted(x for x, _ in records)
    tokens = sum(o.completion_tokens for _, o in records)
    batches = after["batches"] - before["batches"]
    done = after["requests_done"] - before["requests_done"]
    wait = after["mean_queue_wait_s"] * after["requests_done"] - before["mean_queue_wait_s"] * before["requests_done"]
    qps = len(records) / wall
    return {
        "concurrency": conc, "queries": len(records), "errors": len(errors), "wall_s": wall, "queries_per_s": qps,
        "doc_tokens_per_s": tokens / wall, "p50_ms": 1e3 * statistics.median(lat) if lat else None,
        "p99_ms": 1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
        "mean_batch": (after["batched_prompts"] - before["batched_prompts"]) / max(1, batches),
        "queue_wait_share": (wait / max(1, done)) / statistics.mean(lat) if lat else None,
        "early_finish_idle_share": 1 - tokens / max(1, len(records) * args.max_tokens),
        "cost_per_64k": 64000 / qps / 3600 * args.gpu_dollars_per_hour * args.gpus if qps > 0 else None,
        "first_errors": sorted({str(e)[:120] for _, e in errors})[:3],
    }  # fmt: skip


# ------------------------------------------------------------------------------------------- main


COLUMNS = (("side", "side"), ("concurrency", "clients"), ("queries_per_s", "queries/s"),
           ("doc_tokens_per_s", "doc tok/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("mean_batch", "mean batch"),
           ("queue_wait_share", "queued share"), ("early_finish_idle_share", "idle rows"),
           ("cost_per_64k", "$ per 64k"), ("errors", "errors"))  # fmt: skip


def _print_row(r: dict | None) -> None:
    """One table row (the header when ``r`` is None)."""
    if r is None:
        print(" ".join(f"{h:>12}" for _, h in COLUMNS), flush=True)
        return
    print(" ".join(f"{r[k]:>12.3f}" if isinstance(r[k], float) else f"{r[k]!s:>12}" for k, _ in COLUMNS), flush=True)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--model", choices=["toy", *QWEN_SIZES], default=None,
                   help="default: toy on CPU, qwen2.5-3b on CUDA")
    p.add_argument("--model-path", default="", help="a local HF checkpoint (with its tokenizer) instead of --model")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="default float32 on CPU, else bf16")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64])
    p.add_argument("--rounds", type=int, default=3, help="requests per client per concurrency level")
    p.add_argument("--level-seconds", type=float, default=120.0, help="no new requests after this long in a level")
    p.add_argument("--max-tokens", type=int, default=None, help="new tokens per query (default 64 CPU, 256 CUDA)")
    p.add_argument("--temperature", type=float, default=0.8, help="the paper's simulator temperature")
    p.add_argument("--window-ms", type=float, default=200.0, help="the engine server's longest batch window")
    p.add_argument("--threads", type=int, default=1, help="CPU: torch threads of each server process")
    p.add_argument("--gpu-dollars-per-hour", type=float, default=DEFAULT_PRICE, help=f"default ${DEFAULT_PRICE}: "
                   f"{PRICE_SOURCE}")
    p.add_argument("--gpus", type=int, default=1, help="GPUs the simulator server occupies")
    p.add_argument("--cache", default=str(REPO_ROOT / ".cache" / "zerosearch"), help="toy asset cache")
    p.add_argument("--quick", action="store_true", help="concurrency 1,2, one round, 4 new tokens (smoke test)")
    p.add_argument("--child", choices=["engine", "hf"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.model = args.model or ("toy" if args.device == "cpu" else "qwen2.5-3b")
    args.dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    args.max_tokens = args.max_tokens or (64 if args.device == "cpu" else 256)
    if args.quick:
        args.concurrency, args.rounds, args.max_tokens = [1, 2], 1, 4
    if args.child:
        child(args)
        return []

    from zerosearch.toy.assets import ensure_toy_assets

    prompts = simulator_prompts(ensure_toy_assets(args.cache, seed=0), 512)
    passthrough = ["--device", args.device, "--model", args.model, "--model-path", args.model_path, "--dtype",
                   args.dtype, "--threads", str(args.threads), "--cache", args.cache, "--window-ms",
                   str(args.window_ms), "--concurrency", ",".join(map(str, args.concurrency)), "--max-tokens",
                   str(args.max_tokens)]  # fmt: skip
    check = prompts[:8]
    load_before = os.getloadavg()[0]
    rows: list[dict] = []
    _print_row(None)
    greedy: dict[str, list[str]] = {}
    # Both processes load in parallel; they are measured one after the other (an idle server only polls).
    servers = [Server(side, passthrough) for side in ("engine", "hf")]
    try:
        for server in servers:
            server.wait_ready()
        for server in servers:
            greedy[server.side] = greedy_texts(server.url, check, min(args.max_tokens, 16))  # also the warm-up
            for conc in args.concurrency:
                rows.append({"side": server.side, **run_level(server, prompts, conc, args)})
                _print_row(rows[-1])
    finally:
        for server in servers:
            server.stop()
    agree = sum(a == b for a, b in zip(greedy["engine"], greedy["hf"])) / len(check)
    if args.dtype == "float32" and agree < MIN_GREEDY_AGREEMENT:
        raise AssertionError(f"engine and HF servers disagree on {1 - agree:.0%} of greedy completions")
    by = {(r["side"], r["concurrency"]): r for r in rows}
    for conc in args.concurrency:
        e, h = by[("engine", conc)], by[("hf", conc)]
        e["speedup_vs_hf"] = e["queries_per_s"] / h["queries_per_s"] if h["queries_per_s"] else None
        print(f"concurrency {conc:3d}: engine {e['queries_per_s']:.2f} q/s vs HF one-per-request "
              f"{h['queries_per_s']:.2f} q/s = {e['speedup_vs_hf']:.2f}x; cost per 64k queries ${e['cost_per_64k']:.2f}"
              f" vs ${h['cost_per_64k']:.2f} (paper ${PAPER_COST:.2f}, Google ${GOOGLE_COST:.2f})")
    print(f"price: ${args.gpu_dollars_per_hour}/GPU-hour x {args.gpus} GPU(s); default from {PRICE_SOURCE}."
          + (" CPU run: the cost applies that GPU price to CPU throughput (a formula check, not a GPU cost)."
             if args.device == "cpu" else ""))  # fmt: skip
    load = (load_before, os.getloadavg()[0])
    print(f"greedy agreement engine vs HF on {len(check)} prompts: {agree:.0%}; 1-min load average before / after: "
          f"{load[0]:.2f} / {load[1]:.2f}")
    write_json(args.out, "simulator_serve", rows, args.device, model=args.model, dtype=args.dtype,
               max_tokens=args.max_tokens, rounds=args.rounds, temperature=args.temperature,
               gpu_dollars_per_hour=args.gpu_dollars_per_hour, gpus=args.gpus, price_source=PRICE_SOURCE,
               paper_cost=PAPER_COST, google_cost=GOOGLE_COST, greedy_agreement=agree,
               loadavg_before_after=load)  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
