"""Plain batched text generation over a Hugging Face causal LM.

Used by the simulator (text in, text out) until the faster engine exists. Prompts are left-padded so
every row's new tokens start at the same column, and pad/eos ids are passed explicitly so nothing is
looked up online or guessed by `generate`.
"""

from __future__ import annotations

import contextlib

import torch


def stop_ids_for(tokenizer, stop_token_ids: list[int] | None) -> list[int]:
    """The tokenizer's eos followed by the extra stop ids, without repeats (shared by both generators)."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    for t in stop_token_ids or []:
        if int(t) not in ids:
            ids.append(int(t))
    return ids


@torch.no_grad()
def generate_texts(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    batch_size: int = 32,
    stop_token_ids: list[int] | None = None,
    generator_seed: int | None = None,
) -> list[str]:
    """Continue each prompt; return only the new text (special tokens dropped), in prompt order.

    `generator_seed` seeds the global torch RNG inside a forked RNG state, so sampling is repeatable
    without disturbing the caller's random stream.
    """
    if not prompts:
        return []
    eos = stop_ids_for(tokenizer, stop_token_ids)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        if not eos:
            raise ValueError("tokenizer has neither a pad nor an eos token")
        pad_id = eos[0]
    gen_kwargs: dict = {"max_new_tokens": max_new_tokens, "pad_token_id": int(pad_id), "do_sample": do_sample}
    if eos:
        gen_kwargs["eos_token_id"] = eos
    if do_sample:
        # top_k=0 disables the library's default top-k so only temperature/top_p shape the sampler.
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    cuda_devices = [device] if device.type == "cuda" else []
    rng = torch.random.fork_rng(devices=cuda_devices) if generator_seed is not None else contextlib.nullcontext()
    outputs: list[str] = []
    try:
        with rng:
            if generator_seed is not None:
                torch.manual_seed(generator_seed)
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start : start + batch_size]
                enc = tokenizer(chunk, return_tensors="pt", padding=True)
                input_ids = enc["input_ids"].to(device)
                attention_mask = enc["attention_mask"].to(device)
                out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **gen_kwargs)
                new = out[:, input_ids.shape[1] :]
                outputs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
    return outputs
