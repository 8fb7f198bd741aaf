"""`zerosearch label`: useful/noisy labels for collected rows, balanced classes, printed statistics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zerosearch.config import LABEL_RULES, RunConfig

NAME = "label"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("label", help="label collected rows useful or noisy and balance the classes",
                       description="Label the rows of `zerosearch collect` by collect.label_rule: cover_em (the "
                       "documents contain a gold answer), outcome (the rollout they came from answered right) or judge "
                       "(an LLM behind any OpenAI-compatible server, collect.judge_url / judge_model; the prompt is "
                       "zerosearch/collect/judge_prompt.txt or collect.judge_prompt_path; bounded retries, rows it "
                       "never labels are dropped and counted). collect.negatives adds mined noisy pairs (the same "
                       "query with another question's documents). With collect.balance the classes are balanced. "
                       "Writes the pairs JSONL that `zerosearch sft` reads and prints the label statistics.")
    p.add_argument("--rows", help="collected rows (default: collect.out_path, else out_dir/collected.jsonl)")
    p.add_argument("--rule", choices=LABEL_RULES, help="labelling rule (sets collect.label_rule)")
    p.add_argument("--out", help="pairs JSONL (sets collect.pairs_path; default out_dir/pairs.jsonl)")
    p.add_argument("--negatives", type=int, help="mined noisy pairs per useful pair (sets collect.negatives)")
    p.add_argument("--no-balance", action="store_true", help="keep every labelled pair (sets collect.balance=false)")
    return p


REQUIRED = ("query", "question", "golden_answers", "documents")


def read_rows(path: Path, rule: str) -> list[dict]:
    """The collected rows; a missing file, a line that is not a JSON object or a row without a needed key is an
    error naming the file (and the row)."""
    from zerosearch.runtime.jsonl import read_jsonl

    if not path.is_file():
        raise FileNotFoundError(f"collected rows not found: {path} (run `zerosearch collect` first, or pass --rows)")
    rows, bad = read_jsonl(path)
    if bad:
        raise ValueError(f"{path}: {bad} line(s) are not JSON objects")
    need = REQUIRED + (("trajectory_em",) if rule == "outcome" else ())
    for n, row in enumerate(rows, start=1):
        missing = [k for k in need if k not in row]
        if missing:
            raise ValueError(f"{path}: row {n} lacks {', '.join(missing)}")
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return rows


def make_judge(cfg: RunConfig):
    from zerosearch.collect.judge import LLMJudge, load_prompt

    c = cfg.collect
    return LLMJudge(c.judge_url, c.judge_model, api=c.judge_api, prompt=load_prompt(c.judge_prompt_path or None),
                    api_key_env=c.judge_api_key_env, retries=c.judge_retries, timeout=c.judge_timeout,
                    concurrency=c.judge_concurrency)


def run(cfg: RunConfig, args, progress: bool) -> int:
    from zerosearch.collect import balance, format_label_stats, label_rows, label_stats, mined_negatives
    from zerosearch.commands.collect import output_path
    from zerosearch.runtime.jsonl import write_jsonl_atomic
    from zerosearch.runtime.run_dir import file_problem, writing

    c = cfg.collect
    if args.rule:
        c.label_rule = args.rule
    if args.out:
        c.pairs_path = args.out
    if args.no_balance:
        c.balance = False
    if args.negatives is not None:
        c.negatives = args.negatives
    if c.label_rule not in LABEL_RULES:
        raise ValueError(f"collect.label_rule must be one of {', '.join(LABEL_RULES)}, not {c.label_rule!r}")
    out = Path(c.pairs_path or Path(cfg.out_dir) / "pairs.jsonl")
    problem = file_problem(out)
    if problem:
        raise ValueError(f"--out: {problem}")
    judge = make_judge(cfg) if c.label_rule == "judge" else None
    rows = read_rows(Path(args.rows) if args.rows else output_path(cfg), c.label_rule)
    pairs, dropped = label_rows(rows, c.label_rule, judge=judge)
    if not pairs:
        why = f" (last error: {judge.last_error})" if judge is not None and judge.last_error else ""
        raise ValueError(f"no row of {len(rows)} got a label{why}")
    pairs += mined_negatives(pairs, c.negatives, cfg.seed)
    balanced = balance(pairs, cfg.seed) if c.balance else None
    stats = label_stats(pairs, dropped, balanced)
    if judge is not None:
        stats["judge"] = judge.stats()
    print(format_label_stats(stats))
    if balanced is not None and not balanced:
        raise ValueError(f"balancing left no pairs ({stats['useful']} useful, {stats['noisy']} noisy): collect more "
                         "rows, use another collect.label_rule, or pass --no-balance")
    write_jsonl_atomic(out, balanced if balanced is not None else pairs)
    stats_path = out.with_name(out.stem + "-stats.json")
    with writing(stats_path):
        stats_path.write_text(json.dumps(stats, indent=2))
    print(f"pairs: {out} ({len(balanced if balanced is not None else pairs)})  stats: {stats_path}")
    return 0
