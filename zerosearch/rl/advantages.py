"""Advantage estimators and small loss helpers of GRPO, PPO (GAE) and REINFORCE++.

Every function takes the one `mask` (True = token written by the policy) and looks at nothing else:
engine-written `<information>` tokens are not steps of the MDP, do not enter the whitening
statistics and get zero advantage. Outputs are always zero at unmasked positions, so a
caller that forgets to mask a loss still cannot train on observation tokens.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over entries where `mask` is True (0 where nothing is masked).

    Unmasked entries are replaced rather than multiplied away, so a NaN/inf there cannot leak in.
    """
    mask = mask.bool()
    xm = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if dim is None:
        return xm.sum() / mask.sum().clamp(min=1)
    return xm.sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of the masked entries of `x` (whole tensor), unbiased when more than one entry."""
    mask = mask.bool()
    n = mask.sum()
    mean = masked_mean(x, mask)
    centered = torch.where(mask, x - mean, torch.zeros((), dtype=x.dtype, device=x.device))
    sq = (centered**2).sum()
    if unbiased and n > 1:
        return sq / (n - 1)
    return sq / n.clamp(min=1)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Whiten `x` with statistics of its masked entries only; unmasked positions come out as 0.

    `shift_mean=False` keeps the original mean (only rescales), as some PPO variants do for rewards.
    """
    mask = mask.bool()
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(mask, out, torch.zeros((), dtype=out.dtype, device=out.device))


def _group_index(group_ids: Sequence[Hashable] | Tensor, n: int, device: torch.device) -> Tensor:
    if isinstance(group_ids, Tensor):
        ids = group_ids.reshape(-1).tolist()
    else:
        ids = list(group_ids)
    if len(ids) != n:
        raise ValueError(f"group_ids has {len(ids)} entries for {n} rewards")
    lookup: dict[Hashable, int] = {}
    index = [lookup.setdefault(g, len(lookup)) for g in ids]
    return torch.tensor(index, dtype=torch.long, device=device)


