"""Fused LM-head token log-probs (and entropy) in Triton, plus the eager PyTorch reference.

Why: an RL step needs log p(target) for every response token, i.e. ``log_softmax(hidden @ W.T)`` gathered
at the target. Materialising the logits costs ``N * V * 4`` bytes (16k tokens x 152k vocab = 10 GB in fp32,
several times that once autograd keeps softmax buffers). Here

* the **forward** kernel streams vocab tiles per block of rows, computes each logits tile with ``tl.dot``
  (fp32 accumulation) and keeps an online log-sum-exp, the target logit and an online entropy sum, so the
  logits never reach HBM; it writes per row ``logp``, ``lse`` and ``entropy``;
* the **backward** recomputes logits for ``C`` rows at a time (torch matmul, done by the caller in
  ``zerosearch.pg_loss``) and :func:`triton_dlogits_` turns that ``[C, V]`` buffer *in place* into
  ``dL/dlogits`` from the saved ``lse`` / ``entropy``.

Entropy is tracked as ``H = log s - u / s`` with ``s = sum exp(z - m)`` and ``u = sum exp(z - m) (z - m)``,
both rescaled when the running max ``m`` moves; working relative to ``m`` avoids the cancellation of
``lse - sum p z`` for large logits.

Triton is optional: without it this module still offers :func:`token_logprobs_reference`. Set
``TRITON_INTERPRET=1`` before importing to run the kernels on a CPU (tests do).
"""

from __future__ import annotations

import torch

from ._triton import HAVE_TRITON, interpreting, next_pow2, tl, triton

__all__ = ["HAVE_TRITON", "token_logprobs_reference", "triton_forward", "triton_dlogits_"]


