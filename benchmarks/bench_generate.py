"""End-to-end generation: the engine vs Hugging Face `generate` on a simulator-shaped workload.

Workload: ``batch`` queries that share a ``prefix``-token prompt head (the simulator template), each with a
few own tokens, ``new`` sampled tokens each (no early stop, so both sides do the same work). Reports
tokens/s, the speed-up, peak memory, and on CUDA the fraction of the memory-bandwidth limit reached
(bytes a decode step must read — weights + KV — divided by a measured device copy bandwidth).

CPU default: the toy Qwen2 policy size (hidden 128, 3 layers, vocab ~700) at batch 64, prefix 100, 40 new.
``--out FILE`` writes the numbers as JSON. Each method runs in a fresh subprocess so peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch


def _model(args):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        intermediate_size=args.hidden * 2, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=4096, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    return Qwen2ForCausalLM(cfg).to(args.device, dtype).eval()


def _prompts(args) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    prefix = torch.randint(3, args.vocab, (args.prefix,), generator=g).tolist()
    return [prefix + torch.randint(3, args.vocab, (int(k),), generator=g).tolist()
            for k in torch.randint(4, 12, (args.batch,), generator=g)]  # fmt: skip


def _run_hf(model, prompts, args) -> None:
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        att[i, width - len(p) :] = 1
    model.generate(
        input_ids=ids.to(args.device), attention_mask=att.to(args.device), max_new_tokens=args.new,
        min_new_tokens=args.new, do_sample=True, temperature=0.8, top_p=1.0, top_k=0, pad_token_id=0,
    )  # fmt: skip


def _run_engine(model, prompts, args) -> None:
    from zerosearch.engine import GenerationEngine, SamplingParams
    from zerosearch.models import LeanCausalLM

    GenerationEngine(LeanCausalLM.from_hf(model), cuda_graph=not args.no_graph).generate(
        prompts, max_new_tokens=args.new, sampling=SamplingParams(temperature=0.8), shared_prefix=not args.no_prefix
    )


def _sync(args):
    if args.device == "cuda":
        torch.cuda.synchronize()


def worker(args) -> dict:
    torch.set_num_threads(args.threads)
    model = _model(args)
    prompts = _prompts(args)
    fn = _run_hf if args.worker == "hf" else _run_engine
    with torch.inference_mode():
        fn(model, prompts[:4], args)  # warm-up (allocator, kernels)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.repeats):
            _sync(args)
            t0 = time.perf_counter()
            fn(model, prompts, args)
            _sync(args)
            times.append(time.perf_counter() - t0)
    best = min(times)
    res = {"method": args.worker, "seconds": best, "tokens_per_s": args.batch * args.new / best}
    if args.device == "cuda":
        res["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
    else:
        res["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return res


def _bandwidth_limit(args) -> dict:
    """Lower bound on decode time: every step reads all weights + the live KV once at measured copy speed."""
    model = _model(args)
    n = 256 * 2**20
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        b.copy_(a)
    torch.cuda.synchronize()
    bw = 2 * n * 20 / (time.perf_counter() - t0)  # read + write bytes per second
    wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    per_tok = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * model.dtype.itemsize
    suffix = 8 + args.new / 2  # average own tokens live per row during decode
    kv = per_tok * (args.prefix + args.batch * suffix)  # prefix once (shared) + each row's own KV
    step_s = (wbytes + kv) / bw
    return {"copy_bandwidth_Bps": bw, "weight_bytes": wbytes, "kv_bytes_per_step": kv,
            "limit_tokens_per_s": args.batch / step_s}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--vocab", type=int, default=700)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--prefix", type=int, default=100)
    p.add_argument("--new", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-graph", action="store_true")
    p.add_argument("--no-prefix", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--worker", choices=["hf", "engine"], help=argparse.SUPPRESS)
    args = p.parse_args()
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    if args.worker:
        print(json.dumps(worker(args)))
        return
    results = {"config": {k: v for k, v in vars(args).items() if k not in ("worker", "out")}}
    for method in ("hf", "engine"):
        cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--worker", method]
        if "--out" in cmd:
            i = cmd.index("--out")
            del cmd[i : i + 2]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results[method] = json.loads(out)
        print(f"{method:7s} {results[method]['tokens_per_s']:10.1f} tok/s  ({results[method]['seconds']:.3f} s)")
    results["speedup_vs_hf"] = results["engine"]["tokens_per_s"] / results["hf"]["tokens_per_s"]
    print(f"engine / hf speed-up: {results['speedup_vs_hf']:.2f}x")
    mem_key = "peak_mem_bytes" if args.device == "cuda" else "peak_rss_bytes"
    results["memory_ratio_engine_vs_hf"] = results["engine"][mem_key] / results["hf"][mem_key]
    print(f"peak memory ({mem_key}) engine / hf: {results['memory_ratio_engine_vs_hf']:.2f}")
    if args.device == "cuda":
        lim = _bandwidth_limit(args)
        results["bandwidth_limit"] = lim
        results["fraction_of_bandwidth_limit"] = results["engine"]["tokens_per_s"] / lim["limit_tokens_per_s"]
        print(f"engine at {results['fraction_of_bandwidth_limit']:.1%} of the memory-bandwidth limit "
              f"({lim['limit_tokens_per_s']:.0f} tok/s)")  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
