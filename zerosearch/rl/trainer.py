"""The RL step loop: curriculum → rollouts against the simulator → rewards → advantages → PPO epochs.

GRPO (default), PPO (critic + GAE) and REINFORCE++ share one loop; they differ only in how advantages
are made and where the KL term goes (the loss for GRPO, the reward for PPO / REINFORCE++, as the paper's
veRL-based recipe does). docs/ARCHITECTURE.md walks through one step.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from zerosearch.config import ALGOS, RunConfig, config_to_dict
from zerosearch.data.qa import QAExample
from zerosearch.ops import info_span_mask, masked_pg_loss, policy_loss_mask
from zerosearch.rl import advantages as algos
from zerosearch.rl import forward
from zerosearch.rl.batch import Batch, make_batch
from zerosearch.rl.critic import ValueModel
from zerosearch.rl.data_stream import DataStream
from zerosearch.rl.lr_schedule import lr_factor
from zerosearch.rollout import RolloutRunner, score_trajectories
from zerosearch.runtime import distributed
from zerosearch.runtime.checkpoint import load_latest_checkpoint, rng_state, save_checkpoint, set_rng_state
from zerosearch.runtime.metrics import MetricsLogger, plot_training
from zerosearch.runtime.run_dir import check_resume_config, writing
from zerosearch.search.curriculum import NoiseCurriculum

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised (with the offending batch saved) when trainer.on_nonfinite = stop."""


