"""Glue between HF causal LMs and the fused loss: last hidden states + LM-head weight, no logits.

Works for any HF decoder-only model whose output embedding is a Linear (Qwen2, Llama, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zerosearch.ops import token_logprobs
from zerosearch.packing import packed_decoder_hidden, packing_enabled


def decoder_of(model: nn.Module) -> nn.Module:
    """The transformer body (without LM head) of a causal LM."""
    body = getattr(model, "model", None)
    return body if isinstance(body, nn.Module) else model.base_model


def lm_head_weight(model: nn.Module) -> torch.Tensor:
    return model.get_output_embeddings().weight


def decoder_hidden(body: nn.Module, ids: torch.Tensor, attn: torch.Tensor, *, packed: bool = False) -> torch.Tensor:
    """Final-norm hidden states [B, L, H] of a decoder body, padded or computed padding-free."""
    if packed and ids.shape[0] > 1:
        return packed_decoder_hidden(body, ids, attn)
    return body(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state


def last_hidden(model: nn.Module, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Final-norm hidden states [B, L, H]; position t predicts token t + 1. Packs if `set_packing` said so."""
    return decoder_hidden(decoder_of(model), ids, attn, packed=packing_enabled(model))


def sequence_logprobs(model: nn.Module, ids: torch.Tensor, attn: torch.Tensor, mask: torch.Tensor, *,
                      temperature: float = 1.0, with_entropy: bool = False):
    """Log-probs [B, L-1] of ids[:, 1:] (0 where mask is False), computed without [B, L, V] logits."""
    hidden = last_hidden(model, ids, attn)[:, :-1]
    return token_logprobs(hidden, lm_head_weight(model), ids[:, 1:], temperature=temperature,
                          with_entropy=with_entropy, mask=mask)


class ValueModel(nn.Module):
    """PPO critic: a copy of the policy's body with a scalar head (DESIGN §1: critic init from policy)."""

    def __init__(self, body: nn.Module, hidden_size: int, *, packed: bool = False) -> None:
        super().__init__()
        self.body = body
        self.packed = packed
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        hidden = decoder_hidden(self.body, ids, attn, packed=self.packed)
        return self.head(hidden[:, :-1].float()).squeeze(-1)  # value of the state before token t+1


@dataclass
class Batch:
    """Trajectories as right-padded tensors. `mask[b, t]` says whether ids[b, t + 1] is a policy token."""

    ids: torch.Tensor  # [B, L]
    attn: torch.Tensor  # [B, L]
    mask: torch.Tensor  # [B, L-1] bool

    def to(self, device: str | torch.device) -> Batch:
        return Batch(self.ids.to(device), self.attn.to(device), self.mask.to(device))

    def select(self, rows: torch.Tensor) -> Batch:
        return Batch(self.ids[rows], self.attn[rows], self.mask[rows])


def make_batch(prompts: list[list[int]], responses: list[list[int]], loss_masks: list[list[bool]],
               pad_id: int) -> Batch:
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for b, (p, r, m) in enumerate(zip(prompts, responses, loss_masks)):
        n = len(p) + len(r)
        ids[b, :n] = torch.tensor(p + r, dtype=torch.long)
        attn[b, :n] = 1
        mask[b, len(p):n] = torch.tensor(m, dtype=torch.bool)
    return Batch(ids, attn, mask[:, 1:])
