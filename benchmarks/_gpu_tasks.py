"""Two steps of the GPU suite that are not a benchmark script or a pytest run: the machine probe and the toy GRPO run.

Each runs in its own process (``gpu_suite.py --task probe|toy``), like every step, so a crash is recorded as that
step's failure and the suite goes on.

* ``probe``: what the numbers were taken on (device, SMs, memory, driver, versions) and the two ceilings every
  benchmark is read against: device-to-device copy bandwidth (bytes read + written) and the dense matmul rate
  on random data, measured once at the start.
* ``toy``: three GRPO steps of ``zerosearch train`` on the toy world (its tiny Qwen2 policy, the toy simulator
  as the search engine, so the engine serves both), with the default ``model.dtype: auto`` — on CUDA fp32
  master weights and bf16 compute. Summarised from ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def _versions() -> dict[str, Any]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for dist in ("triton", "transformers", "bm25s", "liger-kernel"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def _timed(fn, device: torch.device, reps: int) -> float:
    """Seconds per call: CUDA events on a GPU, a synchronised host clock elsewhere."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def probe(device_name: str, tiny: bool) -> dict[str, Any]:
    """Device facts and the measured copy bandwidth / matmul rate (``tiny``: small sizes, for the dry run)."""
    device = torch.device(device_name)
    info: dict[str, Any] = {"device": device.type, "versions": _versions(), "platform": platform.platform(),
                            "cpu_count": os.cpu_count(),
                            "triton_interpret": os.environ.get("TRITON_INTERPRET")}  # fmt: skip
    if device.type == "cuda":
        prop = torch.cuda.get_device_properties(device)
        info.update(name=prop.name, capability=f"{prop.major}.{prop.minor}", sms=prop.multi_processor_count,
                    memory_gib=prop.total_memory / 2**30, l2_mib=getattr(prop, "L2_cache_size", 0) / 2**20)  # fmt: skip
        if shutil.which("nvidia-smi"):
            query = "name,driver_version,clocks.sm,clocks.mem,power.draw,temperature.gpu,memory.used"
            smi = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"], capture_output=True,
                                 text=True, timeout=30)  # fmt: skip
            info["nvidia_smi"] = smi.stdout.strip()
    else:
        info["name"] = platform.processor() or "cpu"
    n = (16 if tiny else 1024) * 2**20
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    info["copy_bytes"] = n
    info["copy_GBps"] = 2 * n / _timed(lambda: dst.copy_(src), device, 5 if tiny else 20) / 1e9
    m = 256 if tiny else 8192
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    a, b = (torch.randn(m, m, device=device).to(dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    info["matmul"] = f"{m}x{m}x{m} {str(dtype).removeprefix('torch.')} random"
    info["matmul_TFLOPs"] = 2 * m**3 / _timed(lambda: a @ b, device, 3 if tiny else 10) / 1e12
    return info


def toy(device_name: str, work: Path, tiny: bool) -> dict[str, Any]:
    """Three GRPO steps of ``zerosearch train`` on the toy world; returns the per-step metrics and the dtypes."""
    from zerosearch.hf.loading import resolve_dtypes
    from zerosearch.toy.assets import ensure_toy_assets

    t0 = time.perf_counter()
    assets = ensure_toy_assets(work / "cache", seed=0, n_entities=24)
    assets_s = time.perf_counter() - t0
    run = work / "run"
    if tiny:
        sizes = ["rollout.n_samples=2", "trainer.batch_questions=2", "rollout.max_turns=1", "rollout.max_new_tokens=4",
                 "rollout.max_context=256", "search.max_new_tokens=4"]  # fmt: skip
    else:  # the toy config's rollout sizes: 16 questions x 4 samples, 3 turns
        sizes = ["rollout.n_samples=4", "trainer.batch_questions=16", "rollout.max_turns=3",
                 "rollout.max_new_tokens=40", "rollout.max_context=768", "search.max_new_tokens=64"]  # fmt: skip
    overrides = [f"out_dir={run}", f"device={device_name}", f"model.policy_path={assets.policy_dir}",
                 f"model.simulator_path={assets.simulator_dir}", f"model.tokenizer_path={assets.tokenizer_dir}",
                 f"data.train_path={assets.train_path}", f"data.corpus_path={assets.corpus_path}",
                 "search.backend=simulator", "search.top_k=2", "trainer.algo=grpo", "trainer.steps=3",
                 "trainer.mini_batches=1", "trainer.checkpoint_every=3", *sizes]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "zerosearch.cli", "train", "--quiet", *overrides], cwd=REPO_ROOT,
                          env=env)  # fmt: skip
    train_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"zerosearch train exited with {proc.returncode}")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    if [r["step"] for r in rows] != [0, 1, 2]:
        raise RuntimeError(f"expected metrics for steps 0, 1, 2, got {[r['step'] for r in rows]}")
    weights, compute = resolve_dtypes("auto", device_name)
    keep = ("step", "step_s", "rollout_s", "loss", "pg_loss", "kl", "entropy", "reward", "grad_norm", "n_tokens")
    return {"device": device_name, "assets_s": assets_s, "train_s": train_s,
            "weights_dtype": str(weights).removeprefix("torch."), "compute_dtype": str(compute).removeprefix("torch."),
            "steps": [{k: r.get(k) for k in keep} for r in rows],
            "final_saved": (run / "final" / "config.json").is_file()}  # fmt: skip


def main(task: str, device_name: str, work: Path, out: Path, tiny: bool) -> int:
    result = probe(device_name, tiny) if task == "probe" else toy(device_name, work, tiny)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))
    return 0
