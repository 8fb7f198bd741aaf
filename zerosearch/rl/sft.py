"""Supervised fine-tuning on segmented text: the simulator (query → documents) and the policy warm-start.

A sample is a list of `(text, trainable)` segments. Each segment is tokenised on its own and the ids are
concatenated, so the loss covers exactly the trainable spans.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from zerosearch.rl.batch import make_batch
from zerosearch.rl.forward import sequence_logprobs
from zerosearch.rl.lr_schedule import lr_factor
from zerosearch.search.documents import format_documents
from zerosearch.search.prompts import simulator_prompt

Segments = Sequence[tuple[str, bool]]


@dataclass
class SimulatorPair:
    """One simulator training example: documents a real engine returned for a query, and their label."""

    query: str
    question: str
    golden_answers: list[str]
    documents: list[str]
    useful: bool


def simulator_samples(pairs: Sequence[SimulatorPair]) -> list[Segments]:
    """Prompt (useful or noisy instruction) → `Doc i:` documents; loss on the documents only."""
    return [
        [(simulator_prompt(p.query, p.question, p.golden_answers, p.useful), False),
         (" " + format_documents(p.documents), True)]
        for p in pairs
    ]


def balance_pairs(pairs: Sequence[SimulatorPair], seed: int = 0) -> list[SimulatorPair]:
    """Equal numbers of useful and noisy pairs (the larger class is subsampled), shuffled."""
    rng = random.Random(seed)
    useful = [p for p in pairs if p.useful]
    noisy = [p for p in pairs if not p.useful]
    n = min(len(useful), len(noisy))
    out = rng.sample(useful, n) + rng.sample(noisy, n)
    rng.shuffle(out)
    return out


def tokenize_segments(tokenizer, segments: Segments, *, max_len: int,
                      append_eos: bool = False) -> tuple[list[int], list[bool]]:
    ids: list[int] = []
    mask: list[bool] = []
    for text, trainable in segments:
        enc = tokenizer.encode(text, add_special_tokens=False)
        ids += enc
        mask += [trainable] * len(enc)
    if append_eos:
        ids.append(tokenizer.eos_token_id)
        mask.append(True)
    return ids[:max_len], mask[:max_len]


def sft_train(model, tokenizer, samples: list[Segments], *, steps: int, batch_size: int = 16, lr: float = 1e-3,
              max_len: int = 1024, append_eos: bool = False, seed: int = 0, device: str = "cpu",
              warmup: int = 10, progress: bool = True, desc: str = "sft") -> list[float]:
    """AdamW with warm-up and cosine decay; mean token NLL over the trainable spans. Returns losses."""
    if not samples:
        raise ValueError("sft_train got no samples")
    encoded = [tokenize_segments(tokenizer, s, max_len=max_len, append_eos=append_eos) for s in samples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rng = random.Random(seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, warmup=warmup, total=steps, schedule="cosine"))
    losses = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, dynamic_ncols=True)
    for _ in bar:
        pick = [encoded[rng.randrange(len(encoded))] for _ in range(batch_size)]
        batch = make_batch([[] for _ in pick], [ids for ids, _ in pick], [m for _, m in pick], pad).to(device)
        lp = sequence_logprobs(model, batch.ids, batch.attn, batch.mask)
        loss = -(lp * batch.mask).sum() / batch.mask.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses
