"""Architecture numbers of a Llama/Qwen2 decoder, read once from an HF config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LMConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    tie_word_embeddings: bool

    @property
    def group_size(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.num_heads // self.num_kv_heads

    @classmethod
    def from_hf(cls, config) -> LMConfig:
        """Works for `LlamaConfig` and `Qwen2Config` (transformers 4.45+ and 5.x)."""
        heads = int(config.num_attention_heads)
        kv = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        if heads % kv:
            raise ValueError(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}")
        if getattr(config, "use_sliding_window", False):
            raise NotImplementedError("sliding-window attention is not supported by the lean forward")
        return cls(
            vocab_size=int(config.vocab_size),
            hidden_size=int(config.hidden_size),
            num_layers=int(config.num_hidden_layers),
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=int(head_dim),
            rms_norm_eps=float(config.rms_norm_eps),
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )
