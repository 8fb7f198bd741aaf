"""`zerosearch` command line: toy | train | eval | sft | simulate | validate.

Every command takes `--config FILE.yaml` plus dotted overrides (`trainer.steps=100 rollout.n_samples=5`). Each
command lives in its own module of :mod:`zerosearch.commands` (its arguments and its `run`); this module parses,
loads the config and turns user errors into one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from zerosearch.commands import eval as eval_cmd
from zerosearch.commands import sft, simulate, toy, train, validate
from zerosearch.config import load_config

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


COMMANDS = {m.NAME: m for m in (toy, train, eval_cmd, sft, simulate, validate)}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (defaults are in zerosearch/config.py)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.add_argument("--quiet", action="store_true", help="turn off progress bars, transformers' load/save bars included")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zerosearch", description="RL for search agents against a simulated search engine (ZeroSearch).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        _add_common(module.add_parser(sub))
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
        return COMMANDS[args.command].run(cfg, args, progress)
    except (ValueError, FileNotFoundError) as exc:
        print(f"zerosearch {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
