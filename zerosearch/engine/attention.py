"""Attention for the engine's two phases: causal prefill of a left-padded block, and the decode step's attend.

Both read the shared prefix once per KV head for the whole batch and merge it with each row's own keys by
log-sum-exp (:mod:`zerosearch.ops.decode_attention`). Prefill always uses torch matmuls (it runs once per
generate call); decode uses the Triton split-KV kernel on CUDA.
"""

from __future__ import annotations

import torch

from zerosearch.engine.cache import StaticKVCache
from zerosearch.engine.models.transformer import AttendFn
from zerosearch.ops.decode_attention import decode_attention, merge_two, prefix_partial


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
        po, pl = prefix_partial(qg, prefix_k, prefix_v, scale)
        out = merge_two(po, pl, out, lse)
    return out.permute(0, 3, 1, 2, 4).reshape(b, t, h, d).to(q.dtype)


def decode_attend(cache: StaticKVCache, slot: torch.Tensor, start: torch.Tensor, end: torch.Tensor, scale: float, *,
                  use_triton: bool, kv_limit: int | None = None) -> AttendFn:
    """The attend of one decode step: write each layer's new k/v at cache slot ``slot`` (a one-element device
    tensor, so a captured CUDA graph can advance it), then attend over slots ``[start[b], end[b])`` and the
    prefix. The eager and the CUDA-graph decode both use this one function."""

    def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        cache.k[i].index_copy_(2, slot, k.transpose(1, 2))
        cache.v[i].index_copy_(2, slot, v.transpose(1, 2))
        pk = cache.prefix_k[i] if cache.prefix_k is not None else None
        pv = cache.prefix_v[i] if cache.prefix_v is not None else None
        out = decode_attention(q[:, 0], cache.k[i], cache.v[i], start, end, pk, pv, scale, kv_limit=kv_limit,
                               use_triton=use_triton)
        return out[:, None]

    return attend
