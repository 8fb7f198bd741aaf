"""Next-token sampling (temperature / top-k / top-p / greedy) from ``[B, V]`` logits vs a reference.

Kernel module: ``kernels/sampling.py`` (``triton_sample``, ``sample_reference``, ``sampling_probs_reference``,
``vocab_passes``). The candidate is what the engine's ``TokenDrawer`` runs on the device; the reference is the
next-simpler code:

* CUDA: the fused Triton sampler ``triton_sample`` (radix select, several programs per row) vs the torch
  ``sample_reference`` (fp32 top-k/top-p masking by sort, float64 CDF + ``searchsorted``);
* CPU, where the engine runs ``sample_reference``: it vs the textbook way — float64 probabilities from
  ``sampling_probs_reference`` (sort-based) and ``torch.multinomial``.

``--reference naive`` forces the textbook reference on CUDA too. Samples are random, so correctness is
checked per token: greedy tokens equal the argmax, sampled tokens lie in the top-k/top-p set, and the
returned log-probs equal ``log_softmax(logits / T)`` at the token. The ``passes`` column is how many times
the Triton kernel streams the vocabulary for that setting (``vocab_passes``).

A second table puts ``triton_sample`` next to the bisection kernel it replaced (``bisection_sample_baseline``
below: one program per row, ~31 vocabulary passes per top-k / top-p threshold) and the torch reference, in the
same run: on CUDA at the shapes above, on CPU under the Triton interpreter (a subprocess with
``TRITON_INTERPRET=1``) at a small vocabulary, where the time follows the number of passes and launches.

    python benchmarks/bench_sampling.py [--device cpu|cuda] [--quick] [--repeats R] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from _harness import MiB, Table, common_parser, compare, peak_bytes, resolve_device, sync, time_fn, write_json
from zerosearch.kernels._triton import HAVE_TRITON, interpreting, next_pow2, tl, triton
from zerosearch.kernels.sampling import sample_reference, sampling_probs_reference, vocab_passes

SHAPES = {"cpu": [(16, 32000), (64, 151936)], "cuda": [(64, 151936), (256, 151936)], "quick": [(4, 1000)]}
# (label, temperature, top_k, top_p, greedy): plain rollout sampling, each cut, and greedy evaluation
SETTINGS = [("T=0.8", 0.8, 0, 1.0, False), ("top-k 50", 1.0, 50, 1.0, False), ("top-p 0.9", 1.0, 0, 0.9, False),
            ("greedy", 1.0, 0, 1.0, True)]  # fmt: skip
# the side-by-side with the bisection baseline adds both cuts at once (its worst case: ~64 passes)
SIDE_SETTINGS = [*SETTINGS[:3], ("k 50 + p 0.9", 1.0, 50, 0.9, False), SETTINGS[3]]
SIDE_SHAPES = {"cpu": [(8, 2048)], "cuda": SHAPES["cuda"], "quick": [(2, 512)]}


def naive_sample(logits: torch.Tensor, *, temperature: float, top_k: int, top_p: float, greedy: bool,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Sort-based float64 probabilities + ``torch.multinomial`` (a host sync, not graph-capturable)."""
    if greedy:
        tok = torch.argmax(logits, dim=-1)
        return tok, torch.log_softmax(logits.float(), dim=-1).gather(-1, tok[:, None]).squeeze(-1)
    probs = sampling_probs_reference(logits, temperature, top_k, top_p)
    tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    lp = torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, tok[:, None]).squeeze(-1)
    return tok, lp


# ---------------------------------------------------------------------------------------------- baseline

if HAVE_TRITON:

    @triton.jit
    def _scaled(base, rows_off, cols, ok, inv_temp):
        return tl.load(base + rows_off[:, None] + cols[None, :], mask=ok, other=-float("inf")).to(tl.float32) * inv_temp

    @triton.jit
    def _bisection_sample_kernel(
        logits_ptr, seed_ptr, tok_ptr, lp_ptr,
        B, V, stride_l, inv_temp, top_k, top_p, offset,
        GREEDY: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr,
    ):  # fmt: skip
        # ROWS rows per program: 1 on a GPU (a row's vocab is long), many under the interpreter (numpy
        # vectorises over rows). Every per-row scalar below is a [ROWS] vector.
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        row_ok = rows < B
        rows64 = rows.to(tl.int64)
        roff = rows64 * stride_l
        cols0 = tl.arange(0, BLOCK_V)
        # pass 1: max, sum-exp, argmax (first index of the max)
        m = tl.full((ROWS,), -float("inf"), tl.float32)
        s = tl.zeros((ROWS,), tl.float32)
        best_i = tl.zeros((ROWS,), tl.int32)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + cols0
            ok = row_ok[:, None] & (cols < V)[None, :]
            z = _scaled(logits_ptr, roff, cols, ok, inv_temp)
            bm = tl.max(z, axis=1)
            bi = tl.min(tl.where(z == bm[:, None], cols[None, :], V), axis=1)
            best_i = tl.where(bm > m, bi, best_i)
            m_new = tl.maximum(m, bm)
            m_new = tl.where(row_ok, m_new, 0.0)
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new[:, None]), axis=1)
            m = m_new
        lse = m + tl.log(s)
        if GREEDY:
            tok = best_i
        else:
            thresh = tl.zeros((ROWS,), tl.int32)  # int32 bits of the smallest kept p = exp(z - m)
            if top_k > 0:
                if top_k < V:
                    lo = tl.zeros((ROWS,), tl.int32)
                    hi = tl.full((ROWS,), 0x3F800001, tl.int32)  # bits(1.0) + 1: no p reaches it
                    for _ in range(31):
                        mid = lo + (hi - lo) // 2
                        cnt = tl.zeros((ROWS,), tl.int32)
                        for v0 in range(0, V, BLOCK_V):
                            cols = v0 + cols0
                            ok = row_ok[:, None] & (cols < V)[None, :]
                            p = tl.exp(_scaled(logits_ptr, roff, cols, ok, inv_temp) - m[:, None])
                            cnt += tl.sum(tl.where(ok & (p.to(tl.int32, bitcast=True) >= mid[:, None]), 1, 0), axis=1)
                        lo = tl.where(cnt >= top_k, mid, lo)
                        hi = tl.where(cnt >= top_k, hi, mid)
                    thresh = lo
            if top_p < 1.0:
                mass_k = tl.zeros((ROWS,), tl.float32)
                for v0 in range(0, V, BLOCK_V):
                    cols = v0 + cols0
                    ok = row_ok[:, None] & (cols < V)[None, :]
                    p = tl.exp(_scaled(logits_ptr, roff, cols, ok, inv_temp) - m[:, None])
                    mass_k += tl.sum(tl.where(ok & (p.to(tl.int32, bitcast=True) >= thresh[:, None]), p, 0.0), axis=1)
                target = top_p * mass_k
                lo = thresh
                hi = tl.full((ROWS,), 0x3F800001, tl.int32)
                for _ in range(31):
                    mid = lo + (hi - lo) // 2
                    mass = tl.zeros((ROWS,), tl.float32)
                    for v0 in range(0, V, BLOCK_V):
                        cols = v0 + cols0
                        ok = row_ok[:, None] & (cols < V)[None, :]
                        p = tl.exp(_scaled(logits_ptr, roff, cols, ok, inv_temp) - m[:, None])
                        mass += tl.sum(tl.where(ok & (p.to(tl.int32, bitcast=True) >= mid[:, None]), p, 0.0), axis=1)
                    lo = tl.where(mass >= target, mid, lo)
                    hi = tl.where(mass >= target, hi, mid)
                thresh = lo
            seed = tl.load(seed_ptr)
            best = tl.full((ROWS,), -float("inf"), tl.float32)
            tok = tl.zeros((ROWS,), tl.int32)
            for v0 in range(0, V, BLOCK_V):
                cols = v0 + cols0
                ok = row_ok[:, None] & (cols < V)[None, :]
                d = _scaled(logits_ptr, roff, cols, ok, inv_temp) - m[:, None]
                keep = ok & (tl.exp(d).to(tl.int32, bitcast=True) >= thresh[:, None])
                u = tl.rand(seed, rows64[:, None] * V + cols[None, :] + offset)
                score = tl.where(keep, d - tl.log(-tl.log(u)), -float("inf"))
                bm = tl.max(score, axis=1)
                bi = tl.min(tl.where(score == bm[:, None], cols[None, :], V), axis=1)
                tok = tl.where(bm > best, bi, tok)
                best = tl.maximum(best, bm)
        z_tok = tl.load(logits_ptr + roff + tok, mask=row_ok, other=0.0).to(tl.float32) * inv_temp
        tl.store(tok_ptr + rows, tok.to(tl.int64), mask=row_ok)
        tl.store(lp_ptr + rows, z_tok - lse, mask=row_ok)


def bisection_sample_baseline(
    logits: torch.Tensor,
    seed: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Comparison baseline only: the sampler `triton_sample` replaced. One program per row finds each threshold
    by bisection over the float bit pattern, ~31 passes over the vocabulary per threshold."""
    b, v = logits.shape
    tok = torch.empty(b, dtype=torch.int64, device=logits.device)
    lp = torch.empty(b, dtype=torch.float32, device=logits.device)
    block_v = min(64 if interpreting() else 4096, next_pow2(v))
    rows = min(4096, next_pow2(b)) if interpreting() else 1
    _bisection_sample_kernel[(triton.cdiv(b, rows),)](
        logits, seed, tok, lp, b, v, logits.stride(0), 1.0 if greedy else 1.0 / float(temperature), int(top_k),
        float(top_p), 0, GREEDY=bool(greedy), ROWS=rows, BLOCK_V=block_v, num_warps=8,
    )  # fmt: skip
    return tok, lp


def bisection_passes(top_k: int, top_p: float, greedy: bool, vocab: int) -> int:
    """Vocabulary passes of the bisection baseline: stats, 31 per top-k, 1 + 31 per top-p, the draw."""
    if greedy:
        return 1
    return 1 + (31 if 0 < top_k < vocab else 0) + (32 if top_p < 1.0 else 0) + 1


# ---------------------------------------------------------------------------------------------- measurement


def _checker(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, greedy: bool):
    def check(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor]) -> dict:
        tok, lp = got
        assert tok.shape == want[0].shape and tok.dtype == torch.int64, "token shape / dtype"
        if greedy:
            assert torch.equal(tok, torch.argmax(logits, dim=-1)), "greedy token is not the argmax"
            exact = torch.log_softmax(logits.double(), dim=-1)
        else:
            allowed = sampling_probs_reference(logits, temperature, top_k, top_p).gather(-1, tok[:, None]) > 0
            assert bool(allowed.all()), "a sampled token lies outside the top-k / top-p set"
            exact = torch.log_softmax(logits.double() / temperature, dim=-1)
        err = (lp.double() - exact.gather(-1, tok[:, None]).squeeze(-1)).abs().max().item()
        assert err < 1e-3, f"log-prob off by {err:.3g}"
        return {"logprob_max_abs_diff": err}

    return check


def bench_one(b: int, v: int, setting: tuple, device: torch.device, naive: bool, repeats: int) -> dict:
    label, temperature, top_k, top_p, greedy = setting
    logits = (3 * torch.randn(b, v, generator=torch.Generator().manual_seed(0))).to(device)
    kw = dict(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy)
    gen = torch.Generator(device=device).manual_seed(0)
    on_cuda = device.type == "cuda"
    if on_cuda:
        from zerosearch.kernels.sampling import triton_sample

        seed = torch.zeros(1, dtype=torch.int64, device=device)
        cand, cand_name = (lambda: triton_sample(logits, seed, **kw)), "triton_sample"
    else:
        cand, cand_name = (lambda: sample_reference(logits, generator=gen, **kw)), "sample_reference"
    if naive or not on_cuda:
        ref, ref_name = (lambda: naive_sample(logits, generator=gen, **kw)), "sort+multinomial"
    else:
        ref, ref_name = (lambda: sample_reference(logits, generator=gen, **kw)), "sample_reference"
    extra = dict(batch=b, vocab=v, setting=label, candidate=cand_name, reference=ref_name,
                 passes=vocab_passes(top_k, top_p, greedy, vocab=v, dtype=logits.dtype))  # fmt: skip
    return compare(f"sampling {label}: {cand_name} vs {ref_name}", cand, ref, device=device, repeats=repeats,
                   check=_checker(logits, temperature, top_k, top_p, greedy), extra=extra)  # fmt: skip


def _timed_once(fn, device: torch.device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def side_by_side_one(b: int, v: int, setting: tuple, device: torch.device, repeats: int) -> dict:
    """``triton_sample`` (candidate) vs the bisection baseline (reference), both checked, with the torch
    ``sample_reference`` timed beside them. Peak memory is compared on a GPU only. Under the interpreter
    each kernel runs once (the checked call is the timed one): it is slow, and its time is that of Python
    executing the kernel's operations, which grows with the launches and passes."""
    from zerosearch.kernels.sampling import triton_sample

    label, temperature, top_k, top_p, greedy = setting
    logits = (3 * torch.randn(b, v, generator=torch.Generator().manual_seed(0))).to(device)
    kw = dict(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy)
    seed = torch.zeros(1, dtype=torch.int64, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    new = lambda: triton_sample(logits, seed, **kw)
    old = lambda: bisection_sample_baseline(logits, seed, **kw)
    ref = lambda: sample_reference(logits, generator=gen, **kw)
    if interpreting():
        (new_out, new_s), (old_out, old_s) = _timed_once(new, device), _timed_once(old, device)
    else:
        new_out, old_out = new(), old()  # also compiles
        new_s, old_s = time_fn(new, device, repeats, warmup=0), time_fn(old, device, repeats, warmup=0)
    ref_out = ref()
    ref_s = time_fn(ref, device, max(repeats, 5), warmup=0)
    check = _checker(logits, temperature, top_k, top_p, greedy)
    diag = check(new_out, ref_out)
    check(old_out, ref_out)
    memory = {}
    if not interpreting():
        new_peak, old_peak = peak_bytes(new, device), peak_bytes(old, device)
        memory = {"candidate_peak_mb": new_peak / MiB, "reference_peak_mb": old_peak / MiB,
                  "mem_ratio": new_peak / max(old_peak, 1)}  # fmt: skip
    return {"name": f"sampling {label}: triton_sample vs bisection baseline", "batch": b, "vocab": v,
            "setting": label, "passes": vocab_passes(top_k, top_p, greedy, vocab=v),
            "baseline_passes": bisection_passes(top_k, top_p, greedy, v), "candidate_s": new_s, "reference_s": old_s,
            "time_ratio": new_s / old_s, "speedup": old_s / new_s, "torch_s": ref_s,
            "interpreter": interpreting(), "outputs_match": True, **memory, **diag}  # fmt: skip


def side_by_side(shapes: list[tuple[int, int]], device: torch.device, repeats: int) -> list[dict]:
    table = Table([("batch", "B", "d"), ("vocab", "V", "d"), ("setting", "setting", "s"), ("passes", "passes", "d"),
                   ("baseline_passes", "old passes", "d"), ("torch_s", "torch ms", "ms")])  # fmt: skip
    where = "the Triton interpreter (CPU)" if interpreting() else str(device)
    print(f"\ntriton_sample (cand) vs the bisection baseline (ref), torch sample_reference beside, on {where}:")
    table.header()
    rows = []
    for b, v in shapes:
        for setting in SIDE_SETTINGS:
            rows.append(side_by_side_one(b, v, setting, device, repeats))
            table.row(rows[-1])
    return rows


def side_by_side_interpreted(quick: bool) -> list[dict]:
    """Run the side-by-side in a child process under ``TRITON_INTERPRET=1`` (Triton reads it at import)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--device", "cpu", "--side-by-side-only", out]
        subprocess.run(cmd + (["--quick"] if quick else []), check=True, env={**os.environ, "TRITON_INTERPRET": "1"})
        with open(out) as f:
            return json.load(f)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[common_parser()])
    ap.add_argument("--reference", choices=["auto", "naive"], default="auto",
                    help="auto: sample_reference on CUDA, sort+multinomial on CPU")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="one tiny shape (smoke test)")
    ap.add_argument("--side-by-side-only", metavar="JSON", help=argparse.SUPPRESS)  # the interpreter child process
    args = ap.parse_args(argv)
    device = resolve_device(ap, args.device)
    if args.side_by_side_only:
        rows = side_by_side(SIDE_SHAPES["quick" if args.quick else "cpu"], device, 1)
        with open(args.side_by_side_only, "w") as f:
            json.dump(rows, f)
        return rows
    repeats = args.repeats or (20 if device.type == "cuda" else 5)
    table = Table([("batch", "B", "d"), ("vocab", "V", "d"), ("setting", "setting", "s"),
                   ("passes", "passes", "d"), ("logprob_max_abs_diff", "lp diff", ".1e")])  # fmt: skip
    table.header()
    rows = []
    for b, v in SHAPES["quick" if args.quick else device.type]:
        for setting in SETTINGS:
            rows.append(bench_one(b, v, setting, device, args.reference == "naive", repeats))
            table.row(rows[-1])
    if HAVE_TRITON:
        if device.type == "cuda":
            rows += side_by_side(SIDE_SHAPES["quick" if args.quick else "cuda"], device, repeats)
        else:
            rows += side_by_side_interpreted(args.quick)
    write_json(args.out, "bench_sampling", rows, device, reference=args.reference)
    return rows


if __name__ == "__main__":
    main()
