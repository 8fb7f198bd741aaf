"""Multi-GPU / multi-process training with torch.distributed and FSDP2 (`fully_shard` over a 1-D DeviceMesh).

Launch with ``torchrun --nproc_per_node N -m zerosearch.cli train ...``; a plain ``zerosearch train`` (no
torchrun environment) runs single-process and every helper here is a no-op.

Layout of one step (see ``Trainer``):

* **Data**: every rank draws the same *global* batch of questions from the same seeded stream and keeps
  ``batch[rank::world]``: the global data order (and ``--resume``) does not depend on the number of ranks.
  All ``n`` rollouts of a question happen on the rank that owns it, so a GRPO group never spans ranks.
  Sampling is seeded per (step, rank) so ranks do not generate identical rollouts.
* **Rollouts** are generated from the policy being trained, with its *full* weights gathered on every
  rank for the whole rollout phase (:func:`gathered_weights`): generation is a long, data-dependent loop
  whose number of forward passes differs between ranks, so it must not issue collectives per layer.
* **Update**: forward/backward on the sharded model; FSDP all-gathers one decoder layer at a time and
  reduce-scatters (averages) gradients. :func:`global_mean_scale` makes the averaged gradient equal the
  gradient of the *global* token-mean loss, even when ranks hold different numbers of policy tokens.

Memory per GPU (P parameters, N ranks; on CUDA fp32 master weights with bf16 compute, see
:func:`shard_model`): ``16·P/N`` bytes for the trained policy (fp32 param 4 + fp32 grad 4 + AdamW m, v 8),
``2·P/N`` for the frozen reference, stored in bf16 (PPO: another ``16·P/N`` for the critic), plus, during rollouts only,
``2·P`` for the gathered bf16 copy and the KV cache of this rank's rollouts; during the update, one gathered
bf16 layer at a time plus activations (layer inputs only with ``model.gradient_checkpointing``).
Example: Qwen2.5-3B (P = 3.1e9) on 8 GPUs: 6.2 + 0.8 GB sharded, + 6.2 GB gathered for rollouts.
The configs under ``configs/`` spell the arithmetic out per model.

FSDP2 runs on CPU with the gloo backend in torch ≥ 2.6 (checked on 2.13): the same code path is tested on
CPU, no DDP fallback is needed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits; world_size 1 means 'not distributed'."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the torchrun process group (nccl on CUDA, gloo on CPU); single process without WORLD_SIZE > 1.

    On CUDA each rank uses ``cuda:LOCAL_RANK`` whatever index the config names.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def enabled() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def launch_rank() -> int:
    """This process's rank as the launcher (torchrun) set it, readable before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def rank() -> int:
    return dist.get_rank() if enabled() else 0


def world_size() -> int:
    return dist.get_world_size() if enabled() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes metrics, checkpoints and plots."""
    return rank() == 0


def barrier() -> None:
    if enabled():
        dist.barrier()


def cleanup(*, wait_for_peers: bool = True) -> None:
    """Leave the process group; by default after a barrier, since a gloo rank that destroys the group while
    a peer is still working can abort that peer ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        if wait_for_peers:
            barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: str = "cpu") -> Iterator[DistInfo]:
    """``init_distributed`` for a block; on the way out the ranks leave together, except after an error
    (a failing rank must not wait in a barrier its peers never reach: it exits and torchrun stops the rest)."""
    info = init_distributed(device)
    try:
        yield info
    except BaseException:
        cleanup(wait_for_peers=False)
        raise
    cleanup()


