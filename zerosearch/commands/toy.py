"""`zerosearch toy`: the whole pipeline on the built-in toy world."""

from __future__ import annotations

import argparse

from zerosearch.config import RunConfig

NAME = "toy"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("toy", help="build the toy world, warm-start the policy, collect and label its searches, "
                       "SFT the simulator, RL, evaluate")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run: finished stages are reused (rebuilt if their saved model does not "
                   "load), RL continues from its last checkpoint; the result is that of an uninterrupted run")
    p.add_argument("--fast", action="store_true", help="a much shorter run (smoke test)")
    return p


def run(cfg: RunConfig, args, progress: bool) -> int:
    from zerosearch.toy.pipeline import run_toy

    run_toy(cfg, resume=args.resume, fast=args.fast, progress=progress)
    return 0
