"""Fault injection: a toy training run is SIGKILLed again and again, then resumed to completion.

The final metrics (minus timings) and the final weights must equal those of a run that was never
interrupted. Kills happen at chosen dangerous points (half-written checkpoint file, complete checkpoint
directory not yet renamed, half-written metrics line) and at random moments chosen by the parent.

Cost control: importing torch + transformers takes seconds, so one driver process imports once and
then forks one child per run; the parent SIGKILLs children (or children SIGKILL themselves at a hook).
All runs are forks of the same parent with one thread, so the uninterrupted run is bit-comparable.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zerosearch.runtime.checkpoint import list_checkpoints, load_checkpoint
from zerosearch.runtime.metrics import read_metrics

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

TIMING_KEYS = {"rollout_s", "step_s"}
STEPS = 4

DRIVER = r'''
import json, os, random, signal, sys, time, traceback

import torch

torch.set_num_threads(1)

from transformers import Qwen2ForCausalLM

from zerosearch.runtime import checkpoint as ckpt_mod
from zerosearch.runtime import metrics as metrics_mod
from zerosearch.build import build_trainer
from zerosearch.config import RunConfig, apply_overrides
from zerosearch.search import BM25Search
from zerosearch.toy.assets import ensure_toy_assets


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def install_kill(kill):
    """Make this process SIGKILL itself at one dangerous point."""
    at, step = kill["at"], kill["step"]
    if at == "state_write":  # half of state.pt written to its temp file inside the temp directory
        def torn_save(obj, path):
            import io
            from pathlib import Path
            buf = io.BytesIO()
            torch.save(obj, buf)
            path = Path(path)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            with open(tmp, "wb") as f:
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()
                os.fsync(f.fileno())
            die()
        real_save = ckpt_mod.atomic_torch_save
        ckpt_mod.atomic_torch_save = lambda obj, path: (
            torn_save(obj, path) if obj["step"] == step else real_save(obj, path))
    elif at == "before_rename":  # the temp directory is complete, the rename has not happened
        real_save = ckpt_mod.atomic_torch_save
        def save_then_die(obj, path):
            real_save(obj, path)
            if obj["step"] == step:
                die()
        ckpt_mod.atomic_torch_save = save_then_die
    elif at == "metrics_line":  # half a JSON line, no newline
        real_log = metrics_mod.MetricsLogger.log
        def torn_log(self, row):
            if row.get("step") == step:
                line = json.dumps({k: metrics_mod._plain(v) for k, v in row.items()})
                with open(self.path, "a") as f:
                    f.write(line[: len(line) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                die()
            real_log(self, row)
        metrics_mod.MetricsLogger.log = torn_log
    else:
        raise ValueError(at)


def train(cache, out, kill):
    assets = ensure_toy_assets(cache, seed=0)
    world, tok = assets.load_world(), assets.load_tokenizer()
    bm25 = BM25Search.from_jsonl(assets.corpus_path, top_k=2)
    cfg = RunConfig(out_dir=out)
    apply_overrides(cfg, {"rollout.max_turns": 1, "rollout.max_new_tokens": 8, "rollout.n_samples": 2,
                          "trainer.batch_questions": 2, "trainer.steps": STEPS, "trainer.checkpoint_every": 1,
                          "trainer.keep_checkpoints": 2, "trainer.lr": 1e-3, "trainer.warmup_steps": 1})
    policy = Qwen2ForCausalLM.from_pretrained(assets.policy_dir)
    trainer = build_trainer(cfg, policy, tok, world.train[:6], search=bm25)
    if kill:
        install_kill(kill)
    trainer.resume()
    open(os.path.join(out, "started"), "w").close()
    trainer.fit(progress=False)


def main():
    cache, plan = sys.argv[1], json.loads(sys.argv[2])
    ensure_toy_assets(cache, seed=0)  # built once, before any fork
    rng = random.Random(plan["seed"])
    log, full_s = [], None
    for run in plan["runs"]:
        os.makedirs(run["out"], exist_ok=True)
        started = os.path.join(run["out"], "started")
        if os.path.exists(started):
            os.remove(started)
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                train(cache, run["out"], run.get("kill"))
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        killed_by_parent, status = None, None

        def reaped():
            nonlocal status
            if status is None:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = st
            return status is not None

        if run.get("random_kill"):
            while not os.path.exists(started) and not reaped():
                time.sleep(0.01)
            delay = rng.uniform(0.05, 0.9) * full_s
            deadline = time.perf_counter() + delay
            while time.perf_counter() < deadline and not reaped():
                time.sleep(0.005)
            if not reaped():
                killed_by_parent = round(delay, 3)
                os.kill(pid, signal.SIGKILL)
        if status is None:
            _, status = os.waitpid(pid, 0)
        if full_s is None:
            full_s = time.perf_counter() - t0
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        log.append({"name": run["name"], "signal": sig, "exit": code, "parent_kill_after_s": killed_by_parent})
    print("RESULT " + json.dumps(log))


STEPS = int(os.environ["FAULT_STEPS"])
main()
'''


def _policy_of(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(ckpt_dir)["policy"]


def test_sigkilled_training_resumes_to_identical_result(tmp_path):
    seed = random.randrange(1 << 30)
    full, crash = tmp_path / "full", tmp_path / "crash"
    runs = [
        {"name": "uninterrupted", "out": str(full)},
        {"name": "torn state.pt (first checkpoint)", "out": str(crash), "kill": {"at": "state_write", "step": 1}},
        {"name": "temp dir complete, not renamed", "out": str(crash), "kill": {"at": "before_rename", "step": 2}},
        {"name": "torn metrics line", "out": str(crash), "kill": {"at": "metrics_line", "step": 2}},
        {"name": "random kill A", "out": str(crash), "random_kill": True},
        {"name": "random kill B", "out": str(crash), "random_kill": True},
        {"name": "to completion", "out": str(crash)},
    ]
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "FAULT_STEPS": str(STEPS)}
    proc = subprocess.run(
        [sys.executable, str(driver), str(tmp_path / "cache"), json.dumps({"seed": seed, "runs": runs})],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )
    result_line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and result_line, f"seed={seed}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    log = json.loads(result_line[0][len("RESULT "):])
    context = f"seed={seed} runs={log}\nstderr tail:\n{proc.stderr[-3000:]}"

    by_name = {r["name"]: r for r in log}
    assert by_name["uninterrupted"]["exit"] == 0 and by_name["to completion"]["exit"] == 0, context
    for name in ("torn state.pt (first checkpoint)", "temp dir complete, not renamed", "torn metrics line"):
        assert by_name[name]["signal"] == 9, context  # the injected kill really happened
    assert all(r["exit"] in (0, None) for r in log), context  # no run failed with an exception

    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]  # noqa: E731
    want = strip(read_metrics(full / "metrics.jsonl"))
    got = strip(read_metrics(crash / "metrics.jsonl"))
    assert [r["step"] for r in want] == list(range(STEPS)), context
    assert got == want, context
    # every line of the healed file parses: no torn line survived in the middle
    lines = (crash / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == STEPS and all(json.loads(ln) for ln in lines), context

    ck_full, ck_crash = list_checkpoints(full / "checkpoints"), list_checkpoints(crash / "checkpoints")
    assert [p.name for p in ck_crash] == [p.name for p in ck_full] == [f"step-{s:08d}" for s in (STEPS - 1, STEPS)]
    leftovers = [p.name for p in (crash / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == [], (leftovers, context)
    a, b = _policy_of(ck_full[-1]), _policy_of(ck_crash[-1])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), (k, context)
    # and the weights really moved: equality is not the trivial "nothing trained" case
    init = load_checkpoint(ck_full[0])["policy"]
    assert any(not torch.equal(init[k], a[k]) for k in a)