def token_logprobs_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    *,
    with_entropy: bool = False,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Eager reference: materialise ``[N, V]`` logits, ``log_softmax``, gather.

    ``compute_dtype=None`` mimics the usual eager code (matmul in the input dtype, softmax in fp32);
    ``torch.float64`` gives the exact reference the tests compare against (results stay float64).
    """
    cd = compute_dtype or hidden.dtype
    logits = hidden.to(cd) @ weight.to(cd).T
    if compute_dtype is None or compute_dtype.itemsize < 4:
        logits = logits.float()
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    logp = logprobs.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logp
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    return logp, entropy


def _forward_config(n: int, v: int, h: int, dtype: torch.dtype) -> dict:
    """Block sizes for the forward kernel (no autotune: several configs break the interpreter).

    All tl.dot dims must be powers of two >= 16. Under the interpreter every op is a numpy call, so
    bigger tiles are faster; on GPU 16-bit inputs use 128x128 tiles with bf16/fp16 dots and fp32 inputs
    smaller tiles with exact (ieee) fp32 dots.
    """
    if interpreting():
        return dict(
            BLOCK_N=min(32, max(16, next_pow2(n))),
            BLOCK_V=min(128, max(16, next_pow2(v))),
            BLOCK_H=min(64, max(16, next_pow2(h))),
            DOT_FP32=True,
            num_warps=4,
            num_stages=1,
        )
    if dtype in (torch.float16, torch.bfloat16):
        return dict(BLOCK_N=128, BLOCK_V=128, BLOCK_H=64, DOT_FP32=False, num_warps=8, num_stages=3)
    return dict(BLOCK_N=64, BLOCK_V=64, BLOCK_H=32, DOT_FP32=True, num_warps=4, num_stages=2)


if HAVE_TRITON:

    @triton.jit
    def _logprobs_fwd_kernel(
        h_ptr,
        w_ptr,
        tgt_ptr,
        logp_ptr,
        lse_ptr,
        ent_ptr,
        N,
        V,
        H,
        stride_hn,
        stride_wv,
        inv_temp,
        BLOCK_N: tl.constexpr,
        BLOCK_V: tl.constexpr,
        BLOCK_H: tl.constexpr,
        DOT_FP32: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < N
        row_off = rows.to(tl.int64) * stride_hn  # int64: N * H may exceed 2**31
        tgt = tl.load(tgt_ptr + rows, mask=row_ok, other=0)
        offs_h = tl.arange(0, BLOCK_H)
        offs_v = tl.arange(0, BLOCK_V)

        # Finite start for m so that (m_old - m_new) * s_old is 0, not nan, on the first tile.
        m = tl.full((BLOCK_N,), -1.0e30, dtype=tl.float32)
        s = tl.zeros((BLOCK_N,), dtype=tl.float32)
        u = tl.zeros((BLOCK_N,), dtype=tl.float32)
        z_tgt = tl.zeros((BLOCK_N,), dtype=tl.float32)

        for v0 in range(0, V, BLOCK_V):
            cols = v0 + offs_v
            col_ok = cols < V
            col_off = cols.to(tl.int64) * stride_wv
            acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
            for h0 in range(0, H, BLOCK_H):
                hk = h0 + offs_h
                hk_ok = hk < H
                a = tl.load(
                    h_ptr + row_off[:, None] + hk[None, :],
                    mask=row_ok[:, None] & hk_ok[None, :],
                    other=0.0,
                )
                # weight tile loaded transposed: [BLOCK_H, BLOCK_V]
                b = tl.load(
                    w_ptr + col_off[None, :] + hk[:, None],
                    mask=col_ok[None, :] & hk_ok[:, None],
                    other=0.0,
                )
                if DOT_FP32:
                    acc += tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
                else:
                    acc += tl.dot(a, b)
            z = acc * inv_temp
            valid = col_ok[None, :]  # padded rows see zero hidden states: finite, never stored
            m_new = tl.maximum(m, tl.max(tl.where(valid, z, float("-inf")), axis=1))
            alpha = tl.exp(m - m_new)
            # padded columns get d = 0 and e = 0, so they add nothing (and no inf * 0)
            d = tl.where(valid, z - m_new[:, None], 0.0)
            e = tl.where(valid, tl.exp(d), 0.0)
            u = alpha * (u + (m - m_new) * s) + tl.sum(e * d, axis=1)
            s = alpha * s + tl.sum(e, axis=1)
            m = m_new
            hit = cols[None, :] == tgt[:, None]
            z_tgt += tl.sum(tl.where(hit, z, 0.0), axis=1)

        log_s = tl.log(s)
        lse = m + log_s
        tl.store(logp_ptr + rows, z_tgt - lse, mask=row_ok)
        tl.store(lse_ptr + rows, lse, mask=row_ok)
        tl.store(ent_ptr + rows, log_s - u / s, mask=row_ok)

    @triton.jit
    def _dlogits_kernel(
        x_ptr,
        tgt_ptr,
        lse_ptr,
        ent_ptr,
        glp_ptr,
        gent_ptr,
        V,
        stride_x,
        inv_temp,
        HAS_ENT: tl.constexpr,
        BLOCK_V: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
        col_ok = cols < V
        ptrs = x_ptr + row * stride_x + cols
        x = tl.load(ptrs, mask=col_ok, other=0.0)
        lse = tl.load(lse_ptr + row)
        g_lp = tl.load(glp_ptr + row)
        tgt = tl.load(tgt_ptr + row)
        logp = x * inv_temp - lse
        p = tl.exp(logp)
        dz = g_lp * (tl.where(cols == tgt, 1.0, 0.0) - p)
        if HAS_ENT:
            g_ent = tl.load(gent_ptr + row)
            ent = tl.load(ent_ptr + row)
            dz -= g_ent * p * (logp + ent)
        tl.store(ptrs, dz * inv_temp, mask=col_ok)


def _require_triton() -> None:
    if not HAVE_TRITON:
        raise RuntimeError("the Triton token_logprobs path needs the `triton` package")


def triton_forward(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, inv_temp: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row ``(logp, lse, entropy)`` in fp32 for ``hidden [N, H]``, ``weight [V, H]``, ``targets [N]``.

    Logits are ``hidden @ weight.T * inv_temp``; they are never written to memory.
    """
    _require_triton()
    hidden = hidden.contiguous()
    weight = weight.contiguous()
    targets = targets.contiguous()
    n, h = hidden.shape
    v = weight.shape[0]
    logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
    lse = torch.empty_like(logp)
    ent = torch.empty_like(logp)
    if n == 0:
        return logp, lse, ent
    cfg = _forward_config(n, v, h, hidden.dtype)
    num_warps, num_stages = cfg.pop("num_warps"), cfg.pop("num_stages")
    grid = (triton.cdiv(n, cfg["BLOCK_N"]),)
    _logprobs_fwd_kernel[grid](
        hidden, weight, targets, logp, lse, ent,
        n, v, h, hidden.stride(0), weight.stride(0), float(inv_temp),
        num_warps=num_warps, num_stages=num_stages, **cfg,
    )  # fmt: skip
    return logp, lse, ent


def triton_dlogits_(
    x: torch.Tensor,
    targets: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor,
    g_lp: torch.Tensor,
    g_ent: torch.Tensor | None,
    inv_temp: float,
) -> torch.Tensor:
    """Overwrite raw logits ``x = hidden @ weight.T`` (fp32 ``[C, V]``, unit stride along V) with
    ``dL/dx`` given upstream grads ``g_lp`` (of logp) and optional ``g_ent`` (of entropy), all ``[C]``."""
    _require_triton()
    if x.dtype != torch.float32 or x.stride(1) != 1:
        raise ValueError("x must be a float32 tensor with unit stride along the vocab dimension")
    c, v = x.shape
    if c == 0:
        return x
    block_v = min(1024, max(16, next_pow2(v))) if not interpreting() else min(4096, max(16, next_pow2(v)))
    has_ent = g_ent is not None
    grid = (c, triton.cdiv(v, block_v))
    _dlogits_kernel[grid](
        x, targets.contiguous(), lse.contiguous(), entropy.contiguous(), g_lp.float().contiguous(),
        g_ent.float().contiguous() if has_ent else g_lp, v, x.stride(0), float(inv_temp),
        HAS_ENT=has_ent, BLOCK_V=block_v,
    )  # fmt: skip
    return x
