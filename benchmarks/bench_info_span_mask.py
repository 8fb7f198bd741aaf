"""Benchmark: compiled info_span_mask vs the plain Python reference (time and peak memory).

Inputs look like rollouts: random vocabulary tokens with a few multi-token ``<information>`` spans
per row and right padding. The result of the op is checked against the reference before timing.
Prints one line per shape with the speed-up and memory ratio, and writes JSON with ``--out``.

    python benchmarks/bench_info_span_mask.py [--device cpu|cuda] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import torch

from zerosearch.span_mask import has_compiled_op, info_span_mask_reference

OPEN_IDS = [11, 12, 13]  # e.g. "<", "information", ">"
CLOSE_IDS = [14, 12, 13]  # e.g. "</", "information", ">"
PAD_ID = 0
CPU_SHAPES = [(8, 512), (32, 1024), (64, 2048)]
CUDA_SHAPES = [(64, 4096), (256, 4096), (1024, 4096)]


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


_PROFILER_WARM: list[bool] = []


def _torch_cpu_peak(prof: torch.profiler.profile) -> int:
    """Peak of live torch CPU allocations from a memory profile.

    Each op's own allocations are counted at its start and its own frees at its end, which is how
    they nest inside the call; the running sum's maximum is the peak.
    """
    deltas = []
    for e in prof.events():
        if e.self_cpu_memory_usage > 0:
            deltas.append((e.time_range.start, e.self_cpu_memory_usage))
        elif e.self_cpu_memory_usage < 0:
            deltas.append((e.time_range.end, e.self_cpu_memory_usage))
    live = peak = 0
    for _, delta in sorted(deltas, key=lambda d: d[0]):
        live += delta
        peak = max(peak, live)
    return peak


def peak_bytes(fn: Callable[[], torch.Tensor], device: torch.device) -> int:
    """Extra memory at the peak of one call, the result included.

    CUDA: the caching allocator's peak. CPU: peak of torch allocations (profiler) plus the peak of
    Python objects (tracemalloc; the reference's lists), an upper bound of the true joint peak.
    """
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    if not _PROFILER_WARM:  # the first profile imports modules, which tracemalloc would count
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True):
            torch.zeros(1)
        _PROFILER_WARM.append(True)
    tracemalloc.start()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    python_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return _torch_cpu_peak(prof) + python_peak


def time_ms(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> float:
    """Median wall time of one call in milliseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_one(rows: int, length: int, dtype: torch.dtype, device: torch.device, repeats: int) -> dict:
    tokens = make_tokens(rows, length, dtype).to(device)
    open_t = torch.tensor(OPEN_IDS, device=device)
    close_t = torch.tensor(CLOSE_IDS, device=device)
    run_op = lambda: torch.ops.zerosearch.info_span_mask(tokens, open_t, close_t, PAD_ID)
    run_ref = lambda: info_span_mask_reference(tokens, OPEN_IDS, CLOSE_IDS, PAD_ID)
    want = run_ref()
    if not torch.equal(run_op(), want):
        raise AssertionError(f"op and reference disagree for shape {(rows, length)} {dtype}")
    ref_repeats = max(1, min(repeats, 3))  # the Python loop is slow; a few runs are enough
    op_ms, ref_ms = time_ms(run_op, device, repeats), time_ms(run_ref, device, ref_repeats)
    op_mem, ref_mem = peak_bytes(run_op, device), peak_bytes(run_ref, device)
    return {
        "shape": [rows, length],
        "dtype": str(dtype).removeprefix("torch."),
        "device": device.type,
        "marked_fraction": round(want.float().mean().item(), 4),
        "op_ms": round(op_ms, 4),
        "ref_ms": round(ref_ms, 4),
        "speedup": round(ref_ms / op_ms, 2),
        "op_peak_bytes": op_mem,
        "ref_peak_bytes": ref_mem,
        "ref_over_op_peak_memory": round(ref_mem / max(op_mem, 1), 2),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    args = parser.parse_args(argv)
    if not has_compiled_op():
        raise SystemExit("zerosearch._C is not built: pip install --no-build-isolation -e .")
    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    shapes = CUDA_SHAPES if device.type == "cuda" else CPU_SHAPES
    results = []
    for rows, length in shapes:
        for dtype in (torch.int32, torch.int64):
            r = bench_one(rows, length, dtype, device, args.repeats)
            results.append(r)
            print(
                f"{device.type} [{rows:5d},{length:5d}] {r['dtype']:5s}  op {r['op_ms']:9.3f} ms  "
                f"ref {r['ref_ms']:9.1f} ms  speed-up x{r['speedup']:<9.1f} "
                f"peak mem op {r['op_peak_bytes'] / 2**20:7.2f} MiB ref {r['ref_peak_bytes'] / 2**20:7.2f} MiB "
                f"(ref/op x{r['ref_over_op_peak_memory']})"
            )
    if args.out:
        meta = {
            "benchmark": "info_span_mask",
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads(),
            "open_ids": OPEN_IDS,
            "close_ids": CLOSE_IDS,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
