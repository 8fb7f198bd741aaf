"""Fused LM-head token log-probs vs the eager (materialised logits) reference: forward + backward.

Kernel module: ``kernels/token_logprobs.py`` (``zerosearch.kernels.token_logprobs``), used through
``zerosearch.ops.token_logprobs``: a GEMM per chunk of rows plus the row kernels (Triton on CUDA, torch on
CPU), the backward recomputing each chunk's logits. The reference is ``token_logprobs_reference``; both are
differentiated through a random weighting of the log-probs. Gradients w.r.t. hidden and the LM head weight
are compared before timing. Peak memory is the extra live tensor bytes of one fwd+bwd (inputs and weights
excluded), measured by ``_harness.peak_bytes``. The inputs and shapes are shared with
``bench_masked_pg_loss.py`` (the terminal loss, which computes its grads in the forward pass).

Usage: ``python benchmarks/bench_token_logprobs.py [--device cpu|cuda] [--n N --h H --v V] [--dtype bfloat16]
[--repeats R] [--threads T] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from functools import partial

import torch
from _harness import Table, common_parser, compare, rel_err, resolve_device, write_json
from zerosearch.kernels.token_logprobs import token_logprobs_reference

from zerosearch.ops import token_logprobs
from zerosearch.ops.token_logprobs import _pick_backend

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_SHAPES = [(1024, 128, 8000), (4096, 256, 32000)]
CUDA_SHAPES = [(4096, 4096, 151936), (16384, 4096, 151936)]
QUICK_SHAPES = [(64, 32, 500)]
# fp32 on CPU agrees to ~1e-6; 16-bit inputs differ by the matmul rounding of the eager reference.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}


def make_inputs(n: int, h: int, v: int, dtype: torch.dtype, device: torch.device, seed: int = 0, seqs: int = 1) -> dict:
    """``seqs`` sequences of ``n / seqs`` tokens, ~10% masked, old / reference log-probs within ~0.3 of the
    head's own (so ratios straddle the clip range and no KL clamp binds) and one advantage per sequence
    (GRPO's outcome advantage), as ``[B, T]`` tensors plus ``adv_seq [B]``."""
    if n % seqs:
        raise ValueError(f"--n {n} is not a multiple of {seqs} sequences")
    b, t = seqs, n // seqs
    g = torch.Generator(device="cpu").manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=g).to(device=device, dtype=dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g) / h**0.5).to(device=device, dtype=dtype).requires_grad_()
    targets = torch.randint(0, v, (b, t), generator=g).to(device)
    mask = (torch.rand(b, t, generator=g) < 0.9).to(device)
    with torch.no_grad():
        lp = token_logprobs(hidden, weight, targets)
    old = lp + 0.3 * torch.randn(b, t, generator=g).to(device)
    ref = lp + 0.3 * torch.randn(b, t, generator=g).to(device)
    adv_seq = torch.randn(b, generator=g).to(device)
    adv = adv_seq[:, None].expand(b, t).contiguous()
    return dict(hidden=hidden, weight=weight, targets=targets, mask=mask, old=old, ref=ref, adv=adv, adv_seq=adv_seq)


def token_logprobs_step(fn: Callable, x: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fwd+bwd of ``sum(adv * log p(target))``; returns (logp, dL/dhidden, dL/dweight)."""
    logp = fn(x["hidden"], x["weight"], x["targets"])
    (logp * x["adv"]).sum().backward()
    return logp.detach(), *take_grads(x)


def take_grads(x: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's grads, detached from the inputs: a step that freed the previous step's grads would count
    that as negative memory in the next measurement, so each step hands its grads over instead."""
    grads = x["hidden"].grad, x["weight"].grad
    x["hidden"].grad = x["weight"].grad = None
    return grads


def make_check(tol: float) -> Callable[[tuple, tuple], dict]:
    """``check`` for ``_harness.compare``: outputs of ``(value, dL/dhidden, dL/dweight)`` steps agree."""

    def check(c: tuple, r: tuple) -> dict:
        # no clone needed: each step hands its grads over (take_grads), so later calls cannot overwrite them
        diag = {
            "out_abs_diff": (c[0].float() - r[0].float()).abs().max().item(),
            "grad_hidden_rel_diff": rel_err(c[1], r[1]),
            "grad_weight_rel_diff": rel_err(c[2], r[2]),
        }
        assert diag["grad_hidden_rel_diff"] < tol and diag["grad_weight_rel_diff"] < tol, diag
        assert diag["out_abs_diff"] < tol * 10, diag
        return diag

    return check


def shape_parser(doc: str) -> argparse.ArgumentParser:
    """The flags both LM-head benchmarks share."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0], parents=[common_parser()])
    ap.add_argument("--n", type=int, help="tokens (default: a built-in list of shapes)")
    ap.add_argument("--h", type=int, help="hidden size")
    ap.add_argument("--v", type=int, help="vocab size")
    ap.add_argument("--dtype", choices=list(DTYPES), help="default float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--threads", type=int, help="CPU threads (default: up to 4)")
    ap.add_argument("--quick", action="store_true", help="one tiny shape (smoke test)")
    return ap


def resolve_shapes(ap: argparse.ArgumentParser, args: argparse.Namespace):
    """(device, dtype, shapes, repeats) from the shared flags; sets the CPU thread count."""
    device = resolve_device(ap, args.device)
    on_cuda = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("bfloat16" if on_cuda else "float32")]
    default_shapes = CUDA_SHAPES if on_cuda else CPU_SHAPES
    if args.quick:
        shapes = QUICK_SHAPES
    elif args.n or args.h or args.v:
        d = default_shapes[-1]
        shapes = [(args.n or d[0], args.h or d[1], args.v or d[2])]
    else:
        shapes = default_shapes
    repeats = args.repeats or (5 if on_cuda else 2)
    if not on_cuda:
        torch.set_num_threads(args.threads or max(1, min(4, os.cpu_count() or 1)))
    return device, dtype, shapes, repeats


def main(argv: list[str] | None = None) -> list[dict]:
    ap = shape_parser(__doc__)
    args = ap.parse_args(argv)
    device, dtype, shapes, repeats = resolve_shapes(ap, args)
    path = _pick_backend(device)
    print(f"token_logprobs fwd+bwd on {device.type}, fused path: {path}; ratios are fused / eager")
    table = Table([("n", "N", "d"), ("h", "H", "d"), ("v", "V", "d"), ("dtype", "dtype", "s"),
                   ("grad_weight_rel_diff", "dgrad_w", ".1e")])  # fmt: skip
    table.header()
    rows = []
    for n, h, v in shapes:
        x = make_inputs(n, h, v, dtype, device)
        extra = dict(op="token_logprobs", n=n, h=h, v=v, dtype=str(dtype).removeprefix("torch."))
        rows.append(compare("token_logprobs fused vs eager", partial(token_logprobs_step, token_logprobs, x),
                            partial(token_logprobs_step, token_logprobs_reference, x), device=device,
                            repeats=repeats, check=make_check(TOLERANCE[dtype]), extra=extra))  # fmt: skip
        table.row(rows[-1])
    write_json(args.out, "bench_token_logprobs", rows, device, fused_path=path)
    return rows


if __name__ == "__main__":
    main()
