"""`zerosearch reproduce`: the paper's comparisons in miniature, as one results table over seeds on the toy world.

Baselines without RL (direct answer, RAG, the warm-start), ZeroSearch (RL against the SFT simulator with the noise
curriculum), Search-R1 (RL with the real engine), constant noise, the simulator before SFT, RL without search, and
GRPO / PPO / REINFORCE++, all evaluated greedily with real BM25 search on the same held-out questions
(:mod:`.variants` lists them, :mod:`.run` trains and evaluates them, :mod:`.report` writes the table).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from zerosearch.config import RunConfig, config_to_dict
from zerosearch.reproduce import report
from zerosearch.reproduce.run import run_all
from zerosearch.reproduce.variants import Variant
from zerosearch.runtime.jsonl import write_json_atomic
from zerosearch.runtime.run_dir import config_changes, writing
from zerosearch.toy.pipeline import ToySchedule

# What `zerosearch reproduce` writes into out_dir (top level), for --overwrite.
REPRODUCE_OUTPUTS = ("seed*", "plan.json", "results.md", "results.json", "training.png", ".*.tmp-*")


def _plan(cfg: RunConfig, schedule: ToySchedule) -> dict[str, Any]:
    """What decides the numbers besides the seed: the base config and the SFT budgets."""
    config = config_to_dict(cfg)
    config.pop("seed")
    return {"config": config, "schedule": dataclasses.asdict(schedule)}


def check_plan(out: Path, cfg: RunConfig, schedule: ToySchedule) -> None:
    """--resume continues only the table it was started with (seeds and variants may be added)."""
    path = out / "plan.json"
    if not path.is_file():
        return
    saved, now = json.loads(path.read_text()), _plan(cfg, schedule)
    changes = config_changes(saved, now, free=("config.out_dir", "config.cache_dir", "config.device"))
    if changes:
        raise ValueError(
            f"--resume: {out} holds a table made with other settings ({'; '.join(changes)}): use the "
            "same settings (and --smoke or not), or --overwrite"
        )


def write_report(
    out: Path,
    variants: list[Variant],
    seeds: list[int],
    results: dict[str, dict[int, dict[str, Any]]],
    *,
    command: str,
    wall_s: float,
) -> str:
    """results.json, results.md and training.png from the (variant, seed) results finished so far."""
    rows = report.summarize(variants, results)
    n_test = next(r["n_test"] for per_seed in results.values() for r in per_seed.values())
    done = sum(len(per_seed) for per_seed in results.values())
    summary = {
        "command": command,
        "seeds": seeds,
        "n_test": n_test,
        "finished": f"{done}/{len(variants) * len(seeds)}",
        "wall_s_this_invocation": round(wall_s, 1),
        "versions": report.versions(),
        "variants": rows,
    }
    write_json_atomic(out / "results.json", summary)
    text = report.markdown(rows, seeds=seeds, n_test=n_test, command=command)
    with writing(out / "results.md"):
        (out / "results.md").write_text(text)
    report.plot(variants, [out / f"seed{s}" for s in seeds], out / "training.png")
    return text


def reproduce(
    cfg: RunConfig,
    variants: list[Variant],
    seeds: list[int],
    schedule: ToySchedule,
    *,
    command: str,
    progress: bool = True,
) -> dict[str, dict[int, dict[str, Any]]]:
    """Train and evaluate every (variant, seed) not finished yet; the table is rewritten as each one finishes, so a
    killed run leaves the table of what it finished."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "plan.json", _plan(cfg, schedule))
    t0 = time.perf_counter()
    results: dict[str, dict[int, dict[str, Any]]] = {v.name: {} for v in variants}
    text = ""
    for name, seed, result in run_all(cfg, variants, seeds, out, schedule, progress=progress):
        results[name][seed] = result
        text = write_report(out, variants, seeds, results, command=command, wall_s=time.perf_counter() - t0)
    print("\n" + text)
    print(f"table: {out / 'results.md'}  numbers: {out / 'results.json'}  plot: {out / 'training.png'}")
    return results
