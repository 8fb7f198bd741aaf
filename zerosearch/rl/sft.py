"""Samples for supervised fine-tuning (the loop is `rl.sft_trainer.SFTTrainer`): the simulator's (query →
documents) pairs and the policy warm-start's trajectories.

A sample is a list of `(text, trainable)` segments. Each segment is tokenised on its own and the ids are
concatenated, so the loss covers exactly the trainable spans.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from zerosearch.search.documents import format_documents
from zerosearch.search.prompts import simulator_prompt

Segments = Sequence[tuple[str, bool]]
T = TypeVar("T")


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


def balance_pairs(pairs: Sequence[T], seed: int = 0, label: Callable[[T], bool] = lambda p: p.useful) -> list[T]:
    """Equal numbers of useful and noisy items (`label` reads the class; the larger class is subsampled), shuffled."""
    rng = random.Random(seed)
    useful = [p for p in pairs if label(p)]
    noisy = [p for p in pairs if not label(p)]
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
