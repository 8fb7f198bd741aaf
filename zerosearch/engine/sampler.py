"""The engine's sampler: the sampling settings of a generate call and the random state that draws its tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zerosearch.ops.sampling import sample_tokens


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. ``greedy`` ignores the temperature (log-probs are then at temperature 1)."""

    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    greedy: bool = False

    def __post_init__(self) -> None:
        if not self.greedy and not self.temperature > 0:
            raise ValueError("temperature must be > 0 unless greedy=True")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0 (0: off)")


class Sampler:
    """Draws one token per row from ``[B, V]`` logits; owns the random state of one generate call.

    ``seed=None`` draws the call's seed from torch's global generator, so ``torch.manual_seed`` makes a run
    repeatable without threading seeds through every caller.
    """

    def __init__(self, params: SamplingParams, device: torch.device, seed: int | None, use_triton: bool) -> None:
        self.params = params
        self.use_triton = use_triton
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.seed = torch.tensor([seed], dtype=torch.int64, device=device)

    def __call__(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        out = sample_tokens(logits, temperature=1.0 if p.greedy else p.temperature, top_k=p.top_k, top_p=p.top_p,
                            greedy=p.greedy, seed=self.seed, generator=self.generator, use_triton=self.use_triton)
        if self.use_triton:
            self.seed.add_(1)
        return out


DEFAULT_SAMPLING = SamplingParams()  # plain sampling at temperature 1 (a shared default argument)
