"""Greedy evaluation with any search backend: EM / cover-EM / F1 per data source and averaged.

Every test row is scored: batches are cut from the list, never dropped. Under torchrun the
questions are split over ranks (each rank holds a full copy of the policy: evaluation is inference only).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from zerosearch.data.qa import QAExample
from zerosearch.rollout import RolloutRunner, policy_text, score_trajectories
from zerosearch.runtime import distributed
from zerosearch.runtime.row_store import RowStore


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
    uids = [e.uid for e in examples]
    if len(set(uids)) != len(uids):
        raise ValueError("test questions need unique uids (load_test_sets makes them unique across files)")
    store = RowStore(out_jsonl, distributed.rank()) if out_jsonl is not None else None
    done = _start(store, set(uids), resume)
    todo = [e for e in examples if e.uid not in done]
    mine = todo[distributed.rank()::distributed.world_size()]
    new: list[dict[str, Any]] = []
    bar = tqdm(total=len(mine), desc=desc, disable=not (progress and distributed.is_main()), dynamic_ncols=True)
    for start in range(0, len(mine), batch_size):
        chunk = mine[start:start + batch_size]
        rows = _score(runner, chunk)
        if store is not None:
            store.append(rows)
        new += rows
        bar.update(len(chunk))
    bar.close()
    by_uid = done | {r["uid"]: r for part in distributed.gather_objects(new) for r in part}
    rows = [by_uid[uid] for uid in uids]
    if store is not None and distributed.is_main():
        store.write_merged(rows)
    return summarize(rows)


def _start(store: RowStore | None, uids: set[str], resume: bool) -> dict[str, dict[str, Any]]:
    """Rows an earlier run saved (with `resume`), after every rank has read them and rank 0 has folded them
    into the merged file; without `resume`, an empty slate."""
    if store is None:
        return {}
    done = store.read_all() if resume else {}
    stale = set(done) - uids
    if stale:
        raise ValueError(f"{store.path} holds {len(stale)} rows for questions not in data.test_path: --resume only "
                         "continues the same evaluation (drop --resume to start over)")
    distributed.barrier()  # every rank has read before rank 0 rewrites
    if distributed.is_main():
        if resume:
            store.write_merged(list(done.values()))
        else:
            store.clear()
    distributed.barrier()
    return done


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
