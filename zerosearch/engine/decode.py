"""One decode step over static buffers: feed each row's current token, sample the next one.

The step reads and writes only tensors whose addresses never change during a generate call (the current
token, per-row positions, the cache slot as a device scalar, per-row attention ends, the sampler's seed) and
advances them itself. The same body therefore runs eagerly or captured once in a CUDA graph
(:mod:`zerosearch.engine.cuda_graph`) and replayed.
"""

from __future__ import annotations

import torch

from zerosearch.engine.attention import decode_attend
from zerosearch.engine.cache import StaticKVCache
from zerosearch.engine.models.transformer import LeanCausalLM
from zerosearch.engine.models.weights import LMWeights
from zerosearch.engine.sampler import Sampler


class DecodeStep:
    """``step(j) -> (tok, lp)``: the token sampled after feeding the current one at decode step ``j``.

    Decode step ``j`` writes its key/value at cache slot ``width + j`` for every row (rows are left-padded to a
    common width, so one scalar slot suffices) and attends over slots ``[start[b], width + j]``.
    """

    def __init__(self, model: LeanCausalLM, w: LMWeights, cache: StaticKVCache, start: torch.Tensor,
                 pos: torch.Tensor, width: int, tok: torch.Tensor, sampler: Sampler, scale: float, use_triton: bool,
                 first_step: int = 0) -> None:  # fmt: skip
        """Starts at decode step ``first_step`` (after a compaction the batch restarts mid-way)."""
        self.model, self.w, self.cache, self.start = model, w, cache, start
        self.sampler, self.scale, self.use_triton = sampler, scale, use_triton
        self.tok = tok.clone()
        self.pos = pos + first_step
        self.slot = torch.tensor([width + first_step], dtype=torch.long, device=tok.device)
        self.end = (torch.zeros_like(start) + width + first_step + 1).to(torch.int32)
        self.lp = torch.zeros(tok.shape[0], dtype=torch.float32, device=tok.device)
        self.width = width

    def body(self, kv_limit: int | None = None) -> None:
        """Advance every buffer by one step. ``kv_limit`` (eager torch path) bounds the cache slots read."""
        attend = decode_attend(self.cache, self.slot, self.start, self.end, self.scale, use_triton=self.use_triton,
                               kv_limit=kv_limit)
        hidden = self.model.hidden_states(self.tok[:, None], self.pos[:, None], attend, self.w)
        nxt, lp = self.sampler(self.model.logits(hidden[:, 0], self.w))
        self.tok.copy_(nxt)
        self.lp.copy_(lp)
        self.pos.add_(1)
        self.slot.add_(1)
        self.end.add_(1)

    def __call__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.body(kv_limit=None if self.use_triton else self.width + j + 1)
        return self.tok, self.lp
