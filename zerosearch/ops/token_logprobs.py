"""Fused LM-head token log-probs: ``log_softmax(hidden @ W.T / T)[target]`` (and the entropy), differentiable.

Why fused: ``log_softmax(hidden @ W.T)`` over a 150k vocab for 16k tokens is tens of GB once autograd keeps
its buffers. :func:`token_logprobs` computes log p(target) (and the entropy) without ever holding ``[N, V]``:

* forward: ``C`` rows at a time, one GEMM (cuBLAS on CUDA) writes the fp32 logits ``[C, V]`` and a row pass
  (the Triton kernel of ``zerosearch.kernels.token_logprobs`` on CUDA, torch on CPU) reduces them to
  ``logp``, ``lse`` and the entropy;
* backward: recompute the logits of ``C`` rows, turn them in place into ``dL/dlogits`` (Triton kernel or
  torch), and accumulate ``grad_hidden = dlogits @ W`` and ``grad_W += dlogits.T @ hidden``. Only
  ``[C, V]`` buffers are ever live. A terminal loss knows its gradient coefficients in the forward pass and
  saves the recompute (``zerosearch.ops.masked_pg_loss``); this op's outputs feed arbitrary code, so it
  cannot.

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

__all__ = ["token_logprobs"]


def _kernels_module():
    """The Triton kernel module, imported on first use so that CPU users never import Triton."""
    from zerosearch.kernels import token_logprobs as mod

    return mod



def _chunk_rows(v: int, device: torch.device, h: int | None = None) -> int:
    """Rows per chunk: a ``[C, V]`` fp32 buffer of <= 256 MB on GPU. On CPU 64..512 rows, bigger GEMMs being
    faster (256 rows against a 150k vocab run ~30% faster than 64, one thread, fp32), within 160 MB per buffer
    and ``H / 4`` rows, so that the two ``[C, V]`` buffers stay under half the ``[V, H]`` fp32 weight gradient."""
    env = os.environ.get("ZEROSEARCH_CHUNK_ROWS")
    if env:
        return max(1, int(env))
    if device.type == "cuda":
        return max(16, (256 << 20) // (4 * max(v, 1)))
    rows = (160 << 20) // (4 * max(v, 1))
    if h is not None:
        rows = min(rows, h // 4)
    return min(512, max(64, rows // 16 * 16))


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


def _addmm_f32_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, first: bool = False) -> None:
    """``acc += a @ b`` in place into the fp32 accumulator, without a second ``acc``-sized temporary;
    ``first``: ``acc = a @ b`` (``acc`` may hold garbage), which spares zero-filling a ``[V, H]`` buffer."""
    if a.dtype != torch.float32:
        if first:
            acc.zero_()
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    elif first:
        torch.mm(a, b, out=acc)
    else:
        acc.addmm_(a, b)


def _torch_row_stats_(
    x: torch.Tensor, targets: torch.Tensor, inv_temp: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """In place: raw fp32 logits ``x [C, V]`` -> ``log softmax(x * inv_temp)``; returns per-row ``(logp, lse,
    entropy)`` and the probabilities ``p [C, V]``, which :func:`_torch_dlogits_from_stats_` reuses."""
    if inv_temp != 1.0:
        x.mul_(inv_temp)
    m = x.amax(1, keepdim=True)
    p = torch.exp(x.sub_(m))
    s = p.sum(1, keepdim=True)
    log_s = s.log()
    logp_all = x.sub_(log_s)
    p.div_(s)
    ent = torch.bmm(p.unsqueeze(1), logp_all.unsqueeze(2)).view(-1).neg_()  # a dot per row, no [C, V] temporary
    logp = logp_all.gather(1, targets[:, None]).squeeze(1)
    return logp, (m + log_s).squeeze(1), ent, p


def _torch_dlogits_from_stats_(
    logp_all: torch.Tensor,
    p: torch.Tensor,
    targets: torch.Tensor,
    entropy: torch.Tensor,
    g_lp: torch.Tensor,
    g_ent: torch.Tensor | None,
    inv_temp: float,
) -> torch.Tensor:
    """``dL/dx`` of the raw logits from what :func:`_torch_row_stats_` left (``logp_all`` in ``x``, ``p``),
    written into one of those buffers; the formula of :func:`_torch_dlogits_`."""
    g_lp = g_lp * inv_temp
    if g_ent is None:
        dz = p.mul_(-g_lp[:, None])
    else:
        g_ent = g_ent * inv_temp
        dz = logp_all.add_(entropy[:, None]).mul_(-g_ent[:, None]).sub_(g_lp[:, None]).mul_(p)
    rows = torch.arange(dz.shape[0], device=dz.device)
    return dz.index_put_((rows, targets), g_lp, accumulate=True)


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
    """Per-chunk row work on the fp32 logits ``x``. ``row_stats_(x, t, inv_temp) -> (logp, lse, ent, state)``
    may overwrite ``x``; ``dlogits_from_stats_(x, t, lse, ent, state, g_lp, g_ent, inv_temp)`` then returns
    ``dL/dx`` (in ``x`` or ``state``); ``dlogits_`` starts again from raw logits (the recompute path)."""

    row_stats_: Callable[..., tuple]
    dlogits_from_stats_: Callable[..., torch.Tensor]
    dlogits_: Callable[..., torch.Tensor]


def _backend(name: str) -> _Backend:
    if name == "triton":
        mod = _kernels_module()

        def row_stats(x, targets, inv_temp):
            return (*mod.triton_row_stats(x, targets, inv_temp), None)

        def from_stats(x, targets, lse, ent, _state, g_lp, g_ent, inv_temp):
            return mod.triton_dlogits_(x, targets, lse, ent, g_lp, g_ent, inv_temp)

        return _Backend(row_stats, from_stats, mod.triton_dlogits_)

    def torch_from_stats(x, targets, _lse, ent, p, g_lp, g_ent, inv_temp):
        return _torch_dlogits_from_stats_(x, p, targets, ent, g_lp, g_ent, inv_temp)

    return _Backend(_torch_row_stats_, torch_from_stats, _torch_dlogits_)


def _chunked_forward(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, inv_temp: float, backend: _Backend
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row ``(logp, lse, entropy)`` in fp32, ``C`` rows (one GEMM and one row pass) at a time."""
    n = hidden.shape[0]
    mm_dtype = _mm_dtype(weight)
    w = weight.to(mm_dtype)
    out = torch.empty(3, n, dtype=torch.float32, device=hidden.device)
    c = _chunk_rows(weight.shape[0], hidden.device, weight.shape[1])
    for s in range(0, n, c):
        x = _mm_f32(hidden[s : s + c].to(mm_dtype), w.T)
        logp, lse, ent, _ = backend.row_stats_(x, targets[s : s + c], inv_temp)
        out[0, s : s + c], out[1, s : s + c], out[2, s : s + c] = logp, lse, ent
        del x  # before the next chunk's GEMM allocates its buffer
    return out[0], out[1], out[2]


class _FusedTokenLogprobs(torch.autograd.Function):
    """Rows ``[N, H]`` -> ``(logp [N], entropy [N])``; the backend only supplies the per-chunk pieces."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, inv_temp, backend_name):
        logp, lse, ent = _chunked_forward(hidden, weight, targets, inv_temp, _backend(backend_name))
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
        c = _chunk_rows(weight.shape[0], hidden.device, weight.shape[1])
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
            del x, dz  # before the next chunk's GEMM allocates its buffer
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None



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
