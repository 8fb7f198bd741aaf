"""Next-token sampling for the engine: the fused Triton kernel on CUDA, the torch reference elsewhere.

Both run fully on device (no `multinomial`, no `.item()`), so a decode step needs no host sync and can be
captured in a CUDA graph. Randomness: a `torch.Generator` on the torch path; on the Triton path a
one-element seed tensor advanced in place after each draw (works inside a graph replay).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zerosearch.kernels.sampling import sample_reference


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    greedy: bool = False

    def __post_init__(self) -> None:
        if not self.greedy and self.temperature <= 0:
            raise ValueError("temperature must be > 0 unless greedy=True")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")


class TokenDrawer:
    """Draws one token per row from ``[B, V]`` logits; owns the random state of one generate call."""

    def __init__(self, params: SamplingParams, device: torch.device, seed: int | None, use_triton: bool) -> None:
        self.params = params
        self.use_triton = use_triton
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())  # follows torch.manual_seed
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.seed = torch.tensor([seed], dtype=torch.int64, device=device)

    def __call__(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        if self.use_triton:
            from zerosearch.kernels.sampling import triton_sample

            tok, lp = triton_sample(logits, self.seed, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
                                    greedy=p.greedy)  # fmt: skip
            self.seed.add_(1)
            return tok, lp
        return sample_reference(logits, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, greedy=p.greedy,
                                generator=self.generator)  # fmt: skip