class Trainer:
    """Owns the policy, reference, optional critic, optimisers and the run directory."""

    def __init__(self, cfg: RunConfig, policy, tokenizer, runner: RolloutRunner, train: list[QAExample],
                 *, curriculum: NoiseCurriculum) -> None:
        self.cfg, self.tc = cfg, cfg.trainer
        self.config = config_to_dict(cfg)  # the run's config as it started, saved with each checkpoint
        if self.tc.algo not in ALGOS:
            raise ValueError(f"trainer.algo must be one of {list(ALGOS)}, not {self.tc.algo!r}")
        self.device = torch.device(cfg.device)
        self.policy = policy.to(self.device)
        self.tokenizer = tokenizer
        self.runner = runner
        self.train = train
        self.curriculum = curriculum
        packed = forward.set_packing(self.policy, cfg.model.packed_sequences)  # the reference copy inherits it
        compute = getattr(self.policy, forward.COMPUTE_ATTR, None)
        # The frozen reference needs no master weights: it is stored in the compute dtype.
        self.ref = copy.deepcopy(policy).to(self.device, dtype=compute).eval().requires_grad_(False)
        self.critic = None
        if self.tc.algo == "ppo":
            body = copy.deepcopy(forward.decoder_of(policy))
            self.critic = ValueModel(body, policy.config.hidden_size, packed=packed).to(self.device)
            forward.set_compute_dtype(self.critic, compute)
        # Under torchrun: FSDP2-shard policy, reference and critic in place (the runner's generator holds the
        # same policy object); optimisers are built below on the sharded parameters. No-op otherwise.
        self.world = distributed.world_size()
        forward.shard_causal_lm(self.policy, self.device)
        forward.shard_causal_lm(self.ref, self.device)
        if self.critic is not None:
            distributed.shard_model(self.critic, self.device)
        self.opt = torch.optim.AdamW(self.policy.parameters(), lr=self.tc.lr, weight_decay=self.tc.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(
            s, warmup=self.tc.warmup_steps, total=self.tc.steps, schedule=self.tc.lr_schedule,
            min_ratio=self.tc.min_lr_ratio))
        self.critic_opt = (torch.optim.AdamW(self.critic.parameters(), lr=self.tc.critic_lr)
                           if self.critic is not None else None)
        self.data = DataStream(len(train), cfg.seed)
        self.step = 0
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsLogger(self.out / "metrics.jsonl") if distributed.is_main() else None
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else tokenizer.eos_token_id
        self.info_ids = ([runner.tags.info_open], [runner.tags.info_close])

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Collective under torchrun: full (unsharded) tensors, gathered to rank 0's CPU."""
        if self.world > 1:
            policy_sd, opt_sd = distributed.full_state_dict(self.policy, self.opt)
        else:
            policy_sd, opt_sd = self.policy.state_dict(), self.opt.state_dict()
        state = {
            "step": self.step,
            "policy": policy_sd,
            "opt": opt_sd,
            "opt_format": "fqn" if self.world > 1 else "torch",
            "sched": self.sched.state_dict(),
            "data": self.data.state(),
            "rng": rng_state(),
            "config": self.config,  # what --resume checks the current config against
        }
        if self.critic is not None and self.world > 1:
            state["critic"], state["critic_opt"] = distributed.full_state_dict(self.critic, self.critic_opt)
        elif self.critic is not None:
            state["critic"] = self.critic.state_dict()
            state["critic_opt"] = self.critic_opt.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("opt_format", "torch") == "fqn":  # written by a torchrun run (any world size)
            distributed.load_full_state_dict(self.policy, self.opt, state["policy"], state["opt"])
            if self.critic is not None:
                distributed.load_full_state_dict(self.critic, self.critic_opt, state["critic"], state["critic_opt"])
        elif self.world > 1:
            raise ValueError("a single-process checkpoint cannot be resumed under torchrun; resume it without")
        else:
            self.policy.load_state_dict(state["policy"])
            self.opt.load_state_dict(state["opt"])
            if self.critic is not None:
                self.critic.load_state_dict(state["critic"])
                self.critic_opt.load_state_dict(state["critic_opt"])
        self.sched.load_state_dict(state["sched"])
        self.data.load(state["data"])
        set_rng_state(state["rng"])
        self.step = state["step"]

    def resume(self, *, allow_config_change: bool = False) -> bool:
        """Restore the newest checkpoint that loads (an unreadable newest one falls back to the one before) and
        drop metrics logged after it. A checkpoint written with another config is refused (ValueError naming the
        keys that differ) unless `allow_config_change`: continuing another run's state is never silent."""
        found = load_latest_checkpoint(self.out / "checkpoints")
        if found is None:
            log.warning("--resume: no checkpoint in %s, starting from step 0", self.out / "checkpoints")
            return False
        ckpt, state = found
        check_resume_config(ckpt, state.get("config"), self.config, allow_change=allow_config_change)
        self.load_state_dict(state)
        if self.metrics is not None:
            self.metrics.truncate_after(self.step - 1)
        log.info("resumed from %s (next step %d)", ckpt, self.step)
        return True

    def checkpoint(self) -> None:
        state = self.state_dict()  # collective: every rank takes part
        if distributed.is_main():
            save_checkpoint(self.out / "checkpoints", self.step, state, keep=self.tc.keep_checkpoints)
        distributed.barrier()

    # ---------------------------------------------------------------- loop
    def fit(self, *, progress: bool = True) -> list[dict[str, Any]]:
        rows = []
        bar = tqdm(total=self.tc.steps, initial=self.step, desc="rl", disable=not (progress and distributed.is_main()),
                   dynamic_ncols=True)
        while self.step < self.tc.steps:
            row = self.train_step()
            rows.append(row)
            if self.metrics is not None:
                self.metrics.log(row)
            self.step += 1
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward']:.3f}", p=f"{row['noise_p']:.2f}")
            if self.tc.checkpoint_every and (self.step % self.tc.checkpoint_every == 0 or self.step == self.tc.steps):
                self.checkpoint()
        bar.close()
        if distributed.is_main():
            plot_training(self.out / "metrics.jsonl", self.out / "training.png")
        return rows

    def _seed_step(self) -> None:
        """Per-step seeding makes a resumed run sample exactly what the uninterrupted run sampled."""
        seed = self.cfg.seed * 1_000_003 + self.step + distributed.rank() * 1_000_000_007  # ranks sample apart
        torch.manual_seed(seed)
        reseed = getattr(self.runner.search, "reseed", None)
        if reseed is not None:
            reseed(seed)

    def train_step(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self._seed_step()
        # Every rank draws the same global batch and keeps its share; a question's n rollouts stay on one rank.
        examples = [self.train[i] for i in distributed.shard_indices(self.data.next(self.tc.batch_questions))]
        self.policy.eval()
        with distributed.gathered_weights(self.policy):  # full weights for generation (no-op single process)
            trajs = self.runner.run(examples, self.cfg.rollout.n_samples, step=self.step)
        t_roll = time.perf_counter() - t0
        scores = score_trajectories(trajs, self.tokenizer)
        reward = torch.tensor([s["f1"] for s in scores], dtype=torch.float32)
        batch = make_batch([t.prompt_ids for t in trajs], [t.response_ids for t in trajs],
                           [t.loss_mask for t in trajs], self.pad_id).to(self.device)
        # One mask everywhere: policy tokens minus anything inside <information> spans.
        info = info_span_mask(batch.ids, *self.info_ids, pad_id=None)[:, 1:]
        batch = Batch(batch.ids, batch.attn, policy_loss_mask(batch.mask, info))
        with torch.no_grad():
            temp = self.cfg.rollout.temperature
            old_lp = forward.sequence_logprobs(self.policy, batch.ids, batch.attn, batch.mask, temperature=temp)
            ref_lp = forward.sequence_logprobs(self.ref, batch.ids, batch.attn, batch.mask, temperature=temp)
            adv, returns, values = self._advantages(batch, reward, old_lp, ref_lp, trajs)
        self.policy.train()
        upd = self._update(batch, old_lp, ref_lp, adv, returns, values)
        policy_tokens = batch.mask.sum(1).float()
        n_queries = sum(len(t.noisy) for t in trajs)
        row = {
            "step": self.step,
            "reward": reward.mean().item(),
            "f1": reward.mean().item(),
            "em": float(np.mean([s["em"] for s in scores])),
            "cover_em": float(np.mean([s["cover_em"] for s in scores])),
            "answered": float(np.mean([s["has_answer"] for s in scores])),
            "noise_p": self.curriculum.probability(self.step),
            "noisy_frac": (sum(sum(t.noisy) for t in trajs) / n_queries) if n_queries else 0.0,
            "searches": float(np.mean([t.n_searches for t in trajs])),
            "invalid_actions": float(np.mean([t.invalid_actions for t in trajs])),
            "fallbacks": sum(t.fallbacks for t in trajs),
            "response_len": policy_tokens.mean().item(),
            "lr": self.sched.get_last_lr()[0],
            "rollout_s": t_roll,
            **upd,
        }
        with warnings.catch_warnings():  # the schedule follows the step count, also after a skipped (NaN) update
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.sched.step()
        row["step_s"] = time.perf_counter() - t0
        if self.world > 1:  # rank 0 logs the mean over ranks (counts summed), same keys on every rank
            row = distributed.all_reduce_mean(row) | {"step": self.step, "world_size": self.world,
                                                       "fallbacks": distributed.all_reduce_sum(row["fallbacks"])}
        return row

    def _advantages(self, batch: Batch, reward: torch.Tensor, old_lp, ref_lp, trajs):
        mask, tc = batch.mask, self.tc
        reward = reward.to(self.device)
        values = returns = None
        if tc.algo == "grpo":
            adv = algos.grpo_advantages(reward, [t.group_id for t in trajs], singleton=tc.grpo_singleton,
                                        norm_by_std=tc.grpo_norm_by_std).to(self.device)
            adv = adv[:, None].expand_as(old_lp) * mask
            return adv, None, None
        kl = (old_lp - ref_lp) * mask
        token_rewards = algos.token_level_rewards(reward, mask, kl=kl, kl_coef=tc.kl_coef)
        if tc.algo == "ppo":
            values = self.critic(batch.ids, batch.attn) * mask
            if distributed.is_sharded(self.critic):
                self.critic.reshard()
            adv, returns = algos.gae(token_rewards, values, mask, gamma=tc.gamma, lam=tc.lam)
            adv = algos.masked_whiten(adv, mask) * mask
        else:
            adv, returns = algos.reinforce_pp_advantages(token_rewards, mask, gamma=tc.gamma)
        return adv, returns, values

    def _update(self, batch: Batch, old_lp, ref_lp, adv, returns, values) -> dict[str, float]:
        tc = self.tc
        n = batch.ids.shape[0]
        kl_in_loss = tc.kl_coef if tc.algo == "grpo" else 0.0
        stats: dict[str, list[float]] = {}
        skipped = 0
        for _ in range(tc.ppo_epochs):
            order = torch.randperm(n)
            for rows in order.chunk(max(1, min(tc.mini_batches, n))):
                rows = rows.to(self.device)
                mb = batch.select(rows).trim()  # without the right padding of this mini-batch
                width = mb.ids.shape[1]
                hidden, head = forward.hidden_and_head(self.policy, mb.ids, mb.attn)
                loss, m = masked_pg_loss(
                    hidden[:, :-1], head, mb.ids[:, 1:], old_lp[rows, : width - 1],
                    adv[rows, : width - 1], mb.mask, ref_logprobs=ref_lp[rows, : width - 1],
                    clip_low=tc.clip_low, clip_high=tc.clip_high, dual_clip=tc.dual_clip,
                    kl_coef=kl_in_loss, kl_type=tc.kl_type, entropy_coef=tc.entropy_coef,
                    temperature=self.cfg.rollout.temperature, agg=tc.agg)
                # Skips are decided by all ranks together (a rank leaving a backward out would hang FSDP);
                # the scale makes FSDP's gradient average equal the gradient of the global mean loss.
                scale = distributed.global_mean_scale(mb.mask, tc.agg)
                if not distributed.all_true(bool(torch.isfinite(loss))):
                    skipped += 1
                    self._non_finite(mb, loss)
                    continue
                self.opt.zero_grad(set_to_none=True)
                (loss * scale).backward()
                gnorm = _full(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), tc.grad_clip))
                if not torch.isfinite(gnorm):
                    skipped += 1
                    self._non_finite(mb, gnorm)
                    self.opt.zero_grad(set_to_none=True)
                    continue
                self.opt.step()
                for k, v in m.items():
                    stats.setdefault(k, []).append(float(v))
                stats.setdefault("grad_norm", []).append(gnorm.item())
                stats.setdefault("loss", []).append(loss.item())
                if self.critic is not None:
                    stats.setdefault("value_loss", []).append(self._critic_step(mb, rows, width, returns, values))
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        out["skipped_updates"] = skipped
        return out

    def _critic_step(self, mb: Batch, rows, width: int, returns, values) -> float:
        new_values = self.critic(mb.ids, mb.attn)
        loss = algos.value_loss(new_values, values[rows, : width - 1], returns[rows, : width - 1], mb.mask,
                                clip=self.tc.value_clip)
        self.critic_opt.zero_grad(set_to_none=True)
        (loss * distributed.global_mean_scale(mb.mask, "token-mean")).backward()
        torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.tc.grad_clip)
        self.critic_opt.step()
        return loss.item()

    def _non_finite(self, mb: Batch, value: torch.Tensor) -> None:
        if self.world > 1:
            value = _full(value)
        if self.tc.on_nonfinite == "stop":
            path = self.out / f"nonfinite-step{self.step}.pt"
            with writing(path):
                torch.save({"ids": mb.ids.cpu(), "attn": mb.attn.cpu(), "mask": mb.mask.cpu()}, path)
            raise NonFiniteLossError(f"non-finite loss/grad ({value}) at step {self.step}; batch saved to {path}")
        log.warning("non-finite loss/grad (%s) at step %d: update skipped", value, self.step)


def _full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (e.g. the grad norm of FSDP-sharded parameters) as a plain tensor; others unchanged."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
