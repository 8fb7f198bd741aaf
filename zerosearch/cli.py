"""`zerosearch` command line: toy | train | eval | sft | simulate | validate.

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
  zerosearch validate --config configs/qwen2.5-3b-grpo.yaml --allow-missing-paths --world-size 8
  torchrun --nproc_per_node 8 -m zerosearch.cli train --config configs/qwen2.5-3b-grpo.yaml
  zerosearch train --config configs/qwen2.5-3b-grpo.yaml --resume
  zerosearch eval --config configs/qwen2.5-3b-grpo.yaml model.policy_path=runs/x/final
  torchrun --nproc_per_node 8 -m zerosearch.cli eval --config cfg.yaml --resume  # 8 GPUs; continue a crashed eval
  zerosearch simulate --config cfg.yaml --query "capital of france" --question "..." --answer paris
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (defaults are in zerosearch/config.py)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.add_argument("--quiet", action="store_true", help="turn off progress bars, transformers' load/save bars included")


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

    p = sub.add_parser("eval", help="greedy evaluation with real or simulated search",
                       description="Greedy evaluation: EM / cover-EM / F1 per dataset and averaged. data.test_path "
                       "is a QA file, a comma-separated list, or a directory of Search-R1 test files; "
                       "data.max_test_examples caps each dataset. search.backend picks the search: bm25 or dense "
                       "(a local corpus, data.corpus_path), retriever (a Search-R1 retrieval server), web (a Google "
                       "search API, key in $SERPER_API_KEY), or simulator / openai. Rows are saved as batches "
                       "finish (--resume continues after a crash); under torchrun the questions are split over the "
                       "ranks.")
    _add_common(p)
    p.add_argument("--out", help="per-row trajectories JSONL (default: out_dir/eval.jsonl)")
    p.add_argument("--batch-size", type=int, default=64, help="questions rolled out together (default 64)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted evaluation: skip the questions already saved in --out")

    p = sub.add_parser("validate", help="dry-run check of a config: names, ranges, curriculum, batches, paths")
    _add_common(p)
    p.add_argument("--allow-missing-paths", action="store_true", help="report missing model/data paths, pass anyway")
    p.add_argument("--world-size", type=int, default=0,
                   help="GPUs (torchrun ranks) the run will use, for the batch checks (default: $WORLD_SIZE or 1)")
    p.add_argument("--for", dest="for_command", choices=("train", "eval"), default="train",
                   help="which command's paths to check (default train)")

    p = sub.add_parser("sft", help="fine-tune the simulator on (query, label, documents) pairs from JSONL")
    _add_common(p)
    p.add_argument("--pairs", required=True, help="JSONL rows: query, question, golden_answers, documents, useful")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--save", required=True, help="directory for the fine-tuned simulator")

    p = sub.add_parser("simulate", help="print the simulator's documents for one query, or serve the simulator",
                       description="Print the simulator's documents for one query (--query), or, with --serve, "
                       "serve model.simulator_path as an OpenAI-compatible /v1/completions server that "
                       "`search.backend=openai` runs can use (see SECURITY.md). The server generates with the "
                       "configured generation.backend (engine by default).")
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
    handler = logging.StreamHandler()
    handler.setLevel(logging.INFO)  # a library that sets its own logger to DEBUG (bm25s does) stays quiet here
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    if args.quiet:  # also the bars transformers draws when it loads or saves a model
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
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
    """RL training; under `torchrun` every rank runs this and the policy is FSDP2-sharded
    (zerosearch.runtime.distributed)."""
    from zerosearch.build import build_trainer, load_policy
    from zerosearch.data.qa import load_qa
    from zerosearch.runtime import distributed

    with distributed.process_group(cfg.device) as info:
        cfg.device = info.device
        tok, policy = load_policy(cfg)
        if cfg.model.gradient_checkpointing:  # only layer inputs are kept for backward (the critic copies it)
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        train = load_qa(cfg.data.train_path)
        final = Path(cfg.out_dir) / "final"
        if distributed.is_main():
            Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
            save_config(cfg, Path(cfg.out_dir) / "config.yaml")
        trainer = build_trainer(cfg, policy, tok, train)
        if args.resume:
            trainer.resume()
        trainer.fit(progress=progress)
        state = distributed.full_state_dict(policy)[0] if info.enabled else None  # collective
        if distributed.is_main():
            if state is not None:  # a plain copy of the model, loaded with the gathered weights
                _, policy = load_policy(cfg, "cpu")
                policy.load_state_dict(state)
            policy.save_pretrained(final)
            tok.save_pretrained(final)
            print(f"saved the trained policy to {final}")
    return 0


def cmd_eval(cfg: RunConfig, args, progress: bool) -> int:
    """Greedy eval over one or many test sets (`data.test_path`: file, comma list or directory), any backend.

    Under `torchrun` the questions are split over the ranks; rank 0 writes the results and prints the table.
    """
    from zerosearch.build import build_generator, build_runner, build_search, load_policy
    from zerosearch.eval import evaluate, format_table, load_test_sets
    from zerosearch.runtime import distributed

    with distributed.process_group(cfg.device) as info:
        cfg.device = info.device
        test = load_test_sets(cfg.data.test_path, max_per_source=cfg.data.max_test_examples)
        tok, policy = load_policy(cfg)
        search = build_search(cfg, curriculum=None)
        runner = build_runner(cfg, build_generator(cfg, policy, tok), tok, search, greedy=True)
        out = Path(args.out or Path(cfg.out_dir) / "eval.jsonl")
        summary = evaluate(runner, test, batch_size=args.batch_size, out_jsonl=out, progress=progress,
                           resume=args.resume)
        if distributed.is_main():
            summary_path = out.with_name(out.stem + "-summary.json")
            summary_path.write_text(json.dumps(summary, indent=2))
            print(format_table(summary))
            print(f"per-row results: {out}; summary: {summary_path}")
    return 0


def cmd_sft(cfg: RunConfig, args, progress: bool) -> int:
    from zerosearch.build import load_simulator
    from zerosearch.rl.sft import SimulatorPair, sft_train, simulator_samples

    tok, model = load_simulator(cfg)
    pairs = [SimulatorPair(**json.loads(line)) for line in Path(args.pairs).read_text().splitlines() if line.strip()]
    sft_train(model, tok, simulator_samples(pairs), steps=args.steps, lr=args.lr, append_eos=True,
              seed=cfg.seed, device=cfg.device, progress=progress, desc="simulator sft")
    model.save_pretrained(args.save)
    tok.save_pretrained(args.save)
    print(f"saved the simulator to {args.save}")
    return 0


def cmd_simulate(cfg: RunConfig, args, progress: bool) -> int:
    from zerosearch.build import build_generator, build_search, load_simulator, simulator_name
    from zerosearch.search import NoiseCurriculum, SearchRequest

    if args.serve:
        from zerosearch.search.server import serve

        tok, model = load_simulator(cfg)
        serve(build_generator(cfg, model, tok), model_name=simulator_name(cfg), host=args.host, port=args.port,
              max_concurrency=args.max_concurrency)
        return 0
    if not args.query:
        raise ValueError("--query is required (or use --serve)")
    always_noisy = NoiseCurriculum(1, p_start=1.0, p_end=1.0) if args.noisy else None
    search = build_search(cfg, curriculum=always_noisy)
    [res] = search.search([SearchRequest(0, args.query, args.question, args.answer)])
    for i, doc in enumerate(res.documents):
        print(f"Doc {i + 1}: {doc}")
    if res.fallback:
        print(f"(fallback: {res.error})", file=sys.stderr)
    return 0


def cmd_validate(cfg: RunConfig, args, progress: bool) -> int:
    import os

    from zerosearch.validate import validate_config

    world = args.world_size or int(os.environ.get("WORLD_SIZE", "1"))
    report = validate_config(cfg, world_size=world, command=args.for_command)
    print(report.render(allow_missing_paths=args.allow_missing_paths))
    return 0 if report.ok(allow_missing_paths=args.allow_missing_paths) else 1


COMMANDS = {"toy": cmd_toy, "train": cmd_train, "eval": cmd_eval, "sft": cmd_sft, "simulate": cmd_simulate,
            "validate": cmd_validate}

if __name__ == "__main__":
    raise SystemExit(main())
