"""Fused on-device sampling (temperature, top-k, top-p, greedy) in Triton, plus the torch reference.

One program per row (per block of rows under the interpreter) streams the vocabulary a few times and never sorts:

1. online max / sum-exp of ``z = logits / T`` → ``lse`` (also the greedy argmax);
2. top-k: the k-th largest probability is found *exactly* by bisection over the IEEE bit pattern of
   ``p = exp(z - max)`` (positive floats order like their int32 bits, so 31 halvings pin it down);
3. top-p: likewise the largest threshold ``t`` with ``mass(p >= t) >= top_p * mass(top-k set)`` — this
   keeps the smallest set of most likely tokens whose mass reaches ``top_p``, the sort-based definition
   (tokens tied at the boundary are all kept);
4. sample by the exponential race / Gumbel-max trick ``argmax(log p_i - log(-log u_i))`` over kept tokens,
   with Philox uniforms ``tl.rand(seed, row * V + i)``. The seed is read from a device tensor, so a
   captured CUDA graph can advance it without a host round trip.

The returned log-prob is that of the sampled token under the temperature-scaled distribution before the
top-k/top-p cut (what `HFSampler` and the trainer's `token_logprobs` compute). Steps 2/3 are skipped at
run time when top-k / top-p are off, so plain temperature sampling costs two passes.
"""

from __future__ import annotations

import torch

from ._triton import HAVE_TRITON, interpreting, tl, triton

__all__ = ["HAVE_TRITON", "sampling_probs_reference", "sample_reference", "triton_sample"]


def sampling_probs_reference(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Probabilities of the sampling distribution ``[B, V]`` (float64), computed by sorting.

    top-k keeps the k largest logits; top-p then keeps the smallest prefix of the descending order whose
    mass reaches ``top_p`` (a token is kept iff the mass strictly before it is ``< top_p``).
    """
    z = logits.double() / temperature
    v = z.shape[-1]
    if 0 < top_k < v:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sz, idx = torch.sort(z, dim=-1, descending=True)
        sp = torch.softmax(sz, dim=-1)
        before = torch.cumsum(sp, dim=-1) - sp
        drop_sorted = before >= top_p
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
        z = z.masked_fill(drop, float("-inf"))
    return torch.softmax(z, dim=-1)


def sample_reference(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch sampling used by the engine off-GPU: ``(tokens [B] int64, logprobs [B] fp32)``.

    No host sync: one uniform per row is mapped through the float64 CDF (``searchsorted``, right side, so a
    zero-probability token can never be picked). Unlike `torch.multinomial` this is capturable in a CUDA
    graph, and on CPU it is far cheaper than a vocab-sized exponential or Gumbel draw.
    """
    z = logits.float()
    if greedy:
        tok = torch.argmax(z, dim=-1)
        lp = torch.log_softmax(z, dim=-1)
    else:
        lp = torch.log_softmax(z / temperature, dim=-1)
        if top_k <= 0 and top_p >= 1.0:
            probs = lp.exp()
        else:
            probs = _masked_probs_fast(z / temperature, top_k, top_p)
        cdf = torch.cumsum(probs.double(), dim=-1)
        u = torch.rand(z.shape[0], 1, dtype=torch.float64, device=z.device, generator=generator) * cdf[:, -1:]
        tok = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_max(z.shape[-1] - 1)
    return tok, lp.gather(-1, tok.unsqueeze(-1)).squeeze(-1)


def _masked_probs_fast(z: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """fp32 version of `sampling_probs_reference` for the engine (same rule, no float64)."""
    v = z.shape[-1]
    if 0 < top_k < v:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sz, idx = torch.sort(z, dim=-1, descending=True)
        sp = torch.softmax(sz, dim=-1)
        drop_sorted = (torch.cumsum(sp, dim=-1) - sp) >= top_p
        drop_sorted[:, 0] = False
        z = z.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted), float("-inf"))
    return torch.softmax(z, dim=-1)


if HAVE_TRITON:

    @triton.jit
    def _scaled(base, rows_off, cols, ok, inv_temp):
        return tl.load(base + rows_off[:, None] + cols[None, :], mask=ok, other=-float("inf")).to(tl.float32) * inv_temp

    @triton.jit
    def _sample_kernel(
        logits_ptr, seed_ptr, tok_ptr, lp_ptr, probs_ptr,
        B, V, stride_l, stride_p, inv_temp, top_k, top_p, offset,
        GREEDY: tl.constexpr, WRITE_PROBS: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr,
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
            if WRITE_PROBS:
                kept = tl.zeros((ROWS,), tl.float32)
                for v0 in range(0, V, BLOCK_V):
                    cols = v0 + cols0
                    ok = row_ok[:, None] & (cols < V)[None, :]
                    p = tl.exp(_scaled(logits_ptr, roff, cols, ok, inv_temp) - m[:, None])
                    kept += tl.sum(tl.where(ok & (p.to(tl.int32, bitcast=True) >= thresh[:, None]), p, 0.0), axis=1)
                for v0 in range(0, V, BLOCK_V):
                    cols = v0 + cols0
                    ok = row_ok[:, None] & (cols < V)[None, :]
                    p = tl.exp(_scaled(logits_ptr, roff, cols, ok, inv_temp) - m[:, None])
                    keep = p.to(tl.int32, bitcast=True) >= thresh[:, None]
                    out = tl.where(keep, p / kept[:, None], 0.0)
                    tl.store(probs_ptr + rows64[:, None] * stride_p + cols[None, :], out, mask=ok)
        z_tok = tl.load(logits_ptr + roff + tok, mask=row_ok, other=0.0).to(tl.float32) * inv_temp
        tl.store(tok_ptr + rows, tok.to(tl.int64), mask=row_ok)
        tl.store(lp_ptr + rows, z_tok - lse, mask=row_ok)


def triton_sample(
    logits: torch.Tensor,
    seed: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    offset: int = 0,
    return_probs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tokens [B] int64, logprobs [B] fp32[, probs [B, V] fp32])`` for ``logits [B, V]``.

    ``seed`` is a one-element int32/int64 device tensor (advance it in place between steps); ``offset``
    shifts the Philox counters, e.g. to draw independent samples from one seed. Greedy ignores the
    temperature and reports log-probs at temperature 1, like `HFSampler`.
    """
    if not HAVE_TRITON:
        raise RuntimeError("triton_sample needs the `triton` package")
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    b, v = logits.shape
    tok = torch.empty(b, dtype=torch.int64, device=logits.device)
    lp = torch.empty(b, dtype=torch.float32, device=logits.device)
    probs = torch.empty(b, v, dtype=torch.float32, device=logits.device) if return_probs else lp
    if b:
        inv_temp = 1.0 if greedy else 1.0 / float(temperature)
        interp = interpreting()
        block_v = min(64 if interp else 4096, triton.next_power_of_2(v))
        rows = min(4096, triton.next_power_of_2(b)) if interp else 1
        _sample_kernel[(triton.cdiv(b, rows),)](
            logits, seed, tok, lp, probs, b, v, logits.stride(0), probs.stride(0) if return_probs else 0,
            inv_temp, int(top_k), float(top_p), int(offset),
            GREEDY=bool(greedy), WRITE_PROBS=bool(return_probs), ROWS=rows, BLOCK_V=block_v, num_warps=8,
        )  # fmt: skip
    return (tok, lp, probs) if return_probs else (tok, lp)
