"""Noise curriculum of ZeroSearch.

Early in training the simulator returns mostly useful documents so the policy learns the search
format; the probability of a noisy result then grows exponentially towards `p_end`, forcing the
policy to cope with bad retrievals late in training.
"""

from __future__ import annotations

import math
import random

import torch


def noise_probability(step: int, total_steps: int, p_start: float, p_end: float, base: float = 4.0) -> float:
    """`p_s + (b^(i/m) − 1)/(b − 1)·(p_e − p_s)` for step i < m, and `p_e` once i ≥ m.

    `base == 1` is the limit of the formula, a linear ramp.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    for name, p in (("p_start", p_start), ("p_end", p_end)):
        if not (0.0 <= p <= 1.0) or math.isnan(p):
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    if not (base > 0) or math.isinf(base):
        raise ValueError(f"base must be positive and finite, got {base}")
    if step >= total_steps:
        return float(p_end)
    x = step / total_steps
    frac = x if base == 1.0 else (base**x - 1.0) / (base - 1.0)
    return float(p_start + frac * (p_end - p_start))


class NoiseCurriculum:
    """The schedule plus per-query sampling: a query is noisy iff u < p(step), u ~ U[0, 1)."""

    def __init__(self, total_steps: int, p_start: float = 0.0, p_end: float = 0.5, base: float = 4.0):
        noise_probability(0, total_steps, p_start, p_end, base)  # validates the arguments once
        self.total_steps = total_steps
        self.p_start = p_start
        self.p_end = p_end
        self.base = base

    def probability(self, step: int) -> float:
        return noise_probability(step, self.total_steps, self.p_start, self.p_end, self.base)

    def sample_noisy(self, step: int, n: int, generator: torch.Generator | random.Random) -> list[bool]:
        """n independent noisy/useful draws at `step` from the caller's seeded generator."""
        p = self.probability(step)
        if n <= 0:
            return []
        if isinstance(generator, random.Random):
            draws = [generator.random() for _ in range(n)]
        elif isinstance(generator, torch.Generator):
            draws = torch.rand(n, generator=generator, dtype=torch.float64).tolist()
        else:
            raise TypeError(f"generator must be torch.Generator or random.Random, got {type(generator)}")
        return [u < p for u in draws]

    def __repr__(self) -> str:
        return (
            f"NoiseCurriculum(total_steps={self.total_steps}, p_start={self.p_start}, "
            f"p_end={self.p_end}, base={self.base})"
        )
