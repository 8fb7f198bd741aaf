"""Decode attention: one query per row against its own KV cache and a shared prefix, merged exactly.

Attention is split into a *prefix part* (all rows' queries against the one shared prefix KV, grouped by KV
head so the prefix is read once for the batch) and a *suffix part* (each row against its own cache slots
``[start[b], end[b])``), combined with the log-sum-exp rule of :mod:`zerosearch.kernels.attn_merge`. On CUDA
the Triton split-KV kernel computes the partials; elsewhere the float32 torch reference does.
"""

from __future__ import annotations

import torch

from zerosearch.kernels.attn_merge import merge_partials_reference
from zerosearch.kernels.decode_attention import attention_partial_reference

__all__ = ["decode_attention", "merge_two", "prefix_partial"]


def prefix_partial(q: torch.Tensor, pk: torch.Tensor, pv: torch.Tensor, scale: float):
    """q ``[B, Hkv, G, T, D]`` against prefix ``[Hkv, P, D]`` → out ``[B, Hkv, G, T, D]``, lse ``[B, Hkv, G, T]``."""
    b, hkv, g, t, d = q.shape
    qz = q.permute(1, 0, 2, 3, 4).reshape(hkv, b * g * t, d)
    out, lse = attention_partial_reference(qz, pk, pv, None, None, scale)
    out = out.view(hkv, b, g, t, d).permute(1, 0, 2, 3, 4)
    return out, lse.view(hkv, b, g, t).permute(1, 0, 2, 3)


def merge_two(o1, l1, o2, l2) -> torch.Tensor:
    """Merge two attention parts of matching shapes ``[..., D]`` / ``[...]``."""
    shape = o1.shape
    out, _ = merge_partials_reference(
        torch.stack((o1, o2), dim=-2).reshape(-1, 2, shape[-1]), torch.stack((l1, l2), dim=-1).reshape(-1, 2)
    )
    return out.view(shape)


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    prefix_k: torch.Tensor | None,
    prefix_v: torch.Tensor | None,
    scale: float,
    *,
    kv_limit: int | None = None,
    use_triton: bool = False,
) -> torch.Tensor:
    """One query per row: ``q [B, H, D]`` over ``k_cache [B, Hkv, S, D]`` slots ``[start[b], end[b])`` (+ prefix).

    ``kv_limit`` (torch path only) slices the cache to the filled length so that empty slots cost nothing;
    the Triton path masks with the device tensors ``start`` / ``end`` instead (CUDA-graph safe).
    """
    b, h, d = q.shape
    hkv = k_cache.shape[1]
    g = h // hkv
    if kv_limit is not None and not use_triton:
        k_cache, v_cache = k_cache[:, :, :kv_limit], v_cache[:, :, :kv_limit]
    s_len = k_cache.shape[2]
    qz = q.reshape(b * hkv, g, d)
    kz, vz = k_cache.reshape(b * hkv, s_len, d), v_cache.reshape(b * hkv, s_len, d)
    start_z = start.repeat_interleave(hkv)
    end_z = end.repeat_interleave(hkv)
    if use_triton:
        from zerosearch.kernels.attn_merge import merge_partials
        from zerosearch.kernels.decode_attention import split_kv_attention

        so, sl = split_kv_attention(qz, kz, vz, start_z, end_z, scale)  # [B*Hkv, G, Ss, D]
        so, sl = so.view(b, hkv, g, -1, d), sl.view(b, hkv, g, -1)
        if prefix_k is not None:
            qp = q.view(b, hkv, g, d).transpose(0, 1).reshape(hkv, b * g, d)
            p_len = prefix_k.shape[1]
            zeros = torch.zeros(hkv, dtype=torch.int32, device=q.device)
            po, pl = split_kv_attention(qp, prefix_k, prefix_v, zeros, zeros + p_len, scale)
            po = po.view(hkv, b, g, -1, d).transpose(0, 1)
            pl = pl.view(hkv, b, g, -1).transpose(0, 1)
            so, sl = torch.cat((po, so), dim=3), torch.cat((pl, sl), dim=3)
        out, _ = merge_partials(so.reshape(b * h, -1, d), sl.reshape(b * h, -1))
        return out.view(b, h, d).to(q.dtype)
    so, sl = attention_partial_reference(qz, kz, vz, start_z, end_z if kv_limit is None else None, scale)
    so, sl = so.view(b, hkv, g, d), sl.view(b, hkv, g)
    if prefix_k is not None:
        po, pl = prefix_partial(q.view(b, hkv, g, 1, d), prefix_k, prefix_v, scale)
        so = merge_two(po[..., 0, :], pl[..., 0], so, sl)
    return so.reshape(b, h, d).to(q.dtype)
