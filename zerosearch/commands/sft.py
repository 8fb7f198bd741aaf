"""`zerosearch sft`: fine-tune the simulator on (query, label, documents) pairs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zerosearch.config import RunConfig

NAME = "sft"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sft", help="fine-tune the simulator on (query, label, documents) pairs from JSONL")
    p.add_argument("--pairs", required=True, help="JSONL rows: query, question, golden_answers, documents, useful")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--save", required=True, help="directory for the fine-tuned simulator")
    return p


def run(cfg: RunConfig, args, progress: bool) -> int:
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