def grpo_advantages(
    rewards: Tensor,
    group_ids: Sequence[Hashable] | Tensor,
    eps: float = 1e-6,
    *,
    singleton: str = "zero",
    norm_by_std: bool = True,
) -> Tensor:
    """Per-group z-score `(r − mean) / (std + eps)` with the unbiased std of the public GRPO.

    `group_ids` must identify a question *instance*: two rows sharing an id are compared with each other.
    A group with one reward value carries no signal and gets advantage 0 (never NaN). A singleton group has
    no baseline: `singleton="zero"` gives it 0, `"reward"` treats it as veRL does (mean 0, std 1, so
    `r / (1 + eps)`, or `r` without std normalisation). `norm_by_std=False` is Dr. GRPO's `r − mean`, which
    does not up-weight groups whose rewards barely differ. Integer or bool rewards are promoted to the
    default float dtype (an integer result would truncate every advantage).
    """
    if not isinstance(rewards, Tensor) or rewards.dim() != 1:
        raise ValueError("rewards must be a 1-D tensor [B]")
    if singleton not in ("zero", "reward"):
        raise ValueError(f"singleton must be 'zero' or 'reward', got {singleton!r}")
    if rewards.is_complex():
        raise ValueError("rewards must be real")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards must be finite (a NaN/inf reward would poison its whole group)")
    out_dtype = rewards.dtype if rewards.is_floating_point() else torch.get_default_dtype()
    r = rewards.double()
    idx = _group_index(group_ids, r.numel(), r.device)
    n_groups = int(idx.max().item()) + 1 if idx.numel() else 0
    counts = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add_(0, idx, torch.ones_like(r))
    sums = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add_(0, idx, r)
    mean = sums / counts
    centered = r - mean[idx]
    sq = torch.zeros(n_groups, dtype=r.dtype, device=r.device).index_add_(0, idx, centered**2)
    std = torch.sqrt(sq / (counts - 1).clamp(min=1))
    adv = centered / (std[idx] + eps) if norm_by_std else centered
    # A constant group must give exactly 0: its mean carries rounding error (e.g. three 0.1s), and
    # dividing that residue by a std of the same tiny size would turn it into a spurious signal.
    lo = torch.full((n_groups,), torch.inf, dtype=r.dtype, device=r.device).scatter_reduce_(0, idx, r, "amin")
    hi = torch.full((n_groups,), -torch.inf, dtype=r.dtype, device=r.device).scatter_reduce_(0, idx, r, "amax")
    informative = (counts > 1) & (hi > lo)
    adv = torch.where(informative[idx], adv, torch.zeros_like(adv))
    if singleton == "reward":
        alone = (counts == 1)[idx]
        adv = torch.where(alone, r / (1.0 + eps) if norm_by_std else r, adv)
    return adv.to(out_dtype)


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 1.0) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the policy's tokens only.

    The recursion runs backwards and simply skips unmasked positions: the value after the last
    policy token before an `<information>` span is the value of the first policy token after it, as
    if the span were not there. Rewards and values at unmasked positions are ignored. Returns
    `(advantages, returns)`, both 0 at unmasked positions; returns = advantages + values.
    """
    mask = mask.bool()
    B, T = rewards.shape
    zero = torch.zeros(B, dtype=values.dtype, device=values.device)
    next_value, next_adv = zero, zero
    adv = torch.zeros_like(values)
    for t in range(T - 1, -1, -1):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * next_adv
        next_adv = torch.where(m, a, next_adv)
        next_value = torch.where(m, values[:, t], next_value)
        adv[:, t] = torch.where(m, a, zero)
    returns = torch.where(mask, adv + values, torch.zeros_like(adv))
    return adv, returns


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """G_t = r_t + γ·G_next over masked tokens, skipping unmasked ones; 0 at unmasked positions."""
    mask = mask.bool()
    B, T = rewards.shape
    running = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    out = torch.zeros_like(rewards)
    for t in range(T - 1, -1, -1):
        m = mask[:, t]
        g = rewards[:, t] + gamma * running
        running = torch.where(m, g, running)
        out[:, t] = torch.where(m, g, torch.zeros_like(g))
    return out


def reinforce_pp_advantages(rewards: Tensor, mask: Tensor, gamma: float = 1.0) -> tuple[Tensor, Tensor]:
    """REINFORCE++: token-level discounted returns, whitened over the whole batch's masked tokens.

    `rewards` are token-level (typically from `token_level_rewards` with the KL penalty folded in).
    Returns `(advantages, returns)`, both 0 at unmasked positions.
    """
    returns = discounted_returns(rewards, mask, gamma)
    return masked_whiten(returns, mask), returns


def token_level_rewards(scores: Tensor, mask: Tensor, kl: Tensor | None = None, kl_coef: float = 0.0) -> Tensor:
    """Place each row's score on its last policy token and subtract `kl_coef·kl` on policy tokens.

    This is PPO's in-reward KL penalty. A row without any policy token gets no reward at all.
    """
    mask = mask.bool()
    B, T = mask.shape
    out = torch.zeros(B, T, dtype=scores.dtype if scores.is_floating_point() else torch.float32, device=mask.device)
    positions = torch.arange(T, device=mask.device).expand(B, T)
    last = torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values
    has = last >= 0
    rows = torch.arange(B, device=mask.device)[has]
    out[rows, last[has]] = scores.to(out.dtype)[has]
    if kl is not None and kl_coef != 0.0:
        out = out - kl_coef * torch.where(mask, kl.to(out.dtype), torch.zeros_like(out))
    return out


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float = 0.5) -> Tensor:
    """PPO clipped value loss `0.5·max((v−R)², (clip(v)−R)²)`, averaged over policy tokens.

    Clipping the new value to within `clip` of the rollout-time value keeps the critic from jumping,
    mirroring the actor's ratio clip.
    """
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    loss = 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return masked_mean(loss, mask)
