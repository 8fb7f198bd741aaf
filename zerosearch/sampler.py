"""Token-level sampling for rollouts: ids in, sampled ids (and their log-probs) out.

The rollout never decodes and re-tokenises what the policy wrote (DESIGN §2.4); it works on the ids
returned here. `HFSampler` wraps `model.generate`; the fast engine implements the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class SampleOutput:
    token_ids: list[list[int]]  # new tokens per row, cut just after the first stop id
    logprobs: list[list[float]]  # log-prob of each sampled token under the sampling distribution


class TokenSampler(Protocol):
    def sample(
        self, contexts: list[list[int]], *, max_new_tokens: list[int], stop_ids: list[int]
    ) -> SampleOutput: ...


class HFSampler:
    """Batched sampling with Hugging Face `generate`, left padding, stop on any of `stop_ids`."""

    def __init__(self, model, pad_id: int, *, temperature: float = 1.0, top_p: float = 1.0,
                 greedy: bool = False) -> None:
        self.model = model
        self.pad_id = pad_id
        self.temperature = temperature
        self.top_p = top_p
        self.greedy = greedy

    @torch.no_grad()
    def sample(
        self, contexts: list[list[int]], *, max_new_tokens: list[int], stop_ids: list[int]
    ) -> SampleOutput:
        if not contexts:
            return SampleOutput([], [])
        device = next(self.model.parameters()).device
        width = max(len(c) for c in contexts)
        ids = torch.full((len(contexts), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, ctx in enumerate(contexts):
            ids[i, width - len(ctx):] = torch.tensor(ctx, dtype=torch.long)
            attn[i, width - len(ctx):] = 1
        budget = max(max_new_tokens)
        was_training = self.model.training
        self.model.eval()
        out = self.model.generate(
            input_ids=ids.to(device),
            attention_mask=attn.to(device),
            max_new_tokens=budget,
            do_sample=not self.greedy,
            temperature=self.temperature if not self.greedy else None,
            top_p=self.top_p if not self.greedy else None,
            top_k=0 if not self.greedy else None,
            eos_token_id=list(stop_ids),
            pad_token_id=self.pad_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        self.model.train(was_training)
        new = out.sequences[:, width:].cpu()
        temp = 1.0 if self.greedy else self.temperature
        logits = torch.stack(out.logits, dim=1).float().cpu() / temp  # [B, new, V]
        logp = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        stop = set(stop_ids)
        tokens, lps = [], []
        for i in range(len(contexts)):
            row, cut = new[i].tolist(), min(max_new_tokens[i], new.shape[1])
            for j, t in enumerate(row[:cut]):
                if t in stop:
                    cut = j + 1
                    break
            tokens.append(row[:cut])
            lps.append(logp[i, :cut].tolist())
        return SampleOutput(tokens, lps)
