"""Fused LM-head PPO / GRPO loss vs the eager reference and Liger's fused GRPO loss: forward + backward.

Kernel module: ``kernels/token_logprobs.py`` (``zerosearch.kernels.token_logprobs``), used through
``zerosearch.ops.masked_pg_loss``: per chunk of rows one GEMM for the logits, the row kernels (Triton on CUDA,
torch on CPU), and the two gradient GEMMs, all in the forward pass. Sides, on the same inputs:

* candidate: ``masked_pg_loss``;
* reference: ``masked_pg_loss_reference`` (``hidden @ W.T`` in the input dtype, fp32 log_softmax, autograd);
* peer ``liger`` (when ``liger_kernel`` is importable, ``pip install -e .[bench]``):
  ``LigerFusedLinearGRPOLoss`` with the same clip range, k3 KL coefficient and token-mean aggregation
  (``loss_type="dapo"``), one advantage per sequence, every sequence in one chunk; ``torch.compile`` of its
  loss math on CUDA only.

The loss is PPO clip (0.2 / 0.28) + 0.001 k3 KL, token-mean, no entropy bonus (Liger has none; the candidate
still computes the entropy for its metrics). Loss value and gradients w.r.t. hidden and the LM head weight
are compared before anything is timed; each row then has the time and peak-memory ratios against eager
(``time_ratio``, ``mem_ratio``) and Liger (``time_ratio_vs_liger``, ``mem_ratio_vs_liger``): candidate /
other, lower is better. Peak memory is the extra live tensor bytes of one fwd+bwd (inputs and weights
excluded), by ``_harness.peak_bytes``.

Usage: ``python benchmarks/bench_masked_pg_loss.py [--device cpu|cuda] [--n N --h H --v V] [--dtype bfloat16]
[--repeats R] [--threads T] [--single-call] [--no-liger] [--out results.json]``. ``--single-call`` times the
checked call itself (one call per side for the time, one for the memory): for CPU runs of minutes per call.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from _harness import Table, compare, write_json
from bench_token_logprobs import TOLERANCE, make_check, make_inputs, resolve_shapes, shape_parser, take_grads

from zerosearch.ops.masked_pg_loss import masked_pg_loss, masked_pg_loss_reference
from zerosearch.ops.token_logprobs import _pick_backend

LOSS_KW = dict(kl_coef=0.001, kl_type="k3", entropy_coef=0.0, clip_low=0.2, clip_high=0.28, agg="token-mean")
SEQS = 8  # sequences per batch (when N divides), each with its own advantage


def liger_loss(device: torch.device, seqs: int) -> Callable | None:
    """Liger's fused linear GRPO loss set up like ``LOSS_KW``, or None when liger_kernel is not installed."""
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss
    except ImportError:
        return None
    return LigerFusedLinearGRPOLoss(
        beta=LOSS_KW["kl_coef"], compiled=device.type == "cuda", use_ref_model=True, chunk_size=seqs,
        epsilon_low=LOSS_KW["clip_low"], epsilon_high=LOSS_KW["clip_high"], loss_type="dapo", temperature=1.0,
    )  # fmt: skip


def pg_loss_step(fn: Callable, x: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fwd+bwd of a zerosearch PG loss; returns (loss, dL/dhidden, dL/dweight)."""
    loss, _ = fn(x["hidden"], x["weight"], x["targets"], x["old"], x["adv"], x["mask"], ref_logprobs=x["ref"],
                 **LOSS_KW)  # fmt: skip
    loss.backward()
    return loss.detach(), *take_grads(x)


def liger_step(loss_mod: Callable, x: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same step through Liger's module (sequence-level advantages, float attention mask)."""
    loss, _ = loss_mod(x["hidden"], x["weight"], x["targets"], x["mask"].float(), x["adv_seq"],
                       ref_per_token_logps=x["ref"], old_per_token_logps=x["old"])  # fmt: skip
    loss.backward()
    return loss.detach(), *take_grads(x)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = shape_parser(__doc__)
    ap.add_argument("--no-liger", action="store_true", help="leave Liger out even when it is installed")
    ap.add_argument("--single-call", action="store_true", help="time the checked call (no further timed calls)")
    args = ap.parse_args(argv)
    device, dtype, shapes, repeats = resolve_shapes(ap, args)
    path = _pick_backend(device)
    columns = [("n", "N", "d"), ("h", "H", "d"), ("v", "V", "d"), ("dtype", "dtype", "s")]
    rows = []
    for n, h, v in shapes:
        seqs = SEQS if n % SEQS == 0 else 1
        liger = None if args.no_liger else liger_loss(device, seqs)
        if not rows:
            peers = "Liger and eager" if liger is not None else "eager (liger_kernel not installed)"
            print(f"masked_pg_loss fwd+bwd on {device.type}, fused path: {path}; ratios are fused / {peers}")
            if liger is not None:
                columns += [("liger_s", "liger ms", "ms"), ("time_ratio_vs_liger", "t/liger", ".3f"),
                            ("liger_peak_mb", "liger MiB", ".2f"),
                            ("mem_ratio_vs_liger", "mem/liger", ".3f")]  # fmt: skip
            table = Table(columns)
            table.header()
        x = make_inputs(n, h, v, dtype, device, seqs=seqs)
        extra = dict(op="masked_pg_loss", n=n, h=h, v=v, seqs=seqs, dtype=str(dtype).removeprefix("torch."))
        peer_fns = {} if liger is None else {"liger": partial(liger_step, liger, x)}
        rows.append(compare("masked_pg_loss fused vs eager", partial(pg_loss_step, masked_pg_loss, x),
                            partial(pg_loss_step, masked_pg_loss_reference, x), device=device, repeats=repeats,
                            check=make_check(TOLERANCE[dtype]), extra=extra, peers=peer_fns,
                            time_checked_calls=args.single_call))  # fmt: skip
        table.row(rows[-1])
    write_json(args.out, "bench_masked_pg_loss", rows, device, fused_path=path, loss_kwargs=LOSS_KW,
               liger=rows[0].get("liger_s") is not None if rows else False)  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
