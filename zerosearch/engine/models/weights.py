"""Where the forward's tensors come from: a live HF module (referenced, never copied) or safetensors.

Referencing matters for RL: the optimizer updates the HF parameters in place, and the engine must sample
from exactly those values. `LMWeights.from_hf` is therefore cheap and is rebuilt on every generate call,
so a `model.to(...)` or a re-assigned parameter is picked up too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass
class LayerWeights:
    input_norm: torch.Tensor
    q_w: torch.Tensor
    k_w: torch.Tensor
    v_w: torch.Tensor
    o_w: torch.Tensor
    post_norm: torch.Tensor
    gate_w: torch.Tensor
    up_w: torch.Tensor
    down_w: torch.Tensor
    # Qwen2 has q/k/v biases; Llama has them (and o/mlp biases) only with attention_bias / mlp_bias.
    q_b: torch.Tensor | None = None
    k_b: torch.Tensor | None = None
    v_b: torch.Tensor | None = None
    o_b: torch.Tensor | None = None
    gate_b: torch.Tensor | None = None
    up_b: torch.Tensor | None = None
    down_b: torch.Tensor | None = None


@dataclass
class LMWeights:
    embed: torch.Tensor  # [V, H]
    layers: list[LayerWeights]
    final_norm: torch.Tensor
    lm_head: torch.Tensor  # [V, H]; the embedding itself when embeddings are tied
    inv_freq: torch.Tensor  # [head_dim / 2] RoPE frequencies (rope_theta and any rope scaling applied)
    rope_scale: float = 1.0  # HF "attention_scaling" multiplying cos/sin (1 for default RoPE)

    def tensors(self) -> list[torch.Tensor]:
        """Every weight tensor (RoPE frequencies excluded), in a fixed order."""
        out = [self.embed, self.final_norm, self.lm_head]
        for lw in self.layers:
            out += [t for t in _fields(lw) if t is not None]
        return out

    def version(self) -> tuple:
        """Changes whenever a weight is replaced or updated in place (an optimizer step bumps `_version`)."""
        return tuple((t.data_ptr(), t._version) for t in self.tensors())

    def to(self, dtype: torch.dtype) -> LMWeights:
        """A copy in `dtype` (RoPE frequencies stay float32); tied embeddings stay one tensor."""
        done: dict[int, torch.Tensor] = {}

        def cast(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            if id(t) not in done:
                done[id(t)] = t.detach().to(dtype)
            return done[id(t)]

        layers = [LayerWeights(*(cast(t) for t in _fields(lw))) for lw in self.layers]
        return LMWeights(cast(self.embed), layers, cast(self.final_norm), cast(self.lm_head), self.inv_freq,
                         self.rope_scale)

    @classmethod
    def from_hf(cls, model) -> LMWeights:
        """Reference the parameters of a `LlamaForCausalLM` / `Qwen2ForCausalLM` (or compatible)."""
        core = model.model
        layers = []
        for blk in core.layers:
            att, mlp = blk.self_attn, blk.mlp
            layers.append(
                LayerWeights(
                    input_norm=blk.input_layernorm.weight,
                    q_w=att.q_proj.weight, k_w=att.k_proj.weight, v_w=att.v_proj.weight, o_w=att.o_proj.weight,
                    post_norm=blk.post_attention_layernorm.weight,
                    gate_w=mlp.gate_proj.weight, up_w=mlp.up_proj.weight, down_w=mlp.down_proj.weight,
                    q_b=att.q_proj.bias, k_b=att.k_proj.bias, v_b=att.v_proj.bias, o_b=att.o_proj.bias,
                    gate_b=mlp.gate_proj.bias, up_b=mlp.up_proj.bias, down_b=mlp.down_proj.bias,
                )
            )  # fmt: skip
        rot = core.rotary_emb
        return cls(
            embed=core.embed_tokens.weight,
            layers=layers,
            final_norm=core.norm.weight,
            lm_head=model.get_output_embeddings().weight,
            inv_freq=rot.inv_freq,
            rope_scale=float(getattr(rot, "attention_scaling", 1.0)),
        )

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], config) -> LMWeights:
        """Build from HF-named tensors (e.g. a safetensors file). RoPE frequencies come from HF's own
        rotary-embedding class for `config`, so every rope_type HF knows is handled the same way."""
        from zerosearch.engine.models.config import LMConfig

        cfg = LMConfig.from_hf(config)
        prefix = "model." if any(k.startswith("model.") for k in sd) else ""

        def get(name: str) -> torch.Tensor | None:
            return sd.get(prefix + name)

        layers = []
        for i in range(cfg.num_layers):
            p = f"layers.{i}."
            layers.append(
                LayerWeights(
                    input_norm=get(p + "input_layernorm.weight"),
                    q_w=get(p + "self_attn.q_proj.weight"), k_w=get(p + "self_attn.k_proj.weight"),
                    v_w=get(p + "self_attn.v_proj.weight"), o_w=get(p + "self_attn.o_proj.weight"),
                    post_norm=get(p + "post_attention_layernorm.weight"),
                    gate_w=get(p + "mlp.gate_proj.weight"), up_w=get(p + "mlp.up_proj.weight"),
                    down_w=get(p + "mlp.down_proj.weight"),
                    q_b=get(p + "self_attn.q_proj.bias"), k_b=get(p + "self_attn.k_proj.bias"),
                    v_b=get(p + "self_attn.v_proj.bias"), o_b=get(p + "self_attn.o_proj.bias"),
                    gate_b=get(p + "mlp.gate_proj.bias"), up_b=get(p + "mlp.up_proj.bias"),
                    down_b=get(p + "mlp.down_proj.bias"),
                )
            )  # fmt: skip
        embed = get("embed_tokens.weight")
        head = sd.get("lm_head.weight")
        if head is None:
            if not cfg.tie_word_embeddings:
                raise KeyError("lm_head.weight missing and tie_word_embeddings is false")
            head = embed
        inv_freq, scale = _hf_rope(config)
        return cls(embed=embed, layers=layers, final_norm=get("norm.weight"), lm_head=head,
                   inv_freq=inv_freq.to(embed.device), rope_scale=scale)  # fmt: skip


def _fields(layer: LayerWeights) -> list[torch.Tensor | None]:
    """The layer's tensors in declaration order (not `dataclasses.astuple`, which would deep-copy them)."""
    return [getattr(layer, f.name) for f in dataclasses.fields(layer)]


def _hf_rope(config) -> tuple[torch.Tensor, float]:
    """inv_freq and attention scaling exactly as HF computes them for this config."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rot = LlamaRotaryEmbedding(config=config)
    return rot.inv_freq.float(), float(getattr(rot, "attention_scaling", 1.0))
