"""Lean Llama/Qwen2 forward for generation, running on the parameters of a loaded HF model (no copy).

`LeanCausalLM.from_hf(model)` references the HF module's parameters, so the policy being trained is the
model that is sampled from; `LeanCausalLM.from_safetensors(path)` reads weights from disk instead.
Attention is supplied by the caller (the engine), which owns the KV cache.
"""

from zerosearch.engine.models.config import LMConfig
from zerosearch.engine.models.transformer import AttendFn, LeanCausalLM
from zerosearch.engine.models.weights import LayerWeights, LMWeights

__all__ = ["AttendFn", "LMConfig", "LMWeights", "LayerWeights", "LeanCausalLM"]
