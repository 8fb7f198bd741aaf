"""Hugging Face models from local paths: loading, the protocol tags as single tokens, attention implementations."""

from zerosearch.hf.loading import (
    TORCH_DTYPES,
    ensure_tag_tokens,
    load_causal_lm,
    load_tokenizer,
    resolve_attn_implementation,
)

__all__ = ["TORCH_DTYPES", "ensure_tag_tokens", "load_causal_lm", "load_tokenizer", "resolve_attn_implementation"]
