"""Learning-rate multipliers shared by RL and SFT: linear warm-up, then constant or cosine decay."""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine")


def lr_factor(step: int, *, warmup: int, total: int, schedule: str = "constant", min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate for optimiser step ``step`` (0-based).

    ``constant`` is the paper's actor schedule (warm-up, then flat). ``cosine`` decays to ``min_ratio`` at
    ``total``: small policies drift late in a run, when the curriculum's noise is highest, and smaller late
    updates keep what the early steps learnt.
    """
    warm = min(1.0, (step + 1) / max(1, warmup))
    if schedule == "constant":
        return warm
    if schedule == "cosine":
        progress = min(1.0, step / max(1, total))
        return warm * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"lr schedule must be one of {LR_SCHEDULES}, not {schedule!r}")
