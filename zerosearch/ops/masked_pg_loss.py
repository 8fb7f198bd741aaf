"""The masked PPO / GRPO loss straight from the LM head: fused token log-probs, then the policy-gradient math.

Only the tokens the policy wrote (``mask``) are computed at all: the fused op compacts them before the LM
head, so prompt, padding and ``<information>`` tokens cost nothing and get exactly zero gradient.
"""

from __future__ import annotations

import torch

from zerosearch.ops.token_logprobs import token_logprobs
from zerosearch.rl.pg_loss import check_pg_args, check_token_tensor, pg_loss_from_logprobs

__all__ = ["masked_pg_loss", "masked_pg_loss_reference"]


def _check_pg_token_inputs(hidden, targets, old_logprobs, advantages, mask, ref_logprobs) -> None:
    if not isinstance(targets, torch.Tensor) or targets.dim() not in (1, 2):
        raise ValueError("targets must be a tensor shaped [B, T] or [N]")
    if not isinstance(hidden, torch.Tensor) or tuple(hidden.shape[:-1]) != tuple(targets.shape):
        raise ValueError(f"hidden must be shaped targets.shape + (H,) = {tuple(targets.shape)} + (H,), "
                         f"got {tuple(getattr(hidden, 'shape', ()))}")  # fmt: skip
    for name, t in (("old_logprobs", old_logprobs), ("advantages", advantages), ("ref_logprobs", ref_logprobs)):
        if t is not None:
            check_token_tensor(name, t, targets)
    check_token_tensor("mask", mask, targets, floating=False)
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")


def masked_pg_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logprobs: torch.Tensor | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
    entropy_coef: float = 0.0,
    temperature: float = 1.0,
    agg: str = "token-mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Policy-gradient loss straight from the LM head: fused :func:`token_logprobs` over the masked tokens
    only, then :func:`pg_loss_from_logprobs`. Token tensors are ``[B, T]`` (``[N]`` = one sequence),
    ``hidden`` is ``[B, T, H]`` (``[N, H]``), ``weight`` the ``[V, H]`` LM head.

    The entropy is always computed (nearly free in the fused forward) for the metrics, but it only carries
    gradient when ``entropy_coef != 0``. An all-masked batch gives a zero loss that still backpropagates.
    """
    check_pg_args(clip_low, clip_high, dual_clip, kl_coef, kl_type, entropy_coef, agg, ref_logprobs)
    _check_pg_token_inputs(hidden, targets, old_logprobs, advantages, mask, ref_logprobs)
    logp, ent = token_logprobs(hidden, weight, targets, temperature=temperature, with_entropy=True, mask=mask)
    if entropy_coef == 0:
        ent = ent.detach()
    return pg_loss_from_logprobs(
        logp, old_logprobs, advantages, mask, ref_logprobs=ref_logprobs, clip_low=clip_low,
        clip_high=clip_high, dual_clip=dual_clip, kl_coef=kl_coef, kl_type=kl_type, entropy=ent,
        entropy_coef=entropy_coef, agg=agg,
    )  # fmt: skip


def masked_pg_loss_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    compute_dtype: torch.dtype | None = None,
    temperature: float = 1.0,
    **pg_kwargs,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eager reference for tests and benchmarks: materialised ``[..., V]`` logits (input dtype matmul +
    fp32 softmax, or everything in ``compute_dtype`` such as float64), then the same PPO math."""
    from zerosearch.kernels.token_logprobs import token_logprobs_reference as ref

    safe_targets = torch.where(mask, targets, torch.zeros_like(targets))
    logp, ent = ref(hidden, weight, safe_targets, temperature, with_entropy=True, compute_dtype=compute_dtype)
    if pg_kwargs.get("entropy_coef", 0.0) == 0:
        ent = ent.detach()
    return pg_loss_from_logprobs(logp, old_logprobs, advantages, mask, entropy=ent, **pg_kwargs)
