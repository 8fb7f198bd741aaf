"""The fast generator: :class:`~zerosearch.engine.GenerationEngine` behind the :class:`Generator` interface.

It generates from a loaded HF ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` directly (its parameters are
referenced on every call, never copied, so the policy being trained is the one sampled from) or from a
:class:`~zerosearch.engine.models.LeanCausalLM` read from safetensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zerosearch.engine.engine import GenerationEngine
from zerosearch.engine.models.transformer import LeanCausalLM
from zerosearch.generation.base import DEFAULT_SAMPLING, GenerationOutput, Generator, SamplingParams


class EngineGenerator(Generator):
    """Shared-prefix prefill, static KV cache, on-device sampling and (on CUDA) a captured decode graph."""

    def __init__(self, model, tokenizer=None, *, pad_id: int | None = None, shared_prefix: bool = True,
                 cuda_graph: bool = True, compute_dtype: torch.dtype | None = None, **engine_kwargs) -> None:
        """``compute_dtype`` (e.g. bf16 over fp32 master weights) runs the engine on a copy of the weights in that
        dtype, refreshed only after they change."""
        super().__init__(tokenizer, pad_id=pad_id)
        lean = model if isinstance(model, LeanCausalLM) else LeanCausalLM.from_hf(model, dtype=compute_dtype)
        self.model = model
        self.shared_prefix = shared_prefix
        self.engine = GenerationEngine(lean, pad_id=self.pad_id, cuda_graph=cuda_graph, **engine_kwargs)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int | Sequence[int],
        sampling: SamplingParams = DEFAULT_SAMPLING,
        stop_ids: Sequence[int] = (),
        n: int = 1,
        seed: int | None = None,
    ) -> GenerationOutput:
        if not prompts:
            return GenerationOutput([], [], [])
        return self.engine.generate(prompts, max_new_tokens=max_new_tokens, n=n, sampling=sampling,
                                    stop_ids=stop_ids, shared_prefix=self.shared_prefix, seed=seed)
