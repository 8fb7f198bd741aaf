"""Fast batched generation over a lean Llama/Qwen2 forward: static KV cache, shared-prefix prefill, on-device
sampling, CUDA graphs, compaction of finished rows. Used through :class:`zerosearch.generation.EngineGenerator`."""

from zerosearch.engine.engine import GenerationEngine, GenerationOutput, common_prefix_len
from zerosearch.engine.sampler import SamplingParams

__all__ = ["GenerationEngine", "GenerationOutput", "SamplingParams", "common_prefix_len"]
