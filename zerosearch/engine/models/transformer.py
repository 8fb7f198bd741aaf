"""The decoder forward of Llama/Qwen2 written out with plain tensor ops over `LMWeights`.

The model knows nothing about caches: each layer hands its rotated q, k and v to an `AttendFn` supplied
by the caller, which stores k/v wherever it keeps them (static cache, shared prefix) and returns the
attention output. That keeps one forward for prefill, decode and prefix prefill.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from zerosearch.engine.models.config import LMConfig
from zerosearch.engine.models.rope import apply_rope, rope_tables
from zerosearch.engine.models.weights import LMWeights

# attend(layer, q [B, T, H, D], k [B, T, Hkv, D], v [B, T, Hkv, D]) -> [B, T, H, D]
AttendFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF RMSNorm semantics: normalise in float32, cast back, then scale by the weight."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


class LeanCausalLM:
    """Llama/Qwen2 forward over referenced weights. Not an nn.Module: it owns no parameters."""

    def __init__(self, config: LMConfig, weights: LMWeights | Callable[[], LMWeights], hf_model=None) -> None:
        self.config = config
        self._weights = weights
        self.hf_model = hf_model

    @classmethod
    def from_hf(cls, model, *, dtype: torch.dtype | None = None) -> LeanCausalLM:
        """Wrap a loaded `LlamaForCausalLM` / `Qwen2ForCausalLM`; weights are re-referenced on each call.

        With `dtype` (mixed precision: fp32 master weights, bf16 compute) the forward runs on a copy in that
        dtype, made again only when a weight has changed since the last call (an optimizer step).
        """
        cache: dict = {}

        def weights() -> LMWeights:
            w = LMWeights.from_hf(model)
            if dtype is None or w.embed.dtype == dtype:
                return w
            version = w.version()
            if cache.get("version") != version:
                cache.clear()  # drop the old copy before making the new one
                cache["weights"], cache["version"] = w.to(dtype), version
            return cache["weights"]

        return cls(LMConfig.from_hf(model.config), weights, hf_model=model)

    @classmethod
    def from_safetensors(
        cls, path: str, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> LeanCausalLM:
        """Load a HF checkpoint directory (config.json + *.safetensors) without building an HF model."""
        import glob
        import os

        from safetensors.torch import load_file
        from transformers import AutoConfig

        hf_config = AutoConfig.from_pretrained(path)
        sd: dict[str, torch.Tensor] = {}
        for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
            sd.update(load_file(f, device=str(device)))
        if not sd:
            raise FileNotFoundError(f"no *.safetensors files in {path}")
        if dtype is not None:
            sd = {k: v.to(dtype) for k, v in sd.items()}
        weights = LMWeights.from_state_dict(sd, hf_config)
        return cls(LMConfig.from_hf(hf_config), weights)

    def weights(self) -> LMWeights:
        return self._weights() if callable(self._weights) else self._weights

    @property
    def device(self) -> torch.device:
        return self.weights().embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.weights().embed.dtype

    def hidden_states(
        self, ids: torch.Tensor, positions: torch.Tensor, attend: AttendFn, weights: LMWeights | None = None
    ) -> torch.Tensor:
        """Final-normed hidden states ``[B, T, hidden]`` for token ``ids [B, T]`` at ``positions [B, T]``."""
        w = weights or self.weights()
        cfg = self.config
        b, t = ids.shape
        x = F.embedding(ids, w.embed)
        cos, sin = rope_tables(w.inv_freq, positions, x.dtype, w.rope_scale)
        for i, lw in enumerate(w.layers):
            h = rms_norm(x, lw.input_norm, cfg.rms_norm_eps)
            q = F.linear(h, lw.q_w, lw.q_b).view(b, t, cfg.num_heads, cfg.head_dim)
            k = F.linear(h, lw.k_w, lw.k_b).view(b, t, cfg.num_kv_heads, cfg.head_dim)
            v = F.linear(h, lw.v_w, lw.v_b).view(b, t, cfg.num_kv_heads, cfg.head_dim)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            a = attend(i, q, k, v).reshape(b, t, cfg.num_heads * cfg.head_dim)
            x = x + F.linear(a, lw.o_w, lw.o_b)
            h = rms_norm(x, lw.post_norm, cfg.rms_norm_eps)
            g = F.silu(F.linear(h, lw.gate_w, lw.gate_b)) * F.linear(h, lw.up_w, lw.up_b)
            x = x + F.linear(g, lw.down_w, lw.down_b)
        return rms_norm(x, w.final_norm, cfg.rms_norm_eps)

    def logits(self, hidden: torch.Tensor, weights: LMWeights | None = None) -> torch.Tensor:
        """LM-head logits in at least float32 (only call it on the positions that are sampled from)."""
        w = weights or self.weights()
        out = F.linear(hidden, w.lm_head)
        return out if out.dtype.itemsize >= 4 else out.float()
