"""Tiny Qwen2-architecture models for the toy world (CPU-sized).

Same architecture family as the real targets (GQA, RoPE, SwiGLU, RMSNorm, untied head) so the toy
run exercises the very code paths a Qwen2.5 run does, only small enough to train in minutes.
"""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from zerosearch.toy.tokenizer import EOS_ID, PAD_ID

# role -> architecture sizes; the simulator is a little shallower than the policy
_SIZES = {
    "policy": {"hidden_size": 128, "num_hidden_layers": 3, "intermediate_size": 256},
    "simulator": {"hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 256},
}


def tiny_qwen2_config(
    vocab_size: int,
    *,
    role: str = "policy",
    pad_token_id: int = PAD_ID,
    eos_token_id: int = EOS_ID,
    bos_token_id: int | None = None,
    max_position_embeddings: int = 1024,
    **overrides,
) -> Qwen2Config:
    """Config of a tiny Qwen2 (4 query heads, 2 KV heads); ids default to the toy tokenizer's."""
    if role not in _SIZES:
        raise ValueError(f"role must be one of {sorted(_SIZES)}, got {role!r}")
    kwargs = dict(
        vocab_size=vocab_size,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,  # copying a name from the question or the documents is then an easy identity map
        use_cache=True,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=eos_token_id if bos_token_id is None else bos_token_id,
        **_SIZES[role],
    )
    kwargs.update(overrides)
    return Qwen2Config(**kwargs)


def init_model(config: Qwen2Config, seed: int) -> Qwen2ForCausalLM:
    """Randomly initialised model; seeded without disturbing the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return model.float().eval()
