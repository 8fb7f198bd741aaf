"""Greedy evaluation with any search backend: EM / cover-EM / F1 per data source and averaged.

Every test row is scored (DESIGN §2.7): batches are cut from the list, never dropped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from zerosearch.data.qa import QAExample
from zerosearch.rollout import RolloutRunner
from zerosearch.trainer import policy_text, score_trajectories


def evaluate(runner: RolloutRunner, examples: list[QAExample], *, batch_size: int = 64,
             out_jsonl: str | Path | None = None, progress: bool = True, desc: str = "eval") -> dict[str, Any]:
    """Roll out each example once (the runner's sampler decides greedy vs sampled) and score it."""
    rows: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(examples), batch_size), desc=desc, disable=not progress, dynamic_ncols=True):
        chunk = examples[start:start + batch_size]
        trajs = runner.run(chunk, 1)
        for t, s in zip(trajs, score_trajectories(trajs, runner.tokenizer)):
            rows.append({
                "uid": t.example.uid,
                "data_source": t.example.data_source or "default",
                "question": t.example.question,
                "golden_answers": list(t.example.golden_answers),
                "response": policy_text(t, runner.tokenizer),
                "trajectory": t.response_text,
                "queries": t.queries,
                "searches": t.n_searches,
                **s,
            })
    if out_jsonl is not None:
        path = Path(out_jsonl)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return summarize(rows)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-source means and their unweighted average across sources (the papers' 'avg' column)."""
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_source[r["data_source"]].append(r)
    keys = ("em", "cover_em", "f1", "searches")
    per = {src: {k: float(np.mean([r[k] for r in rs])) for k in keys} | {"n": len(rs)}
           for src, rs in sorted(by_source.items())}
    avg = {k: float(np.mean([v[k] for v in per.values()])) if per else 0.0 for k in keys}
    return {"per_source": per, "average": avg | {"n": len(rows)}}
