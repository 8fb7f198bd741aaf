"""The GPU suite (``benchmarks/gpu_suite.sh``): its CPU dry run runs every step, and a broken step cannot stop it.

Why: the suite only runs on a lent GPU, minutes at a time; a step that rotted here would waste that time. The dry
run executes the same steps at tiny sizes on the CPU and must report every one of them as passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "benchmarks"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))
import gpu_suite  # noqa: E402 - the script's directory is not a package


@pytest.mark.slow
def test_cpu_dry_run_reports_every_step_passed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "OUT")} | {"PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(BENCH_DIR / "gpu_suite.sh"), "--cpu-dry-run", "--out", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=1500)  # fmt: skip
    doc = json.loads((out / "gpu_suite.json").read_text())
    records = {r["name"]: r for r in doc["steps"]}
    want = [s.name for s in gpu_suite.steps(dry=True)]
    assert [r["name"] for r in doc["steps"]] == want
    bad = {n: (r["status"], r.get("note"), r.get("log_tail", "")[-1500:]) for n, r in records.items()
           if r["status"] != "passed"}  # fmt: skip
    assert not bad, bad
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert doc["mode"] == "cpu-dry-run"
    md = (out / "gpu_suite.md").read_text()
    assert all(f"| {name} | passed |" in md for name in want)
    for name, script, *_ in gpu_suite.BENCHMARKS:  # each benchmark wrote its checked rows
        rows = records[name]["result"]["results"]
        assert rows and all(r["outputs_match"] for r in rows), name
        assert records[name]["script"] == script
    for name in ("tests_gpu_marked", "tests_kernels"):
        r = records[name]["result"]
        assert r["failures"] == 0 and r["errors"] == 0 and r["tests"] > 0, (name, r)
    assert records["tests_kernels"]["result"]["skipped"] < records["tests_kernels"]["result"]["tests"]
    toy = records["toy_grpo"]["result"]
    assert [s["step"] for s in toy["steps"]] == [0, 1, 2] and toy["final_saved"]
    assert records["probe"]["result"]["copy_GBps"] > 0 and records["probe"]["result"]["matmul_TFLOPs"] > 0
    with tarfile.open(out / "gpu_suite_logs.tar.gz") as tar:
        logs = {Path(m.name).name for m in tar.getmembers() if m.isfile()}
    assert logs == {f"{name}.log" for name in want}


def _ctx(tmp_path: Path) -> gpu_suite.Context:
    return gpu_suite.Context(dry=True, work=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_missing_benchmark_fails_clearly_and_the_suite_goes_on(tmp_path: Path) -> None:
    steps = [gpu_suite.Step("gone", "bench", 30, "bench_renamed_away.py", ("--quick",)),
             gpu_suite.Step("next", "cmd", 30, args=(sys.executable, "-c", "print('still running')"))]  # fmt: skip
    gone, nxt = gpu_suite.run_suite(steps, _ctx(tmp_path), budget_s=120)
    assert gone["status"] == "failed" and "benchmarks/bench_renamed_away.py does not exist" in gone["note"]
    assert nxt["status"] == "passed" and nxt["returncode"] == 0
    assert "still running" in (tmp_path / "logs" / "next.log").read_text()


def test_failing_and_overrunning_steps_are_recorded(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    crash = gpu_suite.run_step(gpu_suite.Step("crash", "cmd", 30, args=(sys.executable, "-c", "raise SystemExit(3)")),
                               ctx, timeout_s=30)  # fmt: skip
    assert crash["status"] == "failed" and crash["returncode"] == 3 and crash["note"] == "exit code 3"
    t0 = time.perf_counter()
    sleeper = (sys.executable, "-c", "import time; time.sleep(60)")
    slow = gpu_suite.run_step(gpu_suite.Step("slow", "cmd", 2, args=sleeper), ctx, timeout_s=2)
    assert slow["status"] == "timeout" and time.perf_counter() - t0 < 30
    late = gpu_suite.run_suite([gpu_suite.Step("late", "cmd", 30, args=(sys.executable, "-c", "0"))], ctx, budget_s=5)
    assert late[0]["status"] == "skipped"
    assert "late" in gpu_suite._gpu_report.markdown({"mode": "gpu", "date": "d", "command": "c", "budget_s": 5,
                                                      "total_s": 0.0, "steps": late})  # fmt: skip
