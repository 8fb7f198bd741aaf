"""Fused masked policy-gradient loss vs the eager (materialised logits) reference: forward + backward.

Fused = ``zerosearch.pg_loss.masked_pg_loss`` (Triton forward + chunked backward on CUDA, chunked torch on
CPU); eager = ``masked_pg_loss_reference`` (``hidden @ W.T`` in the input dtype, fp32 log_softmax, autograd).
Both compute the same loss (PPO clip + k3 KL + entropy bonus, token-mean) and gradients w.r.t. hidden and
the LM head weight.

Peak memory is the peak of *tensor bytes allocated during fwd+bwd, minus bytes freed*, not counting tensors
that existed before (inputs, weights):
* CUDA: ``torch.cuda.max_memory_allocated()`` minus the allocation at the start;
* CPU: the PyTorch profiler's memory timeline (every c10 CPU allocator allocate/free, including temporaries
  inside ops), replayed to find the peak of live bytes. RSS is not used: allocator caching makes it noisy.

Usage: ``python benchmarks/bench_pg_loss.py [--device cpu|cuda] [--n N --h H --v V] [--dtype bfloat16]
[--out results.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from zerosearch.pg_loss import _pick_backend, masked_pg_loss, masked_pg_loss_reference  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_SHAPES = [(1024, 128, 8000), (4096, 256, 32000)]
CUDA_SHAPES = [(4096, 4096, 151936), (16384, 4096, 151936)]
LOSS_KW = dict(kl_coef=0.001, kl_type="k3", entropy_coef=0.001, clip_low=0.2, clip_high=0.28, agg="token-mean")


def make_inputs(n: int, h: int, v: int, dtype: torch.dtype, device: str, seed: int = 0) -> dict:
    g = torch.Generator(device="cpu").manual_seed(seed)
    hidden = torch.randn(1, n, h, generator=g).to(device=device, dtype=dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g) / h**0.5).to(device=device, dtype=dtype).requires_grad_()
    targets = torch.randint(0, v, (1, n), generator=g).to(device)
    mask = (torch.rand(1, n, generator=g) < 0.9).to(device)  # ~10% prompt / <information> tokens
    old = (-torch.rand(1, n, generator=g) * 8 - 2).to(device)  # plausible log-probs for a random head
    ref = old + 0.05 * torch.randn(1, n, generator=g).to(device)
    adv = torch.randn(1, n, generator=g).to(device)
    return dict(hidden=hidden, weight=weight, targets=targets, mask=mask, old=old, ref=ref, adv=adv)


def step(fn, x: dict) -> torch.Tensor:
    x["hidden"].grad = None
    x["weight"].grad = None
    loss, _ = fn(x["hidden"], x["weight"], x["targets"], x["old"], x["adv"], x["mask"], ref_logprobs=x["ref"],
                 **LOSS_KW)  # fmt: skip
    loss.backward()
    return loss.detach()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_it(fn, x: dict, device: str, repeats: int) -> float:
    step(fn, x)  # warm-up (Triton compile, allocator)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        step(fn, x)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_peak_bytes(fn, x: dict) -> int:
    """Peak live bytes allocated by the CPU allocator during one fwd+bwd (pre-existing tensors excluded)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action, MemoryProfileTimeline

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as p:
        step(fn, x)
    live = peak = 0
    for _, action, (key, _version), size in MemoryProfileTimeline(p._memory_profile()).timeline:
        if key.device.type != "cpu":
            continue
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak


def cuda_peak_bytes(fn, x: dict) -> int:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step(fn, x)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-30)).item()


def bench_shape(n: int, h: int, v: int, dtype: torch.dtype, device: str, repeats: int) -> dict:
    x = make_inputs(n, h, v, dtype, device)
    result = dict(n=n, h=h, v=v, dtype=str(dtype).replace("torch.", ""), device=device)
    grads = {}
    for name, fn in (("fused", masked_pg_loss), ("eager", masked_pg_loss_reference)):
        loss = step(fn, x)
        grads[name] = (loss, x["hidden"].grad.clone(), x["weight"].grad.clone())
        result[f"{name}_s"] = time_it(fn, x, device, repeats)
        peak = cuda_peak_bytes(fn, x) if device == "cuda" else cpu_peak_bytes(fn, x)
        result[f"{name}_peak_mb"] = peak / 2**20
    result["speedup"] = result["eager_s"] / result["fused_s"]
    result["mem_ratio"] = result["fused_peak_mb"] / max(result["eager_peak_mb"], 1e-9)
    (lf, hf, wf), (le, he, we) = grads["fused"], grads["eager"]
    result["loss_abs_diff"] = abs(lf.item() - le.item())
    result["grad_hidden_rel_diff"] = rel_err(hf, he)
    result["grad_weight_rel_diff"] = rel_err(wf, we)
    del grads, x
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--n", type=int, help="tokens (default: a built-in list of shapes)")
    ap.add_argument("--h", type=int, help="hidden size")
    ap.add_argument("--v", type=int, help="vocab size")
    ap.add_argument("--dtype", choices=list(DTYPES), help="default float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--repeats", type=int, default=None, help="timed repetitions (best is reported)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    dtype = DTYPES[args.dtype or ("bfloat16" if args.device == "cuda" else "float32")]
    if args.n or args.h or args.v:
        default = CUDA_SHAPES[-1] if args.device == "cuda" else CPU_SHAPES[-1]
        shapes = [(args.n or default[0], args.h or default[1], args.v or default[2])]
    else:
        shapes = CUDA_SHAPES if args.device == "cuda" else CPU_SHAPES
    repeats = args.repeats or (5 if args.device == "cuda" else 2)
    if args.device == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    mem_how = "torch.cuda.max_memory_allocated" if args.device == "cuda" else "torch.profiler CPU memory timeline"
    path = _pick_backend(torch.device(args.device))
    print(f"masked_pg_loss fwd+bwd on {args.device}, fused path: {path}")
    print(f"peak memory = peak live tensor bytes above the inputs, from {mem_how}")
    header = f"{'N':>6} {'H':>5} {'V':>7} {'dtype':>8} | {'fused s':>8} {'eager s':>8} {'speedup':>7} | "
    header += f"{'fused MB':>9} {'eager MB':>9} {'mem ratio':>9} | {'dgrad_h':>8} {'dgrad_w':>8}"
    print(header)
    print("-" * len(header))
    results = []
    for n, h, v in shapes:
        r = bench_shape(n, h, v, dtype, args.device, repeats)
        results.append(r)
        print(f"{n:>6} {h:>5} {v:>7} {r['dtype']:>8} | {r['fused_s']:>8.3f} {r['eager_s']:>8.3f} "
              f"{r['speedup']:>6.2f}x | {r['fused_peak_mb']:>9.1f} {r['eager_peak_mb']:>9.1f} "
              f"{r['mem_ratio']:>9.3f} | {r['grad_hidden_rel_diff']:>8.1e} {r['grad_weight_rel_diff']:>8.1e}",
              flush=True)  # fmt: skip
    if args.out:
        meta = dict(
            benchmark="bench_pg_loss",
            memory_measure=mem_how,
            torch=torch.__version__,
            platform=platform.platform(),
            gpu=torch.cuda.get_device_name() if args.device == "cuda" else None,
            loss_kwargs=LOSS_KW,
            fused_path=_pick_backend(torch.device(args.device)),  # "triton" or "torch" (chunked)
        )
        with open(args.out, "w") as f:
            json.dump(dict(meta=meta, results=results), f, indent=2)
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
