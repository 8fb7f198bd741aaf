"""The GPU suite's report: one markdown file for people and one JSON file with everything, from the step records.

Benchmark rows are shown with the harness's standard columns (candidate / reference time, speed-up, memory
ratio) plus any numeric field whose name says it is a peer comparison, a rate or a roofline fraction, so a
benchmark that adds such fields (a Liger or eager peer, TFLOP/s, tokens/s) shows them without a change here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SIZE_KEYS = ("shape", "n", "h", "v", "batch", "vocab", "prefix", "new", "setting", "dtype", "op")
EXTRA_KEY = re.compile(r"liger|eager|peer|tflop|fraction|tokens_per_s|gbps|passes|agreement", re.IGNORECASE)
MAX_EXTRAS = 6


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _ms(v: Any) -> str:
    return f"{v * 1e3:.3f}" if isinstance(v, (int, float)) else ""


def _bench_table(rows: list[dict]) -> list[str]:
    extras: list[str] = []
    for r in rows:
        for k, v in r.items():
            if EXTRA_KEY.search(k) and isinstance(v, (int, float)) and not isinstance(v, bool) and k not in extras:
                extras.append(k)
    extras = extras[:MAX_EXTRAS]
    head = ["row", "size", "cand ms", "ref ms", "speed-up", "mem ratio", *extras]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        size = " ".join(f"{k}={r[k]}" for k in SIZE_KEYS if k in r)
        cells = [str(r.get("name", "")), size, _ms(r.get("candidate_s")), _ms(r.get("reference_s")),
                 _fmt(r.get("speedup", "")), _fmt(r.get("mem_ratio", "")),
                 *(_fmt(r.get(k, "")) for k in extras)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _probe_lines(probe: dict) -> list[str]:
    v = probe.get("versions", {})
    gpu = ""
    if probe.get("capability"):
        gpu = f", sm_{probe['capability'].replace('.', '')}, {probe.get('sms')} SMs, {probe.get('memory_gib'):.0f} GiB"
    lines = [f"- device: {probe.get('name')} ({probe.get('device')}{gpu})",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
             f"- measured ceilings: copy {probe.get('copy_GBps', 0):.0f} GB/s (read + write), matmul "
             f"{probe.get('matmul_TFLOPs', 0):.3g} TFLOP/s ({probe.get('matmul')})"]  # fmt: skip
    if probe.get("nvidia_smi"):
        lines += ["", "```", probe["nvidia_smi"], "```"]
    return lines


def markdown(doc: dict) -> str:
    dry = doc["mode"] == "cpu-dry-run"
    out = ["# GPU suite report", ""]
    out.append("**CPU dry run**: the same steps at tiny sizes on the CPU (kernel tests interpreted); the numbers "
               "mean nothing, the run shows that every step works." if dry else "Mode: GPU.")  # fmt: skip
    out += ["", f"- date: {doc['date']}, total {doc['total_s']:.0f} s of a {doc['budget_s']} s budget",
            f"- command: `{doc['command']}`"]  # fmt: skip
    probe = next((s["result"] for s in doc["steps"] if s["name"] == "probe" and s.get("result")), None)
    if probe:
        out += _probe_lines(probe)
    out += ["", "## Steps", "", "| step | status | seconds | budget s | note |", "|---|---|---|---|---|"]
    for s in doc["steps"]:
        out.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['budget_s']} | {s.get('note', '')} |")
    tests = [s for s in doc["steps"] if s["kind"] == "pytest" and s.get("result")]
    if tests:
        out += ["", "## Tests", ""]
        for s in tests:
            r = s["result"]
            out.append(f"- {s['name']}: {r['tests']} tests, {r['failures']} failed, {r['errors']} errors, "
                       f"{r['skipped']} skipped")  # fmt: skip
            out += [f"  - failed: `{name}`" for name in r.get("failed", [])[:30]]
    benches = [s for s in doc["steps"] if s["kind"] == "bench" and s.get("result")]
    if benches:
        out += ["", "## Benchmarks", "", "Ratios are candidate / reference (speed-up = reference / candidate)."]
        for s in benches:
            out += ["", f"### {s['name']} (`benchmarks/{s['script']} {' '.join(s['args'])}`)", ""]
            out += _bench_table(s["result"].get("results", []))
            for r in s["result"].get("results", []):
                lim = r.get("bandwidth_limit")
                if isinstance(lim, dict):
                    out += ["", f"Roofline: engine {r['engine_tokens_per_s']:.0f} tok/s = "
                            f"{r['fraction_of_bandwidth_limit']:.1%} of the bandwidth limit "
                            f"({lim['limit_tokens_per_s']:.0f} tok/s: weights {lim['weight_bytes'] / 1e9:.2f} GB + "
                            f"KV {lim['kv_bytes_per_step'] / 1e9:.2f} GB per step at "
                            f"{lim['copy_bandwidth_Bps'] / 1e12:.2f} TB/s)."]  # fmt: skip
    toy = next((s for s in doc["steps"] if s["kind"] == "toy" and s.get("result")), None)
    if toy:
        r = toy["result"]
        out += ["", "## Toy GRPO", "", f"{len(r['steps'])} steps on {r['device']}, weights {r['weights_dtype']}, "
                f"compute {r['compute_dtype']}; assets {r['assets_s']:.1f} s, train {r['train_s']:.1f} s.", "",
                "| step | step s | rollout s | loss | reward | grad norm | tokens |",
                "|---|---|---|---|---|---|---|"]  # fmt: skip
        for m in r["steps"]:
            out.append("| " + " | ".join(_fmt(m.get(k)) for k in ("step", "step_s", "rollout_s", "loss", "reward",
                                                                   "grad_norm", "n_tokens")) + " |")  # fmt: skip
    failed = [s for s in doc["steps"] if s["status"] != "passed" and s.get("log_tail")]
    if failed:
        out += ["", "## Failures"]
        for s in failed:
            out += ["", f"### {s['name']}: {s['status']} ({s.get('note', '')})", "", "```", s["log_tail"], "```"]
    return "\n".join(out) + "\n"


def write(doc: dict, out_dir: Path) -> tuple[Path, Path]:
    """``gpu_suite.md`` and ``gpu_suite.json`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "gpu_suite.md", out_dir / "gpu_suite.json"
    md.write_text(markdown(doc))
    js.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return md, js