def _decoder_layers(model: nn.Module) -> list[nn.Module]:
    body = getattr(model, "model", None) or getattr(model, "body", None) or model
    layers = getattr(body, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: no `.model.layers` / `.body.layers` to shard")
    return list(layers)


def shard_model(model: nn.Module, device: str | torch.device | None = None, *,
                mixed_precision: bool | None = None, forward_methods: dict[str, Any] | None = None) -> nn.Module:
    """FSDP2: ``fully_shard`` each decoder layer, then the root (embeddings, final norm, LM head).

    ``mixed_precision`` (default: on CUDA when the weights are fp32) keeps fp32 master weights, gradients
    and AdamW states in the shards but gathers and computes in bf16, reducing gradients in fp32: with
    the paper's lr 1e-6 a pure-bf16 weight would not move (the update is below bf16's resolution).

    ``forward_methods`` (name → function of the model) are bound to the model and registered with
    ``register_fsdp_forward_method``, so calls that bypass the root's ``forward`` still get its all-gather
    hooks. Single process: no-op.
    """
    if not enabled():
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    device = torch.device(device or "cpu")
    model.to(device)
    if mixed_precision is None:
        mixed_precision = device.type == "cuda" and next(model.parameters()).dtype == torch.float32
    kw = {"mesh": init_device_mesh(device.type, (world_size(),))}
    if mixed_precision:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in _decoder_layers(model):
        fully_shard(layer, **kw)
    head = getattr(model, "head", None)  # PPO critic's fp32 value head: an FSDP group holds one dtype
    if isinstance(head, nn.Module):
        fully_shard(head, **kw)
    fully_shard(model, **kw)
    for name, fn in (forward_methods or {}).items():
        setattr(model, name, fn.__get__(model))
        register_fsdp_forward_method(model, name)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _fsdp_modules(model: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered_weights(model: nn.Module) -> Iterator[nn.Module]:
    """Hold the full (unsharded) weights on every rank, e.g. for the rollout phase.

    Why not let FSDP gather per forward: generation runs a different number of forward passes on each rank
    (stop strings, turns), and per-layer all-gathers would deadlock. Gathering once costs one extra full
    copy of the weights (2·P bytes in bf16) for the duration of the block; no collective runs inside it.
    Resharding is skipped after each forward inside the block, so an HF ``generate`` works too.
    """
    mods = _fsdp_modules(model)
    if not mods:
        yield model
        return
    saved = [_reshard_flags(m) for m in mods]
    for m in mods:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield model
    finally:
        for m, flags in zip(mods, saved):
            m.reshard()
            _restore_reshard_flags(m, flags)


def _reshard_flags(module: nn.Module) -> tuple[bool, list]:
    # Private FSDP2 state, saved rather than re-derived: the root's "keep unsharded after forward" default is
    # set lazily at its first forward, which may not have happened yet when rollouts start.
    state = module._get_fsdp_state()
    return state._auto_reshard_after_forward, [g.post_forward_mesh_info for g in state._fsdp_param_groups]


def _restore_reshard_flags(module: nn.Module, flags: tuple[bool, list]) -> None:
    state = module._get_fsdp_state()
    state._auto_reshard_after_forward = flags[0]
    for group, info in zip(state._fsdp_param_groups, flags[1]):
        group.post_forward_mesh_info = info


def global_mean_scale(mask: torch.Tensor, agg: str) -> float:
    """Factor that turns this rank's mean loss into its share of the global mean.

    FSDP averages gradients over ranks, i.e. gives ``mean_r(loss_r)``. With ``token-mean`` each ``loss_r``
    is a mean over that rank's tokens; scaling it by ``world · n_r / Σ n`` makes the average exactly the
    global token mean. For the sequence-mean modes ``n_r`` counts sequences with at least one policy token.
    """
    if not enabled():
        return 1.0
    local = mask.sum() if agg == "token-mean" else (mask.sum(-1) > 0).sum()
    total = local.detach().to(torch.float64).clone()
    dist.all_reduce(total)
    return float(local.item() * world_size() / max(total.item(), 1.0))


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average numeric metrics over ranks (same keys on every rank; non-numbers are left as they are)."""
    if not enabled():
        return values
    keys = sorted(k for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool))
    if not keys:
        return values
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    t /= world_size()
    return values | {k: t[i].item() for i, k in enumerate(keys)}


def all_reduce_sum(value: float) -> float:
    if not enabled():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item()


def all_true(flag: bool) -> bool:
    """True only if `flag` holds on every rank: skip decisions must be collective or FSDP deadlocks."""
    if not enabled():
        return flag
    t = torch.tensor([0 if flag else 1], dtype=torch.int64)
    dist.all_reduce(t)
    return t.item() == 0


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable `obj`, in rank order, on every rank (eval rows); `[obj]` in one process."""
    if not enabled():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def shard_indices(indices: list[int]) -> list[int]:
    """This rank's share of a global batch (needs the global batch to be a multiple of world size)."""
    w = world_size()
    if len(indices) % w:
        raise ValueError(f"trainer.batch_questions={len(indices)} is not a multiple of the world size {w}")
    return indices[rank()::w]


def full_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer | None = None):
    """(model, optimizer) state dicts with full unsharded tensors on CPU, collective over ranks.

    Checkpoints stay in the single-process format: a run can resume on a different number of GPUs.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(model, optimizer if optimizer is not None else [], options=opts)


def load_full_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer | None, model_sd, optim_sd) -> None:
    """Inverse of :func:`full_state_dict`; every rank passes the same full state (read from a shared path)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    opts = StateDictOptions(full_state_dict=True)
    set_state_dict(model, optimizer if optimizer is not None else [], model_state_dict=model_sd,
                   optim_state_dict=optim_sd if optimizer is not None else {}, options=opts)
