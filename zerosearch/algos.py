"""Public import path of the advantage estimators (implemented in :mod:`zerosearch.rl.advantages`)."""

from zerosearch.rl.advantages import (
    discounted_returns,
    gae,
    grpo_advantages,
    masked_mean,
    masked_var,
    masked_whiten,
    reinforce_pp_advantages,
    token_level_rewards,
    value_loss,
)

__all__ = [
    "discounted_returns",
    "gae",
    "grpo_advantages",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "reinforce_pp_advantages",
    "token_level_rewards",
    "value_loss",
]
