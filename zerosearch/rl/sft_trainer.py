"""Simulator SFT at scale: micro-batches with gradient accumulation to a global batch, FSDP2 under torchrun,
mixed precision, held-out loss, atomic checkpoints and exact `--resume`.

Every piece is the RL trainer's: `forward.shard_causal_lm` (FSDP2 over the decoder layers, fp32 master weights
with bf16 compute on CUDA), `forward.sequence_logprobs` (no `[tokens, vocab]` logits), `DataStream` (a seeded,
resumable data order), `runtime.checkpoint` and `runtime.metrics`. One step: every rank draws the same global
batch of `sft.global_batch_size` rows, sorts it by length when `sft.length_grouping` (micro-batches of similar
lengths pad little), keeps rows `rank::world` and runs `global / (world · micro)` micro-batches. Each
micro-batch's loss is its summed token NLL times `world / N` (N = trainable tokens in the whole global batch), so
FSDP's gradient average over ranks is exactly the gradient of the global token mean, on any number of ranks.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from zerosearch.config import RunConfig, config_to_dict
from zerosearch.rl import forward
from zerosearch.rl.batch import make_batch
from zerosearch.rl.data_stream import DataStream
from zerosearch.rl.lr_schedule import lr_factor
from zerosearch.rl.sft import Segments, tokenize_segments
from zerosearch.runtime import distributed
from zerosearch.runtime.checkpoint import load_latest_checkpoint, rng_state, save_checkpoint, set_rng_state
from zerosearch.runtime.metrics import MetricsLogger, pyplot, read_metrics, save_figure
from zerosearch.runtime.run_dir import check_resume_config

log = logging.getLogger(__name__)

# What `zerosearch sft` writes into out_dir (glob patterns, top level only).
SFT_OUTPUTS = ("checkpoints", "metrics.jsonl", ".metrics.jsonl.tmp-*", "sft_loss.png", "config.yaml", "final")


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


class SFTTrainer:
    """Owns the sharded model, its optimiser and schedule, the data order and out_dir's checkpoints/metrics."""

    def __init__(self, cfg: RunConfig, model, tokenizer, train: list[Segments], held_out: list[Segments]) -> None:
        self.cfg, self.sc = cfg, cfg.sft
        self.config = config_to_dict(cfg)
        self.world = distributed.world_size()
        per_step = self.sc.micro_batch_size * self.world
        if self.sc.micro_batch_size < 1 or self.sc.global_batch_size % per_step:
            raise ValueError(f"sft.global_batch_size={self.sc.global_batch_size} must be a multiple of "
                             f"sft.micro_batch_size x world size = {per_step}")
        self.accum = self.sc.global_batch_size // per_step
        enc = dict(max_len=self.sc.max_len, append_eos=self.sc.append_eos)
        self.train = [tokenize_segments(tokenizer, s, **enc) for s in train]
        self.held_out = [tokenize_segments(tokenizer, s, **enc) for s in held_out]
        if not self.train:
            raise ValueError("sft: no training rows")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.device = torch.device(cfg.device)
        forward.set_packing(model, cfg.model.packed_sequences)
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = forward.shard_causal_lm(model.to(self.device), self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.sc.lr, weight_decay=self.sc.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(
            s, warmup=self.sc.warmup_steps, total=self.sc.steps, schedule=self.sc.lr_schedule,
            min_ratio=self.sc.min_lr_ratio))
        self.data = DataStream(len(self.train), cfg.seed)
        self.step = 0
        self.out = Path(cfg.out_dir)
        self.metrics = MetricsLogger(self.out / "metrics.jsonl") if distributed.is_main() else None

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Collective under torchrun: full tensors on rank 0's CPU, so a run resumes on any number of ranks."""
        if self.world > 1:
            model_sd, opt_sd = distributed.full_state_dict(self.model, self.opt)
        else:
            model_sd, opt_sd = self.model.state_dict(), self.opt.state_dict()
        return {"step": self.step, "model": model_sd, "opt": opt_sd, "opt_format": "fqn" if self.world > 1 else "torch",
                "sched": self.sched.state_dict(), "data": self.data.state(), "rng": rng_state(), "config": self.config}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["opt_format"] == "fqn":
            distributed.load_full_state_dict(self.model, self.opt, state["model"], state["opt"])
        elif self.world > 1:
            raise ValueError("a single-process SFT checkpoint cannot be resumed under torchrun; resume it without")
        else:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.data.load(state["data"])
        set_rng_state(state["rng"])
        self.step = state["step"]

    def resume(self, *, allow_config_change: bool = False) -> bool:
        found = load_latest_checkpoint(self.out / "checkpoints")
        if found is None:
            log.warning("--resume: no checkpoint in %s, starting from step 0", self.out / "checkpoints")
            return False
        path, state = found
        check_resume_config(path, state.get("config"), self.config, allow_change=allow_config_change)
        self.load_state_dict(state)
        if self.metrics is not None:
            self.metrics.truncate_after(self.step - 1)
        log.info("resumed SFT from %s (next step %d)", path, self.step)
        return True

    def checkpoint(self) -> None:
        state = self.state_dict()
        if distributed.is_main():
            save_checkpoint(self.out / "checkpoints", self.step, state, keep=self.sc.keep_checkpoints)
        distributed.barrier()

    # ---------------------------------------------------------------- math
    def _nll(self, rows: list[tuple[list[int], list[bool]]]) -> tuple[torch.Tensor, int]:
        """Summed token NLL over the trainable tokens of `rows`, and their count."""
        batch = make_batch([[] for _ in rows], [ids for ids, _ in rows], [m for _, m in rows], self.pad_id)
        batch = batch.to(self.device)
        lp = forward.sequence_logprobs(self.model, batch.ids, batch.attn, batch.mask)
        return -(lp.float() * batch.mask).sum(), int(batch.mask.sum().item())

    def _global_batch(self) -> list[int]:
        idx = self.data.next(self.sc.global_batch_size)
        if self.sc.length_grouping:
            idx = sorted(idx, key=lambda i: -len(self.train[i][0]))
        return idx

    def train_step(self) -> dict[str, Any]:
        idx = self._global_batch()
        n_tokens = sum(sum(self.train[i][1][1:]) for i in idx)  # the first token is never predicted
        mine = idx[distributed.rank()::self.world]
        micro = self.sc.micro_batch_size
        self.model.train()
        total = 0.0
        for j in range(self.accum):
            if distributed.is_sharded(self.model):  # reduce-scatter once, after the last micro-batch
                self.model.set_requires_gradient_sync(j == self.accum - 1)
            nll, _ = self._nll([self.train[i] for i in mine[j * micro : (j + 1) * micro]])
            (nll * (self.world / max(n_tokens, 1))).backward()
            total += nll.item()
        gnorm = _full(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.sc.grad_clip))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        lr = self.sched.get_last_lr()[0]
        self.sched.step()
        return {"step": self.step, "loss": distributed.all_reduce_sum(total) / max(n_tokens, 1),
                "grad_norm": gnorm.item(), "lr": lr, "tokens": n_tokens}

    @torch.no_grad()
    def eval_loss(self) -> float:
        """Mean token NLL of the held-out rows; every rank runs the same number of forwards (FSDP gathers per
        forward), a rank without rows in the last chunk re-reads one with weight 0."""
        if not self.held_out:
            return math.nan
        self.model.eval()
        chunk = self.sc.micro_batch_size * self.world
        total = count = 0.0
        for start in range(0, len(self.held_out), chunk):
            part = self.held_out[start : start + chunk][distributed.rank()::self.world]
            weight = 1.0 if part else 0.0
            nll, n = self._nll(part or self.held_out[start : start + 1])
            total += weight * nll.item()
            count += weight * n
        return distributed.all_reduce_sum(total) / max(distributed.all_reduce_sum(count), 1.0)

    # ---------------------------------------------------------------- loop
    def fit(self, *, progress: bool = True, desc: str = "sft") -> list[dict[str, Any]]:
        rows = []
        bar = tqdm(total=self.sc.steps, initial=self.step, desc=desc, dynamic_ncols=True,
                   disable=not (progress and distributed.is_main()))
        while self.step < self.sc.steps:
            row = self.train_step()
            self.step += 1
            last = self.step == self.sc.steps
            if last or (self.sc.eval_every and self.step % self.sc.eval_every == 0):
                row["eval_loss"] = self.eval_loss()
            rows.append(row)
            if self.metrics is not None:
                self.metrics.log(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            if last or (self.sc.save_every and self.step % self.sc.save_every == 0):
                self.checkpoint()
        bar.close()
        if distributed.is_main():
            plot_sft_loss(self.out / "metrics.jsonl", self.out / "sft_loss.png")
        return rows


def plot_sft_loss(metrics_path: str | Path, out_png: str | Path) -> Path:
    """Training and held-out token NLL against step, in one PNG."""
    plt = pyplot()
    rows = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train NLL", color="tab:blue")
    held = [r for r in rows if isinstance(r.get("eval_loss"), float)]
    ax.plot([r["step"] for r in held], [r["eval_loss"] for r in held], "o-", label="held-out NLL", color="tab:red")
    ax.set_xlabel("step")
    ax.set_ylabel("token NLL")
    ax.legend()
    ax.set_title("simulator SFT")
    return save_figure(fig, out_png)
