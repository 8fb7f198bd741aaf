"""Fused LM-head ops vs their eager (materialised logits) references: forward + backward.

Kernel module: ``kernels/token_logprobs.py`` (``zerosearch.kernels.token_logprobs``), used through
``zerosearch.ops``. Two ops (``--op``):

* ``pg_loss`` (default): fused ``masked_pg_loss`` (Triton forward + chunked backward on CUDA, chunked torch
  on CPU) vs ``masked_pg_loss_reference`` (``hidden @ W.T`` in the input dtype, fp32 log_softmax,
  autograd). Both compute the same loss (PPO clip + k3 KL + entropy bonus, token-mean).
* ``token_logprobs``: fused ``zerosearch.ops.token_logprobs`` vs ``token_logprobs_reference`` from
  ``zerosearch.kernels.token_logprobs``, backward of a random weighting of the log-probs.

Gradients w.r.t. hidden and the LM head weight are compared before timing. Peak memory is the extra live
tensor bytes of one fwd+bwd (inputs and weights excluded), measured by ``_harness.peak_bytes``.

Usage: ``python benchmarks/bench_pg_loss.py [--op pg_loss|token_logprobs] [--device cpu|cuda] [--n N --h H
--v V] [--dtype bfloat16] [--repeats R] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import torch
from _harness import Table, common_parser, compare, rel_err, resolve_device, write_json
from zerosearch.kernels.token_logprobs import token_logprobs_reference

from zerosearch.ops import token_logprobs
from zerosearch.ops.masked_pg_loss import masked_pg_loss, masked_pg_loss_reference
from zerosearch.ops.token_logprobs import _pick_backend

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_SHAPES = [(1024, 128, 8000), (4096, 256, 32000)]
CUDA_SHAPES = [(4096, 4096, 151936), (16384, 4096, 151936)]
QUICK_SHAPES = [(64, 32, 500)]
LOSS_KW = dict(kl_coef=0.001, kl_type="k3", entropy_coef=0.001, clip_low=0.2, clip_high=0.28, agg="token-mean")
# fp32 on CPU agrees to ~1e-6; 16-bit inputs differ by the matmul rounding of the eager reference.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}


def make_inputs(n: int, h: int, v: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> dict:
    """A [1, N] batch with ~10% masked tokens and plausible old / reference log-probs for a random head."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    hidden = torch.randn(1, n, h, generator=g).to(device=device, dtype=dtype).requires_grad_()
    weight = (torch.randn(v, h, generator=g) / h**0.5).to(device=device, dtype=dtype).requires_grad_()
    targets = torch.randint(0, v, (1, n), generator=g).to(device)
    mask = (torch.rand(1, n, generator=g) < 0.9).to(device)
    old = (-torch.rand(1, n, generator=g) * 8 - 2).to(device)
    ref = old + 0.05 * torch.randn(1, n, generator=g).to(device)
    adv = torch.randn(1, n, generator=g).to(device)
    return dict(hidden=hidden, weight=weight, targets=targets, mask=mask, old=old, ref=ref, adv=adv)


def pg_loss_step(fn: Callable, x: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fwd+bwd of a PG loss; returns (loss, dL/dhidden, dL/dweight)."""
    x["hidden"].grad = x["weight"].grad = None
    loss, _ = fn(x["hidden"], x["weight"], x["targets"], x["old"], x["adv"], x["mask"], ref_logprobs=x["ref"],
                 **LOSS_KW)  # fmt: skip
    loss.backward()
    return loss.detach(), x["hidden"].grad, x["weight"].grad


def token_logprobs_step(fn: Callable, x: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fwd+bwd of ``sum(adv * log p(target))``; returns (logp, dL/dhidden, dL/dweight)."""
    x["hidden"].grad = x["weight"].grad = None
    logp = fn(x["hidden"], x["weight"], x["targets"])
    (logp * x["adv"]).sum().backward()
    return logp.detach(), x["hidden"].grad, x["weight"].grad


OPS = {
    "pg_loss": (pg_loss_step, masked_pg_loss, masked_pg_loss_reference),
    "token_logprobs": (token_logprobs_step, token_logprobs, token_logprobs_reference),
}


def bench_shape(op: str, n: int, h: int, v: int, dtype: torch.dtype, device: torch.device, repeats: int) -> dict:
    x = make_inputs(n, h, v, dtype, device)
    step, fused, eager = OPS[op]
    tol = TOLERANCE[dtype]

    def check(c: tuple, r: tuple) -> dict:
        # no clone needed: each step sets .grad to None, so the second call does not overwrite the first's grads
        diag = {
            "out_abs_diff": (c[0].float() - r[0].float()).abs().max().item(),
            "grad_hidden_rel_diff": rel_err(c[1], r[1]),
            "grad_weight_rel_diff": rel_err(c[2], r[2]),
        }
        assert diag["grad_hidden_rel_diff"] < tol and diag["grad_weight_rel_diff"] < tol, diag
        assert diag["out_abs_diff"] < tol * 10, diag
        return diag

    extra = dict(op=op, n=n, h=h, v=v, dtype=str(dtype).removeprefix("torch."))
    return compare(f"{op} fused vs eager", lambda: step(fused, x), lambda: step(eager, x), device=device,
                   repeats=repeats, check=check, extra=extra)  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[common_parser()])
    ap.add_argument("--op", choices=list(OPS), default="pg_loss")
    ap.add_argument("--n", type=int, help="tokens (default: a built-in list of shapes)")
    ap.add_argument("--h", type=int, help="hidden size")
    ap.add_argument("--v", type=int, help="vocab size")
    ap.add_argument("--dtype", choices=list(DTYPES), help="default float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--quick", action="store_true", help="one tiny shape (smoke test)")
    args = ap.parse_args(argv)
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
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    path = _pick_backend(device)
    print(f"{args.op} fwd+bwd on {device.type}, fused path: {path}; ratios are fused / eager")
    table = Table([("n", "N", "d"), ("h", "H", "d"), ("v", "V", "d"), ("dtype", "dtype", "s"),
                   ("grad_weight_rel_diff", "dgrad_w", ".1e")])  # fmt: skip
    table.header()
    rows = []
    for n, h, v in shapes:
        rows.append(bench_shape(args.op, n, h, v, dtype, device, repeats))
        table.row(rows[-1])
    write_json(args.out, "bench_pg_loss", rows, device, op=args.op, fused_path=path,
               loss_kwargs=LOSS_KW if args.op == "pg_loss" else None)  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
