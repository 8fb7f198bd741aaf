"""Padding-free (packed) training forward: every real token of a padded batch in one row.

Why: rollouts differ a lot in length (one answers at once, another searches three times), so a
right-padded [B, L] batch spends most of its decoder FLOPs on padding. Packing puts the real
tokens of all rows end to end in a [1, T] row whose position ids restart at 0 for each sequence;
transformers reads those restarts as sequence boundaries (flash-attn varlen kernels, xFormers'
block-diagonal bias, or a dense block-diagonal mask for sdpa/eager), so no token attends across
sequences. The hidden states are scattered back to [B, L, H] (zeros at padding) so the loss, masks
and advantages keep their padded layout — the fused loss already skips masked rows, so padding costs nothing there.

With sdpa/eager the block-diagonal mask is [T, T], i.e. attention work grows with the square of
the packed length, which is why `model.packed_sequences=auto` packs only under the varlen-capable
implementations, flash_attention_2 and xformers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

PACKING_MODES = ("auto", "on", "off")
_ATTR = "_zerosearch_packed"  # set on a model by `set_packing`
VARLEN_ATTENTION = ("flash_attention_2", "xformers")  # attention implementations that pack without a [T, T] mask


@dataclass
class Packed:
    """A padded batch's real tokens in one row, and where each came from."""

    ids: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T], restarting at 0 for each sequence
    rows: torch.Tensor  # [T] source row of each packed token
    cols: torch.Tensor  # [T] source column of each packed token


def pack(ids: torch.Tensor, attn: torch.Tensor) -> Packed:
    """Real tokens (attn == 1) of each row, in order, concatenated row after row."""
    if ids.shape != attn.shape or ids.dim() != 2:
        raise ValueError(f"ids and attn must both be [B, L], got {tuple(ids.shape)} and {tuple(attn.shape)}")
    keep = attn.bool()
    rows, cols = keep.nonzero(as_tuple=True)  # row-major order
    if rows.numel() == 0:
        raise ValueError("pack: the batch has no real tokens (attn is all zero)")
    positions = (keep.long().cumsum(1) - 1)[rows, cols]
    return Packed(ids[rows, cols][None], positions[None], rows, cols)


def unpack(hidden: torch.Tensor, packed: Packed, batch_shape: torch.Size) -> torch.Tensor:
    """[1, T, H] packed hidden states back to [B, L, H], zeros where the batch was padding."""
    out = hidden.new_zeros((*batch_shape, hidden.shape[-1]))
    return out.index_put((packed.rows, packed.cols), hidden[0])


def packed_decoder_hidden(body: nn.Module, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """`body(input_ids=ids, attention_mask=attn).last_hidden_state`, computed on the packed tokens."""
    p = pack(ids, attn)
    hidden = body(input_ids=p.ids, position_ids=p.position_ids, attention_mask=None, use_cache=False).last_hidden_state
    return unpack(hidden, p, ids.shape)


def set_packing(model: nn.Module, mode: str) -> bool:
    """Decide once whether `model`'s training forwards pack; returns the decision."""
    if mode not in PACKING_MODES:
        raise ValueError(f"model.packed_sequences must be one of {list(PACKING_MODES)}, not {mode!r}")
    attn_impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    packed = mode == "on" or (mode == "auto" and attn_impl in VARLEN_ATTENTION)
    setattr(model, _ATTR, packed)
    return packed


def packing_enabled(model: nn.Module) -> bool:
    return bool(getattr(model, _ATTR, False))
