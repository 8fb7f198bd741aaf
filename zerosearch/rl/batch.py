"""Trajectories as right-padded training tensors, with the one per-token loss mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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

    def trim(self) -> Batch:
        """Drop the columns that are padding in every row."""
        width = int(self.attn.sum(1).max().item())
        return Batch(self.ids[:, :width], self.attn[:, :width], self.mask[:, : width - 1])


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
