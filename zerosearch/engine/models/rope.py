"""Rotary position embedding in the HF Llama/Qwen2 convention (rotate-half, duplicated frequencies).

cos/sin are computed in float32 and then cast to the activation dtype, as HF does, so a float64 or bf16
forward sees bit-identical tables to HF's (required for token-for-token greedy equality).
"""

from __future__ import annotations

import torch


def rope_tables(
    inv_freq: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape ``[*positions.shape, head_dim]`` for integer ``positions``."""
    freqs = positions.float().unsqueeze(-1) * inv_freq.float().to(positions.device)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    if scale != 1.0:
        cos, sin = cos * scale, sin * scale
    return cos.to(dtype), sin.to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, T, heads, D]`` with tables ``[B, T, D]``."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.unsqueeze(2) + rotated * sin.unsqueeze(2)
