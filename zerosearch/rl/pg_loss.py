"""The policy-gradient loss on per-token log-probs: PPO clipped surrogate (+ dual clip), KL to the reference,
entropy bonus, and the aggregation over tokens.

Everything here works on ``[B, T]`` vectors that already hold log-probs, so it is plain PyTorch and shared by
the fused LM-head op (:func:`zerosearch.ops.masked_pg_loss`) and its eager reference. Masked-out tokens are
replaced before any arithmetic, so whatever they hold never reaches the value or the gradient.
"""

from __future__ import annotations

import math

import torch

from zerosearch.config import AGG_MODES, KL_ALIASES, KL_TYPES

__all__ = ["pg_loss_from_logprobs", "per_token_loss", "token_weights", "check_pg_args", "check_token_tensor"]

# veRL's k3 ("low_var_kl"): the log-ratio is clamped to ±20 and the value to ±10, so a token far from the
# reference (logp=-5, ref=-1: 49.6 unclamped) adds at most 10 and no gradient instead of dominating the PG term.
_K3_LOG_RATIO_CLAMP = 20.0
_K3_VALUE_CLAMP = 10.0
_LOG_RATIO_CLAMP = 20.0  # keeps exp(logp - old) finite for garbage old log-probs; no effect in practice


def _kl(logp: torch.Tensor, ref: torch.Tensor, kl_type: str) -> torch.Tensor:
    kl_type = KL_ALIASES.get(kl_type, kl_type)
    if kl_type == "k1":
        return logp - ref
    if kl_type == "abs":
        return (logp - ref).abs()
    if kl_type == "k2":
        return 0.5 * (logp - ref) ** 2
    d = (ref - logp).clamp(-_K3_LOG_RATIO_CLAMP, _K3_LOG_RATIO_CLAMP)
    return (torch.exp(d) - d - 1.0).clamp(-_K3_VALUE_CLAMP, _K3_VALUE_CLAMP)


