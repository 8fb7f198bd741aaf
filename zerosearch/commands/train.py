"""`zerosearch train`: RL training from a config (real checkpoints and data from paths; torchrun for many GPUs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zerosearch.config import RunConfig, save_config
from zerosearch.runtime.run_dir import TRAIN_OUTPUTS

NAME = "train"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="RL training from a config (real checkpoints and data from paths)",
                       description="RL training. A fresh run needs an out_dir without an earlier run's files: "
                       "continue that run with --resume, or replace it with --overwrite.")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in out_dir; refused if that checkpoint was written "
                   "with another config (the differing keys are named) unless --allow-config-change")
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: continue even though the config differs from the checkpoint's")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in a used out_dir: first delete the files a run writes there "
                   f"({', '.join(n for n in TRAIN_OUTPUTS if not n.startswith('.'))}, and their temporary "
                   "files); anything else in out_dir is kept")
    return p


def run(cfg: RunConfig, args, progress: bool) -> int:
    """RL training; under `torchrun` every rank runs this and the policy is FSDP2-sharded
    (zerosearch.runtime.distributed)."""
    from zerosearch.build import build_trainer, load_policy
    from zerosearch.data.qa import load_qa
    from zerosearch.runtime import distributed
    from zerosearch.runtime.run_dir import prepare_out_dir, writing

    out = Path(cfg.out_dir)
    if args.allow_config_change and not args.resume:
        raise ValueError("--allow-config-change only applies with --resume")
    # Before the process group forms, so no rank has written anything yet; rank 0 alone deletes.
    prepare_out_dir(out, resume=args.resume, overwrite=args.overwrite, clear=distributed.launch_rank() == 0)
    with distributed.process_group(cfg.device) as info:
        cfg.device = info.device
        tok, policy = load_policy(cfg)
        if cfg.model.gradient_checkpointing:  # only layer inputs are kept for backward (the critic copies it)
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        train = load_qa(cfg.data.train_path)
        final = out / "final"
        trainer = build_trainer(cfg, policy, tok, train)
        if args.resume:
            trainer.resume(allow_config_change=args.allow_config_change)
        if distributed.is_main():
            with writing(out / "config.yaml"):
                save_config(cfg, out / "config.yaml")
        trainer.fit(progress=progress)
        state = distributed.full_state_dict(policy)[0] if info.enabled else None  # collective
        if distributed.is_main():
            if state is not None:  # a plain copy of the model, loaded with the gathered weights
                _, policy = load_policy(cfg, "cpu")
                policy.load_state_dict(state)
            with writing(final):
                policy.save_pretrained(final)
                tok.save_pretrained(final)
            print(f"saved the trained policy to {final}")
    return 0
