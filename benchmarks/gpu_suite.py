"""One prepared command for a bare H100/H200: build, CUDA tests, benchmarks at real sizes, toy GRPO → one report.

Why one command: a lent GPU comes for minutes (15 in all, its start included), bare and offline, so every check
is prepared here and runs in one call of at most 10 minutes. Steps (the table :data:`BENCHMARKS` and
:func:`steps`), in order of importance:

1. ``probe``: device, versions, measured copy bandwidth and bf16 matmul rate (the ceilings);
2. ``wheels``: installs the wheels carried in ``.wheels/`` (bm25s, liger-kernel, ...; see README "GPU checks")
   into a private folder put on ``PYTHONPATH`` of the later steps;
3. ``build``: the CUDA extension ``zerosearch._C``, in place, for this device's architecture;
4. ``tests_gpu_marked`` (every ``@pytest.mark.gpu`` test) and ``tests_kernels`` (the kernel test files with
   ``--kernel-device cuda``: Triton compiled for the GPU, not interpreted; CUDA ``_C`` ops);
5. every benchmark of :data:`BENCHMARKS` at Qwen2.5-3B/7B head and attention sizes in bf16, with the peers the
   scripts compare against, and engine vs HF ``generate`` with its roofline line;
6. ``toy_grpo``: three GRPO steps of the toy world on CUDA (bf16 compute).

Each step is a subprocess with a time budget, clipped to what is left of ``--budget`` (540 s); a failure, a
crash or a timeout is recorded with the end of its log and the suite goes on. Output under ``--out`` (default
``$OUT``, else ``runs/gpu_suite``): ``gpu_suite.md``, ``gpu_suite.json`` and ``gpu_suite_logs.tar.gz``, three
files because the device tool brings back few.

``--cpu-dry-run`` runs the same steps at tiny sizes on the CPU (kernel tests interpreted, one-layer models, the
build only checked, not redone); CI runs it (``tests/test_gpu_suite.py``) so the suite cannot rot.

    benchmarks/gpu_suite.sh [--cpu-dry-run] [--out DIR] [--budget S] [--only STEP ...] [--list]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
import _gpu_report  # noqa: E402 - the script's directory is not a package

QWEN_3B_HEAD = ("--n", "16384", "--h", "2048", "--v", "151936")
QWEN_7B_HEAD = ("--n", "16384", "--h", "3584", "--v", "152064")
# the dry run keeps each preset's code path but shrinks it to one narrow layer
GEN_DRY = ("--layers", "1", "--vocab", "512", "--hidden", "128", "--intermediate", "256", "--heads", "4", "--quick",
           "--repeats", "1")  # fmt: skip
TINY_3B = ("--model", "qwen2.5-3b", *GEN_DRY)
GEN_3B = ("--model", "qwen2.5-3b", "--prefix", "1536", "--new", "64", "--repeats", "1", "--no-ragged")

# One row per benchmark run: (step, script in benchmarks/, GPU arguments, CPU dry-run arguments, budget in s).
# The suite adds --device and --out. Edit this table when a benchmark is added, renamed or split.
BENCHMARKS: list[tuple[str, str, tuple[str, ...], tuple[str, ...], int]] = [
    ("masked_pg_loss_3b", "bench_masked_pg_loss.py", QWEN_3B_HEAD, ("--quick",), 45),
    ("masked_pg_loss_7b", "bench_masked_pg_loss.py", QWEN_7B_HEAD, ("--quick",), 45),
    ("token_logprobs_7b", "bench_token_logprobs.py", QWEN_7B_HEAD, ("--quick",), 40),
    ("decode_attention", "bench_decode_attention.py", (), ("--quick", "--repeats", "2"), 45),
    ("sampling", "bench_sampling.py", (), ("--quick", "--repeats", "2"), 45),
    ("generate_qwen2_0.5b_b64", "bench_generate.py",
     ("--model", "qwen2-0.5b", "--batch", "64", "--prefix", "1536", "--new", "64", "--repeats", "1"),
     ("--model", "qwen2-0.5b", *GEN_DRY), 60),
    ("generate_qwen2.5_3b_b64", "bench_generate.py", (*GEN_3B, "--batch", "64"), (*TINY_3B, "--no-ragged"), 70),
    ("generate_qwen2.5_3b_b256", "bench_generate.py", (*GEN_3B, "--batch", "256"), (*TINY_3B, "--no-ragged"), 100),
    ("info_span_mask", "bench_info_span_mask.py", (), ("--quick", "--repeats", "2"), 20),
    ("stop_match", "bench_stop_match.py", (), ("--quick", "--repeats", "2"), 20),
]  # fmt: skip
# Kernel test files run whole with --kernel-device cuda (their gpu-marked tests run in tests_gpu_marked).
KERNEL_TESTS = ("test_token_logprobs.py", "test_masked_pg_loss.py", "test_decode_attention.py",
                "test_attn_merge.py", "test_sampling.py", "test_info_span_mask.py", "test_stop_match.py",
                "test_engine_generate.py")  # fmt: skip
DRY_KERNEL_TESTS = ("test_attn_merge.py",)  # the interpreter on CI's two cores is slow: one file
WHEELS_DIR = REPO_ROOT / ".wheels"
DRY_STEP_BUDGET_S = 300  # a loaded 2-core CI machine: a generous per-step cap, the dry run is not timed
TAIL_LINES = 60


@dataclasses.dataclass(frozen=True)
class Step:
    """One unit of the suite; ``args`` are the arguments for this mode (GPU or dry run)."""

    name: str
    kind: str  # probe | wheels | build | pytest | bench | toy | cmd
    budget_s: int
    script: str = ""
    args: tuple[str, ...] = ()


@dataclasses.dataclass
class Context:
    dry: bool
    work: Path
    env: dict[str, str]

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"


def steps(dry: bool) -> list[Step]:
    """Every step of the suite in run order, with the arguments of the mode."""
    gpu_marked = tuple(sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "tests").glob("test_*.py")
                              if "mark.gpu" in p.read_text()))  # fmt: skip
    gpu_marked = gpu_marked[:1] if dry else gpu_marked  # the dry run skips them all: collecting one file shows it
    kernel_files = tuple(f"tests/{f}" for f in (DRY_KERNEL_TESTS if dry else KERNEL_TESTS))
    out = [Step("probe", "probe", 30), Step("wheels", "wheels", 60), Step("build", "build", 200),
           Step("tests_gpu_marked", "pytest", 60, args=("-m", "gpu", *gpu_marked)),
           Step("tests_kernels", "pytest", 150, args=("-m", "not gpu", *kernel_files))]  # fmt: skip
    for name, script, gpu_args, dry_args, budget in BENCHMARKS:
        out.append(Step(name, "bench", budget, script, dry_args if dry else gpu_args))
        if name == "generate_qwen2.5_3b_b256":  # the toy run goes before the small microbenchmarks
            out.append(Step("toy_grpo", "toy", 90))
    return out


def _pytest_extra(ctx: Context) -> list[str]:
    extra = ["--kernel-device", ctx.device, "-q", "-p", "no:cacheprovider"]
    if not ctx.dry and importlib.util.find_spec("xdist") is not None:
        extra += ["-n", str(min(8, os.cpu_count() or 1))]
    return extra


def _build_argv(ctx: Context) -> list[str]:
    check = ("import torch, zerosearch._C, zerosearch.kernels; ops = torch.ops.zerosearch; "
             "assert hasattr(ops, 'stop_match') and hasattr(ops, 'info_span_mask'); "
             "print('zerosearch._C', zerosearch._C.__file__, 'torch CUDA', torch.version.cuda)")  # fmt: skip
    if ctx.dry:  # a CPU build takes minutes on CI's cores: check the one that is installed
        return [sys.executable, "-c", check]
    link = REPO_ROOT / "zerosearch" / "kernels"
    if not link.exists():  # a bare checkout: the package maps kernels/ to zerosearch.kernels only when installed
        link.symlink_to(Path("..") / "kernels")
    build = shlex.join([sys.executable, "setup.py", "build_ext", "--inplace"])
    return ["bash", "-c", f"set -e; {build}; {shlex.join([sys.executable, '-c', check])}"]


def _wheels_argv(ctx: Context) -> list[str]:
    wheels = sorted(WHEELS_DIR.glob("*.whl"))
    check = "import bm25s; print('bm25s', bm25s.__version__ if hasattr(bm25s, '__version__') else 'ok')"
    if ctx.dry or not wheels:  # nothing carried (or a dry run): say what there is and check the imports needed
        names = " ".join(w.name for w in wheels) or "none"
        return [sys.executable, "-c", f"print('wheels in .wheels/: {names}'); {check}"]
    site = ctx.work / "site"
    ctx.env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(site)])
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--upgrade", "--target", str(site), *map(str, wheels)]  # fmt: skip
    return ["bash", "-c", f"set -e; {shlex.join(pip)}; PYTHONPATH={shlex.quote(ctx.env['PYTHONPATH'])} "
            f"{shlex.join([sys.executable, '-c', check])}"]  # fmt: skip


def argv_of(step: Step, ctx: Context) -> list[str]:
    """The command line of a step; raises FileNotFoundError for a benchmark script that does not exist."""
    me = [sys.executable, str(Path(__file__).resolve())]
    result = ctx.work / f"{step.name}.json"
    if step.kind == "bench":
        script = BENCH_DIR / step.script
        if not script.is_file():
            raise FileNotFoundError(f"benchmarks/{step.script} does not exist (fix the BENCHMARKS table)")
        return [sys.executable, str(script), "--device", ctx.device, "--out", str(result), *step.args]
    if step.kind == "pytest":
        return [sys.executable, "-m", "pytest", *_pytest_extra(ctx), f"--junitxml={ctx.work / step.name}.xml",
                *step.args]  # fmt: skip
    if step.kind in ("probe", "toy"):
        return [*me, "--task", step.kind, "--device", ctx.device, "--work", str(ctx.work / step.name),
                "--result", str(result), *(["--cpu-dry-run"] if ctx.dry else [])]  # fmt: skip
    if step.kind == "build":
        return _build_argv(ctx)
    if step.kind == "wheels":
        return _wheels_argv(ctx)
    if step.kind == "cmd":
        return list(step.args)
    raise ValueError(f"unknown step kind {step.kind!r}")


def _junit(path: Path) -> dict[str, Any]:
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]  # fmt: skip
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} | {"failed": failed}


def _result(step: Step, ctx: Context) -> Any:
    if step.kind == "pytest":
        path = ctx.work / f"{step.name}.xml"
        return _junit(path) if path.is_file() else None
    path = ctx.work / f"{step.name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_step(step: Step, ctx: Context, timeout_s: float) -> dict[str, Any]:
    """Run one step in its own process group; never raises. Returns the step's record."""
    record = {"name": step.name, "kind": step.kind, "script": step.script, "args": list(step.args),
              "budget_s": step.budget_s, "seconds": 0.0, "returncode": None}  # fmt: skip
    log = ctx.work / "logs" / f"{step.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        argv = argv_of(step, ctx)
    except (FileNotFoundError, ValueError, OSError) as e:
        log.write_text(f"{e}\n")
        return record | {"status": "failed", "note": str(e), "log_tail": str(e)}
    record["argv"] = argv
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write(f"$ {shlex.join(argv)}\n")
        f.flush()
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=ctx.env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            rc = proc.wait(timeout=max(1.0, timeout_s))
            status, note = ("passed", "") if rc == 0 else ("failed", f"exit code {rc}")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the step's whole process group: workers and children too
            rc = proc.wait()
            status, note = "timeout", f"killed after {timeout_s:.0f} s"
    record.update(seconds=time.perf_counter() - t0, returncode=rc, status=status, note=note)
    try:
        record["result"] = _result(step, ctx)
    except (OSError, ValueError, ET.ParseError) as e:
        record["result"] = None
        record["note"] = f"{note}; unreadable result: {e}".strip("; ")
    if status == "passed" and step.kind == "bench" and not record["result"]:
        record.update(status="failed", note="the benchmark wrote no JSON")
    if record["status"] != "passed":
        record["log_tail"] = "\n".join(log.read_text(errors="replace").splitlines()[-TAIL_LINES:])
    return record


def run_suite(selected: list[Step], ctx: Context, budget_s: float) -> list[dict[str, Any]]:
    """Run the steps in order within ``budget_s``; each gets min(its budget, what is left)."""
    start, records = time.perf_counter(), []
    for step in selected:
        left = budget_s - (time.perf_counter() - start)
        cap = DRY_STEP_BUDGET_S if ctx.dry else step.budget_s
        if left < 10:
            records.append({"name": step.name, "kind": step.kind, "script": step.script, "args": list(step.args),
                            "budget_s": cap, "seconds": 0.0, "status": "skipped",
                            "note": "the suite's time budget is spent"})  # fmt: skip
        else:
            records.append(run_step(dataclasses.replace(step, budget_s=cap), ctx, min(cap, left - 5)))
        r = records[-1]
        print(f"[gpu_suite] {r['name']:<28} {r['status']:<8} {r['seconds']:7.1f} s  {r.get('note', '')}", flush=True)
    return records


def _child_env(dry: bool) -> dict[str, str]:
    """The steps' environment: the checkout first on PYTHONPATH, Triton compiled (the dry run's pytest sets the
    interpreter itself), and on a GPU the extension built for this device's architecture only (faster)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    if not dry:
        import torch

        env.setdefault("TORCH_CUDA_ARCH_LIST", "{}.{}".format(*torch.cuda.get_device_capability()))
        env.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
        env["ZEROSEARCH_CUDA"] = "1"
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-dry-run", action="store_true", help="the same steps at tiny sizes on the CPU")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO_ROOT / "runs" / "gpu_suite"))
    p.add_argument("--budget", type=float, help="seconds for the whole suite (default 540; dry run 1800)")
    p.add_argument("--only", nargs="+", metavar="STEP", help="run these steps only (see --list)")
    p.add_argument("--list", action="store_true", help="print the steps and exit")
    p.add_argument("--task", choices=["probe", "toy"], help=argparse.SUPPRESS)  # a step's own process
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.task:
        import _gpu_tasks

        args.work.mkdir(parents=True, exist_ok=True)
        return _gpu_tasks.main(args.task, args.device, args.work, args.result, tiny=args.cpu_dry_run)
    dry = args.cpu_dry_run
    args.budget = args.budget or (1800.0 if dry else 540.0)  # a loaded CI machine must not skip dry-run steps
    selected = steps(dry)
    if args.list:
        for s in selected:
            print(f"{s.name:<28} {s.kind:<7} {s.budget_s:>4} s  {s.script} {' '.join(s.args)}")
        return 0
    if args.only:
        unknown = sorted(set(args.only) - {s.name for s in selected})
        if unknown:
            p.error(f"unknown step(s) {', '.join(unknown)}; --list shows the steps")
        selected = [s for s in selected if s.name in args.only]
    if not dry:
        import torch

        if not torch.cuda.is_available():
            p.error("no CUDA device here: use --cpu-dry-run on a machine without a GPU")
    work = Path(tempfile.mkdtemp(prefix="gpu_suite-"))
    ctx = Context(dry=dry, work=work, env=_child_env(dry))
    t0 = time.perf_counter()
    records = run_suite(selected, ctx, args.budget)
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    doc = {"mode": "cpu-dry-run" if dry else "gpu", "date": date,
           "command": shlex.join(["benchmarks/gpu_suite.sh", *(argv if argv is not None else sys.argv[1:])]),
           "budget_s": args.budget, "total_s": time.perf_counter() - t0, "steps": records}  # fmt: skip
    md, js = _gpu_report.write(doc, args.out)
    logs = args.out / "gpu_suite_logs.tar.gz"
    with tarfile.open(logs, "w:gz") as tar:
        tar.add(work / "logs", arcname="gpu_suite_logs")
    shutil.rmtree(work, ignore_errors=True)
    failed = [r["name"] for r in records if r["status"] != "passed"]
    print(f"\n[gpu_suite] {len(records) - len(failed)}/{len(records)} steps passed"
          + (f"; not passed: {', '.join(failed)}" if failed else "") + f"\nwrote {md}, {js}, {logs}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
