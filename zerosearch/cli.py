"""`zerosearch` command line: toy | reproduce | train | eval | sft | simulate | validate.

Every command takes `--config FILE.yaml` plus dotted overrides (`trainer.steps=100 rollout.n_samples=5`). Each
command lives in its own module of :mod:`zerosearch.commands` (its arguments and its `run`); this module parses,
loads the config, runs the same dry-run checks as `zerosearch validate` before any command does anything (so a
rejected config writes nothing and loads no model), and turns user errors into one line on stderr with exit
code 2. A failed write (disk full, read-only out_dir) is one line naming the file, exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

from zerosearch.commands import collect, label, reproduce, sft, simulate, toy, train, validate
from zerosearch.commands import eval as eval_cmd
from zerosearch.config import load_config
from zerosearch.runtime.run_dir import WriteError

TOY_CONFIG = Path(__file__).parent / "configs" / "toy.yaml"

EPILOG = """examples:
  zerosearch toy                                  # the whole pipeline on the built-in toy world (CPU)
  zerosearch toy trainer.algo=ppo seed=1          # same with PPO and another seed
  zerosearch reproduce --seeds 0,1,2              # the paper's comparisons on the toy world: a results table
  zerosearch validate --config configs/qwen2.5-3b-grpo.yaml --allow-missing-paths --world-size 8
  torchrun --nproc_per_node 8 -m zerosearch.cli train --config configs/qwen2.5-3b-grpo.yaml
  zerosearch train --config configs/qwen2.5-3b-grpo.yaml --resume
  zerosearch eval --config configs/qwen2.5-3b-grpo.yaml model.policy_path=runs/x/final
  torchrun --nproc_per_node 8 -m zerosearch.cli eval --config cfg.yaml --resume  # 8 GPUs; continue a crashed eval
  zerosearch simulate --config cfg.yaml --query "capital of france" --question "..." --answer paris
  torchrun --nproc_per_node 8 -m zerosearch.cli collect --config cfg.yaml search.backend=retriever --questions 20000
  zerosearch label --config cfg.yaml --rule judge collect.judge_url=http://localhost:8001/v1 collect.judge_model=m
"""


COMMANDS = {m.NAME: m for m in (toy, reproduce, train, eval_cmd, collect, label, sft, simulate, validate)}

# Numeric arguments of any command, by argparse dest: (flag, lowest, highest); checked in one place so every
# command answers a bad value the same way.
ARG_LIMITS = {
    "port": ("--port", 0, 65535),
    "batch_size": ("--batch-size", 1, None),
    "max_concurrency": ("--max-concurrency", 1, None),
    "steps": ("--steps", 1, None),
    "lr": ("--lr", 0.0, None),
    "world_size": ("--world-size", 0, None),
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (the usage block is one `--help` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _arg_problem(args: argparse.Namespace) -> str | None:
    for dest, (flag, lo, hi) in ARG_LIMITS.items():
        value = getattr(args, dest, None)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, float) and (not math.isfinite(value) or value <= lo):
            return f"argument {flag}: must be a finite number > {lo}, got {value}"
        if isinstance(value, int) and (value < lo or (hi is not None and value > hi)):
            allowed = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            return f"argument {flag}: must be {allowed}, got {value}"
    return None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (defaults are in zerosearch/config.py)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.add_argument("--quiet", action="store_true", help="turn off progress bars, transformers' load/save bars included")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="zerosearch", description="RL for search agents against a simulated search engine (ZeroSearch).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        _add_common(module.add_parser(sub))
    return parser


def _precheck(cfg, args) -> list[str]:
    """What `zerosearch validate` would reject for this command, before it does anything."""
    from zerosearch.validate import validate_config

    world = int(os.environ.get("WORLD_SIZE", "1"))
    report = validate_config(cfg, world_size=world, command=args.command)
    return report.errors + report.missing_paths


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may also follow a flag (`train out_dir=x --resume trainer.lr=1e-5`): argparse leaves the ones after
    # it unparsed, and they join the others here.
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = [*args.overrides, *extra]
    problem = _arg_problem(args)
    if problem:
        parser.exit(2, f"zerosearch {args.command}: error: {problem}\n")
    handler = logging.StreamHandler()
    handler.setLevel(logging.INFO)  # a library that sets its own logger to DEBUG (bm25s does) stays quiet here
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    if args.quiet:  # also the bars transformers draws when it loads or saves a model
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    defaults: list[str] = []
    if args.command in ("toy", "reproduce") and not args.config:
        args.config = str(TOY_CONFIG)
        defaults = list(getattr(COMMANDS[args.command], "DEFAULT_OVERRIDES", ()))
    try:
        cfg = load_config(args.config, [*defaults, *args.overrides])
        errors = _precheck(cfg, args) if args.command != "validate" else []
    except (ValueError, FileNotFoundError) as exc:
        print(f"zerosearch: config error: {exc}", file=sys.stderr)
        return 2
    if errors:
        for e in errors:
            print(f"zerosearch {args.command}: config error: {e}", file=sys.stderr)
        return 2
    progress = not args.quiet
    try:
        return COMMANDS[args.command].run(cfg, args, progress)
    except WriteError as exc:
        again = " (what was saved before is kept: run the same command with --resume to continue)" if getattr(
            args, "resume", None) is not None else ""
        print(f"zerosearch {args.command}: {exc}{again}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"zerosearch {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment (permissions, network, devices), not a bug: one line too
        print(f"zerosearch {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
