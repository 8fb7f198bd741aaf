"""PPO's critic: a copy of the policy's decoder body with a scalar value head (initialised from the policy)."""

from __future__ import annotations

import torch
from torch import nn

from zerosearch.rl.forward import autocast_for, decoder_hidden


class ValueModel(nn.Module):
    """Value of the state before each token; the head starts at zero so the first advantages are the returns."""

    def __init__(self, body: nn.Module, hidden_size: int, *, packed: bool = False) -> None:
        super().__init__()
        self.body = body
        self.packed = packed
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        with autocast_for(self, ids.device):
            hidden = decoder_hidden(self.body, ids, attn, packed=self.packed)
        return self.head(hidden[:, :-1].float()).squeeze(-1)  # value of the state before token t+1
