"""`zerosearch train`: RL training from a config (real checkpoints and data from paths; torchrun for many GPUs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zerosearch.config import RunConfig, save_config

NAME = "train"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="RL training from a config (real checkpoints and data from paths)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
    return p


def run(cfg: RunConfig, args, progress: bool) -> int:
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
