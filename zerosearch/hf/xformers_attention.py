"""xFormers memory-efficient attention as a transformers attention implementation named "xformers".

Why: without flash-attn, transformers' SDPA path can only express packed (padding-free) rows as a dense
block-diagonal [T, T] mask, so packing costs T² memory. xFormers takes the packed layout natively as a
`BlockDiagonalCausalMask` built from the sequence lengths, which makes `model.packed_sequences` worth
turning on when xformers is installed and flash-attn is not.

How it plugs in: transformers looks up the attention function and the mask builder by the model's
`_attn_implementation` name; `register_xformers_attention()` adds both under "xformers". The mask builder
hands back nothing for a single unpadded row (plain causal or packed — the attention function tells them
apart from `position_ids`) and SDPA's boolean mask otherwise (padding, batches), which the attention function
turns into an additive bias. xFormers is imported at call time, so this module imports without it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

NAME = "xformers"


def xformers_installed() -> bool:
    """Whether xformers can be imported, found without importing it (its import initialises CUDA kernels)."""
    try:
        return importlib.util.find_spec("xformers") is not None
    except ValueError:  # a module object in sys.modules without a spec
        return False


def packed_sequence_lengths(position_ids: torch.Tensor | None, q_length: int) -> list[int] | None:
    """Lengths of the sequences packed into one row, read off where the positions stop counting up by one;
    None when there is no packing (a batch, one plain sequence, or a cached decode step)."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[0] != 1 or q_length < 2:
        return None
    pos = position_ids[0]
    if pos.numel() != q_length:
        return None
    starts = torch.nonzero(pos[1:] != pos[:-1] + 1).flatten() + 1
    if starts.numel() == 0:
        return None
    bounds = [0, *starts.tolist(), q_length]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def _additive_bias(allowed: torch.Tensor, dtype: torch.dtype, heads: int) -> torch.Tensor:
    """A boolean [B, 1, Mq, Mk] mask as the [B, H, Mq, Mk] additive bias xFormers takes.

    The key dimension is allocated padded to a multiple of 8 and sliced back (xFormers' kernels want
    aligned rows). Masked entries get the dtype's minimum rather than -inf, so a query row with nothing to
    attend to (left padding) yields a finite average, as transformers' eager path does, not NaN.
    """
    b, _, mq, mk = allowed.shape
    padded = torch.zeros((b, 1, mq, (mk + 7) // 8 * 8), dtype=dtype, device=allowed.device)
    bias = padded[..., :mk]
    bias.masked_fill_(~allowed, torch.finfo(dtype).min)
    return bias.expand(b, heads, mq, mk)


def _bottom_right_causal(mq: int, mk: int, device: torch.device) -> torch.Tensor:
    """Causal mask for the last `mq` of `mk` positions (a prefill that continues a cache)."""
    q_pos = torch.arange(mk - mq, mk, device=device)[:, None]
    return (torch.arange(mk, device=device)[None, :] <= q_pos)[None, None]


def xformers_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: q [B, H, Mq, D], k/v [B, Hkv, Mk, D] in, [B, Mq, H, D] out."""
    from xformers.ops import memory_efficient_attention
    from xformers.ops.fmha.attn_bias import BlockDiagonalCausalMask, LowerTriangularMask

    if sliding_window is not None:
        raise NotImplementedError("model.attn_implementation=xformers does not do sliding-window attention; use sdpa")
    b, heads, mq, _ = query.shape
    mk = key.shape[2]
    if key.shape[1] != heads:  # grouped-query attention: every query head reads its group's key/value head
        group = heads // key.shape[1]
        key = key.repeat_interleave(group, dim=1)
        value = value.repeat_interleave(group, dim=1)
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # BMHK, xFormers' layout

    bias: Any = None
    if attention_mask is not None:
        bias = _additive_bias(attention_mask[:, :, :, :mk].bool(), query.dtype, heads)
    elif (lengths := packed_sequence_lengths(kwargs.get("position_ids"), mq)) is not None and mq == mk:
        bias = BlockDiagonalCausalMask.from_seqlens(lengths)
    elif mq == mk:
        bias = LowerTriangularMask()
    elif mq > 1:  # a chunk appended to a cache: causal from the bottom-right corner
        bias = _additive_bias(_bottom_right_causal(mq, mk, query.device).expand(b, 1, mq, mk), query.dtype, heads)
    # else one new token per row against its own cache: it sees every key, no bias

    out = memory_efficient_attention(q, k, v, attn_bias=bias, p=dropout, scale=scaling)
    return out, None


def xformers_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor | None:
    """transformers' mask-builder contract for "xformers": None for one row without padding (the attention
    function builds causal or block-diagonal masks itself, with no [T, T] tensor), SDPA's boolean mask else."""
    from transformers.masking_utils import sdpa_mask

    if batch_size == 1 and (attention_mask is None or bool(attention_mask.all())):
        return None
    return sdpa_mask(
        batch_size=batch_size, q_length=q_length, kv_length=kv_length, attention_mask=attention_mask, **kwargs
    )


def register_xformers_attention() -> None:
    """Make `attn_implementation="xformers"` loadable by transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, xformers_attention_forward)
    AttentionMaskInterface.register(NAME, xformers_mask)
