"""CUDA-graph capture of one decode step (CUDA only; the engine never builds this on CPU).

At small batch a decode step is dozens of tiny kernels whose launch overhead dominates; replaying one
captured graph removes it. :class:`~zerosearch.engine.decode.DecodeStep` already keeps every address and shape
fixed and advances its own buffers, so capture is the same body run once under ``torch.cuda.graph``. The
weights are referenced by pointer, so in-place optimizer updates are seen by later replays, but a graph must
not outlive a re-allocation of the parameters (the engine captures afresh per generate call, and again after
each compaction of the batch).
"""

from __future__ import annotations

import torch

from zerosearch.engine.decode import DecodeStep


class GraphedDecode:
    """Callable ``step(j) -> (tok, lp)`` replaying a captured :class:`DecodeStep`; same contract as the eager one."""

    def __init__(self, step: DecodeStep, warmup: int = 2) -> None:
        self.step = step
        buffers = (step.tok, step.pos, step.slot, step.end, step.sampler.seed)
        saved = [t.clone() for t in buffers]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):  # compiles Triton kernels / picks cuBLAS algorithms outside capture
                step.body()
        torch.cuda.current_stream().wait_stream(side)
        for dst, src in zip(buffers, saved):
            dst.copy_(src)  # warm-up wrote only the first slot, which the first replay rewrites
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            step.body()

    def __call__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.graph.replay()
        return self.step.tok, self.step.lp
