"""A policy's sub-queries against a real engine, as the simulator's raw training rows.

The policy rolls out with the project's protocol (the same `RolloutRunner` as RL and evaluation) against a
`RecordingSearch` around the real backend, so every query it sent and the documents the engine returned are kept
exactly as the policy saw them. Each question's rollouts become one record, saved as batches finish
(`map_resumable`: resumable, split over ranks under torchrun); `flatten` turns the records into one row per search:
`{uid, query, question, golden_answers, documents, source, data_source, trajectory_em, trajectory_f1}`. The two
trajectory scores are what the `outcome` labelling rule reads.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from zerosearch.data.qa import QAExample
from zerosearch.rollout import RolloutRunner, score_trajectories
from zerosearch.runtime.row_store import map_resumable
from zerosearch.search.base import clean_query
from zerosearch.search.recording import RecordingSearch

ROW_KEYS = ("uid", "query", "question", "golden_answers", "documents", "source", "data_source", "trajectory_em",
            "trajectory_f1")


def sample_questions(examples: list[QAExample], n: int, seed: int) -> list[QAExample]:
    """A seeded sample of `n` questions in their file order (all of them when `n` is 0 or covers them)."""
    if n <= 0 or n >= len(examples):
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in keep]


def _records(runner: RolloutRunner, recorder: RecordingSearch, chunk: list[QAExample], rollouts: int
             ) -> list[dict[str, Any]]:
    recorder.take()
    trajs = runner.run(chunk, rollouts)
    calls = recorder.take()
    scores = score_trajectories(trajs, runner.tokenizer)
    by_uid: dict[str, dict[str, Any]] = {}
    for t, s in zip(trajs, scores):
        rec = by_uid.setdefault(t.example.uid, {
            "uid": t.example.uid, "question": t.example.question, "golden_answers": list(t.example.golden_answers),
            "data_source": t.example.data_source or "default", "rollouts": []})
        searches = [{"query": q, "documents": list(r.documents)} for q, r in calls.get(t.row_id, ()) if not r.fallback]
        rec["rollouts"].append({"em": s["em"], "f1": s["f1"], "searches": searches,
                                "failed_searches": len(calls.get(t.row_id, ())) - len(searches)})
    return [by_uid[e.uid] for e in chunk]


def collect(runner: RolloutRunner, examples: list[QAExample], *, rollouts: int = 1,
            out_jsonl: str | Path | None = None, resume: bool = False, batch_size: int = 64,
            progress: bool = True) -> list[dict[str, Any]]:
    """Per-question records of `rollouts` rollouts each; `runner.search` must be a `RecordingSearch`."""
    if not isinstance(runner.search, RecordingSearch):
        raise TypeError("collect needs a runner whose search is a RecordingSearch around the real backend")
    if rollouts < 1:
        raise ValueError(f"collect.rollouts must be >= 1, got {rollouts}")
    return map_resumable(examples, lambda e: e.uid, lambda chunk: _records(runner, runner.search, chunk, rollouts),
                         out_jsonl=out_jsonl, resume=resume, batch_size=batch_size, progress=progress,
                         desc="collect", source="the sampled training questions", run_name="collection")


def flatten(records: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """One row per search. A query a question's rollouts sent more than once is kept once (the first time): a
    deterministic engine returned the same documents, and repeats would weight the SFT towards frequent queries."""
    rows = []
    for rec in records:
        seen: set[str] = set()
        for r, ro in enumerate(rec["rollouts"]):
            for turn, s in enumerate(ro["searches"]):
                key = clean_query(s["query"]).lower()
                if key in seen:
                    continue
                seen.add(key)
                rows.append({"uid": f"{rec['uid']}/{r}/{turn}", "query": s["query"], "question": rec["question"],
                             "golden_answers": rec["golden_answers"], "documents": s["documents"], "source": source,
                             "data_source": rec["data_source"], "trajectory_em": ro["em"], "trajectory_f1": ro["f1"]})
    return rows


def collect_stats(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    rollouts = [ro for rec in records for ro in rec["rollouts"]]
    searches = sum(len(ro["searches"]) for ro in rollouts)
    return {"questions": len(records), "rollouts": len(rollouts), "searches": searches, "rows": len(rows),
            "repeated_queries": searches - len(rows),
            "failed_searches": sum(ro["failed_searches"] for ro in rollouts),
            "searches_per_rollout": searches / max(len(rollouts), 1),
            "rollout_em": sum(ro["em"] for ro in rollouts) / max(len(rollouts), 1)}
