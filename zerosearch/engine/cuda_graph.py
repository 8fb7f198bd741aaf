"""CUDA-graph capture of one decode step (CUDA only; the engine never builds this on CPU).

At small batch a decode step is dozens of tiny kernels whose launch overhead dominates; replaying one
captured graph removes it. Capture needs every address and shape fixed, so the step reads and writes only
static buffers: the current token, per-row positions, the cache slot (a device scalar, used with
``index_copy_``), per-row attention ends, and the sampler's seed tensor; the step advances them itself.
The weights are referenced by pointer, so in-place optimizer updates are seen by later replays, but a
graph must not outlive a re-allocation of the parameters (the engine captures afresh per generate call,
and again after each compaction of the batch).
"""

from __future__ import annotations

import torch

from zerosearch.engine.attention import decode_attention


class GraphedDecode:
    """Callable ``step(j) -> (tok, lp)`` backed by a captured graph; same contract as the eager step."""

    def __init__(self, model, w, cache, start_b, pos, width, tok, drawer, scale, use_triton, warmup: int = 2,
                 first_step: int = 0):  # fmt: skip
        """Captured to start at decode step ``first_step`` (after a compaction the batch restarts mid-way)."""
        self.tok = tok.clone()
        self.pos = pos + first_step
        self.slot = torch.tensor([width + first_step], dtype=torch.long, device=tok.device)
        self.end = (torch.zeros_like(start_b) + width + first_step + 1).to(torch.int32)
        self.lp = torch.zeros(tok.shape[0], dtype=torch.float32, device=tok.device)
        self.drawer = drawer

        def attend(i, q, k, v):
            cache.k[i].index_copy_(2, self.slot, k.transpose(1, 2))
            cache.v[i].index_copy_(2, self.slot, v.transpose(1, 2))
            pk = cache.prefix_k[i] if cache.prefix_k is not None else None
            pv = cache.prefix_v[i] if cache.prefix_v is not None else None
            out = decode_attention(q[:, 0], cache.k[i], cache.v[i], start_b, self.end, pk, pv, scale,
                                   kv_limit=None, use_triton=use_triton)  # fmt: skip
            return out[:, None]

        def body():
            hidden = model.hidden_states(self.tok[:, None], self.pos[:, None], attend, w)
            nxt, lp = drawer(model.logits(hidden[:, 0], w))
            self.tok.copy_(nxt)
            self.lp.copy_(lp)
            self.pos.add_(1)
            self.slot.add_(1)
            self.end.add_(1)

        saved = [t.clone() for t in (self.tok, self.pos, self.slot, self.end, drawer.seed)]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):  # compiles Triton kernels / picks cuBLAS algorithms outside capture
                body()
        torch.cuda.current_stream().wait_stream(side)
        for dst, src in zip((self.tok, self.pos, self.slot, self.end, drawer.seed), saved):
            dst.copy_(src)  # warm-up wrote only the first slot, which the first replay rewrites
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            body()

    def __call__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.graph.replay()
        return self.tok, self.lp
