"""Row kernels of the fused LM-head log-probs and loss (Triton), plus the eager PyTorch reference.

Why: an RL step needs log p(target) for every response token, i.e. ``log_softmax(hidden @ W.T)`` gathered
at the target. Materialising the logits costs ``N * V * 4`` bytes (16k tokens x 152k vocab = 10 GB in fp32,
several times that once autograd keeps softmax buffers). The callers in ``zerosearch.ops`` therefore take
``C`` rows at a time: one cuBLAS GEMM writes that chunk's fp32 logits ``[C, V]`` and the kernels here do the
per-row work on it (the shape of Liger's fused linear cross-entropy):

* :func:`triton_row_stats` reads each row once with an online log-sum-exp and writes ``logp`` (of the
  target), ``lse`` and the ``entropy``;
* :func:`triton_dlogits_` turns the buffer *in place* into ``dL/dlogits`` from ``lse`` / ``entropy`` and the
  per-row upstream gradients.

A fused kernel that also does the GEMM (``tl.dot`` over vocab tiles per block of rows) re-reads all of ``W``
for every row block and spills registers on sm_80 at 128x128 tiles; cuBLAS reads ``W`` once per chunk and
keeps the tensor cores busy, and the row kernels are memory-bound passes that need few registers.

Entropy is tracked as ``H = log s - u / s`` with ``s = sum exp(z - m)`` and ``u = sum exp(z - m) (z - m)``,
both rescaled when the running max ``m`` moves; working relative to ``m`` avoids the cancellation of
``lse - sum p z`` for large logits.

Triton is optional: without it this module still offers :func:`token_logprobs_reference`. Set
``TRITON_INTERPRET=1`` before importing to run the kernels on a CPU (tests do).
"""

from __future__ import annotations

import torch

from ._triton import HAVE_TRITON, interpreting, next_pow2, tl, triton

__all__ = ["HAVE_TRITON", "token_logprobs_reference", "triton_row_stats", "triton_dlogits_"]


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


def _block_v(v: int) -> int:
    """Vocab tile of the row kernels: 1024 lanes on GPU; bigger under the interpreter (each op is a numpy call)."""
    return min(4096 if interpreting() else 1024, max(16, next_pow2(v)))


if HAVE_TRITON:

    @triton.jit
    def _row_stats_kernel(
        x_ptr,
        tgt_ptr,
        logp_ptr,
        lse_ptr,
        ent_ptr,
        V,
        stride_x,
        inv_temp,
        BLOCK_V: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)  # int64: C * V may exceed 2**31
        base = x_ptr + row * stride_x
        offs = tl.arange(0, BLOCK_V)
        # Finite start for m so that (m_old - m_new) * s_old is 0, not nan, on the first tile.
        m = tl.full((), -1.0e30, dtype=tl.float32)
        s = tl.zeros((), dtype=tl.float32)
        u = tl.zeros((), dtype=tl.float32)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + offs
            ok = cols < V
            z = tl.load(base + cols, mask=ok, other=0.0) * inv_temp
            m_new = tl.maximum(m, tl.max(tl.where(ok, z, float("-inf")), axis=0))
            alpha = tl.exp(m - m_new)
            # padded columns get d = 0 and e = 0, so they add nothing (and no inf * 0)
            d = tl.where(ok, z - m_new, 0.0)
            e = tl.where(ok, tl.exp(d), 0.0)
            u = alpha * (u + (m - m_new) * s) + tl.sum(e * d, axis=0)
            s = alpha * s + tl.sum(e, axis=0)
            m = m_new
        z_tgt = tl.load(base + tl.load(tgt_ptr + row)) * inv_temp
        log_s = tl.log(s)
        lse = m + log_s
        tl.store(logp_ptr + row, z_tgt - lse)
        tl.store(lse_ptr + row, lse)
        tl.store(ent_ptr + row, log_s - u / s)

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


def _check_logits(x: torch.Tensor) -> None:
    if x.dtype != torch.float32 or x.dim() != 2 or x.stride(1) != 1:
        raise ValueError("x must be a float32 [C, V] tensor with unit stride along the vocab dimension")


def triton_row_stats(
    x: torch.Tensor, targets: torch.Tensor, inv_temp: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row ``(logp, lse, entropy)`` in fp32 of the tempered raw logits ``x`` (fp32 ``[C, V]``, as
    ``hidden @ weight.T`` gives them), ``targets [C]``; ``x`` is only read."""
    _require_triton()
    _check_logits(x)
    c, v = x.shape
    logp = torch.empty(c, dtype=torch.float32, device=x.device)
    lse = torch.empty_like(logp)
    ent = torch.empty_like(logp)
    if c == 0:
        return logp, lse, ent
    _row_stats_kernel[(c,)](
        x, targets.contiguous(), logp, lse, ent, v, x.stride(0), float(inv_temp), BLOCK_V=_block_v(v), num_warps=4,
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
    _check_logits(x)
    c, v = x.shape
    if c == 0:
        return x
    block_v = _block_v(v)
    has_ent = g_ent is not None
    grid = (c, triton.cdiv(v, block_v))
    _dlogits_kernel[grid](
        x, targets.contiguous(), lse.contiguous(), entropy.contiguous(), g_lp.float().contiguous(),
        g_ent.float().contiguous() if has_ent else g_lp, v, x.stride(0), float(inv_temp),
        HAS_ENT=has_ent, BLOCK_V=block_v,
    )  # fmt: skip
    return x
