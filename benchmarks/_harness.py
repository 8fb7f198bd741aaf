"""Shared measurement code for the microbenchmarks in ``benchmarks/``.

Why one module: every benchmark reports the candidate (kernel / fused op / engine) *as a ratio against its
PyTorch reference, measured in the same run*, and the ratios are only comparable across benchmarks if the
time and memory are measured the same way everywhere. The pieces:

* :func:`time_fn`: median wall time over ``repeats`` calls after warm-up, with ``torch.cuda.synchronize``
  around each call on CUDA (kernels are asynchronous, so host time alone would measure launch cost).
* :func:`peak_bytes`: extra memory at the peak of one call, tensors that existed before not counted.
  CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. CPU: the PyTorch profiler's
  memory timeline (every allocate / free of the CPU allocator, temporaries inside ops included) replayed
  to find the peak of live bytes; RSS is not used because allocator caching and other threads make it noisy.
  Optionally the peak of Python objects (``tracemalloc``) is added, for references written as Python loops.
* :func:`compare`: checks the candidate's output against the reference's, then times and measures both
  and returns one row with the times, peaks and ratios.
* :class:`Table`, :func:`write_json`, :func:`common_parser`: one output format and one set of flags.

Scripts import this as ``_harness`` (their own directory is on ``sys.path`` when run as scripts).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(1, str(REPO_ROOT))

MiB = 2**20


# ---------------------------------------------------------------------------------------------- device / flags


def common_parser() -> argparse.ArgumentParser:
    """Parent parser with the flags every benchmark shares (use as ``parents=[common_parser()]``).

    ``--repeats`` defaults to None so that each script can pick a default that suits its device and cost.
    """
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per side (the median is reported)")
    return p


def resolve_device(parser: argparse.ArgumentParser, name: str | None) -> torch.device:
    """``--device`` → torch.device; exits with a usage error for cuda on a machine without CUDA."""
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    return torch.device(name)


def sync(device: torch.device | str) -> None:
    """Wait for queued kernels, so that host timers and memory counters see finished work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def device_name(device: torch.device | str) -> str:
    """GPU name, or the CPU model name (``/proc/cpuinfo``), for the JSON and the results tables."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device | str) -> dict[str, Any]:
    """Where and when the numbers were taken: needed to compare a JSON file with another one."""
    return {
        "device": torch.device(device).type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "cuda": torch.version.cuda,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
    }


# ---------------------------------------------------------------------------------------------- measurements


def time_fn(fn: Callable[[], Any], device: torch.device | str, repeats: int, warmup: int = 1) -> float:
    """Median seconds of one ``fn()`` call; the median resists the odd slow call on a shared machine."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cuda_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes held by the CUDA caching allocator during ``fn()`` above what was allocated before."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def cpu_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak live bytes of the CPU allocator during ``fn()``, from the profiler's memory timeline.

    The timeline lists every tensor allocation (``CREATE``) and free (``DESTROY``) in order; replaying it
    gives the peak of bytes live at once. Tensors that existed before the call have no ``CREATE`` in it,
    so inputs and weights are not counted.
    """
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action, MemoryProfileTimeline

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as p:
        fn()
    live = peak = 0
    for _, action, (key, _version), size in MemoryProfileTimeline(p._memory_profile()).timeline:
        if key.device.type != "cpu":
            continue
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak


_PROFILER_WARMED: list[bool] = []


def python_heap_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes of Python objects (``tracemalloc``) during ``fn()``: lists, ints, etc. of Python loops."""
    if not _PROFILER_WARMED:  # the first profiler use imports modules, which tracemalloc would count
        cpu_peak_bytes(lambda: torch.zeros(1))
        _PROFILER_WARMED.append(True)
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def peak_bytes(fn: Callable[[], Any], device: torch.device | str, *, python_heap: bool = False) -> int:
    """Extra memory at the peak of one ``fn()`` call (its result included), by the device's own counter.

    ``python_heap`` adds the Python-object peak from a second call (CPU only); the sum is an upper bound of
    the joint peak, which is fine for references whose working set is Python lists.
    """
    if torch.device(device).type == "cuda":
        return cuda_peak_bytes(fn)
    peak = cpu_peak_bytes(fn)
    if python_heap:
        peak += python_heap_peak_bytes(fn)
    return peak


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / |b|`` in fp32 (Frobenius norms): one number for "how far from the reference"."""
    a, b = a.detach().float(), b.detach().float()
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def compare(
    name: str,
    candidate_fn: Callable[[], Any],
    reference_fn: Callable[[], Any],
    *,
    device: torch.device | str,
    repeats: int,
    reference_repeats: int | None = None,
    check: Callable[[Any, Any], dict[str, Any]] | None = None,
    python_heap: bool = False,
    extra: dict[str, Any] | None = None,
    peers: dict[str, Callable[[], Any]] | None = None,
    time_checked_calls: bool = False,
) -> dict[str, Any]:
    """Check, time and measure a candidate against its reference in one run; return one result row.

    ``check(candidate_output, reference_output)`` returns diagnostics (e.g. max errors) and raises
    ``AssertionError`` when the outputs disagree: a wrong kernel is not worth timing. The two checked calls
    double as warm-up (Triton compilation, allocator growth). ``reference_repeats`` lets slow Python
    references run fewer times. Ratios are candidate / reference: ``time_ratio < 1`` is faster and
    ``mem_ratio < 1`` needs less memory; ``speedup`` is ``1 / time_ratio``.

    ``peers`` are other implementations of the same thing (e.g. another library's kernel): each one's output
    is checked against the candidate's with the same ``check`` before anything is timed, then it is timed and
    measured like the reference, adding ``<peer>_s``, ``<peer>_peak_mb``, ``time_ratio_vs_<peer>`` and
    ``mem_ratio_vs_<peer>`` (candidate / peer) and its diagnostics prefixed ``<peer>_``. ``time_checked_calls``
    reports the checked call's own time instead of further calls: for runs of minutes per call on a CPU,
    where there is nothing to warm up and a second call would double the run.
    """
    sides = {"candidate": candidate_fn, "reference": reference_fn, **(peers or {})}
    outputs, first_s = {}, {}
    for side, fn in sides.items():
        t0 = time.perf_counter()
        outputs[side] = fn()
        sync(device)
        first_s[side] = time.perf_counter() - t0
    diagnostics: dict[str, Any] = {}
    try:
        for side in sides:
            if side == "candidate" or check is None:
                continue
            diag = check(outputs["candidate"], outputs[side])
            diagnostics.update(diag if side == "reference" else {f"{side}_{k}": v for k, v in diag.items()})
    except AssertionError as e:
        raise AssertionError(f"{name}: candidate and {side} disagree: {e}") from e
    del outputs
    secs, peaks = {}, {}
    for side, fn in sides.items():
        n = repeats if side == "candidate" else (reference_repeats or repeats)
        secs[side] = first_s[side] if time_checked_calls else time_fn(fn, device, n, warmup=0)
    for side, fn in sides.items():
        peaks[side] = peak_bytes(fn, device, python_heap=python_heap)
    cand_s, ref_s, cand_peak, ref_peak = secs["candidate"], secs["reference"], peaks["candidate"], peaks["reference"]
    row = {
        "name": name,
        **(extra or {}),
        "candidate_s": cand_s,
        "reference_s": ref_s,
        "time_ratio": cand_s / ref_s,
        "speedup": ref_s / cand_s,
        "candidate_peak_mb": cand_peak / MiB,
        "reference_peak_mb": ref_peak / MiB,
        "mem_ratio": cand_peak / max(ref_peak, 1),
        "outputs_match": True,
    }
    for peer in peers or {}:
        row[f"{peer}_s"], row[f"{peer}_peak_mb"] = secs[peer], peaks[peer] / MiB
        row[f"time_ratio_vs_{peer}"] = cand_s / secs[peer]
        row[f"mem_ratio_vs_{peer}"] = cand_peak / max(peaks[peer], 1)
    return {**row, **diagnostics}


# ---------------------------------------------------------------------------------------------- output


class Table:
    """Fixed-width table printed row by row, so that long benchmarks show progress.

    ``columns`` are ``(key, header, format)``; the standard ratio columns of :func:`compare` rows are
    appended after them.
    """

    STANDARD: Sequence[tuple[str, str, str]] = (
        ("candidate_s", "cand ms", "ms"),
        ("reference_s", "ref ms", "ms"),
        ("time_ratio", "time ratio", ".3f"),
        ("speedup", "speed-up", ".2f"),
        ("candidate_peak_mb", "cand MiB", ".2f"),
        ("reference_peak_mb", "ref MiB", ".2f"),
        ("mem_ratio", "mem ratio", ".3f"),
    )

    def __init__(self, columns: Sequence[tuple[str, str, str]] = ()) -> None:
        self.columns = [*columns, *self.STANDARD]
        self.widths = [max(len(h), 10) for _, h, _ in self.columns]

    def header(self) -> None:
        line = " ".join(f"{h:>{w}}" for (_, h, _), w in zip(self.columns, self.widths))
        print(line)
        print("-" * len(line), flush=True)

    def row(self, r: dict[str, Any]) -> None:
        cells = []
        for (key, _, fmt), w in zip(self.columns, self.widths):
            v = r.get(key, "")
            if fmt == "ms" and isinstance(v, (int, float)):
                cells.append(f"{v * 1e3:>{w}.3f}")
            elif isinstance(v, (int, float)) and fmt not in ("", "s"):
                cells.append(f"{v:>{w}{fmt}}")
            else:
                cells.append(f"{v!s:>{w}}")
        print(" ".join(cells), flush=True)


def write_json(
    path: Path | str | None, benchmark: str, rows: list[dict[str, Any]], device: torch.device | str, **meta: Any
) -> None:
    """Write ``{"benchmark", "environment", "meta", "results"}`` to ``path`` (nothing when ``path`` is None)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": benchmark, "environment": environment(device), "meta": meta, "results": rows}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"wrote {path}")
