"""`zerosearch eval`: greedy evaluation with real or simulated search over one or many test sets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zerosearch.config import RunConfig

NAME = "eval"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="greedy evaluation with real or simulated search",
                       description="Greedy evaluation: EM / cover-EM / F1 per dataset and averaged. data.test_path "
                       "is a QA file, a comma-separated list, or a directory of Search-R1 test files; "
                       "data.max_test_examples caps each dataset. search.backend picks the search: bm25 or dense "
                       "(a local corpus, data.corpus_path), retriever (a Search-R1 retrieval server), web (a Google "
                       "search API, key in $SERPER_API_KEY), or simulator / openai. Rows are saved as batches "
                       "finish (--resume continues after a crash); under torchrun the questions are split over the "
                       "ranks.")
    p.add_argument("--out", help="per-row trajectories JSONL (default: out_dir/eval.jsonl)")
    p.add_argument("--batch-size", type=int, default=64, help="questions rolled out together (default 64)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted evaluation: skip the questions already saved in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the rows an earlier evaluation saved in --out (its part files and summary too); "
                   "without --resume or --overwrite an --out that holds rows is refused")
    return p


def run(cfg: RunConfig, args, progress: bool) -> int:
    """Greedy eval over one or many test sets (`data.test_path`: file, comma list or directory), any backend.

    Under `torchrun` the questions are split over the ranks; rank 0 writes the results and prints the table.
    """
    from zerosearch.build import build_generator, build_runner, build_search, load_policy
    from zerosearch.eval import evaluate, format_table, load_test_sets
    from zerosearch.runtime import distributed
    from zerosearch.runtime.row_store import check_row_output
    from zerosearch.runtime.run_dir import writing

    out = Path(args.out or Path(cfg.out_dir) / "eval.jsonl")
    check_row_output(out, resume=args.resume, overwrite=args.overwrite)
    with distributed.process_group(cfg.device) as info:
        cfg.device = info.device
        test = load_test_sets(cfg.data.test_path, max_per_source=cfg.data.max_test_examples)
        tok, policy = load_policy(cfg, trainable=False)
        search = build_search(cfg, curriculum=None)
        runner = build_runner(cfg, build_generator(cfg, policy, tok), tok, search, greedy=True)
        summary = evaluate(runner, test, batch_size=args.batch_size, out_jsonl=out, progress=progress,
                           resume=args.resume)
        if distributed.is_main():
            summary_path = out.with_name(out.stem + "-summary.json")
            with writing(summary_path):
                summary_path.write_text(json.dumps(summary, indent=2))
            print(format_table(summary))
            print(f"per-row results: {out}; summary: {summary_path}")
    return 0
