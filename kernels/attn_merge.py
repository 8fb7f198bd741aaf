"""Exact merge of attention partials by log-sum-exp, in Triton, plus the torch reference.

Attention over a key set K = K1 ∪ … ∪ KS (disjoint) is recovered from per-part results
``o_s = softmax(q K_s) V_s`` and ``lse_s = logsumexp(q K_s)`` as
``o = Σ_s exp(lse_s - L) o_s`` with ``L = logsumexp_s(lse_s)``. This combines split-KV partials and the
shared-prefix part with each sequence's own suffix part, without ever concatenating keys.
Parts with ``lse = -inf`` (no keys) get weight 0; a row whose parts are all empty gives ``out = 0``.
"""

from __future__ import annotations

import torch

from ._triton import HAVE_TRITON, tl, triton

__all__ = ["HAVE_TRITON", "merge_partials_reference", "merge_partials"]


def merge_partials_reference(out: torch.Tensor, lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``out [R, S, D]``, ``lse [R, S]`` → ``(out [R, D], lse [R])`` in the inputs' dtype."""
    total = torch.logsumexp(lse, dim=-1)  # [R]
    w = torch.exp(lse - total.unsqueeze(-1).clamp_min(torch.finfo(lse.dtype).min))
    w = torch.nan_to_num(w, nan=0.0)
    return (w.unsqueeze(-1) * out).sum(dim=1), total


if HAVE_TRITON:

    @triton.jit
    def _merge_kernel(
        o_ptr, lse_ptr, out_ptr, out_lse_ptr, S, D,
        sor, sos, slr, sout,
        BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        r = tl.program_id(0).to(tl.int64)
        s = tl.arange(0, BLOCK_S)
        d = tl.arange(0, BLOCK_D)
        s_ok = s < S
        d_ok = d < D
        lse = tl.load(lse_ptr + r * slr + s, mask=s_ok, other=float("-inf"))
        m = tl.max(lse, axis=0)
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        w = tl.where(s_ok & (lse > float("-inf")), tl.exp(lse - m_safe), 0.0)
        tot = tl.sum(w, axis=0)
        o = tl.load(o_ptr + r * sor + s[:, None] * sos + d[None, :], mask=s_ok[:, None] & d_ok[None, :], other=0.0)
        res = tl.sum(o.to(tl.float32) * w[:, None], axis=0) / tl.where(tot > 0.0, tot, 1.0)
        tl.store(out_ptr + r * sout + d, res, mask=d_ok)
        tl.store(out_lse_ptr + r, tl.where(tot > 0.0, m_safe + tl.log(tl.where(tot > 0.0, tot, 1.0)),
                                           float("-inf")))  # fmt: skip


def merge_partials(out: torch.Tensor, lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton merge: ``out [R, S, D]`` (unit stride along D), ``lse [R, S]`` → fp32 ``(out [R, D], lse [R])``."""
    if not HAVE_TRITON:
        raise RuntimeError("merge_partials needs the `triton` package")
    r, s, d = out.shape
    lse = lse.float().contiguous()
    if out.stride(-1) != 1:
        out = out.contiguous()
    res = torch.empty(r, d, dtype=torch.float32, device=out.device)
    res_lse = torch.empty(r, dtype=torch.float32, device=out.device)
    if r == 0:
        return res, res_lse
    _merge_kernel[(r,)](
        out, lse, res, res_lse, s, d, out.stride(0), out.stride(1), lse.stride(0), res.stride(0),
        BLOCK_S=max(2, triton.next_power_of_2(s)), BLOCK_D=max(16, triton.next_power_of_2(d)),
    )  # fmt: skip
    return res, res_lse
