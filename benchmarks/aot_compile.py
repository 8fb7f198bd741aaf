"""Ahead-of-time compile of every Triton kernel and CUDA file for A100 (sm_80) and H100/H200 (sm_90), no GPU needed.

Why: tests run the Triton kernels through the CPU interpreter, which accepts programs the real compiler
rejects and says nothing about registers, spills or shared memory; the CUDA files are only built for the CPU
wheel. This script

1. calls each kernel's *Python wrapper* on meta tensors at Qwen2.5-3B/7B sizes with ``JITFunction.run``
   replaced by a recorder, so the kernel, its argument types (hence the signature), constexprs, warps,
   stages and grid are exactly what the wrapper launches; nothing is written by hand per kernel, so a
   rewritten kernel is checked as soon as its wrapper launches it. Where a wrapper asks the GPU for its SM
   count, a fake device with the target's SM count answers;
2. compiles each distinct launch with ``triton.compile`` for sm_80 and sm_90 (in parallel; Triton's own
   cache, kept under ``--cache-dir``, makes a rerun on unchanged kernels take seconds), and each
   ``csrc/cuda/*.cu`` with nvcc into one fatbin for both;
3. reads registers, stack / local bytes (spills) and shared memory with cuobjdump, whether ``tl.dot`` became
   ``mma`` (sm_80 style) or ``wgmma`` (sm_90) or plain FMAs, and estimates CTAs per SM (registers, shared
   memory, threads, blocks; the rules of the CUDA occupancy calculator) and waves = programs / (SMs x CTAs/SM).

``--check`` fails (exit 1) on a compile error, on a spill that no :data:`SPILL_ALLOWLIST` entry names exactly
(kernel + dtype + arch + every constexpr, warps, stages), on shared memory above the per-block limit (the
opt-in maximum: 163 KB on sm_80, 227 KB on sm_90; the SM's 164 / 228 KB include a 1 KB system reserve
per block) or on a kernel that cannot fit one CTA on an SM.

Must run where ``TRITON_INTERPRET`` is unset (under the interpreter ``@triton.jit`` makes interpreter objects).

    python benchmarks/aot_compile.py [--check] [--json out.json] [--markdown out.md] [--jobs N] [--no-cache]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(1, str(REPO_ROOT))

# FP fusion is on by default; saying so silences Triton 3.9's warning about a future change of the default.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


# ------------------------------------------------------------------------------------------------ hardware


@dataclasses.dataclass(frozen=True)
class Arch:
    """Per-SM limits of one GPU generation (CUDA programming guide, compute capability table)."""

    cap: int
    gpu: str
    sms: int
    smem_per_sm: int  # bytes, largest carveout
    smem_per_block: int  # bytes, opt-in maximum for one block (excludes the system reserve)
    reserve_in_cubin: bool  # sm_90 cubins already count the 1 KB per-block system reserve in SHARED
    regs_per_sm: int = 65536
    regs_per_block: int = 65536
    max_threads_per_sm: int = 2048
    max_ctas_per_sm: int = 32
    reserved_smem_per_block: int = 1024
    smem_alloc_unit: int = 128
    reg_alloc_unit: int = 256  # registers per warp are allocated in units of 256
    sub_partitions: int = 4

    @property
    def name(self) -> str:
        return f"sm_{self.cap}"


ARCHS: dict[int, Arch] = {
    80: Arch(80, "A100", sms=108, smem_per_sm=164 * 1024, smem_per_block=163 * 1024, reserve_in_cubin=False),
    90: Arch(90, "H100/H200", sms=132, smem_per_sm=228 * 1024, smem_per_block=227 * 1024, reserve_in_cubin=True),
}


def ctas_per_sm(arch: Arch, regs: int, threads: int, smem: int) -> tuple[int, str]:
    """Resident CTAs per SM and the limit that binds, for ``regs`` per thread, ``threads`` and ``smem``
    bytes per CTA (the kernel's own static + dynamic shared memory, without the system reserve)."""
    warps = math.ceil(threads / 32)
    limits = {"blocks": arch.max_ctas_per_sm, "threads": arch.max_threads_per_sm // max(1, threads)}
    regs_per_warp = math.ceil(max(regs, 1) * 32 / arch.reg_alloc_unit) * arch.reg_alloc_unit
    # the hardware checks a block's registers as if its warps were spread over all sub-partitions
    warps_rounded = math.ceil(warps / arch.sub_partitions) * arch.sub_partitions
    if regs_per_warp * max(warps, warps_rounded) > arch.regs_per_block:
        limits["regs"] = 0
    else:
        per_sub = (arch.regs_per_sm // arch.sub_partitions) // regs_per_warp
        limits["regs"] = per_sub * arch.sub_partitions // warps
    per_cta = smem + arch.reserved_smem_per_block
    per_cta = math.ceil(per_cta / arch.smem_alloc_unit) * arch.smem_alloc_unit
    limits["smem"] = arch.smem_per_sm // per_cta if smem <= arch.smem_per_block else 0
    limiter = min(limits, key=lambda k: limits[k])
    return limits[limiter], limiter


# ------------------------------------------------------------------------------------------------ allowlist


@dataclasses.dataclass(frozen=True)
class AllowedSpill:
    """One compiled variant allowed to spill: matched on every field, so it cannot cover any other variant.

    ``dtype`` is the element type of the kernel's first pointer argument (CUDA: the template argument),
    ``config`` every constexpr plus ``num_warps`` and ``num_stages`` (CUDA: ``{"file": ...}``).
    """

    kernel: str
    dtype: str
    arch: int
    config: dict
    reason: str
    fixed_by: str

    def matches(self, row: dict) -> bool:
        return (self.kernel, self.dtype, self.arch, self.config) == (
            row["kernel"], row["dtype"], row["arch"], row["config"])  # fmt: skip


# Empty: every Triton kernel and CUDA file compiles without spills for sm_80 and sm_90 at the sizes above.
SPILL_ALLOWLIST: list[AllowedSpill] = []


# ------------------------------------------------------------------------------------------------ recording


@dataclasses.dataclass
class Launch:
    """One kernel launch as a wrapper made it: everything needed to compile it for any target."""

    kernel: Any  # triton.runtime.jit.JITFunction
    args: tuple
    kwargs: dict
    grid: tuple[int, int, int]
    label: str

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__


class LaunchRecorder:
    """Context manager: while active, ``kernel[grid](...)`` records a :class:`Launch` instead of running.

    ``@triton.autotune`` kernels record one launch per config; ``@triton.heuristics`` values are computed
    as usual (their wrapper calls the patched ``run``). Use :meth:`scenario` to label launches and to
    collect a wrapper's exception (a failed recording is a failure of the check, not a crash).
    """

    def __init__(self) -> None:
        self.launches: list[Launch] = []
        self.errors: list[tuple[str, str]] = []
        self._label = ""
        self._patches: list[Any] = []

    def __enter__(self) -> LaunchRecorder:
        from triton.runtime.autotuner import Autotuner
        from triton.runtime.jit import JITFunction

        recorder = self

        def run(fn, *args, grid, warmup, **kwargs):
            names = [p.name for p in fn.params]
            if callable(grid):
                grid = grid({**dict(zip(names, args)), **kwargs})
            grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
            recorder.launches.append(Launch(fn, tuple(args), dict(kwargs), grid, recorder._label))

        def autotune_run(tuner, *args, **kwargs):
            for cfg in tuner.configs:
                tuner.fn.run(*args, **{**kwargs, **cfg.all_kwargs()})

        self._patches = [mock.patch.object(JITFunction, "run", run), mock.patch.object(Autotuner, "run", autotune_run)]
        for p in self._patches:
            p.start()
        return self

    def __exit__(self, *exc) -> None:
        for p in reversed(self._patches):
            p.stop()

    @contextlib.contextmanager
    def scenario(self, label: str) -> Iterator[None]:
        self._label = label
        before = len(self.launches)
        try:
            yield
            if len(self.launches) == before:
                self.errors.append((label, "the wrapper launched no Triton kernel"))
        except Exception as e:  # noqa: BLE001 - reported as a failing row
            self.errors.append((label, f"{type(e).__name__}: {e}"))
        finally:
            self._label = ""


@contextlib.contextmanager
def fake_cuda(arch: Arch) -> Iterator[None]:
    """Answer the wrappers' device queries (SM count, capability) as a GPU of ``arch`` would."""
    import torch

    props = types.SimpleNamespace(
        name=arch.gpu, major=arch.cap // 10, minor=arch.cap % 10, multi_processor_count=arch.sms,
        total_memory=80 << 30, max_shared_memory_per_block_optin=arch.smem_per_block,
        regs_per_multiprocessor=arch.regs_per_sm, max_threads_per_multi_processor=arch.max_threads_per_sm,
        warp_size=32,
    )  # fmt: skip
    patches = [
        mock.patch.object(torch.cuda, "is_available", lambda: True),
        mock.patch.object(torch.cuda, "device_count", lambda: 1),
        mock.patch.object(torch.cuda, "current_device", lambda: 0),
        mock.patch.object(torch.cuda, "get_device_properties", lambda *a, **k: props),
        mock.patch.object(torch.cuda, "get_device_capability", lambda *a, **k: (props.major, props.minor)),
    ]
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        yield


@dataclasses.dataclass(frozen=True)
class Spec:
    """A launch specialised for one target: what ``triton.compile`` needs, plus the table's keys."""

    signature: dict
    constexprs: dict  # by parameter name
    options: dict
    dtype: str
    config: dict
    key: str


def specialize(launch: Launch, arch: Arch) -> tuple[Spec, Any]:
    """Bind the recorded arguments the way ``JITFunction.run`` does for ``arch`` → (:class:`Spec`, ASTSource args)."""
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.kernel
    target = GPUTarget("cuda", arch.cap, 32)
    backend = make_backend(target)
    kwargs = dict(launch.kwargs)
    kwargs["debug"] = kwargs.get("debug", fn.debug) or knobs.runtime.debug
    for opt, knob in (("instrumentation_mode", "instrumentation_mode"),
                      ("fpsan_homomorphic_casts", "fpsan_homomorphic_casts")):  # fmt: skip
        if hasattr(knobs.compilation, knob):
            kwargs[opt] = getattr(knobs.compilation, knob)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    names = [p.name for p in fn.params]
    by_name = {names[path[0]]: v for path, v in constexprs.items() if len(path) == 1}
    ptrs = [t for t in signature.values() if isinstance(t, str) and t.startswith("*")]
    dtype = ptrs[0].lstrip("*k") if ptrs else "-"
    config = {k: v for k, v in by_name.items() if isinstance(v, (bool, int, float, str))}
    config.update(num_warps=options.num_warps, num_stages=options.num_stages)
    key = repr((fn.fn.__module__, fn.fn.__qualname__, sorted(signature.items()), sorted(constexprs.items()),
                sorted(attrs.items()), sorted(options.__dict__.items()), arch.cap))  # fmt: skip
    spec = Spec(signature, by_name, dict(options.__dict__), dtype, config, key)
    return spec, (fn, signature, constexprs, attrs, target, options)


# ------------------------------------------------------------------------------------------------ compiling


def _cuobjdump() -> str | None:
    try:
        import triton

        path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        if path.exists():
            return str(path)
    except ImportError:
        pass
    return shutil.which("cuobjdump")


_RES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def resource_usage(binary: Path) -> dict[str, list[dict]]:
    """cuobjdump's per-function REG / STACK / SHARED / LOCAL, by arch (``sm_80`` ...; ``""`` for a bare cubin)."""
    tool = _cuobjdump()
    if tool is None:
        raise RuntimeError("cuobjdump not found (triton wheel or PATH)")
    out = subprocess.run([tool, "--dump-resource-usage", str(binary)], capture_output=True, text=True, check=True)
    res: dict[str, list[dict]] = {}
    arch, func = "", None
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.startswith("arch = "):
            arch = line.split("=", 1)[1].strip()
        elif line.startswith("Function "):
            func = line[len("Function "):].rstrip(":")
        elif func is not None and (m := _RES.search(line)):
            regs, stack, shared, local = map(int, m.groups())
            res.setdefault(arch, []).append(dict(function=func, regs=regs, stack=stack, shared=shared, local=local))
            func = None
    return res


def _dot_kind(asm: dict) -> str:
    """What ``tl.dot`` became: wgmma / mma (tensor cores), fma (e.g. ieee fp32 dots), or '-' (no dot)."""
    ttir = asm.get("ttir", "")
    ptx = asm.get("ptx", "")
    if "tt.dot" not in ttir:
        return "-"
    if "wgmma.mma_async" in ptx:
        return "wgmma"
    if re.search(r"\bmma\.sync", ptx):
        return "mma"
    return "fma"


_JOBS: list[Callable[[], dict]] = []  # filled before the worker pool forks


def _run_job(i: int) -> dict:
    t0 = time.perf_counter()
    try:
        out = _JOBS[i]()
    except Exception as e:  # noqa: BLE001 - a compile error is a result
        msg = str(e).strip()
        out = {"error": f"{type(e).__name__}: {msg[-1500:]}"}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _compile_triton(args: tuple) -> dict:
    import triton
    from triton.compiler import ASTSource

    fn, signature, constexprs, attrs, target, options = args
    k = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(k.asm["cubin"])
        funcs = [f for fs in resource_usage(cubin).values() for f in fs]
    if len(funcs) != 1:
        raise RuntimeError(f"expected one function in the cubin, cuobjdump listed {len(funcs)}")
    f = funcs[0]
    return dict(regs=f["regs"], stack=f["stack"], local=f["local"], static_smem=f["shared"],
                dyn_smem=int(k.metadata.shared), dot=_dot_kind(k.asm))  # fmt: skip


def _run_jobs(jobs: list[Callable[[], dict]], workers: int, on_started: Callable[[], None] | None = None
              ) -> list[dict]:  # fmt: skip
    """Run ``jobs`` in forked worker processes; ``on_started`` runs once the workers exist (safe to start threads)."""
    _JOBS[:] = jobs
    try:
        if workers <= 1 or len(jobs) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            if on_started:
                on_started()
            return [_run_job(i) for i in range(len(jobs))]
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(_run_job, i) for i in range(len(jobs))]
            if on_started:
                on_started()
            return [f.result() for f in futures]
    finally:
        _JOBS.clear()


# ------------------------------------------------------------------------------------------------ CUDA files

CUDA_DIR = REPO_ROOT / "csrc" / "cuda"
# One block per row; rows at the configs' sizes: the 40 trajectories a rank decodes and masks.
CUDA_GRIDS = {"stop_match_kernel": (40, "B=40 decode rows"), "info_span_mask_kernel": (40, "40 trajectories")}


def _nvcc_flags(archs: list[Arch]) -> list[str]:
    from torch.utils.cpp_extension import include_paths

    flags = ["-std=c++17", "-DWITH_CUDA", f"-I{REPO_ROOT / 'csrc'}", *[f"-I{p}" for p in include_paths()]]
    for a in archs:
        flags.append(f"-gencode=arch=compute_{a.cap},code=sm_{a.cap}")
    return flags


def _cuda_cache_key(cu: Path, flags: list[str], nvcc: str) -> str:
    import torch

    h = hashlib.sha256()
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    h.update((version + torch.__version__ + " ".join(flags)).encode())
    for f in sorted(REPO_ROOT.joinpath("csrc").rglob("*")):
        if f.suffix in (".h", ".cuh", ".hpp") or f == cu:
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:24]


def _compile_cuda(cu: Path, flags: list[str], nvcc: str, cache: Path | None) -> dict:
    cached = cache / f"{cu.stem}-{_cuda_cache_key(cu, flags, nvcc)}.json" if cache else None
    if cached is not None and cached.exists():
        return json.loads(cached.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        fatbin = Path(tmp) / f"{cu.stem}.fatbin"
        p = subprocess.run([nvcc, "-fatbin", *flags, str(cu), "-o", str(fatbin)], capture_output=True, text=True)
        if p.returncode != 0:
            return {"error": f"nvcc failed ({p.returncode}): {(p.stderr or p.stdout)[-1500:]}"}
        usage = resource_usage(fatbin)
    out = {"usage": usage}
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(out))
    return out


def _demangle(names: list[str]) -> list[str]:
    tool = shutil.which("c++filt")
    if tool is None:
        return names
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return out if len(out) == len(names) else names


def _short_cuda_name(demangled: str) -> tuple[str, str]:
    """``void ns::(anonymous namespace)::k<long>(...)`` → (``k<long>``, ``long``)."""
    head = demangled.split("(anonymous namespace)::")[-1]
    depth, end = 0, len(head)
    for i, c in enumerate(head):  # cut at the parameter list (the first '(' outside template brackets)
        depth += c == "<"
        depth -= c == ">"
        if c == "(" and depth == 0:
            end = i
            break
    name = head[:end].split("::")[-1].removeprefix("void ").strip()
    targs = re.search(r"<(.*)>$", name)
    return name, targs.group(1) if targs else "-"


def _cuda_threads(src: str) -> int | None:
    m = re.search(r"constexpr\s+int\s+kThreads\s*=\s*(\d+)", src)
    return int(m.group(1)) if m else None


# ------------------------------------------------------------------------------------------------ workloads


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int


MODELS = {
    "3B": Model("Qwen2.5-3B", hidden=2048, heads=16, kv_heads=2, head_dim=128, vocab=151936),
    "7B": Model("Qwen2.5-7B", hidden=3584, heads=28, kv_heads=4, head_dim=128, vocab=152064),
}
DTYPES = ("bf16", "fp16", "fp32")
# Sizes of configs/qwen2.5-*-grpo.yaml on 8 ranks: the loss works on chunks of rows of the LM head's logits
# (``_chunk_rows``); the rollout decodes 64 x 5 / 8 = 40 rows per rank in a static cache of
# rollout.max_context slots after a shared prefix.
DECODE_ROWS = 40
CACHE_SLOTS = 4096
PREFIX_LEN = 512
SAMPLING_MODES = {
    "greedy": dict(greedy=True),
    "temperature": dict(temperature=1.0),
    "top-k": dict(temperature=1.0, top_k=50),
    "top-p": dict(temperature=1.0, top_p=0.9),
}


def _kernel_module(name: str):
    import importlib

    return importlib.import_module(f"zerosearch.kernels.{name}")


def _chunk_rows(vocab: int) -> int:
    """Rows of one backward chunk on a GPU, as ``zerosearch.ops.token_logprobs`` picks them."""
    import torch

    from zerosearch.ops.token_logprobs import _chunk_rows as rows

    return rows(vocab, torch.device("cuda"))


def record_workloads(arch: Arch, models: dict[str, Model] = MODELS, dtypes: tuple[str, ...] = DTYPES) -> LaunchRecorder:
    """Every launch the wrappers make at the models' sizes, with ``arch``'s SM count answering device queries."""
    import torch

    tlp = _kernel_module("token_logprobs")
    dec = _kernel_module("decode_attention")
    mrg = _kernel_module("attn_merge")
    smp = _kernel_module("sampling")
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

    def meta(*shape, dtype=torch.float32):
        return torch.empty(*shape, dtype=dtype, device="meta")

    rec = LaunchRecorder()
    with rec, fake_cuda(arch):
        for mname, m in models.items():
            v, d, hkv, g = m.vocab, m.head_dim, m.kv_heads, m.heads // m.kv_heads
            for dname in dtypes:
                dt = torch_dtype[dname]
                # one decode step of the engine: per-row cache part and shared-prefix part, then the merge
                b, s = DECODE_ROWS, CACHE_SLOTS
                z = b * hkv
                parts = []
                with rec.scenario(f"decode {mname} B={b} S={s}"):
                    parts.append(dec.split_kv_attention(
                        meta(z, g, d, dtype=dt), meta(z, s, d, dtype=dt), meta(z, s, d, dtype=dt),
                        meta(z, dtype=torch.int32), meta(z, dtype=torch.int32), d**-0.5))  # fmt: skip
                with rec.scenario(f"prefix {mname} B={b} P={PREFIX_LEN}"):
                    parts.append(dec.split_kv_attention(
                        meta(hkv, b * g, d, dtype=dt), meta(hkv, PREFIX_LEN, d, dtype=dt),
                        meta(hkv, PREFIX_LEN, d, dtype=dt), meta(hkv, dtype=torch.int32),
                        meta(hkv, dtype=torch.int32), d**-0.5))  # fmt: skip
                if dname == dtypes[0] and len(parts) == 2:  # partials are fp32 whatever the cache dtype
                    splits = parts[0][0].shape[2] + parts[1][0].shape[2]
                    with rec.scenario(f"merge {mname} R={b * m.heads} S={splits}"):
                        mrg.merge_partials(meta(b * m.heads, splits, d), meta(b * m.heads, splits))
                for mode, kw in SAMPLING_MODES.items():
                    with rec.scenario(f"sample {mode} {mname} B={b}"):
                        smp.triton_sample(meta(b, v, dtype=dt), meta(1, dtype=torch.int64), **kw)
            # the LM-head GEMMs are cuBLAS; the row kernels see the fp32 logits of one chunk whatever the dtype
            c = _chunk_rows(v)
            with rec.scenario(f"row stats {mname} C={c}"):
                tlp.triton_row_stats(meta(c, v), meta(c, dtype=torch.int64), 1.0)
            for ent in (True, False):
                with rec.scenario(f"dlogits{' +entropy' if ent else ''} {mname} C={c}"):
                    f32 = meta(c)
                    tlp.triton_dlogits_(meta(c, v), meta(c, dtype=torch.int64), f32, f32, f32,
                                        f32 if ent else None, 1.0)  # fmt: skip
    return rec


# ------------------------------------------------------------------------------------------------ evaluation


def judge(row: dict, arch: Arch, allowlist: list[AllowedSpill]) -> dict:
    """Occupancy, waves and the pass / fail verdict of one compiled variant (``row`` has the resources)."""
    problems = []
    row.pop("allowed_spill", None)
    if row.get("error"):
        problems.append(f"compile error: {row['error']}")
    else:
        smem = row["smem"]
        ctas, limiter = ctas_per_sm(arch, row["regs"], row["threads"], smem)
        row["ctas_per_sm"], row["limiter"] = ctas, limiter
        if row.get("programs"):
            row["waves"] = round(row["programs"] / (arch.sms * ctas), 2) if ctas else None
        if smem > arch.smem_per_block:
            problems.append(f"shared memory {smem} B > {arch.smem_per_block} B per block on {arch.name}")
        if ctas == 0:
            problems.append(f"no CTA fits on an SM ({limiter})")
        if row["stack"] or row["local"]:
            allowed = next((a for a in allowlist if a.matches(row)), None)
            if allowed is None:
                problems.append(f"spills: stack {row['stack']} B, local {row['local']} B")
            else:
                row["allowed_spill"] = f"{allowed.fixed_by}: {allowed.reason}"
    row["problems"] = problems
    row["status"] = "FAIL" if problems else ("spill (allowed)" if row.get("allowed_spill") else "ok")
    return row


def evaluate(pairs: list[tuple[Arch, Launch]], allowlist: list[AllowedSpill] | None = None, workers: int = 1,
             on_started: Callable[[], None] | None = None) -> list[dict]:  # fmt: skip
    """Compile each distinct (launch, arch) once and return one row per pair, in order."""
    allowlist = SPILL_ALLOWLIST if allowlist is None else allowlist
    specs, keys, jobs, rows = [], {}, [], []
    for arch, launch in pairs:
        try:
            spec, args = specialize(launch, arch)
        except Exception as e:  # noqa: BLE001
            specs.append((None, f"{type(e).__name__}: {e}"))
            continue
        if spec.key not in keys:
            keys[spec.key] = len(jobs)
            jobs.append(lambda a=args: _compile_triton(a))
        specs.append((spec, keys[spec.key]))
    results = _run_jobs(jobs, workers, on_started)
    for (arch, launch), (spec, job) in zip(pairs, specs):
        row = dict(kernel=launch.name, variant=launch.label, arch=arch.cap, programs=math.prod(launch.grid),
                   grid=list(launch.grid))  # fmt: skip
        if spec is None:
            row.update(dtype="-", config={}, threads=0, error=f"cannot specialise: {job}")
        else:
            res = results[job]
            row["compile_id"] = job
            row.update(dtype=spec.dtype, config=spec.config, threads=32 * spec.options["num_warps"], **res)
            row["signature"] = {k: str(v) for k, v in spec.signature.items()}
            if "error" not in res:
                reserve = arch.reserved_smem_per_block if arch.reserve_in_cubin else 0
                row["smem"] = res["dyn_smem"] + max(0, res["static_smem"] - reserve)
        rows.append(judge(row, arch, allowlist))
    return rows


def evaluate_cuda(archs: list[Arch], allowlist: list[AllowedSpill] | None = None, cache: Path | None = None,
                  workers: int = 1) -> tuple[list[dict], str | None]:  # fmt: skip
    """One row per (CUDA kernel instantiation, arch); ``(rows, reason)`` with a reason when skipped."""
    allowlist = SPILL_ALLOWLIST if allowlist is None else allowlist
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return [], "nvcc not found"
    if _cuobjdump() is None:
        return [], "cuobjdump not found"
    try:
        flags = _nvcc_flags(archs)
    except ImportError as e:
        return [], f"torch.utils.cpp_extension unavailable: {e}"
    files = sorted(CUDA_DIR.glob("*.cu"))
    # nvcc runs as child processes: threads suffice, and they can overlap a Triton worker pool
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(lambda f: _compile_cuda(f, flags, nvcc, cache), files))
    rows = []
    for cu, res in zip(files, results):
        rel = str(cu.relative_to(REPO_ROOT))
        src = cu.read_text()
        threads = _cuda_threads(src)
        if "error" in res:
            for arch in archs:
                row = dict(kernel=cu.name, variant="nvcc", dtype="-", arch=arch.cap, config={"file": rel},
                           threads=threads or 0, error=res["error"])  # fmt: skip
                rows.append(judge(row, arch, allowlist))
            continue
        for arch in archs:
            funcs = res["usage"].get(arch.name, [])
            names = _demangle([f["function"] for f in funcs])
            for f, full in zip(funcs, names):
                name, targ = _short_cuda_name(full)
                base = name.split("<")[0]
                programs, what = CUDA_GRIDS.get(base, (None, ""))
                reserve = arch.reserved_smem_per_block if arch.reserve_in_cubin else 0
                row = dict(kernel=name, variant=f"{rel} {what}".strip(), dtype=targ, arch=arch.cap,
                           config={"file": rel}, threads=threads or 1024, programs=programs, regs=f["regs"],
                           stack=f["stack"], local=f["local"], smem=max(0, f["shared"] - reserve), dot="-")  # fmt: skip
                if threads is None:
                    row["note"] = "block size not found in the source: occupancy assumes 1024 threads"
                rows.append(judge(row, arch, allowlist))
    return rows, None


