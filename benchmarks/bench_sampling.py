"""Next-token sampling (temperature / top-k / top-p / greedy) from ``[B, V]`` logits vs a reference.

Kernel module: ``kernels/sampling.py`` (``triton_sample``, ``sample_reference``, ``sampling_probs_reference``).
The candidate is what the engine's ``TokenDrawer`` runs on the device; the reference is the next-simpler code:

* CUDA: the fused Triton sampler ``triton_sample`` (no sort, a few passes over the vocabulary) vs the torch
  ``sample_reference`` (fp32 top-k/top-p masking by sort, float64 CDF + ``searchsorted``);
* CPU, where the engine runs ``sample_reference``: it vs the textbook way — float64 probabilities from
  ``sampling_probs_reference`` (sort-based) and ``torch.multinomial``.

``--reference naive`` forces the textbook reference on CUDA too. Samples are random, so correctness is
checked per token: greedy tokens equal the argmax, sampled tokens lie in the top-k/top-p set, and the
returned log-probs equal ``log_softmax(logits / T)`` at the token.

    python benchmarks/bench_sampling.py [--device cpu|cuda] [--quick] [--repeats R] [--out results.json]
"""

from __future__ import annotations

import argparse

import torch
from _harness import Table, common_parser, compare, resolve_device, write_json
from zerosearch.kernels.sampling import sample_reference, sampling_probs_reference

SHAPES = {"cpu": [(16, 32000), (64, 151936)], "cuda": [(64, 151936), (256, 151936)], "quick": [(4, 1000)]}
# (label, temperature, top_k, top_p, greedy): plain rollout sampling, each cut, and greedy evaluation
SETTINGS = [("T=0.8", 0.8, 0, 1.0, False), ("top-k 50", 1.0, 50, 1.0, False), ("top-p 0.9", 1.0, 0, 0.9, False),
            ("greedy", 1.0, 0, 1.0, True)]  # fmt: skip


def naive_sample(logits: torch.Tensor, *, temperature: float, top_k: int, top_p: float, greedy: bool,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Sort-based float64 probabilities + ``torch.multinomial`` (a host sync, not graph-capturable)."""
    if greedy:
        tok = torch.argmax(logits, dim=-1)
        return tok, torch.log_softmax(logits.float(), dim=-1).gather(-1, tok[:, None]).squeeze(-1)
    probs = sampling_probs_reference(logits, temperature, top_k, top_p)
    tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    lp = torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, tok[:, None]).squeeze(-1)
    return tok, lp


def _checker(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, greedy: bool):
    def check(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor]) -> dict:
        tok, lp = got
        assert tok.shape == want[0].shape and tok.dtype == torch.int64, "token shape / dtype"
        if greedy:
            assert torch.equal(tok, torch.argmax(logits, dim=-1)), "greedy token is not the argmax"
            exact = torch.log_softmax(logits.double(), dim=-1)
        else:
            allowed = sampling_probs_reference(logits, temperature, top_k, top_p).gather(-1, tok[:, None]) > 0
            assert bool(allowed.all()), "a sampled token lies outside the top-k / top-p set"
            exact = torch.log_softmax(logits.double() / temperature, dim=-1)
        err = (lp.double() - exact.gather(-1, tok[:, None]).squeeze(-1)).abs().max().item()
        assert err < 1e-3, f"log-prob off by {err:.3g}"
        return {"logprob_max_abs_diff": err}

    return check


def bench_one(b: int, v: int, setting: tuple, device: torch.device, naive: bool, repeats: int) -> dict:
    label, temperature, top_k, top_p, greedy = setting
    logits = (3 * torch.randn(b, v, generator=torch.Generator().manual_seed(0))).to(device)
    kw = dict(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy)
    gen = torch.Generator(device=device).manual_seed(0)
    on_cuda = device.type == "cuda"
    if on_cuda:
        from zerosearch.kernels.sampling import triton_sample

        seed = torch.zeros(1, dtype=torch.int64, device=device)
        cand, cand_name = (lambda: triton_sample(logits, seed, **kw)), "triton_sample"
    else:
        cand, cand_name = (lambda: sample_reference(logits, generator=gen, **kw)), "sample_reference"
    if naive or not on_cuda:
        ref, ref_name = (lambda: naive_sample(logits, generator=gen, **kw)), "sort+multinomial"
    else:
        ref, ref_name = (lambda: sample_reference(logits, generator=gen, **kw)), "sample_reference"
    extra = dict(batch=b, vocab=v, setting=label, candidate=cand_name, reference=ref_name)
    return compare(f"sampling {label}: {cand_name} vs {ref_name}", cand, ref, device=device, repeats=repeats,
                   check=_checker(logits, temperature, top_k, top_p, greedy), extra=extra)  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[common_parser()])
    ap.add_argument("--reference", choices=["auto", "naive"], default="auto",
                    help="auto: sample_reference on CUDA, sort+multinomial on CPU")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="one tiny shape (smoke test)")
    args = ap.parse_args(argv)
    device = resolve_device(ap, args.device)
    repeats = args.repeats or (20 if device.type == "cuda" else 5)
    table = Table([("batch", "B", "d"), ("vocab", "V", "d"), ("setting", "setting", "s"),
                   ("logprob_max_abs_diff", "lp diff", ".1e")])  # fmt: skip
    table.header()
    rows = []
    for b, v in SHAPES["quick" if args.quick else device.type]:
        for setting in SETTINGS:
            rows.append(bench_one(b, v, setting, device, args.reference == "naive", repeats))
            table.row(rows[-1])
    write_json(args.out, "bench_sampling", rows, device, reference=args.reference)
    return rows


if __name__ == "__main__":
    main()
