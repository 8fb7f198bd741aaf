"""Fast batched generation for rollouts and the simulator (static KV cache, shared prefix, on-device
sampling, CUDA graphs). `EngineSampler` implements the rollout's `TokenSampler` protocol and
`engine_generate_texts` mirrors `zerosearch.generation.generate_texts`."""

from zerosearch.engine.engine import GenerationEngine, GenerationOutput, common_prefix_len
from zerosearch.engine.sampler import EngineSampler, engine_generate_texts
from zerosearch.engine.sampling import SamplingParams

__all__ = [
    "EngineSampler",
    "GenerationEngine",
    "GenerationOutput",
    "SamplingParams",
    "common_prefix_len",
    "engine_generate_texts",
]
