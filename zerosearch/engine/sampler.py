"""Engine-backed drop-ins for the rollout sampler and the simulator's text generation.

`EngineSampler` has the constructor and `sample` contract of `zerosearch.sampler.HFSampler`;
`engine_generate_texts` has the signature of `zerosearch.generation.generate_texts`. Both accept a loaded
HF `LlamaForCausalLM` / `Qwen2ForCausalLM` (generated from directly, parameters referenced, not copied) or
a `LeanCausalLM`.
"""

from __future__ import annotations

import torch

from zerosearch.engine.engine import GenerationEngine
from zerosearch.engine.sampling import SamplingParams
from zerosearch.generation import stop_ids_for
from zerosearch.models.transformer import LeanCausalLM
from zerosearch.sampler import SampleOutput


def _lean(model) -> LeanCausalLM:
    return model if isinstance(model, LeanCausalLM) else LeanCausalLM.from_hf(model)


class EngineSampler:
    """`TokenSampler` over the fast engine: sampled ids cut after the first stop id, plus their log-probs
    under the temperature-scaled distribution (temperature 1 when greedy), like `HFSampler`."""

    def __init__(self, model, pad_id: int, *, temperature: float = 1.0, top_p: float = 1.0, greedy: bool = False,
                 top_k: int = 0, seed: int | None = None, shared_prefix: bool = True) -> None:  # fmt: skip
        self.model = model
        self.pad_id = pad_id
        self.temperature = temperature
        self.top_p = top_p
        self.greedy = greedy
        self.top_k = top_k
        self.seed = seed
        self.shared_prefix = shared_prefix
        self._calls = 0

    def sample(self, contexts: list[list[int]], *, max_new_tokens: list[int], stop_ids: list[int]) -> SampleOutput:
        if not contexts:
            return SampleOutput([], [])
        engine = GenerationEngine(_lean(self.model), pad_id=self.pad_id)
        params = SamplingParams(temperature=1.0 if self.greedy else self.temperature, top_k=self.top_k,
                                top_p=self.top_p, greedy=self.greedy)  # fmt: skip
        seed = None if self.seed is None else self.seed + self._calls
        self._calls += 1
        out = engine.generate(contexts, max_new_tokens=list(max_new_tokens), sampling=params, stop_ids=stop_ids,
                              shared_prefix=self.shared_prefix, seed=seed)  # fmt: skip
        return SampleOutput(out.token_ids, out.logprobs)


def engine_generate_texts(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    batch_size: int = 256,
    stop_token_ids: list[int] | None = None,
    generator_seed: int | None = None,
) -> list[str]:
    """Continue each prompt; return only the new text (special tokens dropped), in prompt order.

    Same contract as `generate_texts`: stops on the tokenizer's eos and on ``stop_token_ids``; sampling is
    repeatable for a given ``generator_seed`` and leaves the caller's global RNG untouched.
    """
    if not prompts:
        return []
    stops = stop_ids_for(tokenizer, stop_token_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else 0)
    engine = GenerationEngine(_lean(model), pad_id=int(pad_id))
    params = SamplingParams(temperature=temperature if do_sample else 1.0, top_p=top_p if do_sample else 1.0,
                            greedy=not do_sample)  # fmt: skip
    if generator_seed is None:
        base_seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    else:
        base_seed = int(generator_seed)
    texts: list[str] = []
    for i, start in enumerate(range(0, len(prompts), batch_size)):
        chunk = prompts[start : start + batch_size]
        ids = [list(x) for x in tokenizer(chunk, add_special_tokens=True)["input_ids"]]
        out = engine.generate(ids, max_new_tokens=max_new_tokens, sampling=params, stop_ids=stops,
                              seed=base_seed + i)  # fmt: skip
        texts.extend(tokenizer.batch_decode(out.token_ids, skip_special_tokens=True))
    return texts
