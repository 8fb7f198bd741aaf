"""Fused token log-probs and the masked PPO / GRPO policy-gradient loss (DESIGN §4).

Why fused: ``log_softmax(hidden @ W.T)`` over a 150k vocab for 16k tokens is tens of GB once autograd keeps
its buffers. :func:`token_logprobs` computes log p(target) (and the entropy) without ever holding ``[N, V]``:

* forward: the Triton kernel of ``zerosearch.kernels.token_logprobs`` (online log-sum-exp over vocab tiles)
  on CUDA, or a chunked PyTorch loop over ``C`` rows at a time on CPU;
* backward: shared by both paths (one ``autograd.Function``): recompute the fp32 logits of ``C`` rows,
  turn them in place into ``dL/dlogits`` (Triton kernel or torch), and accumulate
  ``grad_hidden = dlogits @ W`` and ``grad_W += dlogits.T @ hidden``. Only ``[C, V]`` is ever live.

Masked rows are dropped by *row compaction* before any of this (never multiplied by zero), so padding and
``<information>`` tokens cost nothing and receive exactly zero gradient.

Environment: ``ZEROSEARCH_TRITON=1`` forces the Triton path (CPU tensors then need ``TRITON_INTERPRET=1``),
``ZEROSEARCH_TRITON=0`` disables it; ``ZEROSEARCH_CHUNK_ROWS`` overrides the chunk size ``C``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

__all__ = [
    "token_logprobs",
    "masked_pg_loss",
    "pg_loss_from_logprobs",
    "masked_pg_loss_reference",
    "AGG_MODES",
    "KL_TYPES",
]

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
KL_TYPES = ("k1", "k2", "k3")
_K3_CLAMP = 10.0  # DESIGN §1: the k3 log-ratio is clamped to ±10
_LOG_RATIO_CLAMP = 20.0  # keeps exp(logp - old) finite for garbage old log-probs; no effect in practice


def _kernels_module():
    """``zerosearch.kernels.token_logprobs`` when installed, else ``kernels.token_logprobs`` from a source
    checkout. Imported lazily so CPU users never import Triton."""
    try:
        from zerosearch.kernels import token_logprobs as mod
    except ImportError:
        from kernels import token_logprobs as mod
    return mod


# --------------------------------------------------------------------------------------------------------
# Per-chunk building blocks
# --------------------------------------------------------------------------------------------------------


def _chunk_rows(v: int, device: torch.device) -> int:
    """Rows per backward chunk: a ``[C, V]`` fp32 buffer of <= 256 MB on GPU, <= 16 MB (64..512 rows) on CPU."""
    env = os.environ.get("ZEROSEARCH_CHUNK_ROWS")
    if env:
        return max(1, int(env))
    if device.type == "cuda":
        return max(16, (256 << 20) // (4 * max(v, 1)))
    return min(512, max(64, (16 << 20) // (4 * max(v, 1))))


_OUT_DTYPE_MM_OK: dict[str, bool] = {}


def _out_dtype_mm_ok(device: torch.device) -> bool:
    """Whether ``torch.mm/addmm(..., out_dtype=float32)`` (16-bit operands, fp32 result) works on device.

    It exists for CUDA in recent torch; probed once per device type instead of assumed."""
    key = device.type
    if key not in _OUT_DTYPE_MM_OK:
        try:
            a = torch.zeros(16, 16, dtype=torch.bfloat16, device=device)
            acc = torch.zeros(16, 16, dtype=torch.float32, device=device)
            torch.mm(a, a, out_dtype=torch.float32)
            torch.addmm(acc, a, a, out_dtype=torch.float32, out=acc)
            _OUT_DTYPE_MM_OK[key] = True
        except (RuntimeError, TypeError, NotImplementedError):
            _OUT_DTYPE_MM_OK[key] = False
    return _OUT_DTYPE_MM_OK[key]


def _mm_dtype(t: torch.Tensor) -> torch.dtype:
    """Dtype in which matmul operands are kept: 16-bit stays 16-bit on CUDA (tensor cores, fp32 results via
    ``out_dtype``); everything else is upcast to fp32 once (CPU has no fast 16-bit GEMM anyway)."""
    if t.is_cuda and t.dtype in (torch.float16, torch.bfloat16) and _out_dtype_mm_ok(t.device):
        return t.dtype
    return torch.float32


def _mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` with an fp32 result and fp32 accumulation (operands both fp32 or both 16-bit on CUDA)."""
    if a.dtype == torch.float32:
        return a @ b
    return torch.mm(a, b, out_dtype=torch.float32)


