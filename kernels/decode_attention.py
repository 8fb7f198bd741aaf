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

import functools
import math

import torch

from ._triton import HAVE_TRITON, interpreting, next_pow2, tl, triton

__all__ = ["HAVE_TRITON", "attention_partial_reference", "split_kv_attention"]

_LOG2E = 1.4426950408889634


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
        M, qk_scale,
        sqz, sqm, skz, skn, svz, svn, soz, som, sos, slz, slm,
        HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
        PRECISION: tl.constexpr,
    ):  # fmt: skip
        """One (group z, query block, split) program; scores are kept in log2 units (``qk_scale`` has log2(e))."""
        z = tl.program_id(0)
        mb = tl.program_id(1)
        sp = tl.program_id(2)
        n_splits = tl.num_programs(2)
        z64 = z.to(tl.int64)
        rows = mb * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        d = tl.arange(0, BLOCK_D)
        if BLOCK_D == HEAD_D:
            qo_mask = row_ok[:, None]
        else:
            qo_mask = row_ok[:, None] & (d < HEAD_D)[None, :]
        q = tl.load(q_ptr + z64 * sqz + rows[:, None] * sqm + d[None, :], mask=qo_mask, other=0.0)
        if PRECISION == "ieee":
            q = q.to(tl.float32)
        # This split's share of the live range [start, end): blocks of BLOCK_N keys counted from start, split
        # evenly (floor/ceil) over the splits, so every split has keys once there are as many blocks as splits.
        lo_z = tl.load(start_ptr + z)
        hi_z = tl.load(end_ptr + z)
        n_blocks = tl.cdiv(tl.maximum(hi_z - lo_z, 0), BLOCK_N)
        lo = lo_z + (sp * n_blocks // n_splits) * BLOCK_N
        hi = tl.minimum(hi_z, lo_z + ((sp + 1) * n_blocks // n_splits) * BLOCK_N)
        m_i = tl.full((BLOCK_M,), -1.0e30, dtype=tl.float32)
        l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
        k_base = k_ptr + z64 * skz + d[None, :]
        v_base = v_ptr + z64 * svz + d[None, :]
        for n0 in range(lo, hi, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            n_ok = n < hi
            if BLOCK_D == HEAD_D:
                kv_mask = n_ok[:, None]
            else:
                kv_mask = n_ok[:, None] & (d < HEAD_D)[None, :]
            k = tl.load(k_base + n[:, None].to(tl.int64) * skn, mask=kv_mask, other=0.0)
            v = tl.load(v_base + n[:, None].to(tl.int64) * svn, mask=kv_mask, other=0.0)
            if PRECISION == "ieee":
                k = k.to(tl.float32)
                v = v.to(tl.float32)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
            s = tl.where(n_ok[None, :], s * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m_i = m_new
        has = l_i > 0.0
        l_safe = tl.where(has, l_i, 1.0)
        out = acc / l_safe[:, None]
        lse = tl.where(has, (m_i + tl.log2(l_safe)) * 0.6931471805599453, float("-inf"))
        tl.store(o_ptr + z64 * soz + rows[:, None] * som + sp * sos + d[None, :], out, mask=qo_mask)
        tl.store(lse_ptr + z64 * slz + rows * slm + sp, lse, mask=row_ok)


# CUDA tiles per (inputs, phase, head dim): (BLOCK_M, BLOCK_N, num_warps, num_stages). Decode has M <= 16
# queries per group (one KV head's G query heads), the shared prefix M = B * G. Every entry compiles for
# sm_80 and sm_90 without register spills and within the A100's shared memory; the 16-bit prefix tiles run
# on Hopper's wgmma (64 rows). fp32 (tf32x3) keeps each operand as two tf32 halves in registers, hence the
# smaller fp32 tiles. Other head dims take the last-resort entries.
_CUDA_TILES = {
    ("16bit", "decode", 64): (16, 128, 4, 3),
    ("16bit", "decode", 128): (16, 64, 4, 3),
    ("16bit", "prefix", 64): (64, 64, 4, 3),
    ("16bit", "prefix", 128): (64, 64, 4, 3),
    ("float32", "decode", 64): (16, 64, 4, 3),
    ("float32", "decode", 128): (16, 32, 4, 3),
    ("float32", "prefix", 64): (32, 32, 4, 3),
    ("float32", "prefix", 128): (32, 32, 8, 2),
}
_CUDA_TILES_OTHER = {
    ("16bit", "decode"): (16, 32, 4, 2),
    ("16bit", "prefix"): (32, 32, 4, 2),
    ("float32", "decode"): (16, 32, 4, 2),
    ("float32", "prefix"): (16, 32, 4, 2),
}


def _config(dtype: torch.dtype, m: int, d: int, interp: bool) -> dict:
    """Launch configuration for ``M = m`` queries per group of head dim ``d``.

    On CUDA, 16-bit inputs meet the tensor cores as they are (fp32 accumulation) and fp32 inputs as tf32x3
    (three tf32 products: tensor cores, error near fp32 rounding, so an fp32 model keeps fp32-accurate
    attention; decode is bound by reading K/V, not by the extra products). The CPU interpreter computes
    exact fp32 dots, its 16-bit dots being wrong.
    """
    block_d = max(16, next_pow2(d))
    if interp:
        return dict(BLOCK_M=16 if m <= 16 else 32, BLOCK_N=32, BLOCK_D=block_d, PRECISION="ieee",
                    num_warps=4, num_stages=1)  # fmt: skip
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"split_kv_attention on CUDA takes float32, float16 or bfloat16 inputs, not {dtype}")
    kind = "float32" if dtype == torch.float32 else "16bit"
    phase = "decode" if m <= 16 else "prefix"
    block_m, block_n, warps, stages = _CUDA_TILES.get((kind, phase, block_d), _CUDA_TILES_OTHER[kind, phase])
    if kind == "float32" and block_d > 128:
        warps = 8  # spreads the two-halves operands of head dim 256 over more registers
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, PRECISION="tf32x3" if kind == "float32" else "tf32",
                num_warps=warps, num_stages=stages)  # fmt: skip


@functools.cache
def _sm_count(index: int) -> int:
    """Multiprocessor count of a device, queried once (the query is a driver call)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


def _pick_splits(z: int, m_blocks: int, n: int, block_n: int, device: torch.device) -> int:
    """Enough programs to fill the GPU (~4 per SM), but at most one split per two key blocks of ``n``.

    ``n`` bounds the key length (the allocated cache), so the count is fixed for a cache and a CUDA graph
    captured once replays with it; the kernel spreads each group's live keys over the splits on the device.
    """
    if device.type != "cuda" or interpreting():
        return max(1, min(4, n // (2 * block_n)))
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
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
    Split ``s`` of group ``z`` covers the ``s``-th of ``S`` near-equal shares, in whole ``BLOCK_N`` key blocks
    (the last one clipped at ``end``), of the live range ``[start[z], end[z])``; it is read on the device,
    so the launch does not change as the cache fills. Splits without keys give ``lse = -inf``, ``out = 0``.
    Combine with :func:`zerosearch.kernels.attn_merge.merge_partials` (flatten ``[Z, M]`` first).
    """
    if not HAVE_TRITON:
        raise RuntimeError("split_kv_attention needs the `triton` package")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("q, k and v need unit stride along the head dimension")
    z, m, d = q.shape
    n = k.shape[1]
    cfg = _config(q.dtype, m, d, interpreting())
    m_blocks = triton.cdiv(m, cfg["BLOCK_M"])
    splits = num_splits or _pick_splits(z, m_blocks, n, cfg["BLOCK_N"], q.device)
    out = torch.empty(z, m, splits, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(z, m, splits, dtype=torch.float32, device=q.device)
    if z == 0 or m == 0:
        return out, lse
    _split_kv_kernel[(z, m_blocks, splits)](
        q, k, v, start.to(torch.int32).contiguous(), end.to(torch.int32).contiguous(), out, lse,
        m, float(scale) * _LOG2E,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1), out.stride(2), lse.stride(0), lse.stride(1),
        HEAD_D=d, **cfg,
    )  # fmt: skip
    return out, lse