def token_weights(mask: torch.Tensor, agg: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-token weights ``w`` with ``loss = sum(w * per_token)``: every aggregation is linear in the
    per-token values, with weights that depend on the mask only (0 where masked out)."""
    m = mask.to(dtype)
    if agg == "token-mean":
        return m / mask.sum().clamp(min=1).to(dtype)
    counts = mask.sum(-1, keepdim=True)
    n_seqs = (counts > 0).sum().clamp(min=1).to(dtype)
    if agg == "seq-mean-token-mean":
        return m / counts.clamp(min=1).to(dtype) / n_seqs
    return m / n_seqs


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, agg: str) -> torch.Tensor:
    """Aggregate a ``[B, T]`` per-token value over the masked tokens (masked-out entries are ignored via
    ``torch.where``, so even inf/nan there cannot leak)."""
    vals = torch.where(mask, per_token, torch.zeros((), dtype=per_token.dtype, device=per_token.device))
    return (vals * token_weights(mask, agg, vals.dtype)).sum()


def check_token_tensor(name: str, t, like: torch.Tensor, floating: bool = True) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a tensor")
    if t.shape != like.shape:
        raise ValueError(f"{name} shape {tuple(t.shape)} must equal {tuple(like.shape)}")
    if floating and not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {t.dtype}")
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but expected {like.device}")


def check_pg_args(clip_low, clip_high, dual_clip, kl_coef, kl_type, entropy_coef, agg, ref_logprobs):
    if agg not in AGG_MODES:
        raise ValueError(f"agg must be one of {AGG_MODES}, got {agg!r}")
    if kl_type not in KL_TYPES:
        raise ValueError(f"kl_type must be one of {KL_TYPES}, got {kl_type!r}")
    # Comparisons are written so that NaN fails them: a NaN coefficient would otherwise pass every
    # range check and turn the loss into NaN far from its cause.
    if not 0 <= clip_low < 1:
        raise ValueError(f"clip_low must be in [0, 1), got {clip_low}")
    if not 0 <= clip_high < math.inf:
        raise ValueError(f"clip_high must be finite and >= 0, got {clip_high}")
    if dual_clip is not None and not 1 < dual_clip < math.inf:
        raise ValueError(f"dual_clip must be finite and > 1 (or None), got {dual_clip}")
    if not 0 <= kl_coef < math.inf:
        raise ValueError(f"kl_coef must be finite and >= 0, got {kl_coef}")
    if kl_coef > 0 and ref_logprobs is None:
        raise ValueError("ref_logprobs is required when kl_coef > 0")
    if not math.isfinite(entropy_coef):
        raise ValueError(f"entropy_coef must be finite, got {entropy_coef}")


def per_token_loss(
    lp: torch.Tensor,
    old: torch.Tensor,
    adv: torch.Tensor,
    ref: torch.Tensor | None,
    ent: torch.Tensor | None,
    *,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
    kl_coef: float,
    kl_type: str,
    entropy_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    """Per-token loss ``pg + kl_coef * kl - entropy_coef * entropy`` on finite inputs of any shape, and its
    parts (pg, kl, ratio, clipped, dual). Each token's value depends on that token alone, which is what
    lets the fused op take its gradient chunk by chunk."""
    log_ratio = (lp - old).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    pg_unclipped = -adv * ratio
    pg_clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    pg = torch.maximum(pg_unclipped, pg_clipped)
    clipped = pg_clipped > pg_unclipped
    dual = torch.zeros_like(clipped)
    if dual_clip is not None:
        cap = -adv * dual_clip
        dual = (adv < 0) & (pg > cap)
        pg = torch.where(adv < 0, torch.minimum(pg, cap), pg)
    per_token = pg
    kl = None
    if ref is not None:
        kl = _kl(lp, ref, kl_type)
        if kl_coef > 0:
            per_token = per_token + kl_coef * kl
    if ent is not None and entropy_coef != 0:
        per_token = per_token - entropy_coef * ent
    return per_token, {"pg": pg, "kl": kl, "ratio": ratio, "clipped": clipped, "dual": dual}


def pg_loss_from_logprobs(
    logp: torch.Tensor,
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
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    agg: str = "token-mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (+ dual clip) ``+ kl_coef * KL(ref) - entropy_coef * entropy``, aggregated.

    All token tensors are ``[B, T]`` (``[N]`` = one sequence). Masked-out tokens are replaced before any
    arithmetic, so they contribute nothing to the value or the gradient whatever their contents. Metrics
    are detached 0-d tensors (no host sync): pg_loss, kl and entropy (aggregated like the loss, as veRL
    does), clip_frac, dual_clip_frac, ratio_mean,
    ratio_max, approx_kl (mean of old - logp), n_tokens.
    """
    check_pg_args(clip_low, clip_high, dual_clip, kl_coef, kl_type, entropy_coef, agg, ref_logprobs)
    if not isinstance(logp, torch.Tensor) or not logp.is_floating_point() or logp.dim() not in (1, 2):
        raise ValueError("logp must be a floating-point tensor shaped [B, T] or [N]")
    check_token_tensor("old_logprobs", old_logprobs, logp)
    check_token_tensor("advantages", advantages, logp)
    check_token_tensor("mask", mask, logp, floating=False)
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")
    if ref_logprobs is not None:
        check_token_tensor("ref_logprobs", ref_logprobs, logp)
    if entropy is not None:
        check_token_tensor("entropy", entropy, logp)
    if entropy_coef != 0 and entropy is None:
        raise ValueError("entropy is required when entropy_coef != 0")

    if logp.dim() == 1:  # one sequence
        logp, old_logprobs, advantages, mask = (x.unsqueeze(0) for x in (logp, old_logprobs, advantages, mask))
        ref_logprobs = None if ref_logprobs is None else ref_logprobs.unsqueeze(0)
        entropy = None if entropy is None else entropy.unsqueeze(0)

    dt = torch.promote_types(logp.dtype, torch.float32)
    zero = torch.zeros((), dtype=dt, device=logp.device)

    def clean(x):  # masked entries -> 0 so that exp/products there stay finite (and grads exactly 0)
        return torch.where(mask, x.to(dt), zero)

    ref = clean(ref_logprobs) if ref_logprobs is not None else None
    ent = clean(entropy) if entropy is not None else None
    lp, old = clean(logp), clean(old_logprobs)
    per_token, parts = per_token_loss(lp, old, clean(advantages), ref, ent, clip_low=clip_low, clip_high=clip_high,
                                      dual_clip=dual_clip, kl_coef=kl_coef, kl_type=kl_type, entropy_coef=entropy_coef)
    pg, kl, ratio = parts["pg"], parts["kl"], parts["ratio"]
    loss = _aggregate(per_token, mask, agg)

    with torch.no_grad():
        n = mask.sum()
        denom = n.clamp(min=1).to(dt)

        def tmean(x):
            return torch.where(mask, x.detach().to(dt), zero).sum() / denom

        metrics = {
            "pg_loss": _aggregate(pg.detach(), mask, agg),
            "kl": _aggregate(kl.detach(), mask, agg) if kl is not None else zero.clone(),
            "entropy": _aggregate(ent.detach(), mask, agg) if ent is not None else zero.clone(),
            "clip_frac": tmean(parts["clipped"]),
            "dual_clip_frac": tmean(parts["dual"]),
            "ratio_mean": tmean(ratio),
            "ratio_max": torch.where(mask, ratio.detach(), zero).max() if mask.numel() else zero.clone(),
            "approx_kl": tmean(old - lp),
            "n_tokens": n.to(dt),
        }
    return loss, metrics
