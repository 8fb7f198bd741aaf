"""The training forward: last hidden states and the LM-head weight of a causal LM, never its logits.

Every log-prob the trainer and SFT compute goes through :func:`sequence_logprobs` (or, for the loss,
:func:`hidden_and_head` + the fused :func:`zerosearch.ops.masked_pg_loss`): the fused op reads the LM head
itself, so ``[tokens, vocab]`` logits are never built. Works for any HF decoder-only model whose output
embedding is a Linear (Qwen2, Llama, ...), plain or FSDP2-sharded.

Packing (padding-free forward): rollouts differ a lot in length (one answers at once, another searches
three times), so a right-padded ``[B, L]`` batch spends most of its decoder FLOPs on padding. Packing puts
the real tokens of all rows end to end in a ``[1, T]`` row whose position ids restart at 0 for each
sequence; transformers reads those restarts as sequence boundaries (flash-attn varlen kernels, xFormers'
block-diagonal bias, or a dense block-diagonal mask for sdpa/eager), so no token attends across sequences.
The hidden states are scattered back to ``[B, L, H]`` (zeros at padding), so masks and advantages keep their
padded layout. With sdpa/eager the block-diagonal mask is ``[T, T]``, which is why
``model.packed_sequences=auto`` packs only under the varlen-capable flash_attention_2 and xformers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from zerosearch.config import PACKING_MODES
from zerosearch.ops import token_logprobs
from zerosearch.runtime import distributed

_PACKED_ATTR = "_zerosearch_packed"  # set on a model by `set_packing`
COMPUTE_ATTR = "_zerosearch_compute_dtype"  # set on a model by `set_compute_dtype`
HIDDEN_METHOD = "zs_hidden_and_head"  # registered as an FSDP forward method by `shard_causal_lm`
VARLEN_ATTENTION = ("flash_attention_2", "xformers")  # attention implementations that pack without a [T, T] mask


def decoder_of(model: nn.Module) -> nn.Module:
    """The transformer body (without LM head) of a causal LM."""
    body = getattr(model, "model", None)
    return body if isinstance(body, nn.Module) else model.base_model


def lm_head_weight(model: nn.Module) -> torch.Tensor:
    return model.get_output_embeddings().weight


# ------------------------------------------------------------------------------------------------ packing


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
    setattr(model, _PACKED_ATTR, packed)
    return packed


def packing_enabled(model: nn.Module) -> bool:
    return bool(getattr(model, _PACKED_ATTR, False))


# ------------------------------------------------------------------------------------------------ precision


def set_compute_dtype(model: nn.Module, dtype: torch.dtype | None) -> None:
    """Compute the training forward of `model` in `dtype` (mixed precision over its own weight dtype), or in the
    weights' dtype with None. Under FSDP2's mixed-precision policy the gathered weights are already in it."""
    setattr(model, COMPUTE_ATTR, dtype)


def autocast_for(model: nn.Module, device: torch.device):
    """Autocast to the model's compute dtype when it differs from its weights' dtype; a no-op otherwise."""
    dtype = getattr(model, COMPUTE_ATTR, None)
    if dtype is None or dtype == next(model.parameters()).dtype:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# ------------------------------------------------------------------------------------------------ forward


def decoder_hidden(body: nn.Module, ids: torch.Tensor, attn: torch.Tensor, *, packed: bool = False) -> torch.Tensor:
    """Final-norm hidden states [B, L, H] of a decoder body, padded or computed padding-free."""
    if packed and ids.shape[0] > 1:
        return packed_decoder_hidden(body, ids, attn)
    return body(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state


def _hidden_and_head(self: nn.Module, ids: torch.Tensor, attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with autocast_for(self, ids.device):
        hidden = decoder_hidden(decoder_of(self), ids, attn, packed=packing_enabled(self))
    head = lm_head_weight(self)
    dtype = getattr(self, COMPUTE_ATTR, None)
    if dtype is not None:  # the fused LM-head op takes one dtype; gradients flow back through the casts
        hidden, head = hidden.to(dtype), head.to(dtype)
    return hidden, head


def hidden_and_head(model: nn.Module, ids: torch.Tensor, attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(last hidden states [B, L, H], LM-head weight [V, H]) of a plain or an FSDP-sharded causal LM.

    Position t's hidden state predicts token t + 1. Packs if `set_packing` said so.
    """
    method = getattr(model, HIDDEN_METHOD, None)
    if method is not None:
        return method(ids, attn)
    return _hidden_and_head(model, ids, attn)


def shard_causal_lm(model: nn.Module, device: str | torch.device) -> nn.Module:
    """FSDP2-shard a causal LM (under torchrun; no-op otherwise) so that :func:`hidden_and_head` still works.

    The fused loss reads the hidden states and the LM-head weight separately, which bypasses the root
    module's ``forward``; registering the read as an FSDP forward method gives it the root's all-gather hooks.
    """
    return distributed.shard_model(model, device, forward_methods={HIDDEN_METHOD: _hidden_and_head})


def sequence_logprobs(model: nn.Module, ids: torch.Tensor, attn: torch.Tensor, mask: torch.Tensor, *,
                      temperature: float = 1.0, with_entropy: bool = False):
    """Log-probs [B, L-1] of ids[:, 1:] (0 where mask is False), computed without [B, L, V] logits."""
    hidden, head = hidden_and_head(model, ids, attn)
    out = token_logprobs(hidden[:, :-1], head, ids[:, 1:], temperature=temperature, with_entropy=with_entropy,
                         mask=mask)
    if distributed.is_sharded(model) and not torch.is_grad_enabled():
        model.reshard()  # FSDP keeps the root unsharded after forward, waiting for a backward that won't come
    return out
