"""`zerosearch reproduce`: the paper's comparisons on the toy world, one results table over seeds."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from zerosearch.config import RunConfig

NAME = "reproduce"
DEFAULT_OVERRIDES = ("out_dir=runs/reproduce",)  # the toy config's own out_dir belongs to `zerosearch toy`


def add_parser(sub) -> argparse.ArgumentParser:
    from zerosearch.reproduce.variants import VARIANT_NAMES

    p = sub.add_parser(
        "reproduce",
        help="the paper's comparisons on the toy world: a results table over seeds",
        description="Per seed: build the toy world, SFT the simulator and warm-start the policy once (the toy "
        "pipeline, which is also the ZeroSearch row), then train and evaluate every variant with real BM25 search on "
        "the same held-out questions, and write results.md, results.json and training.png to out_dir (default "
        "runs/reproduce). Overrides change the base config of every variant (e.g. trainer.steps=30). A fresh run "
        "needs an unused out_dir: continue a killed one with --resume (each variant and seed resumes where it "
        f"stopped), or replace it with --overwrite. Variants: {', '.join(VARIANT_NAMES)}.",
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2); each builds its own world")
    p.add_argument(
        "--variants",
        help="comma-separated subset of the variants (zerosearch always runs: the others "
        "start from its simulator and warm-start)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a check that every variant trains and the table is written: the first seed, 2 RL steps, "
        "a few questions (minutes on 2 cores; the numbers mean nothing)",
    )
    p.add_argument(
        "--sft-steps",
        type=int,
        nargs=2,
        metavar=("SIMULATOR", "POLICY"),
        help="SFT steps of the simulator and of the policy warm-start (default: the toy's, 600 and 1000)",
    )
    p.add_argument("--resume", action="store_true", help="continue the table in out_dir, made with the same settings")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a used out_dir: first delete what an earlier table wrote there",
    )
    return p


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds must name distinct non-negative seeds, got {text!r}")
    return seeds


def _command_line(args, seeds: list[int]) -> str:
    """The command that makes this table, for results.md."""
    words = ["zerosearch", "reproduce", "--seeds", ",".join(map(str, seeds))]
    words += ["--variants", args.variants] if args.variants else []
    words += ["--smoke"] if args.smoke else []
    words += ["--sft-steps", *map(str, args.sft_steps)] if args.sft_steps else []
    words += ["--config", args.config] if args.config and Path(args.config).name != "toy.yaml" else []
    return shlex.join([*words, *args.overrides])


def run(cfg: RunConfig, args, progress: bool) -> int:
    from dataclasses import replace

    from zerosearch.config import apply_overrides
    from zerosearch.reproduce import REPRODUCE_OUTPUTS, check_plan, reproduce
    from zerosearch.reproduce.variants import SMOKE_OVERRIDES, SMOKE_SCHEDULE, select
    from zerosearch.runtime.run_dir import prepare_out_dir
    from zerosearch.toy.pipeline import ToySchedule

    seeds = _seeds(args.seeds)
    variants = select([v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None)
    schedule = ToySchedule()
    if args.smoke:
        seeds = seeds[:1]
        named = {o.split("=", 1)[0].strip() for o in args.overrides}
        apply_overrides(cfg, {k: v for k, v in SMOKE_OVERRIDES.items() if k not in named})
        schedule = SMOKE_SCHEDULE
    if args.sft_steps:
        if min(args.sft_steps) < 1:
            raise ValueError(f"--sft-steps must be >= 1, got {args.sft_steps}")
        schedule = replace(schedule, simulator_steps=args.sft_steps[0], policy_steps=args.sft_steps[1])
    if args.resume:
        check_plan(Path(cfg.out_dir), cfg, schedule)
    prepare_out_dir(cfg.out_dir, resume=args.resume, overwrite=args.overwrite, names=REPRODUCE_OUTPUTS)
    command = _command_line(args, seeds)
    reproduce(cfg, variants, seeds, schedule, command=command, progress=progress)
    return 0
