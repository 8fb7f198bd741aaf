"""The Hugging Face reference generator: ``model.generate`` behind the :class:`Generator` interface.

It is the baseline the engine is tested and benchmarked against, and the fallback for architectures the
engine's lean forward does not cover. Prompts are left-padded so every row's new tokens start at the same
column; pad and stop ids are passed explicitly, so nothing is looked up online or guessed by ``generate``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from transformers import GenerationConfig

from zerosearch.generation.base import DEFAULT_SAMPLING, GenerationOutput, Generator, SamplingParams


class HFGenerator(Generator):
    """``generate`` of a loaded HF causal LM (any architecture transformers can generate with)."""

    max_batch = 32

    def __init__(self, model, tokenizer=None, *, pad_id: int | None = None,
                 compute_dtype: torch.dtype | None = None) -> None:
        """``compute_dtype`` other than the weights' dtype runs ``generate`` under autocast to it."""
        super().__init__(tokenizer, pad_id=pad_id)
        self.model = model
        self.compute_dtype = compute_dtype

    @torch.no_grad()
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
        u = len(prompts)
        budgets = [int(max_new_tokens)] * u if isinstance(max_new_tokens, int) else [int(m) for m in max_new_tokens]
        if len(budgets) != u:
            raise ValueError("max_new_tokens must be an int or have one entry per prompt")
        rows = u * n
        if rows == 0 or max(budgets, default=0) <= 0:
            return GenerationOutput([[] for _ in range(rows)], [[] for _ in range(rows)], [False] * rows)
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for r in range(rows):  # each prompt n times in a row (greedy HF refuses num_return_sequences > 1)
            p = list(prompts[r // n])
            ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            attn[r, width - len(p):] = 1
        # A fresh generation config: the checkpoint's own (its eos, top-k 50, ...) must not add stop ids or
        # sampling rules that the caller did not ask for.
        config = GenerationConfig(max_new_tokens=max(budgets), do_sample=not sampling.greedy, pad_token_id=self.pad_id,
                                  eos_token_id=[int(s) for s in stop_ids] or None, output_logits=True,
                                  return_dict_in_generate=True)
        if not sampling.greedy:
            config.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        was_training = self.model.training
        self.model.eval()
        devices = [device] if device.type == "cuda" else []
        rng = torch.random.fork_rng(devices=devices) if seed is not None else contextlib.nullcontext()
        weight_dtype = next(self.model.parameters()).dtype
        mixed = self.compute_dtype is not None and self.compute_dtype != weight_dtype
        autocast = torch.autocast(device.type, dtype=self.compute_dtype) if mixed else contextlib.nullcontext()
        try:
            with rng, autocast:
                if seed is not None:
                    torch.manual_seed(seed)
                out = self.model.generate(input_ids=ids.to(device), attention_mask=attn.to(device),
                                          generation_config=config)
        finally:
            self.model.train(was_training)
        new = out.sequences[:, width:].cpu()
        temp = 1.0 if sampling.greedy else sampling.temperature
        logits = torch.stack(out.logits, dim=1).float().cpu() / temp  # [rows, new, V], before any processor
        logp = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        stop = {int(s) for s in stop_ids}
        tokens, lps, stopped = [], [], []
        for r in range(rows):
            row, cut = new[r].tolist(), min(budgets[r // n], new.shape[1])
            hit = next((j for j, t in enumerate(row[:cut]) if t in stop), None)
            cut = cut if hit is None else hit + 1
            tokens.append(row[:cut])
            lps.append(logp[r, :cut].tolist())
            stopped.append(hit is not None)
        return GenerationOutput(tokens, lps, stopped)
