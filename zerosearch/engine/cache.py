"""Preallocated static KV cache: one block for the shared prefix, one ``[B, S]`` block per layer.

Why static and not paged: the engine serves a small, fixed batch (one rollout or simulator batch of a few
dozen to a few hundred rows) with short outputs (≤ 600 tokens) that are all started together and freed
together. The whole footprint ``B * (W + max_new)`` is known before the first token, so one allocation up
front wastes little, never fragments, needs no block tables or gather in the attention kernel, and keeps
every decode step's tensor addresses fixed — exactly what a captured CUDA graph requires. Paging pays off
for continuous batching of long, unpredictable requests, which is not this workload.

The shared prefix is stored once (``[L, Hkv, P, D]``, no batch axis) and attended once per step for the
whole batch; each row's own tokens (left-padded suffix, then generated tokens) go in ``k, v``.
Caches start zeroed so masked slots are finite (a masked probability of 0 times a NaN would still be NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zerosearch.engine.models.config import LMConfig


@dataclass
class StaticKVCache:
    k: torch.Tensor  # [L, B, Hkv, S, D]
    v: torch.Tensor
    prefix_k: torch.Tensor | None  # [L, Hkv, P, D], None when no prefix is shared
    prefix_v: torch.Tensor | None

    @classmethod
    def allocate(
        cls, cfg: LMConfig, batch: int, slots: int, prefix_len: int, dtype: torch.dtype, device: torch.device
    ) -> StaticKVCache:
        shape = (cfg.num_layers, batch, cfg.num_kv_heads, slots, cfg.head_dim)
        k = torch.zeros(shape, dtype=dtype, device=device)
        v = torch.zeros(shape, dtype=dtype, device=device)
        pk = pv = None
        if prefix_len > 0:
            pshape = (cfg.num_layers, cfg.num_kv_heads, prefix_len, cfg.head_dim)
            pk = torch.zeros(pshape, dtype=dtype, device=device)
            pv = torch.zeros(pshape, dtype=dtype, device=device)
        return cls(k, v, pk, pv)

    @property
    def prefix_len(self) -> int:
        return 0 if self.prefix_k is None else self.prefix_k.shape[2]

    def nbytes(self) -> int:
        total = self.k.numel() * self.k.element_size() * 2
        if self.prefix_k is not None:
            total += self.prefix_k.numel() * self.prefix_k.element_size() * 2
        return total
