"""Ahead-of-time compile of the Triton kernels and CUDA files for sm_80 / sm_90 (``benchmarks/aot_compile.py``).

Why: the test process runs Triton through its interpreter (``conftest.py``), which accepts programs the real
compiler rejects and cannot see register spills. The check therefore runs in a subprocess without
``TRITON_INTERPRET``; it fails on a compile error, a spill no allowlist entry names exactly, shared memory
above the per-block limit or a kernel that fits no CTA on an SM. The toy kernels below (compiled in a
subprocess too) show that the recorder derives a launch's signature and that a real spill fails the check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

try:
    import torch
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_TRITON = False

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "aot_compile.py"

if str(SCRIPT.parent) not in sys.path:
    sys.path.insert(0, str(SCRIPT.parent))
import aot_compile as aot  # noqa: E402 - the script's directory is not a package

needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _describe(rows: list[dict]) -> str:
    return "\n".join(
        f"  {r['kernel']} [{r['variant']}] {r['dtype']} {aot._fmt_config(r['config'])} sm_{r['arch']}: "
        + "; ".join(r["problems"])
        for r in rows
    )


# ------------------------------------------------------------------------------------------------ the check


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """One run of the full check (Triton's cache in the temp dir makes reruns on unchanged kernels quick)."""
    if not HAVE_TRITON:
        pytest.skip("triton is not installed")
    out = tmp_path_factory.mktemp("aot") / "aot.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check", "--json", str(out)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    if not out.exists():
        pytest.fail(f"no report (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    doc = json.loads(out.read_text())
    doc["returncode"] = proc.returncode
    return doc


@pytest.mark.slow
def test_triton_kernels_compile_for_sm80_and_sm90(report: dict) -> None:
    if "triton_skipped" in report:
        pytest.skip(report["triton_skipped"])
    rows = [r for r in report["rows"] if not r["config"].get("file")]
    bad = [r for r in rows if r["problems"]]
    assert not bad, "Triton variants failing the AOT check (fix them, or add a precise SPILL_ALLOWLIST entry):\n" + (
        _describe(bad))  # fmt: skip
    # every wrapper launched its kernel(s) on both archs: a scenario that records nothing checks nothing
    for scenario in ("row stats", "dlogits", "decode", "prefix", "merge", "sample greedy", "sample top-p"):
        for arch in aot.ARCHS:
            assert any(r["variant"].startswith(scenario) and r["arch"] == arch for r in rows), (scenario, arch)
    assert {r["dtype"] for r in rows if r["variant"].startswith("decode")} == {"bf16", "fp16", "fp32"}


@pytest.mark.slow
def test_cuda_files_compile_for_sm80_and_sm90(report: dict) -> None:
    if "cuda_skipped" in report:
        pytest.skip(f"CUDA files not compiled: {report['cuda_skipped']}")
    rows = [r for r in report["rows"] if r["config"].get("file")]
    bad = [r for r in rows if r["problems"]]
    assert not bad, "CUDA kernels failing the AOT check:\n" + _describe(bad)
    for cu in sorted((REPO / "csrc" / "cuda").glob("*.cu")):
        rel = str(cu.relative_to(REPO))
        assert {r["arch"] for r in rows if r["config"]["file"] == rel} == set(aot.ARCHS), rel


@pytest.mark.slow
def test_check_exit_code_matches_failures(report: dict) -> None:
    assert report["returncode"] == (1 if report["failures"] else 0)


# ------------------------------------------------------------------------------------------------ occupancy


def test_ctas_per_sm_follows_each_limit() -> None:
    a100, h100 = aot.ARCHS[80], aot.ARCHS[90]
    # 255 registers: 8192 per warp, 2 warps per sub-partition, 8 warps per SM -> one 8-warp CTA
    assert aot.ctas_per_sm(a100, regs=255, threads=256, smem=0) == (1, "regs")
    # 64 registers x 4 warps: 2048 per warp, 8 warps per sub-partition -> 32 warps -> 8 CTAs
    assert aot.ctas_per_sm(h100, regs=64, threads=128, smem=0) == (8, "regs")
    # few registers: 2048 threads per SM / 128
    assert aot.ctas_per_sm(a100, regs=32, threads=128, smem=0) == (16, "threads")
    # 100 KB + 1 KB reserve: one per A100 SM (164 KB), two per H100 SM (228 KB)
    assert aot.ctas_per_sm(a100, regs=32, threads=128, smem=100 * 1024) == (1, "smem")
    assert aot.ctas_per_sm(h100, regs=32, threads=128, smem=100 * 1024) == (2, "smem")
    # above the opt-in per-block maximum nothing launches
    assert aot.ctas_per_sm(a100, regs=32, threads=128, smem=164 * 1024)[0] == 0
    assert aot.ctas_per_sm(h100, regs=32, threads=128, smem=200 * 1024) == (1, "smem")
    # tiny CTAs: the 32 blocks per SM limit
    assert aot.ctas_per_sm(h100, regs=16, threads=32, smem=0) == (32, "blocks")


# ------------------------------------------------------------------------------------------------ toy kernels

if HAVE_TRITON:

    @triton.jit
    def _toy_scale_kernel(x_ptr, out_ptr, n, scale, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < n
        x = tl.load(x_ptr + offs, mask=ok)
        tl.store(out_ptr + offs, x.to(tl.float32) * scale, mask=ok)

    @triton.jit
    def _toy_spill_kernel(x_ptr, out_ptr, BLOCK: tl.constexpr):
        # one warp keeps BLOCK fp32 values (BLOCK / 32 per thread, > 255 registers) alive across two reductions
        offs = tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs)
        y = tl.exp(x - tl.max(x, axis=0))
        tl.store(out_ptr + offs, y / tl.sum(y, axis=0))

    @triton.jit
    def _toy_bad_dot_kernel(a_ptr, out_ptr, BLOCK: tl.constexpr):
        # tl.dot needs every dim >= 16: the interpreter runs this, the compiler rejects it
        offs = tl.arange(0, BLOCK)
        a = tl.load(a_ptr + offs[:, None] * BLOCK + offs[None, :])
        tl.store(out_ptr + offs[:, None] * BLOCK + offs[None, :], tl.dot(a, a))


def toy_scale(x, scale: float):
    """Wrapper of the toy kernel, as a kernel module would write one."""
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    n = x.numel()
    _toy_scale_kernel[(triton.cdiv(n, 256),)](x, out, n, scale, BLOCK=256, num_warps=2, num_stages=2)
    return out


def toy_softmax(x):
    out = torch.empty_like(x)
    _toy_spill_kernel[(1,)](x, out, BLOCK=x.numel(), num_warps=1)
    return out


def toy_bad_dot(a):
    out = torch.empty_like(a)
    _toy_bad_dot_kernel[(1,)](a, out, BLOCK=a.shape[0])
    return out


_TOY_SCRIPT = """
import dataclasses, importlib.util, json, sys
import torch
sys.path.insert(0, {bench!r})
import aot_compile as aot

spec = importlib.util.spec_from_file_location("aot_toys", {test!r})
toys = importlib.util.module_from_spec(spec)
spec.loader.exec_module(toys)
rec = aot.LaunchRecorder()
with rec:
    toys.toy_scale(torch.empty(1000, dtype=torch.float16, device="meta"), 0.5)
    toys.toy_softmax(torch.empty(8192, dtype=torch.float32, device="meta"))
    toys.toy_bad_dot(torch.empty(8, 8, dtype=torch.float16, device="meta"))
scale, soft, _ = rec.launches
sig, _ = aot.specialize(scale, aot.ARCHS[90])
out = dict(signature={{k: str(v) for k, v in sig.signature.items()}}, dtype=sig.dtype, config=sig.config,
           grid=scale.grid, kernels=[launch.name for launch in rec.launches])
rows = aot.evaluate([(a, l) for a in aot.ARCHS.values() for l in rec.launches], allowlist=[], workers=1)
out["rows"] = rows
spill = [r for r in rows if r["kernel"] == soft.name]
exact = [aot.AllowedSpill(r["kernel"], r["dtype"], r["arch"], dict(r["config"]), "toy", "none") for r in spill]
out["allowed_exact"] = [aot.judge(dict(r), aot.ARCHS[r["arch"]], exact)["status"] for r in spill]
near = {{
    "arch": lambda e: dataclasses.replace(e, arch=90 if e.arch == 80 else 80),
    "dtype": lambda e: dataclasses.replace(e, dtype="bf16"),
    "num_warps": lambda e: dataclasses.replace(e, config={{**e.config, "num_warps": 2}}),
    "no num_stages": lambda e: dataclasses.replace(e, config={{k: v for k, v in e.config.items()
                                                               if k != "num_stages"}}),
}}
out["allowed_near"] = {{name: [aot.judge(dict(r), aot.ARCHS[r["arch"]], [change(e)])["status"]
                              for r, e in zip(spill, exact)] for name, change in near.items()}}
print("RESULT" + json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def toys(tmp_path_factory) -> dict:
    if not HAVE_TRITON:
        pytest.skip("triton is not installed")
    env = _env()
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton-cache"))
    code = _TOY_SCRIPT.format(bench=str(SCRIPT.parent), test=str(Path(__file__).resolve()))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, f"toy subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT"):])


@needs_triton
def test_recorder_derives_the_signature_of_a_real_call(toys: dict) -> None:
    assert toys["kernels"] == ["_toy_scale_kernel", "_toy_spill_kernel", "_toy_bad_dot_kernel"]
    assert toys["signature"] == {"x_ptr": "*fp16", "out_ptr": "*fp32", "n": "i32", "scale": "fp32",
                                 "BLOCK": "constexpr"}  # fmt: skip
    assert toys["dtype"] == "fp16"
    assert toys["config"] == {"BLOCK": 256, "num_warps": 2, "num_stages": 2}
    assert toys["grid"] == [4, 1, 1]


@needs_triton
def test_small_kernel_compiles_clean(toys: dict) -> None:
    rows = [r for r in toys["rows"] if r["kernel"] == "_toy_scale_kernel"]
    assert sorted(r["arch"] for r in rows) == [80, 90]
    for r in rows:
        assert r["status"] == "ok", r
        assert 0 < r["regs"] <= 64 and r["stack"] == r["local"] == 0 and r["dot"] == "-"
        assert r["threads"] == 64 and r["programs"] == 4 and r["ctas_per_sm"] > 0


@needs_triton
def test_spilling_kernel_fails_unless_allowlisted_exactly(toys: dict) -> None:
    rows = [r for r in toys["rows"] if r["kernel"] == "_toy_spill_kernel"]
    assert sorted(r["arch"] for r in rows) == [80, 90]
    for r in rows:
        assert r["stack"] + r["local"] > 0, r
        assert r["status"] == "FAIL" and any(p.startswith("spills") for p in r["problems"]), r
    assert toys["allowed_exact"] == ["spill (allowed)"] * 2
    # an entry differing in arch, dtype, one config value or a missing config key covers nothing
    for change, statuses in toys["allowed_near"].items():
        assert statuses == ["FAIL"] * 2, change


@needs_triton
def test_compile_error_fails_the_check(toys: dict) -> None:
    rows = [r for r in toys["rows"] if r["kernel"] == "_toy_bad_dot_kernel"]
    assert sorted(r["arch"] for r in rows) == [80, 90]
    for r in rows:
        assert r["status"] == "FAIL" and r["problems"][0].startswith("compile error"), r
