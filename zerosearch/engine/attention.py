"""Attention for the engine: prefill and decode, each with the shared prefix merged in exactly.

Both phases split attention into a *prefix part* (all rows' queries against the one shared prefix KV,
grouped by KV head so the prefix is read once for the batch) and a *suffix part* (each row against its
own cache, masked for left padding / causality), then merge the two with the log-sum-exp rule
(:mod:`zerosearch.kernels.attn_merge`). Decode uses the Triton split-KV kernel on CUDA and the float32 torch
reference elsewhere; prefill always uses torch matmuls (it runs once per generate call).
"""

from __future__ import annotations

import torch

from zerosearch.kernels.attn_merge import merge_partials_reference
from zerosearch.kernels.decode_attention import attention_partial_reference


def _prefix_part(q: torch.Tensor, pk: torch.Tensor, pv: torch.Tensor, scale: float):
    """q ``[B, Hkv, G, T, D]`` against prefix ``[Hkv, P, D]`` → out ``[B, Hkv, G, T, D]``, lse ``[B, Hkv, G, T]``."""
    b, hkv, g, t, d = q.shape
    qz = q.permute(1, 0, 2, 3, 4).reshape(hkv, b * g * t, d)
    out, lse = attention_partial_reference(qz, pk, pv, None, None, scale)
    out = out.view(hkv, b, g, t, d).permute(1, 0, 2, 3, 4)
    return out, lse.view(hkv, b, g, t).permute(1, 0, 2, 3)


def _merge_two(o1, l1, o2, l2) -> torch.Tensor:
    """Merge two parts of matching shapes ``[..., D]`` / ``[...]``."""
    shape = o1.shape
    out, _ = merge_partials_reference(
        torch.stack((o1, o2), dim=-2).reshape(-1, 2, shape[-1]), torch.stack((l1, l2), dim=-1).reshape(-1, 2)
    )
    return out.view(shape)


def prefill_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    start: torch.Tensor,
    prefix_k: torch.Tensor | None,
    prefix_v: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """Causal attention of a left-padded block ``q [B, T, H, D]``, ``k, v [B, T, Hkv, D]`` whose row ``b``
    holds real tokens from column ``start[b]``, after an optional shared prefix ``[Hkv, P, D]``."""
    b, t, h, d = q.shape
    hkv = k.shape[2]
    g = h // hkv
    qg = q.view(b, t, hkv, g, d).permute(0, 2, 3, 1, 4)  # [B, Hkv, G, T, D]
    cd = torch.float64 if q.dtype == torch.float64 else torch.float32
    kt = k.permute(0, 2, 1, 3).to(cd)  # [B, Hkv, T, D]
    vt = v.permute(0, 2, 1, 3).to(cd)
    s = torch.matmul(qg.to(cd), kt.unsqueeze(2).transpose(-1, -2)) * scale  # [B, Hkv, G, T, T]
    i = torch.arange(t, device=q.device)
    ok = (i[None, :] <= i[:, None]).unsqueeze(0) & (i[None, None, :] >= start[:, None, None])  # [B, T, T]
    s = s.masked_fill(~ok[:, None, None], float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse.unsqueeze(-1).clamp_min(torch.finfo(cd).min))
    out = torch.matmul(p, vt.unsqueeze(2))  # [B, Hkv, G, T, D]
    if prefix_k is not None:
        po, pl = _prefix_part(qg, prefix_k, prefix_v, scale)
        out = _merge_two(po, pl, out, lse)
    return out.permute(0, 3, 1, 2, 4).reshape(b, t, h, d).to(q.dtype)


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

    ``kv_limit`` (eager only) slices the cache to the filled length so the torch path skips empty slots;
    the CUDA-graph path passes ``None`` and masks with the device tensors ``start`` / ``end`` instead.
    """
    b, h, d = q.shape
    hkv = k_cache.shape[1]
    g = h // hkv
    if kv_limit is not None:
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
        po, pl = _prefix_part(q.view(b, hkv, g, 1, d), prefix_k, prefix_v, scale)
        so = _merge_two(po[..., 0, :], pl[..., 0], so, sl)
    return so.reshape(b, h, d).to(q.dtype)
