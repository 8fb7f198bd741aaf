"""Smoke tests of the microbenchmarks: each main() runs in-process on tiny shapes and writes its JSON.

Why: benchmarks are only run by hand, so a refactor of the code they call would otherwise break them
silently. Each benchmark checks its candidate against its reference before timing (``compare`` raises on a
mismatch), and every row must carry the time and peak-memory ratios.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
RATIO_FIELDS = ("candidate_s", "reference_s", "time_ratio", "speedup", "candidate_peak_mb", "reference_peak_mb",
                "mem_ratio")  # fmt: skip

CASES = {
    "masked_pg_loss": ("bench_masked_pg_loss", ["--quick"]),
    "masked_pg_loss single call": ("bench_masked_pg_loss", ["--quick", "--single-call", "--threads", "1"]),
    "token_logprobs": ("bench_token_logprobs", ["--quick"]),
    "info_span_mask": ("bench_info_span_mask", ["--quick", "--repeats", "2"]),
    "decode_attention": ("bench_decode_attention", ["--quick", "--repeats", "2"]),
    "stop_match": ("bench_stop_match", ["--quick", "--repeats", "2"]),
    "sampling": ("bench_sampling", ["--quick", "--repeats", "2"]),
    "generate": ("bench_generate", ["--quick", "--repeats", "1"]),
}


def _bench(module: str):
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module(module)


@pytest.fixture(autouse=True)
def _restore_threads():
    """Benchmarks set the intra-op thread count for their timing; later tests must not inherit it."""
    import torch

    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("case", list(CASES))
def test_benchmark_writes_ratios(case: str, tmp_path: Path) -> None:
    module, flags = CASES[case]
    if module in ("bench_info_span_mask", "bench_stop_match"):
        from zerosearch.ops.library import has_compiled_op

        if not has_compiled_op(module.removeprefix("bench_")):
            pytest.skip("zerosearch._C is not built")
    out = tmp_path / f"{case}.json"
    rows = _bench(module).main(["--device", "cpu", "--out", str(out), *flags])
    doc = json.loads(out.read_text())
    assert doc["results"] == json.loads(json.dumps(rows, default=str))
    assert doc["environment"]["device"] == "cpu" and doc["environment"]["torch"]
    assert rows
    for row in doc["results"]:
        assert row["outputs_match"] is True
        # Peak memory under the Triton interpreter is Python's, not the kernel's: such rows time only.
        for key in RATIO_FIELDS[:4] if row.get("interpreter") else RATIO_FIELDS:
            assert isinstance(row[key], float) and row[key] >= 0, (key, row[key])
        assert row["candidate_s"] > 0 and row["reference_s"] > 0
    if module == "bench_masked_pg_loss" and doc["meta"]["liger"]:  # the peer was checked, timed and measured
        for row in doc["results"]:
            for key in ("liger_s", "time_ratio_vs_liger", "liger_peak_mb", "mem_ratio_vs_liger"):
                assert isinstance(row[key], float) and row[key] > 0, (key, row[key])
            assert row["liger_grad_weight_rel_diff"] < 1e-4


@pytest.mark.slow
def test_simulator_serve_benchmark_smoke(tmp_path: Path) -> None:
    """Both real server processes come up, every query is answered, and the cost follows the stated formula."""
    out = tmp_path / "serve.json"
    rows = _bench("bench_simulator_serve").main(["--quick", "--out", str(out), "--cache", str(tmp_path / "cache")])
    doc = json.loads(out.read_text())
    assert doc["results"] == json.loads(json.dumps(rows))
    assert sorted((r["side"], r["concurrency"]) for r in rows) == [("engine", 1), ("engine", 2), ("hf", 1), ("hf", 2)]
    meta = doc["meta"]
    assert meta["greedy_agreement"] >= 0.75 and (meta["paper_cost"], meta["google_cost"]) == (70.8, 586.7)
    for r in rows:
        assert r["errors"] == 0 and r["queries"] == r["concurrency"] and r["p99_ms"] >= r["p50_ms"] > 0
        assert r["cost_per_64k"] == pytest.approx(64000 / r["queries_per_s"] / 3600 * meta["gpu_dollars_per_hour"])
        assert 0 < r["doc_tokens_per_s"] <= 4 * r["queries_per_s"] + 1e-9  # at most 4 new tokens per query
    assert all(r["speedup_vs_hf"] > 0 for r in rows if r["side"] == "engine")


def test_harness_compare_rejects_wrong_candidate() -> None:
    import torch

    harness = _bench("_harness")
    x = torch.arange(4.0)

    def check(got, want):
        assert torch.equal(got, want)
        return {}

    with pytest.raises(AssertionError, match="disagree"):
        harness.compare("wrong", lambda: x + 1, lambda: x, device="cpu", repeats=1, check=check)


def test_every_kernel_has_a_benchmark() -> None:
    """Project rule: each kernel module ``kernels/<name>.py`` is named by some benchmark script (private
    helpers such as ``_triton.py`` hold no kernel)."""
    kernels = [p.stem for p in (BENCH_DIR.parent / "kernels").glob("*.py") if not p.stem.startswith("_")]
    text = "\n".join(p.read_text() for p in BENCH_DIR.glob("*.py"))
    assert [k for k in kernels if f"{k}.py" not in text] == []