def unused_allowlist(rows: list[dict], allowlist: list[AllowedSpill] | None = None) -> list[AllowedSpill]:
    """Entries that match no spilling variant: the kernel was fixed (or changed) and the entry should go."""
    allowlist = SPILL_ALLOWLIST if allowlist is None else allowlist
    spilling = [r for r in rows if r.get("stack") or r.get("local")]
    return [a for a in allowlist if not any(a.matches(r) for r in spilling)]


# ------------------------------------------------------------------------------------------------ report


def _fmt_config(config: dict) -> str:
    parts = []
    for k, v in config.items():
        if k == "num_warps":
            parts.append(f"w{v}")
        elif k == "num_stages":
            parts.append(f"s{v}")
        elif k != "file":
            parts.append(f"{k}={int(v) if isinstance(v, bool) else v}")
    return " ".join(parts)


def _kb(n: int) -> str:
    return f"{n / 1024:.1f}" if n == 0 or n >= 1024 else f"{n / 1024:.2f}"


def sort_rows(rows: list[dict]) -> list[dict]:
    """Group by kernel (first-seen order), then variant, dtype and arch."""
    first: dict[str, int] = {}
    for r in rows:
        first.setdefault(r["kernel"], len(first))
    rank = {d: i for i, d in enumerate(DTYPES)}
    return sorted(rows, key=lambda r: (first[r["kernel"]], r["variant"], rank.get(r["dtype"], 9), r["arch"]))


