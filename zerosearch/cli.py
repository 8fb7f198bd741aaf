"""`zerosearch` command line: toy | train | eval | sft | simulate.

Every command takes `--config FILE.yaml` plus dotted overrides (`trainer.steps=100 rollout.n_samples=5`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from zerosearch.config import RunConfig, load_config, save_config

TOY_CONFIG = Path(__file__).parent / "configs" / "toy.yaml"

EPILOG = """examples:
  zerosearch toy                                  # the whole pipeline on the built-in toy world (CPU)
  zerosearch toy trainer.algo=ppo seed=1          # same with PPO and another seed
  zerosearch train --config configs/qwen2.5-3b-grpo.yaml --resume
  zerosearch eval --config configs/qwen2.5-3b-grpo.yaml model.policy_path=runs/x/final
  zerosearch simulate --config cfg.yaml --query "capital of france" --question "..." --answer paris
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (defaults are in zerosearch/config.py)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zerosearch", description="RL for search agents against a simulated search engine (ZeroSearch).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("toy", help="build the toy world, SFT the simulator, warm-start, RL, evaluate")
    _add_common(p)
    p.add_argument("--resume", action="store_true", help="continue the RL phase from its last checkpoint")
    p.add_argument("--fast", action="store_true", help="a much shorter run (smoke test)")

    p = sub.add_parser("train", help="RL training from a config (real checkpoints and data from paths)")
    _add_common(p)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")

    p = sub.add_parser("eval", help="greedy evaluation with real (BM25) or simulated search")
    _add_common(p)
    p.add_argument("--out", help="per-row trajectories JSONL (default: out_dir/eval.jsonl)")

    p = sub.add_parser("sft", help="fine-tune the simulator on (query, label, documents) pairs from JSONL")
    _add_common(p)
    p.add_argument("--pairs", required=True, help="JSONL rows: query, question, golden_answers, documents, useful")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--save", required=True, help="directory for the fine-tuned simulator")

    p = sub.add_parser("simulate", help="print the simulator's documents for one query, or serve the simulator",
                       description="Print the simulator's documents for one query (--query), or, with --serve, "
                       "serve model.simulator_path as an OpenAI-compatible /v1/completions server that "
                       "`simulator.backend=openai` runs can use (see SECURITY.md).")
    _add_common(p)
    p.add_argument("--query", help="the search query (required unless --serve)")
    p.add_argument("--question", default="")
    p.add_argument("--answer", action="append", default=[], help="gold answer (repeatable)")
    p.add_argument("--noisy", action="store_true", help="ask for noisy documents instead of useful ones")
    p.add_argument("--serve", action="store_true",
                   help="serve the simulator over HTTP (POST /v1/completions, GET /v1/models, GET /health)")
    p.add_argument("--host", default="127.0.0.1",
                   help="--serve: address to bind (default 127.0.0.1; anything else is reachable from other hosts)")
    p.add_argument("--port", type=int, default=8000, help="--serve: port (default 8000; 0 picks a free one)")
    p.add_argument("--max-concurrency", type=int, default=4,
                   help="--serve: completion requests handled at once; more get HTTP 503 (default 4)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "toy" and not args.config:
        args.config = str(TOY_CONFIG)
    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as exc:
        print(f"zerosearch: config error: {exc}", file=sys.stderr)
        return 2
    progress = not args.quiet
    try:
        return COMMANDS[args.command](cfg, args, progress)
    except (ValueError, FileNotFoundError) as exc:
        print(f"zerosearch {args.command}: {exc}", file=sys.stderr)
        return 2


def cmd_toy(cfg: RunConfig, args, progress: bool) -> int:
    from zerosearch.toy.pipeline import run_toy

    run_toy(cfg, resume=args.resume, fast=args.fast, progress=progress)
    return 0


def cmd_train(cfg: RunConfig, args, progress: bool) -> int:
    from zerosearch.build import build_curriculum, build_runner, build_search, load_causal_lm, load_tokenizer
    from zerosearch.data.qa import load_qa
    from zerosearch.trainer import Trainer

    tok = load_tokenizer(cfg.model.tokenizer_path or cfg.model.policy_path)
    policy = load_causal_lm(cfg.model.policy_path, cfg.model.dtype, cfg.device)
    curriculum = build_curriculum(cfg)
    search = build_search(cfg, curriculum=curriculum)
    runner = build_runner(cfg, policy, tok, search)
    train = load_qa(cfg.data.train_path)
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    save_config(cfg, Path(cfg.out_dir) / "config.yaml")
    trainer = Trainer(cfg, policy, tok, runner, train, curriculum=curriculum)
    if args.resume:
        trainer.resume()
    trainer.fit(progress=progress)
    final = Path(cfg.out_dir) / "final"
    policy.save_pretrained(final)
    tok.save_pretrained(final)
    print(f"saved the trained policy to {final}")
    return 0


def cmd_eval(cfg: RunConfig, args, progress: bool) -> int:
    from zerosearch.build import build_runner, build_search, load_causal_lm, load_tokenizer
    from zerosearch.data.qa import load_qa
    from zerosearch.evaluate import evaluate

    tok = load_tokenizer(cfg.model.tokenizer_path or cfg.model.policy_path)
    policy = load_causal_lm(cfg.model.policy_path, cfg.model.dtype, cfg.device)
    search = build_search(cfg, curriculum=None)
    runner = build_runner(cfg, policy, tok, search, greedy=True)
    test = load_qa(cfg.data.test_path)
    if cfg.data.max_test_examples:
        test = test[: cfg.data.max_test_examples]
    out = args.out or str(Path(cfg.out_dir) / "eval.jsonl")
    summary = evaluate(runner, test, out_jsonl=out, progress=progress)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_sft(cfg: RunConfig, args, progress: bool) -> int:
    from zerosearch.build import load_causal_lm, load_tokenizer
    from zerosearch.sft import SimulatorPair, sft_train, simulator_samples

    tok = load_tokenizer(cfg.model.tokenizer_path or cfg.model.simulator_path)
    model = load_causal_lm(cfg.model.simulator_path, cfg.model.dtype, cfg.device)
    pairs = [SimulatorPair(**json.loads(line)) for line in Path(args.pairs).read_text().splitlines() if line.strip()]
    sft_train(model, tok, simulator_samples(pairs), steps=args.steps, lr=args.lr, append_eos=True,
              seed=cfg.seed, device=cfg.device, progress=progress, desc="simulator sft")
    model.save_pretrained(args.save)
    tok.save_pretrained(args.save)
    print(f"saved the simulator to {args.save}")
    return 0


def cmd_simulate(cfg: RunConfig, args, progress: bool) -> int:
    if args.serve:
        from zerosearch.server import serve

        serve(cfg, host=args.host, port=args.port, max_concurrency=args.max_concurrency)
        return 0
    if not args.query:
        raise ValueError("--query is required (or use --serve)")
    from zerosearch.build import build_search
    from zerosearch.search import SearchRequest

    search = build_search(cfg, curriculum=None)
    if hasattr(search, "decide_noisy") and args.noisy:
        search.decide_noisy = lambda n, step: [True] * n
    [res] = search.search([SearchRequest(0, args.query, args.question, args.answer)])
    for i, doc in enumerate(res.documents):
        print(f"Doc {i + 1}: {doc}")
    if res.fallback:
        print(f"(fallback: {res.error})", file=sys.stderr)
    return 0


COMMANDS = {"toy": cmd_toy, "train": cmd_train, "eval": cmd_eval, "sft": cmd_sft, "simulate": cmd_simulate}

if __name__ == "__main__":
    raise SystemExit(main())
