"""Decode attention with a shared prefix, and the log-sum-exp merge of attention partials, vs references.

Kernel modules: ``kernels/decode_attention.py`` (``split_kv_attention`` and ``attention_partial_reference``)
and ``kernels/attn_merge.py`` (``merge_partials`` and ``merge_partials_reference``). Two ops (``--op``):

* ``decode``: one decode step of ``zerosearch.ops.decode_attention.decode_attention`` — each row's query against
  the shared prefix (read once per KV head for the whole batch) and its own left-padded cache, merged.
* ``merge``: ``[R, S, D]`` partials with their log-sum-exps → ``[R, D]``, the rule that joins split-KV
  partials and the prefix/suffix parts (some parts empty, ``lse = -inf``).
* ``splitkv``: the per-row cache part of a decode step alone (``Z = B * Hkv`` groups of ``G`` query heads)
  over a cache of ``N`` slots of which ``L`` are live, early (``L`` = 16) and late (``L`` near ``N``) in a
  generate call. Besides the ratios it reports the K/V bytes of the live keys and the bandwidth that gives
  (bytes / time), eager and, on CUDA, as CUDA-graph replays (how the engine runs decode; GPU time per step
  from CUDA events, without host launch cost), to compare with the GPU's HBM bandwidth (H200: 4.8 TB/s,
  H100 SXM: 3.35 TB/s, A100 80GB: 2.0 TB/s). At ``L`` = 16 the K/V fit in L2 and launch latency dominates.

The candidate is what the engine runs on the device; the reference is the next-simpler torch code:

* CUDA: the Triton kernels (``split_kv_attention`` + ``merge_partials``) vs the modules' torch references
  (the engine's torch decode path, ``merge_partials_reference``);
* CPU, where the engine itself runs those torch references: they vs a naive implementation (decode: every
  row gets its own copy of prefix + cache, GQA heads expanded, one masked softmax, as HF eager attention
  does; merge: a float64 softmax over the log-sum-exps).

``splitkv`` compares ``split_kv_attention`` + ``merge_partials`` (CUDA) or the engine's eager torch path
(CPU: the cache sliced to the live length) with ``attention_partial_reference`` over the whole cache, masked,
as a captured graph must run it. (The Triton interpreter is left out: its times mean nothing and the
profiler's memory measurement over it takes minutes.)

``--reference naive`` forces the naive reference on CUDA too. Outputs are compared before timing.

    python benchmarks/bench_decode_attention.py [--op decode|merge|splitkv|all] [--device cpu|cuda] [--quick]
        [--out f.json]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from _harness import Table, common_parser, compare, resolve_device, write_json
from zerosearch.kernels.attn_merge import merge_partials_reference
from zerosearch.kernels.decode_attention import attention_partial_reference

from zerosearch.ops.decode_attention import decode_attention

# decode: (batch, query heads, kv heads, head dim, prefix length, cache length)
DECODE_SHAPES = {
    "cpu": [(64, 4, 2, 32, 100, 48), (32, 16, 2, 128, 1024, 512)],
    # Qwen2.5-3B (16 query / 2 KV heads) and Qwen2.5-7B (28 / 4), head dim 128
    "cuda": [(64, 16, 2, 128, 1024, 512), (256, 16, 2, 128, 2048, 2048), (64, 28, 4, 128, 1536, 512)],
    "quick": [(3, 4, 2, 16, 8, 6)],
}
# merge: (rows, parts, head dim)
MERGE_SHAPES = {
    "cpu": [(64 * 4, 2, 32), (4096, 16, 128)],
    "cuda": [(256 * 16, 2, 128), (16384, 16, 128)],
    "quick": [(8, 3, 16)],
}
# splitkv: (batch, kv heads, query heads per kv head, head dim, cache slots N, live keys L)
SPLITKV_SHAPES = {
    "cpu": [(16, 2, 8, 128, 2048, 16), (16, 2, 8, 128, 2048, 2000)],
    "cuda": [(b, 2, 8, 128, 2048, live) for b in (64, 256) for live in (16, 2000)],
    "quick": [(2, 2, 3, 16, 96, 5), (2, 2, 3, 16, 96, 90)],
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def naive_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, start: torch.Tensor,
                           prefix_k: torch.Tensor, prefix_v: torch.Tensor, scale: float) -> torch.Tensor:  # fmt: skip
    """``q [B, H, D]`` over ``prefix [Hkv, P, D]`` + ``cache [B, Hkv, S, D]`` slots ``>= start[b]``, no sharing."""
    b, h, d = q.shape
    hkv, p = prefix_k.shape[0], prefix_k.shape[1]
    k = torch.cat((prefix_k.expand(b, -1, -1, -1), k_cache), dim=2).repeat_interleave(h // hkv, dim=1).float()
    v = torch.cat((prefix_v.expand(b, -1, -1, -1), v_cache), dim=2).repeat_interleave(h // hkv, dim=1).float()
    scores = torch.matmul(q.float().unsqueeze(2), k.transpose(-1, -2)).squeeze(2) * scale  # [B, H, P + S]
    pos = torch.arange(k.shape[2], device=q.device)
    ok = (pos[None, :] < p) | (pos[None, :] >= p + start[:, None])  # prefix, then the row's real tokens
    scores = scores.masked_fill(~ok[:, None, :], float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1).unsqueeze(2), v).squeeze(2).to(q.dtype)


def naive_merge(out: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """Merge by a float64 softmax over the parts' log-sum-exps (rows must have one non-empty part)."""
    w = torch.softmax(lse.double(), dim=-1)
    return (w.unsqueeze(-1) * out.double()).sum(dim=1).to(out.dtype)