def markdown(rows: list[dict]) -> str:
    """The table; rows that differ only in their variant label share one line (labels joined by ';')."""
    head = ("| kernel | variant | dtype | config | arch | regs | stack/local B | smem KB | dot | programs "
            "| CTAs/SM | waves | status |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    cells_by_key: dict[tuple, list] = {}
    for r in sort_rows(rows):
        if r.get("error"):
            cells = [r["kernel"], r["variant"], r["dtype"], _fmt_config(r["config"]), f"sm_{r['arch']}",
                     *["-"] * 7, "FAIL: compile error"]  # fmt: skip
        else:
            ctas = f"{r['ctas_per_sm']} ({r['limiter']})"
            waves = "-" if r.get("waves") is None else f"{r['waves']:.2f}"
            cells = [r["kernel"], r["variant"], r["dtype"], _fmt_config(r["config"]), f"sm_{r['arch']}",
                     str(r["regs"]), f"{r['stack']}/{r['local']}", _kb(r["smem"]), r["dot"],
                     str(r.get("programs") or "-"), ctas, waves, r["status"]]  # fmt: skip
        key = (cells[0], *cells[2:])
        if key in cells_by_key:
            cells_by_key[key][1] += f"; {r['variant']}"
        else:
            cells_by_key[key] = cells
    lines += ["| " + " | ".join(cells) + " |" for cells in cells_by_key.values()]
    return "\n".join(lines) + "\n"


def _environment() -> dict:
    env: dict[str, Any] = {"python": sys.version.split()[0]}
    for mod in ("torch", "triton"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    nvcc = shutil.which("nvcc")
    if nvcc:
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip()
        env["nvcc"] = version.splitlines()[-1] if version else None
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 on a compile error, unlisted spill or smem overflow")
    p.add_argument("--json", type=Path, default=None, help="write all rows and the failures here")
    p.add_argument("--markdown", type=Path, default=None, help="write the table here")
    p.add_argument("--arch", type=int, nargs="+", default=sorted(ARCHS), choices=sorted(ARCHS))
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles (default: all cores)")
    default_cache = os.environ.get("ZEROSEARCH_AOT_CACHE") or Path(tempfile.gettempdir()) / "zerosearch-aot"
    p.add_argument("--cache-dir", type=Path, default=Path(default_cache),
                   help="Triton's cache and the nvcc results, keyed on the sources (env ZEROSEARCH_AOT_CACHE)")
    p.add_argument("--no-cache", action="store_true", help="compile everything afresh (a throwaway cache)")
    p.add_argument("--no-cuda", action="store_true", help="skip csrc/cuda/*.cu")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="trim for a quick look")
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES), help="trim for a quick look")
    args = p.parse_args(argv)

    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("aot_compile: unset TRITON_INTERPRET (the interpreter replaces @triton.jit kernels)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    tmp = tempfile.TemporaryDirectory() if args.no_cache else None
    cache = Path(tmp.name) if tmp else args.cache_dir
    os.environ["TRITON_CACHE_DIR"] = str(cache / "triton")
    archs = [ARCHS[a] for a in args.arch]
    doc: dict[str, Any] = {"environment": _environment(), "archs": {a.name: dataclasses.asdict(a) for a in archs}}
    rows: list[dict] = []
    background = ThreadPoolExecutor(1)
    cuda: list[Future] = []

    def start_cuda() -> None:  # nvcc overlaps the Triton compiles; started once their workers have forked
        if not args.no_cuda and not cuda:
            cuda.append(background.submit(evaluate_cuda, archs, cache=cache / "cuda", workers=args.jobs))

    try:
        import triton  # noqa: F401
    except ImportError as e:
        doc["triton_skipped"] = f"triton unavailable: {e}"
    else:
        pairs, record_errors = [], []
        for arch in archs:
            rec = record_workloads(arch, {m: MODELS[m] for m in args.models}, tuple(args.dtypes))
            pairs += [(arch, launch) for launch in rec.launches]
            record_errors += [(arch, label, err) for label, err in rec.errors]
        rows = evaluate(pairs, workers=args.jobs, on_started=start_cuda)
        doc["triton_compiles"] = len({r["compile_id"] for r in rows if "compile_id" in r})
        for arch, label, err in record_errors:
            rows.append(judge(dict(kernel="(wrapper)", variant=label, dtype="-", arch=arch.cap, config={},
                                   threads=0, error=f"recording failed: {err}"), arch, SPILL_ALLOWLIST))  # fmt: skip
    start_cuda()
    if args.no_cuda:
        doc["cuda_skipped"] = "--no-cuda"
    else:
        cuda_rows, reason = cuda[0].result()
        rows += cuda_rows
        if reason:
            doc["cuda_skipped"] = reason
    background.shutdown()
    if tmp:
        tmp.cleanup()
    failures = [r for r in rows if r["problems"]]
    stale = unused_allowlist(rows)
    rows = sort_rows(rows)
    doc.update(rows=rows, failures=failures, unused_allowlist=[dataclasses.asdict(a) for a in stale],
               seconds=round(time.perf_counter() - t0, 1))  # fmt: skip
    table = markdown(rows)
    print(table)
    for key in ("triton_skipped", "cuda_skipped"):
        if key in doc:
            print(f"{key.replace('_', ' ')}: {doc[key]}")
    for a in stale:
        print(f"note: allowlist entry matches no spilling variant (remove it?): {a.kernel} {a.dtype} sm_{a.arch} "
              f"{_fmt_config(a.config)}")  # fmt: skip
    for r in failures:
        print(f"FAIL {r['kernel']} [{r['variant']}] {r['dtype']} {_fmt_config(r['config'])} sm_{r['arch']}: "
              + "; ".join(r["problems"]))  # fmt: skip
    print(f"{len(rows)} variants ({doc.get('triton_compiles', 0)} distinct Triton compiles), {len(failures)} failing, "
          f"{doc['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1, default=str))
    if args.markdown:
        args.markdown.write_text(table)
    return 1 if args.check and failures else 0


if __name__ == "__main__":
    sys.exit(main())
