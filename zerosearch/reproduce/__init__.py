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
from zerosearch.reproduce.run import run_all, write_json
from zerosearch.reproduce.variants import Variant
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


def reproduce(
    cfg: RunConfig,
    variants: list[Variant],
    seeds: list[int],
    schedule: ToySchedule,
    *,
    command: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and evaluate every (variant, seed) not finished yet, then write the table and the plot."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "plan.json", _plan(cfg, schedule))
    t0 = time.perf_counter()
    results = run_all(cfg, variants, seeds, out, schedule, progress=progress)
    rows = report.summarize(variants, results)
    n_test = next(iter(next(iter(results.values())).values()))["n_test"]
    summary = {
        "command": command,
        "seeds": seeds,
        "n_test": n_test,
        "wall_s_this_invocation": round(time.perf_counter() - t0, 1),
        "versions": report.versions(),
        "variants": rows,
    }
    write_json(out / "results.json", summary)
    text = report.markdown(rows, seeds=seeds, n_test=n_test, command=command)
    with writing(out / "results.md"):
        (out / "results.md").write_text(text)
    report.plot(variants, [out / f"seed{s}" for s in seeds], out / "training.png")
    print("\n" + text)
    print(f"table: {out / 'results.md'}  numbers: {out / 'results.json'}  plot: {out / 'training.png'}")
    return summary
