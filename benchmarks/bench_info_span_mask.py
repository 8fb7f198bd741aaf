"""Benchmark: compiled info_span_mask op vs the plain Python reference (time and peak memory).

Inputs look like rollouts: random vocabulary tokens with a few multi-token ``<information>`` spans per row
and right padding. The op's result is checked against the reference before timing. Peak memory counts the
Python heap too (``tracemalloc``), since the reference works on Python lists. Ratios are op / reference.

    python benchmarks/bench_info_span_mask.py [--device cpu|cuda] [--repeats R] [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse

import torch
from _harness import Table, common_parser, compare, resolve_device, write_json

from zerosearch.ops.info_span_mask import info_span_mask_reference
from zerosearch.ops.library import has_compiled_op

OPEN_IDS = [11, 12, 13]  # e.g. "<", "information", ">"
CLOSE_IDS = [14, 12, 13]  # e.g. "</", "information", ">"
PAD_ID = 0
CPU_SHAPES = [(8, 512), (32, 1024), (64, 2048)]
CUDA_SHAPES = [(64, 4096), (256, 4096), (1024, 4096)]
QUICK_SHAPES = [(4, 128)]


def make_tokens(rows: int, length: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Random rollouts with 0-3 document spans per row (some unclosed) and right padding."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(20, 32000, (rows, length), generator=gen)
    for b in range(rows):
        n_spans = int(torch.randint(0, 4, (1,), generator=gen))
        for _ in range(n_spans):
            start = int(torch.randint(0, max(1, length - 8), (1,), generator=gen))
            tokens[b, start : start + 3] = torch.tensor(OPEN_IDS)[: length - start]
            end = start + 3 + int(torch.randint(0, 200, (1,), generator=gen))
            if end + 3 <= length and int(torch.randint(0, 4, (1,), generator=gen)) > 0:
                tokens[b, end : end + 3] = torch.tensor(CLOSE_IDS)
        pad_from = length - int(torch.randint(0, length // 4 + 1, (1,), generator=gen))
        tokens[b, pad_from:] = PAD_ID
    return tokens.to(dtype)


def bench_one(rows: int, length: int, dtype: torch.dtype, device: torch.device, repeats: int) -> dict:
    tokens = make_tokens(rows, length, dtype).to(device)
    open_t = torch.tensor(OPEN_IDS, device=device)
    close_t = torch.tensor(CLOSE_IDS, device=device)
    run_op = lambda: torch.ops.zerosearch.info_span_mask(tokens, open_t, close_t, PAD_ID)
    run_ref = lambda: info_span_mask_reference(tokens, OPEN_IDS, CLOSE_IDS, PAD_ID)

    def check(got: torch.Tensor, want: torch.Tensor) -> dict:
        assert torch.equal(got, want), f"shape {(rows, length)} {dtype}"
        return {"marked_fraction": round(want.float().mean().item(), 4)}

    extra = {"shape": [rows, length], "dtype": str(dtype).removeprefix("torch.")}
    return compare("info_span_mask op vs python", run_op, run_ref, device=device, repeats=repeats,
                   reference_repeats=max(1, min(repeats, 3)),  # the Python loop is slow; a few runs suffice
                   check=check, python_heap=True, extra=extra)  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[common_parser()])
    parser.add_argument("--quick", action="store_true", help="one tiny shape (smoke test)")
    args = parser.parse_args(argv)
    if not has_compiled_op("info_span_mask"):
        raise SystemExit("zerosearch._C is not built: pip install --no-build-isolation -e .")
    device = resolve_device(parser, args.device)
    shapes = QUICK_SHAPES if args.quick else (CUDA_SHAPES if device.type == "cuda" else CPU_SHAPES)
    table = Table([("shape", f"{'shape':>12}", "s"), ("dtype", "dtype", "s"), ("marked_fraction", "marked", ".3f")])
    table.header()
    results = []
    for rows, length in shapes:
        for dtype in (torch.int32, torch.int64):
            results.append(bench_one(rows, length, dtype, device, args.repeats or 20))
            table.row(results[-1])
    write_json(args.out, "bench_info_span_mask", results, device, open_ids=OPEN_IDS, close_ids=CLOSE_IDS,
               pad_id=PAD_ID)  # fmt: skip
    return results


if __name__ == "__main__":
    main()
