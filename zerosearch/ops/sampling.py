"""Next-token sampling from ``[B, V]`` logits: the fused Triton kernel on CUDA, the torch reference elsewhere.

Both run fully on device (no ``multinomial``, no ``.item()``), so a decode step needs no host sync and can be
captured in a CUDA graph. Randomness: a ``torch.Generator`` on the torch path; on the Triton path a
one-element seed tensor that the caller advances in place after each draw (works inside a graph replay).
The returned log-prob is that of the token under the temperature-scaled distribution before any top-k /
top-p cut (temperature 1 when greedy): what the trainer's ``token_logprobs`` recomputes.
"""

from __future__ import annotations

import torch

__all__ = ["sample_tokens"]


def sample_tokens(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    seed: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    use_triton: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [B] int64, logprobs [B] fp32)``. ``use_triton`` needs ``seed`` (a one-element device tensor)."""
    if use_triton:
        from zerosearch.kernels.sampling import triton_sample

        if seed is None:
            raise ValueError("the Triton sampler needs a seed tensor")
        return triton_sample(logits, seed, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy)
    from zerosearch.kernels.sampling import sample_reference

    return sample_reference(logits, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                            generator=generator)  # fmt: skip
