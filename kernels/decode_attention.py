"""Split-KV attention for decode (and for the shared prefix), with GQA, in Triton, plus the torch reference.

Layout: queries are grouped by the KV head they read, ``q [Z, M, D]``: for a decode step over a per-row
cache ``Z = B * Hkv`` and ``M = G`` (the G query heads of one KV head); for the shared prefix ``Z = Hkv``
and ``M = B * G``, so every sequence's queries of a KV head meet the prefix keys in one tile loop and the
prefix is read once per step for the whole batch. Keys of group ``z`` are ``k[z, start[z]:end[z]]``
(``start`` skips left padding; ``end`` is the filled length).

Why split-KV: at decode there is one query per head, so parallelising over (batch, head) alone leaves most
SMs idle for small batches and long caches. The key range is cut into ``S`` splits, each program writes an
un-normalised partial (``out`` normalised within the split, plus its log-sum-exp) and
:mod:`zerosearch.kernels.attn_merge` combines the partials exactly. The same merge combines prefix and suffix parts.

An empty key range gives ``lse = -inf`` and ``out = 0``, which the merge ignores.
"""

from __future__ import annotations

import math

import torch

from ._triton import HAVE_TRITON, interpreting, next_pow2, tl, triton

__all__ = ["HAVE_TRITON", "attention_partial_reference", "split_kv_attention"]


def attention_partial_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    start: torch.Tensor | None,
    end: torch.Tensor | None,
    scale: float,
    *,
    compute_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked attention ``q [Z, M, D]`` over ``k, v [Z, N, D]`` → ``(out [Z, M, D], lse [Z, M])``.

    Keys outside ``[start[z], end[z])`` are masked (``None`` = no mask). Computed in ``compute_dtype``
    (default: float32, or float64 for float64 inputs); ``out`` and ``lse`` come back in that dtype.
    """
    cd = compute_dtype or (torch.float64 if q.dtype == torch.float64 else torch.float32)
    s = torch.matmul(q.to(cd), k.to(cd).transpose(-1, -2)) * scale  # [Z, M, N]
    if start is not None or end is not None:
        n = torch.arange(k.shape[1], device=q.device)
        ok = torch.ones(k.shape[0], k.shape[1], dtype=torch.bool, device=q.device)
        if start is not None:
            ok &= n[None, :] >= start[:, None]
        if end is not None:
            ok &= n[None, :] < end[:, None]
        s = s.masked_fill(~ok[:, None, :], float("-inf"))
    lse = torch.logsumexp(s, dim=-1)  # -inf for an empty range
    p = torch.exp(s - lse.unsqueeze(-1).clamp_min(torch.finfo(cd).min))
    p = torch.nan_to_num(p, nan=0.0)
    out = torch.matmul(p, v.to(cd))
    return out, lse


if HAVE_TRITON:

    @triton.jit
    def _split_kv_kernel(
        q_ptr, k_ptr, v_ptr, start_ptr, end_ptr, o_ptr, lse_ptr,
        M, D, split_len, scale,
        sqz, sqm, skz, skn, svz, svn, soz, som, sos, slz, slm,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_FP32: tl.constexpr,
    ):  # fmt: skip
        z = tl.program_id(0)
        mb = tl.program_id(1)
        sp = tl.program_id(2)
        z64 = z.to(tl.int64)
        rows = mb * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        d = tl.arange(0, BLOCK_D)
        d_ok = d < D
        q = tl.load(q_ptr + z64 * sqz + rows[:, None] * sqm + d[None, :], mask=row_ok[:, None] & d_ok[None, :],
                    other=0.0)  # fmt: skip
        if DOT_FP32:
            q = q.to(tl.float32)
        lo = tl.maximum(tl.load(start_ptr + z), sp * split_len)
        hi = tl.minimum(tl.load(end_ptr + z), (sp + 1) * split_len)
        m_i = tl.full((BLOCK_M,), -1.0e30, dtype=tl.float32)
        l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
        for n0 in range(lo, hi, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            n_ok = n < hi
            kv_mask = n_ok[:, None] & d_ok[None, :]
            k = tl.load(k_ptr + z64 * skz + n[:, None].to(tl.int64) * skn + d[None, :], mask=kv_mask, other=0.0)
            if DOT_FP32:
                s = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k))
            s = tl.where(n_ok[None, :], s * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(v_ptr + z64 * svz + n[:, None].to(tl.int64) * svn + d[None, :], mask=kv_mask, other=0.0)
            if DOT_FP32:
                acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        has = l_i > 0.0
        out = acc / tl.where(has, l_i, 1.0)[:, None]
        lse = tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("-inf"))
        tl.store(o_ptr + z64 * soz + rows[:, None] * som + sp * sos + d[None, :], out,
                 mask=row_ok[:, None] & d_ok[None, :])  # fmt: skip
        tl.store(lse_ptr + z64 * slz + rows * slm + sp, lse, mask=row_ok)


def _pick_splits(z: int, m_blocks: int, n: int, block_n: int) -> int:
    """Enough programs to fill the GPU (~4 per SM), but no split shorter than two key blocks."""
    if interpreting() or not torch.cuda.is_available():
        return max(1, min(4, n // (2 * block_n)))
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    want = max(1, math.ceil(4 * sms / max(1, z * m_blocks)))
    return max(1, min(want, n // (2 * block_n), 64))


def split_kv_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    scale: float,
    *,
    num_splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Partials ``(out [Z, M, S, D] fp32, lse [Z, M, S] fp32)`` of attention over key splits.

    ``q [Z, M, D]``, ``k, v [Z, N, D]`` (any strides with unit stride along D), ``start, end [Z]`` int32.
    Combine with :func:`zerosearch.kernels.attn_merge.merge_partials` (flatten ``[Z, M]`` first).
    """
    if not HAVE_TRITON:
        raise RuntimeError("split_kv_attention needs the `triton` package")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("q, k and v need unit stride along the head dimension")
    z, m, d = q.shape
    n = k.shape[1]
    interp = interpreting()
    fp32 = interp or q.dtype == torch.float32
    block_m = 16 if m <= 16 else (32 if interp else 64)
    block_n = 32 if interp else (64 if d <= 64 else 32)
    block_d = max(16, next_pow2(d))
    m_blocks = triton.cdiv(m, block_m)
    splits = num_splits or _pick_splits(z, m_blocks, n, block_n)
    split_len = triton.cdiv(triton.cdiv(max(n, 1), splits), block_n) * block_n
    out = torch.empty(z, m, splits, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(z, m, splits, dtype=torch.float32, device=q.device)
    _split_kv_kernel[(z, m_blocks, splits)](
        q, k, v, start.to(torch.int32).contiguous(), end.to(torch.int32).contiguous(), out, lse,
        m, d, split_len, float(scale),
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1), out.stride(2), lse.stride(0), lse.stride(1),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, DOT_FP32=fp32,
        num_warps=4, num_stages=1 if interp else 2,
    )  # fmt: skip
    return out, lse
