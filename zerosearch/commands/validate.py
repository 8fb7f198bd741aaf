"""`zerosearch validate`: dry-run check of a config, no model loaded."""

from __future__ import annotations

import argparse

from zerosearch.config import RunConfig

NAME = "validate"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("validate", help="dry-run check of a config: names, ranges, curriculum, batches, paths")
    p.add_argument("--allow-missing-paths", action="store_true", help="report missing model/data paths, pass anyway")
    p.add_argument("--world-size", type=int, default=0,
                   help="GPUs (torchrun ranks) the run will use, for the batch checks (default: $WORLD_SIZE or 1)")
    p.add_argument("--for", dest="for_command", choices=("train", "eval"), default="train",
                   help="which command's paths to check (default train)")
    return p


def run(cfg: RunConfig, args, progress: bool) -> int:
    import os

    from zerosearch.validate import validate_config

    world = args.world_size or int(os.environ.get("WORLD_SIZE", "1"))
    report = validate_config(cfg, world_size=world, command=args.for_command)
    print(report.render(allow_missing_paths=args.allow_missing_paths))
    return 0 if report.ok(allow_missing_paths=args.allow_missing_paths) else 1
