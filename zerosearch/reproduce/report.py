"""The results table: mean ± std over seeds per variant, as results.json, results.md and one training plot."""

from __future__ import annotations

import platform
import statistics
from importlib import metadata
from pathlib import Path
from typing import Any

from zerosearch.reproduce.variants import Variant
from zerosearch.runtime.metrics import pyplot, read_metrics, save_figure

LIBRARIES = ("torch", "transformers", "bm25s", "numpy", "tokenizers", "safetensors")


def versions() -> dict[str, str]:
    """The library versions the numbers were measured with."""
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed: no spread can be measured from one)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(variants: list[Variant], results: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per variant: the per-seed numbers and their mean and std."""
    rows = []
    for v in variants:
        per_seed = results.get(v.name, {})
        if not per_seed:
            continue
        seeds = sorted(per_seed)
        metrics = {
            "em": [per_seed[s]["eval"]["em"] for s in seeds],
            "f1": [per_seed[s]["eval"]["f1"] for s in seeds],
            "searches": [per_seed[s]["eval"]["searches"] for s in seeds],
            "simulator_queries": [per_seed[s]["train_queries"]["simulator"] for s in seeds],
            "real_queries": [per_seed[s]["train_queries"]["real"] for s in seeds],
            "wall_s": [per_seed[s]["wall_s"] for s in seeds],
        }
        stats = {k: dict(zip(("mean", "std"), mean_std(vals))) for k, vals in metrics.items()}
        rows.append(
            {
                "variant": v.name,
                "label": v.label,
                "group": v.group,
                "overrides": v.overrides,
                "rag": v.rag,
                "seeds": seeds,
                "per_seed": metrics,
                **stats,
            }
        )
    return rows


def _pm(stat: dict[str, float], digits: int = 3) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def markdown(rows: list[dict[str, Any]], *, seeds: list[int], n_test: int, command: str) -> str:
    """The table a reader compares: EM, F1, searches per question, and the queries training sent to each engine."""
    lines = [
        f"# Toy-world results: {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), mean ± std over seeds",
        "",
        f"Command: `{command}`",
        "",
        f"Every row is evaluated greedily with real BM25 search on the same {n_test} held-out questions per seed. "
        "Training queries are the searches the RL rollouts sent, to the simulator or to the real engine.",
        "",
        "| variant | what differs | EM | F1 | searches / question | simulator queries (training) "
        "| real-search queries (training) | time per seed (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        named = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) + (
            " + BM25 top-k in the prompt" if r["rag"] else ""
        )
        differs = (named or "—") + ("" if r["group"] == "RL" else " (no RL)")
        lines.append(
            f"| {r['variant']} | {differs} | {_pm(r['em'])} | {_pm(r['f1'])} | {_pm(r['searches'], 2)} "
            f"| {r['simulator_queries']['mean']:.0f} | {r['real_queries']['mean']:.0f} "
            f"| {r['wall_s']['mean']:.0f} |"
        )
    lines += ["", "Per seed F1:", ""]
    for r in rows:
        per = ", ".join(f"seed {s}: {f:.3f}" for s, f in zip(r["seeds"], r["per_seed"]["f1"]))
        lines.append(f"- {r['variant']}: {per}")
    return "\n".join(lines) + "\n"


def plot(variants: list[Variant], seed_dirs: list[Path], out_png: Path) -> Path:
    """Training reward (mean over seeds) and the noise probability per step, one line per RL variant. Noise is
    drawn only where the simulator writes the documents (real search has no injected noise)."""
    plt = pyplot()
    fig, (ax_r, ax_p) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for v in variants:
        if not v.train:
            continue
        runs = [read_metrics(d / v.name / "metrics.jsonl") for d in seed_dirs]
        runs = [r for r in runs if r]
        if not runs:
            continue
        n = min(len(r) for r in runs)
        steps = [runs[0][i]["step"] for i in range(n)]
        reward = [statistics.fmean(r[i]["reward"] for r in runs) for i in range(n)]
        (line,) = ax_r.plot(steps, reward, label=v.name)
        if v.overrides.get("search.backend", "simulator") == "simulator" and v.overrides.get("rollout.max_turns") != 0:
            ax_p.plot(steps, [runs[0][i]["noise_p"] for i in range(n)], label=v.name, color=line.get_color())
    ax_r.set_ylabel("training reward (F1), mean over seeds")
    ax_r.legend(fontsize=8, ncol=2)
    ax_p.set_ylabel("noise probability p")
    ax_p.set_xlabel("RL step")
    ax_p.legend(fontsize=8, ncol=2)
    fig.suptitle("toy world: training reward and simulator noise per variant")
    return save_figure(fig, out_png)
