"""`zerosearch sft`: fine-tune the simulator (model.simulator_path) on pairs or ZeroSearch simulation-tuning rows."""

from __future__ import annotations

import argparse
from pathlib import Path

from zerosearch.config import RunConfig, save_config

NAME = "sft"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sft", help="fine-tune the simulator on (query, label, documents) pairs (torchrun: many GPUs)",
                       description="Supervised fine-tuning of model.simulator_path with the sft.* config section: "
                       "micro-batches and gradient accumulation to sft.global_batch_size, FSDP2 under torchrun, "
                       "held-out loss every sft.eval_every steps, checkpoints every sft.save_every steps, metrics in "
                       "out_dir/metrics.jsonl, the loss plot in out_dir/sft_loss.png and the model in out_dir/final "
                       "(loadable by `simulate --serve` and vLLM). Reads our pairs JSONL or the ZeroSearch "
                       "instruction/input/output rows (zerosearch/rl/sft_data.py).")
    p.add_argument("--pairs", help="training rows (sets sft.data_path)")
    p.add_argument("--steps", type=int, help="optimiser steps (sets sft.steps)")
    p.add_argument("--lr", type=float, help="learning rate (sets sft.lr)")
    p.add_argument("--save", help="also save the fine-tuned simulator here (default: out_dir/final only)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: continue even though the config differs from the checkpoint's")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a used out_dir (deletes the SFT outputs)")
    return p


def _apply_flags(cfg: RunConfig, args) -> None:
    for flag, key in (("pairs", "data_path"), ("steps", "steps"), ("lr", "lr")):
        if getattr(args, flag) is not None:
            setattr(cfg.sft, key, getattr(args, flag))
    if not cfg.sft.data_path:
        raise ValueError("sft.data_path is not set (or pass --pairs FILE)")


def run(cfg: RunConfig, args, progress: bool) -> int:
    from zerosearch.build import load_simulator
    from zerosearch.hf.saving import save_pretrained_atomic
    from zerosearch.rl.sft_data import label_counts, load_sft_rows, split_rows
    from zerosearch.rl.sft_trainer import SFT_OUTPUTS, SFTTrainer
    from zerosearch.runtime import distributed
    from zerosearch.runtime.run_dir import prepare_out_dir, writing

    _apply_flags(cfg, args)
    out = Path(cfg.out_dir)
    if args.allow_config_change and not args.resume:
        raise ValueError("--allow-config-change only applies with --resume")
    rows = load_sft_rows(cfg.sft.data_path)
    held = load_sft_rows(cfg.sft.eval_path) if cfg.sft.eval_path else None
    prepare_out_dir(out, resume=args.resume, overwrite=args.overwrite, clear=distributed.launch_rank() == 0,
                    names=SFT_OUTPUTS)
    with distributed.process_group(cfg.device) as info:
        cfg.device = info.device
        train, held_out = split_rows(rows, eval_rows=held, eval_fraction=cfg.sft.eval_fraction,
                                     balance=cfg.sft.balance, seed=cfg.seed)
        if distributed.is_main():
            print(f"sft rows: {label_counts(rows)} read; training on {label_counts(train)}; "
                  f"{len(held_out)} held out")
        tok, model = load_simulator(cfg, trainable=True)
        trainer = SFTTrainer(cfg, model, tok, [r.segments for r in train], [r.segments for r in held_out])
        if args.resume:
            trainer.resume(allow_config_change=args.allow_config_change)
        if distributed.is_main():
            out.mkdir(parents=True, exist_ok=True)
            with writing(out / "config.yaml"):
                save_config(cfg, out / "config.yaml")
        trainer.fit(progress=progress)
        state = distributed.full_state_dict(trainer.model)[0] if info.enabled else None  # collective
        if distributed.is_main():
            if state is not None:  # a plain copy of the model, loaded with the gathered weights
                _, model = load_simulator(cfg, trainable=True, device="cpu")
                model.load_state_dict(state)
            for target in [out / "final", *([Path(args.save)] if args.save else [])]:
                save_pretrained_atomic(target, model, tok)
            print(f"saved the fine-tuned simulator to {out / 'final'}" + (f" and {args.save}" if args.save else ""))
    return 0
