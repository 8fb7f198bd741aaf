"""Benchmark: compiled stop_match op vs the plain Python reference (time and peak memory).

``stop_match`` finds, per row of generated tokens, the end of the first complete multi-token stop sequence
(e.g. ``</search>`` split into several pieces by a byte-level tokenizer). The engine calls it at every host
check of a decode loop on the rows still running, so its cost is paid every ``sync_every`` decode steps.
Inputs look like decode buffers: random tokens, a stop sequence planted in about half of the rows at a random
place, ragged filled lengths. The op's result is checked against the reference before timing.

    python benchmarks/bench_stop_match.py [--device cpu|cuda] [--repeats R] [--quick] [--out results.json]
"""

from __future__ import annotations

import argparse

import torch
from _harness import Table, common_parser, compare, resolve_device, write_json

from zerosearch.ops.library import has_compiled_op
from zerosearch.ops.stop_match import pack_stop_sequences, stop_match_reference

STOP_SEQUENCES = [[524, 1836, 29], [524, 9217, 29], [151643]]  # e.g. "</", "search", ">" / "</", "answer", ">" / eos
CPU_SHAPES = [(64, 128), (256, 512)]
CUDA_SHAPES = [(256, 512), (1024, 600)]
QUICK_SHAPES = [(4, 32)]


def make_rows(rows: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode buffers ``[rows, width]`` and their filled lengths; about half the rows hold a stop sequence."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(100, 32000, (rows, width), generator=gen)
    lengths = torch.randint(width // 2, width + 1, (rows,), generator=gen)
    for b in range(rows):
        if int(torch.randint(0, 2, (1,), generator=gen)):
            seq = STOP_SEQUENCES[int(torch.randint(0, len(STOP_SEQUENCES), (1,), generator=gen))]
            at = int(torch.randint(0, width - len(seq) + 1, (1,), generator=gen))
            tokens[b, at : at + len(seq)] = torch.tensor(seq)
    return tokens, lengths


def bench_one(rows: int, width: int, device: torch.device, repeats: int) -> dict:
    tokens, lengths = make_rows(rows, width)
    tokens, lengths = tokens.to(device), lengths.to(device)
    flat, offsets = pack_stop_sequences(STOP_SEQUENCES, device)
    run_op = lambda: torch.ops.zerosearch.stop_match(tokens, lengths, flat, offsets)
    tok_list, len_list = tokens.tolist(), lengths.tolist()
    run_ref = lambda: torch.tensor(stop_match_reference(tok_list, len_list, STOP_SEQUENCES), device=device)

    def check(got: torch.Tensor, want: torch.Tensor) -> dict:
        assert torch.equal(got.cpu(), want.cpu()), f"shape {(rows, width)}"
        return {"stopped_fraction": round((want >= 0).float().mean().item(), 3)}

    return compare("stop_match op vs python", run_op, run_ref, device=device, repeats=repeats,
                   reference_repeats=max(1, min(repeats, 3)), check=check, python_heap=True,
                   extra={"shape": [rows, width]})  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[common_parser()])
    parser.add_argument("--quick", action="store_true", help="one tiny shape (smoke test)")
    args = parser.parse_args(argv)
    if not has_compiled_op("stop_match"):
        raise SystemExit("zerosearch._C is not built: pip install --no-build-isolation -e .")
    device = resolve_device(parser, args.device)
    shapes = QUICK_SHAPES if args.quick else (CUDA_SHAPES if device.type == "cuda" else CPU_SHAPES)
    table = Table([("shape", f"{'shape':>12}", "s"), ("stopped_fraction", "stopped", ".3f")])
    table.header()
    results = []
    for rows, width in shapes:
        results.append(bench_one(rows, width, device, args.repeats or 20))
        table.row(results[-1])
    write_json(args.out, "bench_stop_match", results, device, stop_sequences=STOP_SEQUENCES)
    return results


if __name__ == "__main__":
    main()