def _checker(tol: float) -> Callable[[torch.Tensor, torch.Tensor], dict]:
    def check(got: torch.Tensor, want: torch.Tensor) -> dict:
        err = (got.float() - want.float()).abs().max().item()
        assert err <= tol * max(1.0, want.abs().max().item()), f"max abs diff {err:.3g}"
        return {"max_abs_diff": err}

    return check


def bench_decode(shape: tuple, dtype: torch.dtype, device: torch.device, naive: bool, repeats: int) -> dict:
    b, h, hkv, d, p, s = shape
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, h, d, generator=g).to(device, dtype)
    k_cache, v_cache = (torch.randn(b, hkv, s, d, generator=g).to(device, dtype) for _ in range(2))
    prefix_k, prefix_v = (torch.randn(hkv, p, d, generator=g).to(device, dtype) for _ in range(2))
    start = torch.randint(0, s // 4 + 1, (b,), generator=g).to(device=device, dtype=torch.int32)  # left padding
    end = torch.full((b,), s, dtype=torch.int32, device=device)
    scale = d**-0.5
    on_cuda = device.type == "cuda"
    # on CPU the engine slices the cache to its filled length (kv_limit); the CUDA-graph path masks with `end`
    cand = lambda: decode_attention(q, k_cache, v_cache, start, end, prefix_k, prefix_v, scale,
                                    kv_limit=None if on_cuda else s, use_triton=on_cuda)  # fmt: skip
    if naive or not on_cuda:
        ref, ref_name = lambda: naive_decode_attention(q, k_cache, v_cache, start, prefix_k, prefix_v, scale), "naive"
    else:
        ref = lambda: decode_attention(q, k_cache, v_cache, start, end, prefix_k, prefix_v, scale, use_triton=False)
        ref_name = "torch reference"
    cand_name = "triton split-KV" if on_cuda else "engine torch path"
    extra = dict(op="decode", shape=f"B{b} H{h}/{hkv} D{d} P{p} S{s}", dtype=str(dtype).removeprefix("torch."),
                 candidate=cand_name, reference=ref_name)  # fmt: skip
    return compare(f"decode: {cand_name} vs {ref_name}", cand, ref, device=device, repeats=repeats,
                   check=_checker(TOLERANCE[dtype]), extra=extra)  # fmt: skip


def bench_merge(shape: tuple, device: torch.device, naive: bool, repeats: int) -> dict:
    r, s, d = shape
    g = torch.Generator().manual_seed(0)
    out = torch.randn(r, s, d, generator=g).to(device)
    lse = (3 * torch.randn(r, s, generator=g)).to(device)
    empty = torch.rand(r, s, generator=g) < 0.2  # empty splits (no keys) ...
    empty[:, 0] = False  # ... but every row has keys somewhere (the naive merge would give nan)
    lse = lse.masked_fill(empty.to(device), float("-inf"))
    on_cuda = device.type == "cuda"
    if on_cuda:
        from zerosearch.kernels.attn_merge import merge_partials

        cand, cand_name = (lambda: merge_partials(out, lse)[0]), "triton merge_partials"
    else:
        cand, cand_name = (lambda: merge_partials_reference(out, lse)[0]), "merge_partials_reference"
    if naive or not on_cuda:
        ref, ref_name = (lambda: naive_merge(out, lse)), "naive float64"
    else:
        ref, ref_name = (lambda: merge_partials_reference(out, lse)[0]), "merge_partials_reference"
    extra = dict(op="merge", shape=f"R{r} S{s} D{d}", dtype="float32", candidate=cand_name, reference=ref_name)
    return compare(f"merge: {cand_name} vs {ref_name}", cand, ref, device=device, repeats=repeats,
                   check=_checker(TOLERANCE[torch.float32]), extra=extra)  # fmt: skip


def cuda_graph_seconds(fn: Callable[[], object], iters: int = 50, samples: int = 5) -> float:
    """GPU seconds per call of ``fn`` captured in a CUDA graph: median over ``samples`` of ``iters`` replays
    timed by CUDA events, so host launch cost (which a captured decode step does not pay) is left out."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()  # warm-up off the capture (Triton compiles, the allocator grows)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    times = []
    for _ in range(samples):
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        for _ in range(iters):
            graph.replay()
        t1.record()
        t1.synchronize()
        times.append(t0.elapsed_time(t1) / 1e3 / iters)
    return statistics.median(times)


def bench_splitkv(shape: tuple, dtype: torch.dtype, device: torch.device, repeats: int) -> dict:
    b, hkv, g, d, n, live = shape
    z = b * hkv
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(z, g, d, generator=gen).to(device, dtype)
    k, v = (torch.randn(z, n, d, generator=gen).to(device, dtype) for _ in range(2))
    start = torch.zeros(z, dtype=torch.int32, device=device)
    end = torch.full((z,), live, dtype=torch.int32, device=device)
    scale = d**-0.5
    on_cuda = device.type == "cuda"
    if on_cuda:
        from zerosearch.kernels.attn_merge import merge_partials
        from zerosearch.kernels.decode_attention import split_kv_attention

        def cand():
            o, lse = split_kv_attention(q, k, v, start, end, scale)
            return merge_partials(o.reshape(z * g, -1, d), lse.reshape(z * g, -1))[0].view(z, g, d)

        cand_name = "triton split-KV + merge"
    else:
        cand = lambda: attention_partial_reference(q, k[:, :live], v[:, :live], None, None, scale)[0]
        cand_name = "torch, cache sliced to live"
    ref = lambda: attention_partial_reference(q, k, v, start, end, scale)[0]
    kv_bytes = 2 * z * live * d * q.element_size()
    extra = dict(op="splitkv", shape=f"B{b} H{hkv * g}/{hkv} D{d} N{n} L{live}",
                 dtype=str(dtype).removeprefix("torch."), candidate=cand_name, reference="torch masked whole cache",
                 kv_mb=kv_bytes / 1e6)  # fmt: skip
    row = compare(f"splitkv: {cand_name} vs torch masked whole cache", cand, ref, device=device, repeats=repeats,
                  check=_checker(TOLERANCE[dtype]), extra=extra)  # fmt: skip
    row["kv_gbps"] = kv_bytes / row["candidate_s"] / 1e9
    if on_cuda:
        row["graph_s"] = cuda_graph_seconds(cand)
        row["graph_gbps"] = kv_bytes / row["graph_s"] / 1e9
        row["ref_graph_s"] = cuda_graph_seconds(ref)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[common_parser()])
    ap.add_argument("--op", choices=["decode", "merge", "splitkv", "all"], default="all")
    ap.add_argument("--dtype", choices=list(DTYPES), help="decode inputs; default float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--reference", choices=["auto", "naive"], default="auto",
                    help="auto: torch references on CUDA, naive on CPU")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="one tiny shape per op (smoke test)")
    args = ap.parse_args(argv)
    device = resolve_device(ap, args.device)
    key = "quick" if args.quick else device.type
    dtype = DTYPES[args.dtype or ("bfloat16" if device.type == "cuda" else "float32")]
    repeats = args.repeats or (20 if device.type == "cuda" else 5)
    naive = args.reference == "naive"

    table = Table([("op", "op", "s"), ("shape", f"{'shape':>26}", "s"), ("dtype", "dtype", "s"),
                   ("max_abs_diff", "max diff", ".1e")])  # fmt: skip
    table.header()
    rows = []
    if args.op in ("decode", "all"):
        for shape in DECODE_SHAPES[key]:
            rows.append(bench_decode(shape, dtype, device, naive, repeats))
            table.row(rows[-1])
    if args.op in ("merge", "all"):
        for shape in MERGE_SHAPES[key]:
            rows.append(bench_merge(shape, device, naive, repeats))
            table.row(rows[-1])
    if args.op in ("splitkv", "all"):
        kv_table = Table([("op", "op", "s"), ("shape", f"{'shape':>30}", "s"), ("dtype", "dtype", "s"),
                          ("kv_mb", "K/V MB", ".2f"), ("kv_gbps", "GB/s eager", ".1f"), ("graph_s", "graph ms", "ms"),
                          ("graph_gbps", "GB/s graph", ".1f"), ("ref_graph_s", "ref graph ms", "ms")])  # fmt: skip
        print()
        kv_table.header()
        for shape in SPLITKV_SHAPES[key]:
            rows.append(bench_splitkv(shape, dtype, device, repeats))
            kv_table.row(rows[-1])
    write_json(args.out, "bench_decode_attention", rows, device, op=args.op, reference=args.reference)
    return rows


if __name__ == "__main__":
    main()
