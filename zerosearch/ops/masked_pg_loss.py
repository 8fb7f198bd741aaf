"""The masked PPO / GRPO loss straight from the LM head, with its gradients computed in the forward pass.

Only the tokens the policy wrote (``mask``) are computed at all: they are compacted before the LM head, so
prompt, padding and ``<information>`` tokens cost nothing and get exactly zero gradient.

Why the gradients come from the forward pass: the loss is terminal and ``sum_t w_t loss_t(logp_t, H_t)``
with weights ``w`` fixed by the mask and ``agg``, so every coefficient of a token's gradient (advantage, old
and reference log-probs, the normaliser) is known as soon as that token's log-prob is. Each chunk of ``C``
rows therefore does one GEMM for the logits, a row pass for ``logp`` / ``lse`` / entropy, the per-token loss
and its derivatives (a few ``[C]`` vectors through autograd), ``dL/dlogits`` in place (Triton row kernel on
CUDA, torch on CPU), and the two gradient GEMMs: three GEMMs per chunk where a recomputing backward needs
four. The backward pass only scales the saved ``grad_hidden`` / ``grad_W`` by ``grad_output``.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from zerosearch.ops.token_logprobs import (
    _addmm_f32_,
    _backend,
    _check_logprob_inputs,
    _chunk_rows,
    _mm_dtype,
    _mm_f32,
    _pick_backend,
)
from zerosearch.rl.pg_loss import (
    check_pg_args,
    check_token_tensor,
    per_token_loss,
    pg_loss_from_logprobs,
    token_weights,
)

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


class _FusedPGLoss(torch.autograd.Function):
    """Compacted rows ``hidden [n, H]`` -> ``(loss, logp [n], entropy [n])``; grads are made in the forward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, coefs, backend_name, inv_temp, need_h, need_w, loss_kw):
        old, adv, ref, w_tok = coefs
        backend = _backend(backend_name)
        n = hidden.shape[0]
        mm_dtype = _mm_dtype(weight)
        w = weight.to(mm_dtype)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.empty(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        logp_out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        ent_out = torch.empty_like(logp_out)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with_ent_grad = loss_kw["entropy_coef"] != 0
        c = _chunk_rows(weight.shape[0], hidden.device, weight.shape[1])
        for s in range(0, n, c):
            rows = slice(s, s + c)
            h_c = hidden[rows].to(mm_dtype)
            x = _mm_f32(h_c, w.T)
            logp, lse, ent, state = backend.row_stats_(x, targets[rows], inv_temp)
            logp_out[rows], ent_out[rows] = logp, ent
            with torch.enable_grad():
                lp = logp.detach().requires_grad_()
                en = ent.detach().requires_grad_(with_ent_grad)
                per_token, _ = per_token_loss(lp, old[rows], adv[rows], None if ref is None else ref[rows], en,
                                              **loss_kw)  # fmt: skip
                chunk_loss = (per_token * w_tok[rows]).sum()
            loss += chunk_loss.detach()
            if not (need_h or need_w):
                del x, state
                continue
            grads = torch.autograd.grad(chunk_loss, [lp, en] if with_ent_grad else [lp], allow_unused=True)
            g_lp, g_ent = (*grads, None)[:2]
            g_lp = torch.zeros_like(logp) if g_lp is None else g_lp
            dz = backend.dlogits_from_stats_(x, targets[rows], lse, ent, state, g_lp, g_ent, inv_temp).to(mm_dtype)
            if need_h:
                grad_h[rows] = _mm_f32(dz, w)
            if need_w:
                _addmm_f32_(grad_w, dz.T, h_c, first=s == 0)
            del x, state, dz  # before the next chunk's GEMM allocates its buffer
        if need_w and n == 0:
            grad_w.zero_()
        ctx.grads = (grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(logp_out, ent_out)
        return loss, logp_out, ent_out

    @staticmethod
    @once_differentiable
    def backward(ctx, g_loss, _g_logp, _g_ent):
        if ctx.grads is None:
            raise RuntimeError("masked_pg_loss computes its gradients in the forward pass; backward can run once")
        grad_h, grad_w = ctx.grads
        ctx.grads = None  # the saved grads are scaled in place and handed over
        g = torch.ones((), device=g_loss.device) if g_loss is None else g_loss.float()
        if grad_h is not None:
            grad_h.mul_(g)
        if grad_w is not None:
            grad_w = grad_w.mul_(g).to(ctx.weight_dtype)
        return grad_h, grad_w, None, None, None, None, None, None, None


def _fused_loss(hidden, weight, targets, old_logprobs, advantages, mask, ref_logprobs, temperature, agg, loss_kw):
    """Compact the masked rows, run :class:`_FusedPGLoss`, and put ``logp`` / entropy back in place."""
    _check_logprob_inputs(hidden, weight, targets, temperature, mask)
    h = hidden.reshape(-1, hidden.shape[-1])
    idx = mask.reshape(-1).nonzero().squeeze(1)
    h = h.index_select(0, idx)
    t = targets.reshape(-1).long().index_select(0, idx)
    if t.numel() > 0:
        lo, hi = torch.aminmax(t)
        if int(lo) < 0 or int(hi) >= weight.shape[0]:
            raise ValueError(f"targets must lie in [0, {weight.shape[0]}) on unmasked rows, "
                             f"got range [{int(lo)}, {int(hi)}]")  # fmt: skip

    def pick(x):
        return None if x is None else x.reshape(-1).index_select(0, idx).float()

    weights = token_weights(mask.reshape(-1, mask.shape[-1]), agg)
    coefs = (pick(old_logprobs), pick(advantages), pick(ref_logprobs), pick(weights))
    grad_on = torch.is_grad_enabled()
    need_h, need_w = grad_on and hidden.requires_grad, grad_on and weight.requires_grad
    loss, logp, ent = _FusedPGLoss.apply(h, weight, t, coefs, _pick_backend(hidden.device), 1.0 / float(temperature),
                                         need_h, need_w, loss_kw)  # fmt: skip
    full = targets.numel()
    logp = logp.new_zeros(full).index_copy(0, idx, logp).reshape(targets.shape)
    ent = ent.new_zeros(full).index_copy(0, idx, ent).reshape(targets.shape)
    return loss, logp, ent


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
    """Policy-gradient loss straight from the LM head, the value and math of :func:`pg_loss_from_logprobs`
    on the fused log-probs of the masked tokens. Token tensors are ``[B, T]`` (``[N]`` = one sequence),
    ``hidden`` is ``[B, T, H]`` (``[N, H]``), ``weight`` the ``[V, H]`` LM head.

    Gradients flow to ``hidden`` and ``weight`` only (old / reference log-probs and advantages are data) and
    are computed in the forward pass, so the backward can run once. The entropy is always computed (the row
    pass gives it) for the metrics; it carries gradient when ``entropy_coef != 0``. An all-masked batch gives
    a zero loss that still backpropagates (zero gradients).
    """
    check_pg_args(clip_low, clip_high, dual_clip, kl_coef, kl_type, entropy_coef, agg, ref_logprobs)
    _check_pg_token_inputs(hidden, targets, old_logprobs, advantages, mask, ref_logprobs)
    loss_kw = dict(clip_low=clip_low, clip_high=clip_high, dual_clip=dual_clip, kl_coef=kl_coef, kl_type=kl_type,
                   entropy_coef=entropy_coef)  # fmt: skip
    loss, logp, ent = _fused_loss(hidden, weight, targets, old_logprobs, advantages, mask, ref_logprobs,
                                  temperature, agg, loss_kw)  # fmt: skip
    with torch.no_grad():
        _, metrics = pg_loss_from_logprobs(logp, old_logprobs, advantages, mask, ref_logprobs=ref_logprobs,
                                           entropy=ent, agg=agg, **loss_kw)  # fmt: skip
    return loss, metrics


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