def _addmm_f32_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` in place into the fp32 accumulator, without a second ``acc``-sized temporary."""
    if a.dtype == torch.float32:
        acc.addmm_(a, b)
    else:
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)


def _torch_forward(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, inv_temp: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunked PyTorch forward: per-row ``(logp, lse, entropy)`` in fp32, ``[C, V]`` live at a time."""
    n = hidden.shape[0]
    w = weight.to(_mm_dtype(weight))
    out = torch.empty(3, n, dtype=torch.float32, device=hidden.device)
    c = _chunk_rows(weight.shape[0], hidden.device)
    for s in range(0, n, c):
        z = _mm_f32(hidden[s : s + c].to(w.dtype), w.T).mul_(inv_temp)
        lse = torch.logsumexp(z, dim=1)
        out[0, s : s + c] = z.gather(1, targets[s : s + c, None]).squeeze(1) - lse
        out[1, s : s + c] = lse
        logp_all = z.sub_(lse[:, None])
        out[2, s : s + c] = -(logp_all.exp() * logp_all).sum(1)
    return out[0], out[1], out[2]


def _torch_dlogits_(
    x: torch.Tensor,
    targets: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor,
    g_lp: torch.Tensor,
    g_ent: torch.Tensor | None,
    inv_temp: float,
) -> torch.Tensor:
    """In-place ``x (raw logits) -> dL/dx``; same contract as ``triton_dlogits_``.

    With ``z = x / T``, ``p = softmax(z)``: ``dL/dz_j = g_lp (1[j=t] - p_j) - g_ent p_j (log p_j + H)``.
    """
    logp = x.mul_(inv_temp).sub_(lse[:, None])
    if g_ent is None:
        dz = logp.exp_().mul_(-g_lp[:, None])
    else:
        p = logp.exp()
        dz = logp.add_(entropy[:, None]).mul_(p).mul_(-g_ent[:, None]).addcmul_(p, g_lp[:, None], value=-1.0)
    rows = torch.arange(x.shape[0], device=x.device)
    dz.index_put_((rows, targets), g_lp, accumulate=True)
    return dz.mul_(inv_temp)


class _Backend(NamedTuple):
    forward: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    dlogits_: Callable[..., torch.Tensor]


def _backend(name: str) -> _Backend:
    if name == "triton":
        mod = _kernels_module()
        return _Backend(mod.triton_forward, mod.triton_dlogits_)
    return _Backend(_torch_forward, _torch_dlogits_)


class _FusedTokenLogprobs(torch.autograd.Function):
    """Rows ``[N, H]`` -> ``(logp [N], entropy [N])``; the backend only supplies the per-chunk pieces."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, inv_temp, backend_name):
        backend = _backend(backend_name)
        logp, lse, ent = backend.forward(hidden, weight, targets, inv_temp)
        ctx.save_for_backward(hidden, weight, targets, lse, ent)
        ctx.inv_temp = inv_temp
        ctx.backend_name = backend_name
        ctx.set_materialize_grads(False)
        return logp, ent

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lp, g_ent):
        hidden, weight, targets, lse, ent = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n = hidden.shape[0]
        if (g_lp is None and g_ent is None) or not (need_h or need_w):
            return None, None, None, None, None
        if g_lp is None:
            g_lp = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        g_lp = g_lp.float()
        g_ent = g_ent.float() if g_ent is not None else None
        backend = _backend(ctx.backend_name)

        mm_dtype = _mm_dtype(weight)
        w = weight.to(mm_dtype)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        c = _chunk_rows(weight.shape[0], hidden.device)
        for s in range(0, n, c):
            h_c = hidden[s : s + c].to(mm_dtype)
            x = _mm_f32(h_c, w.T)
            backend.dlogits_(
                x, targets[s : s + c], lse[s : s + c], ent[s : s + c], g_lp[s : s + c],
                None if g_ent is None else g_ent[s : s + c], ctx.inv_temp,
            )  # fmt: skip
            dz = x.to(mm_dtype)
            if need_h:
                grad_h[s : s + c] = _mm_f32(dz, w)
            if need_w:
                _addmm_f32_(grad_w, dz.T, h_c)
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None


# --------------------------------------------------------------------------------------------------------
# token_logprobs
# --------------------------------------------------------------------------------------------------------


def _pick_backend(device: torch.device) -> str:
    flag = os.environ.get("ZEROSEARCH_TRITON")
    if flag == "0":
        return "torch"
    if flag == "1":
        if not _kernels_module().HAVE_TRITON:
            raise RuntimeError("ZEROSEARCH_TRITON=1 but triton is not importable")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                "ZEROSEARCH_TRITON=1 on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported"
            )
        return "triton"
    if device.type == "cuda":
        try:
            return "triton" if _kernels_module().HAVE_TRITON else "torch"
        except ImportError:
            return "torch"
    return "torch"


def _check_logprob_inputs(hidden, weight, targets, temperature, mask) -> None:
    if not isinstance(hidden, torch.Tensor) or not hidden.is_floating_point() or hidden.dim() < 1:
        raise ValueError("hidden must be a floating-point tensor shaped [..., H]")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weight must be [V, H] with H = hidden.shape[-1] = {hidden.shape[-1]}, "
            f"got {tuple(getattr(weight, 'shape', ()))}"
        )
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight dtype {weight.dtype} differs from hidden dtype {hidden.dtype}")
    if weight.shape[0] == 0:
        raise ValueError("weight has an empty vocabulary (V = 0)")
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.is_complex():
        raise ValueError("targets must be an integer tensor")
    if targets.dtype == torch.bool:
        raise ValueError("targets must be an integer tensor, got bool")
    if tuple(targets.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"targets shape {tuple(targets.shape)} must equal hidden.shape[:-1] = "
                         f"{tuple(hidden.shape[:-1])}")  # fmt: skip
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError("mask must be a bool tensor")
        if mask.shape != targets.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} must equal targets shape {tuple(targets.shape)}")
    for name, t in (("weight", weight), ("targets", targets), ("mask", mask)):
        if t is not None and t.device != hidden.device:
            raise ValueError(f"{name} is on {t.device} but hidden is on {hidden.device}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    mask: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """fp32 ``log softmax(hidden @ weight.T / temperature)[target]`` shaped like ``targets``.

    ``hidden [..., H]``, ``weight [V, H]``, integer ``targets [...]``; differentiable w.r.t. hidden and
    weight; ``[N, V]`` is never materialised. ``with_entropy`` also returns the per-row entropy of the
    tempered distribution (differentiable too). Rows where the bool ``mask`` is False are not computed at
    all: their outputs are 0 and their gradient is exactly 0 (their targets may be anything, e.g. -100).
    """
    _check_logprob_inputs(hidden, weight, targets, temperature, mask)
    out_shape = targets.shape
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1).long()
    idx = None
    if mask is not None:
        idx = mask.reshape(-1).nonzero().squeeze(1)
        h = h.index_select(0, idx)
        t = t.index_select(0, idx)
    if t.numel() > 0:
        lo, hi = torch.aminmax(t)
        if int(lo) < 0 or int(hi) >= weight.shape[0]:
            raise ValueError(f"targets must lie in [0, {weight.shape[0]}) on unmasked rows, "
                             f"got range [{int(lo)}, {int(hi)}]")  # fmt: skip
    backend = _pick_backend(hidden.device)
    logp, ent = _FusedTokenLogprobs.apply(h, weight, t, 1.0 / float(temperature), backend)
    if idx is not None:
        n = targets.numel()
        logp = logp.new_zeros(n).index_copy(0, idx, logp)
        ent = ent.new_zeros(n).index_copy(0, idx, ent)
    logp = logp.reshape(out_shape)
    if not with_entropy:
        return logp
    return logp, ent.reshape(out_shape)


# --------------------------------------------------------------------------------------------------------
# PPO / KL / aggregation math on [B, T] vectors
# --------------------------------------------------------------------------------------------------------


def _kl(logp: torch.Tensor, ref: torch.Tensor, kl_type: str) -> torch.Tensor:
    if kl_type == "k1":
        return logp - ref
    if kl_type == "k2":
        return 0.5 * (logp - ref) ** 2
    d = (ref - logp).clamp(-_K3_CLAMP, _K3_CLAMP)
    return torch.exp(d) - d - 1.0


def _aggregate(per_token: torch.Tensor, mask: torch.Tensor, agg: str) -> torch.Tensor:
    """Aggregate a ``[B, T]`` per-token value over the masked tokens (masked-out entries are ignored via
    ``torch.where``, so even inf/nan there cannot leak)."""
    vals = torch.where(mask, per_token, torch.zeros((), dtype=per_token.dtype, device=per_token.device))
    if agg == "token-mean":
        return vals.sum() / mask.sum().clamp(min=1)
    counts = mask.sum(-1)
    seq = vals.sum(-1)
    if agg == "seq-mean-token-mean":
        seq = seq / counts.clamp(min=1)
    has = counts > 0
    seq = torch.where(has, seq, torch.zeros((), dtype=seq.dtype, device=seq.device))
    return seq.sum() / has.sum().clamp(min=1)


def _check_token_tensor(name: str, t, like: torch.Tensor, floating: bool = True) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a tensor")
    if t.shape != like.shape:
        raise ValueError(f"{name} shape {tuple(t.shape)} must equal {tuple(like.shape)}")
    if floating and not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {t.dtype}")
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but expected {like.device}")


def _check_pg_args(clip_low, clip_high, dual_clip, kl_coef, kl_type, entropy_coef, agg, ref_logprobs):
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
    are detached 0-d tensors (no host sync): pg_loss, kl, entropy, clip_frac, dual_clip_frac, ratio_mean,
    ratio_max, approx_kl (mean of old - logp), n_tokens.
    """
    _check_pg_args(clip_low, clip_high, dual_clip, kl_coef, kl_type, entropy_coef, agg, ref_logprobs)
    if not isinstance(logp, torch.Tensor) or not logp.is_floating_point() or logp.dim() not in (1, 2):
        raise ValueError("logp must be a floating-point tensor shaped [B, T] or [N]")
    _check_token_tensor("old_logprobs", old_logprobs, logp)
    _check_token_tensor("advantages", advantages, logp)
    _check_token_tensor("mask", mask, logp, floating=False)
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")
    if ref_logprobs is not None:
        _check_token_tensor("ref_logprobs", ref_logprobs, logp)
    if entropy is not None:
        _check_token_tensor("entropy", entropy, logp)
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

    lp, old, adv = clean(logp), clean(old_logprobs), clean(advantages)
    log_ratio = (lp - old).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    pg_unclipped = -adv * ratio
    pg_clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    pg = torch.maximum(pg_unclipped, pg_clipped)
    clipped = pg_clipped > pg_unclipped
    dual = torch.zeros_like(mask)
    if dual_clip is not None:
        cap = -adv * dual_clip
        dual = (adv < 0) & (pg > cap)
        pg = torch.where(adv < 0, torch.minimum(pg, cap), pg)
    per_token = pg
    kl = None
    if ref_logprobs is not None:
        kl = _kl(lp, clean(ref_logprobs), kl_type)
        if kl_coef > 0:
            per_token = per_token + kl_coef * kl
    ent = clean(entropy) if entropy is not None else None
    if ent is not None and entropy_coef != 0:
        per_token = per_token - entropy_coef * ent
    loss = _aggregate(per_token, mask, agg)

    with torch.no_grad():
        n = mask.sum()
        denom = n.clamp(min=1).to(dt)

        def tmean(x):
            return torch.where(mask, x.detach().to(dt), zero).sum() / denom

        metrics = {
            "pg_loss": _aggregate(pg.detach(), mask, agg),
            "kl": tmean(kl) if kl is not None else zero.clone(),
            "entropy": tmean(ent) if ent is not None else zero.clone(),
            "clip_frac": tmean(clipped),
            "dual_clip_frac": tmean(dual),
            "ratio_mean": tmean(ratio),
            "ratio_max": torch.where(mask, ratio.detach(), zero).max() if mask.numel() else zero.clone(),
            "approx_kl": tmean(old - lp),
            "n_tokens": n.to(dt),
        }
    return loss, metrics


def _check_pg_token_inputs(hidden, targets, old_logprobs, advantages, mask, ref_logprobs) -> None:
    if not isinstance(targets, torch.Tensor) or targets.dim() not in (1, 2):
        raise ValueError("targets must be a tensor shaped [B, T] or [N]")
    if not isinstance(hidden, torch.Tensor) or tuple(hidden.shape[:-1]) != tuple(targets.shape):
        raise ValueError(f"hidden must be shaped targets.shape + (H,) = {tuple(targets.shape)} + (H,), "
                         f"got {tuple(getattr(hidden, 'shape', ()))}")  # fmt: skip
    for name, t in (("old_logprobs", old_logprobs), ("advantages", advantages), ("ref_logprobs", ref_logprobs)):
        if t is not None:
            _check_token_tensor(name, t, targets)
    _check_token_tensor("mask", mask, targets, floating=False)
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
    _check_pg_args(clip_low, clip_high, dual_clip, kl_coef, kl_type, entropy_coef, agg, ref_logprobs)
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
    ref = _kernels_module().token_logprobs_reference
    safe_targets = torch.where(mask, targets, torch.zeros_like(targets))
    logp, ent = ref(hidden, weight, safe_targets, temperature, with_entropy=True, compute_dtype=compute_dtype)
    if pg_kwargs.get("entropy_coef", 0.0) == 0:
        ent = ent.detach()
    return pg_loss_from_logprobs(logp, old_logprobs, advantages, mask, entropy=ent, **pg_kwargs)
