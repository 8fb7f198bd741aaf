"""Text builders for the policy's warm-start SFT on the toy world.

A trajectory is a list of `(text, trainable)` segments: the prompt and the engine's observations are
context only, the model's own turns (think/search/answer) are trained on — the same split the RL
loss mask makes. All tags and templates come from `zerosearch.rollout.protocol`, so the warm-start format is
exactly the one the rollout engine parses. Wording varies by an optional `random.Random`, so a
seeded builder is deterministic.
"""

from __future__ import annotations

import random
import re

from zerosearch.data.qa import QAExample
from zerosearch.rollout.protocol import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    SEARCH_CLOSE,
    SEARCH_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    format_documents,
    observation_text,
    policy_prompt,
)

Segment = tuple[str, bool]

# {fact} is e.g. "the capital of zorvia"; {bridge} the entity found by the previous search
_FIRST_THOUGHTS = ("i need to find {fact} .", "to answer , i must search for {fact} .")
_NEXT_THOUGHTS = (
    "{prev} is {bridge} . now i need to find {fact} .",
    "i found that {prev} is {bridge} . next i search for {fact} .",
)
# restating the fact first makes the answer a copy of the document sentence with the same words
_FINAL_THOUGHTS = (
    "{fact} is {answer} . the answer is {answer} .",
    "i found that {fact} is {answer} . so the answer is {answer} .",
)
_CUT_SHORT_THOUGHT = "the answer is {answer} ."  # when fewer searches than hops were made
_DIRECT_THOUGHTS = ("i can answer without searching .", "i think i know the answer .")


def _pick(options: tuple[str, ...], rng: random.Random | None) -> str:
    return options[0] if rng is None else rng.choice(options)


def _think(text: str) -> str:
    return f"{THINK_OPEN} {text} {THINK_CLOSE}"


def _answer(answer: str) -> str:
    return f"{ANSWER_OPEN} {answer} {ANSWER_CLOSE}"


def search_trajectory(
    example: QAExample,
    documents_per_query: list[list[str]],
    *,
    answer: str | None = None,
    rng: random.Random | None = None,
) -> list[Segment]:
    """Prompt, then one think+search turn per needed query with its documents, then the answer.

    `documents_per_query[i]` are the documents returned for `example.meta["needed_queries"][i]`
    (fewer lists than queries cuts the search short). `answer` defaults to the first gold answer.
    """
    queries: list[str] = list(example.meta.get("needed_queries", []))
    facts: list[str] = list(example.meta.get("needed_facts", queries))
    entities: list[str] = list(example.meta.get("entities", []))
    if not queries:
        raise ValueError(f"example {example.uid} has no meta['needed_queries']")
    if len(documents_per_query) > len(queries):
        raise ValueError(f"{len(documents_per_query)} document lists for {len(queries)} queries")
    final = answer if answer is not None else example.golden_answers[0]

    segments: list[Segment] = [(policy_prompt(example.question), False)]
    for i, docs in enumerate(documents_per_query):
        if i == 0:
            thought = _pick(_FIRST_THOUGHTS, rng).format(fact=facts[0])
        else:  # the bridge entity is the one the current hop asks about
            bridge = entities[i] if i < len(entities) else queries[i]
            thought = _pick(_NEXT_THOUGHTS, rng).format(prev=facts[i - 1], bridge=bridge, fact=facts[i])
        segments.append((f"{_think(thought)} {SEARCH_OPEN} {queries[i]} {SEARCH_CLOSE}", True))
        segments.append((observation_text(format_documents(docs)), False))
    if documents_per_query and len(documents_per_query) == len(queries):
        thought = _pick(_FINAL_THOUGHTS, rng).format(fact=facts[-1], answer=final)
    else:
        thought = _CUT_SHORT_THOUGHT.format(answer=final)
    segments.append((f"{_think(thought)} {_answer(final)}", True))
    return segments


def direct_answer_trajectory(example: QAExample, answer: str, *, rng: random.Random | None = None) -> list[Segment]:
    """Prompt, then an immediate (possibly wrong) answer with no search."""
    thought = _pick(_DIRECT_THOUGHTS, rng)
    return [(policy_prompt(example.question), False), (f"{_think(thought)} {_answer(answer)}", True)]


def trajectory_text(segments: list[Segment]) -> str:
    """All segments concatenated, as the model sees them."""
    return "".join(text for text, _ in segments)


def vocabulary_texts() -> list[str]:
    """The fixed wording of the trajectories, for the tokenizer's vocabulary."""
    texts = [*_FIRST_THOUGHTS, *_NEXT_THOUGHTS, *_FINAL_THOUGHTS, _CUT_SHORT_THOUGHT, *_DIRECT_THOUGHTS]
    return [re.sub(r"\{\w+\}", " ", t) for t in texts]
