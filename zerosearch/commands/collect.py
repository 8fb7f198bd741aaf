"""`zerosearch collect`: a policy's sub-queries against a real search engine, as the simulator's raw training rows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zerosearch.config import REAL_SEARCH_BACKENDS, RunConfig

NAME = "collect"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("collect", help="run a policy against a real search engine and keep every query and its "
                       "documents (the simulator's training rows)",
                       description="Roll out model.policy_path (any HF checkpoint; the project's prompt and tags) on "
                       "a seeded sample of data.train_path against the real engine search.backend (bm25, dense, "
                       "retriever or web), collect.rollouts times per question at rollout.temperature (or greedily, "
                       "collect.greedy). Every query "
                       "and the documents returned become one row {uid, query, question, golden_answers, documents, "
                       "source, data_source, trajectory_em, trajectory_f1} of --out (default out_dir/collected.jsonl); "
                       "label them with `zerosearch label`. Questions are saved as they finish (--resume continues "
                       "after a crash); under torchrun they are split over the ranks.")
    p.add_argument("--out", help="collected rows JSONL (sets collect.out_path; default out_dir/collected.jsonl)")
    p.add_argument("--questions", type=int, help="sample this many training questions (sets collect.max_questions; "
                   "0: all)")
    p.add_argument("--rollouts", type=int, help="rollouts per question (sets collect.rollouts)")
    p.add_argument("--batch-size", type=int, help="questions rolled out together (sets collect.batch_questions)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted collection")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier collection in --out")
    return p


def output_path(cfg: RunConfig) -> Path:
    return Path(cfg.collect.out_path or Path(cfg.out_dir) / "collected.jsonl")


def _apply_flags(cfg: RunConfig, args) -> None:
    for flag, key in (("out", "out_path"), ("questions", "max_questions"), ("rollouts", "rollouts"),
                      ("batch_size", "batch_questions")):
        if getattr(args, flag) is not None:
            setattr(cfg.collect, key, getattr(args, flag))
    if cfg.search.backend not in REAL_SEARCH_BACKENDS:
        raise ValueError(f"collect needs a real search engine: search.backend must be one of "
                         f"{', '.join(REAL_SEARCH_BACKENDS)}, not {cfg.search.backend!r}")
    if cfg.collect.rollouts < 1 or cfg.collect.max_questions < 0 or cfg.collect.batch_questions < 1:
        raise ValueError("collect.rollouts and collect.batch_questions must be >= 1, collect.max_questions >= 0")
    if not cfg.model.policy_path:
        raise ValueError("model.policy_path is not set (the policy whose queries are collected)")
    if not cfg.data.train_path:
        raise ValueError("data.train_path is not set (the questions to collect on)")


def run(cfg: RunConfig, args, progress: bool) -> int:
    from zerosearch.build import build_generator, build_runner, build_search, load_policy
    from zerosearch.collect import collect, collect_stats, flatten, sample_questions
    from zerosearch.data.qa import load_qa
    from zerosearch.runtime import distributed
    from zerosearch.runtime.jsonl import write_jsonl_atomic
    from zerosearch.runtime.row_store import check_row_output
    from zerosearch.runtime.run_dir import writing
    from zerosearch.search.recording import RecordingSearch

    _apply_flags(cfg, args)
    out = output_path(cfg)
    per_question = out.with_name(out.stem + ".questions.jsonl")
    check_row_output(out, resume=args.resume, overwrite=args.overwrite)
    check_row_output(per_question, resume=args.resume, overwrite=args.overwrite)
    questions = sample_questions(load_qa(cfg.data.train_path), cfg.collect.max_questions, cfg.seed)
    with distributed.process_group(cfg.device) as info:
        cfg.device = info.device
        tok, policy = load_policy(cfg, trainable=False)
        search = RecordingSearch(build_search(cfg, curriculum=None))
        runner = build_runner(cfg, build_generator(cfg, policy, tok), tok, search, greedy=cfg.collect.greedy)
        records = collect(runner, questions, rollouts=cfg.collect.rollouts, out_jsonl=per_question,
                          resume=args.resume, batch_size=cfg.collect.batch_questions, progress=progress)
        if distributed.is_main():
            rows = flatten(records, cfg.search.backend)
            write_jsonl_atomic(out, rows)
            stats = collect_stats(records, rows)
            stats_path = out.with_name(out.stem + "-stats.json")
            with writing(stats_path):
                stats_path.write_text(json.dumps(stats, indent=2))
            print(f"collected {stats['rows']} rows from {stats['questions']} questions x {cfg.collect.rollouts} "
                  f"rollouts: {stats['searches_per_rollout']:.2f} searches per rollout, {stats['repeated_queries']} "
                  f"repeated queries kept once, {stats['failed_searches']} failed searches left out, rollout EM "
                  f"{stats['rollout_em']:.3f}")
            print(f"rows: {out}  per question: {per_question}  stats: {stats_path}")
    return 0
