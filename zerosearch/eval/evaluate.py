"""Greedy evaluation with any search backend: EM / cover-EM / F1 per data source and averaged.

Every test row is scored: batches are cut from the list, never dropped. Under torchrun the
questions are split over ranks (each rank holds a full copy of the policy: evaluation is inference only).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from zerosearch.data.qa import QAExample
from zerosearch.rollout import RolloutRunner, policy_text, score_trajectories
from zerosearch.runtime.row_store import map_resumable


def format_table(summary: dict[str, Any]) -> str:
    """Per-dataset EM / cover-EM / F1 (percent) and the unweighted average, as a plain-text table."""
    lines = [f"{'dataset':<16}{'n':>7}{'EM':>8}{'coverEM':>9}{'F1':>8}{'search':>8}"]
    rows = list(summary["per_source"].items()) + [("average", summary["average"])]
    for name, m in rows:
        lines.append(f"{name:<16}{m['n']:>7}{100 * m['em']:>8.2f}{100 * m['cover_em']:>9.2f}{100 * m['f1']:>8.2f}"
                     f"{m['searches']:>8.2f}")
    return "\n".join(lines)


def evaluate(runner: RolloutRunner, examples: list[QAExample], *, batch_size: int = 64,
             out_jsonl: str | Path | None = None, progress: bool = True, desc: str = "eval",
             resume: bool = False) -> dict[str, Any]:
    """Roll out each example once (the runner's sampler decides greedy vs sampled) and score it.

    Under torchrun each rank takes every world-size-th question and all ranks return the same summary.
    With `out_jsonl`, rows are saved as batches finish and `resume` skips the questions already saved
    there, so an interrupted evaluation continues where it stopped, on any number of ranks.
    """
    rows = map_resumable(examples, lambda e: e.uid, lambda chunk: _score(runner, chunk), out_jsonl=out_jsonl,
                         resume=resume, batch_size=batch_size, progress=progress, desc=desc,
                         source="data.test_path", run_name="evaluation")
    return summarize(rows)


def _score(runner: RolloutRunner, chunk: list[QAExample]) -> list[dict[str, Any]]:
    trajs = runner.run(chunk, 1)
    return [
        {
            "uid": t.example.uid,
            "data_source": t.example.data_source or "default",
            "question": t.example.question,
            "golden_answers": list(t.example.golden_answers),
            "response": policy_text(t, runner.tokenizer),
            "trajectory": t.response_text,
            "queries": t.queries,
            "searches": t.n_searches,
            **s,
        }
        for t, s in zip(trajs, score_trajectories(trajs, runner.tokenizer))
    ]


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
